"""Datasets: toy densities and entropies against independent truths, digits, and file loading errors."""

import math

import numpy as np
import pytest

from jaxflow import data
from jaxflow.data import DataError


def _grid_density(toy: data.Toy, low, high, spacing: float) -> np.ndarray:
    """The density at the cell centres of a grid of spacing ``spacing`` on the box ``[low, high]``."""
    axes = [np.arange(low[i], high[i], spacing) + spacing / 2 for i in range(2)]
    return np.exp(toy.log_prob(np.stack(np.meshgrid(*axes), -1).reshape(-1, 2)))


# (name, box holding all but ~1e-9 of the mass, grid spacing <= noise / 4; pinwheel: its tangential std is 2 * noise)
_BOXES = [("moons", (-1.5, -1.0), (2.5, 1.5), 0.0125), ("circles", (-1.5, -1.5), (1.5, 1.5), 0.0125),
          ("8gaussians", (-3.5, -3.5), (3.5, 3.5), 0.05), ("spirals", (-4, -4), (4, 4), 0.025),
          ("pinwheel", (-6, -6), (6, 6), 0.1)]


@pytest.mark.parametrize("name, low, high, spacing", _BOXES)
def test_density_integrates_to_one_and_grid_entropy_matches_table(name, low, high, spacing):
    """Riemann sums, independent of the sampler: int p = 1 and -int p log p = ENTROPY (MC, +-1e-3)."""
    toy = data.toy(name)
    p = _grid_density(toy, low, high, spacing)
    area = spacing**2
    assert abs(p.sum() * area - 1) < 1e-4
    grid_entropy = -(p * np.log(np.maximum(p, 1e-300))).sum() * area
    assert abs(grid_entropy - toy.entropy) < 3e-3


@pytest.mark.parametrize("name", data.TOYS)
def test_sampler_matches_density(name):
    """The samples' mean log-density (MC) equals -ENTROPY: the sampler draws from the stated density."""
    toy = data.toy(name)
    entropy, stderr = data.estimate_entropy(toy, num_samples=5_000 if name == "pinwheel" else 20_000, seed=7)
    assert abs(entropy - toy.entropy) < 4 * stderr + 2e-3


def test_entropies_against_closed_forms():
    """moons: the issue's independent figure (about 0.288); 8gaussians: separated-mixture limit; checkerboard: log 8."""
    assert abs(data.toy("moons").entropy - 0.288) < 0.003
    separated = math.log(8) + math.log(2 * math.pi * math.e * 0.2**2)
    assert abs(data.toy("8gaussians").entropy - separated) < 1e-3
    assert data.toy("checkerboard").entropy == math.log(8)


def test_checkerboard_support():
    x = data.toy("checkerboard").sample(10_000, seed=0)
    assert np.all(np.abs(x) <= 2)
    assert np.all(np.floor(x).sum(-1) % 2 == 0)
    assert np.isfinite(data.toy("checkerboard").log_prob(x)).all()


@pytest.mark.parametrize("name", data.TOYS)
def test_toys_are_seeded_float32(name):
    toy = data.toy(name)
    a, b, c = toy.sample(100, seed=3), toy.sample(100, seed=3), toy.sample(100, seed=4)
    assert a.shape == (100, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_unknown_toy_and_bad_noise():
    with pytest.raises(DataError, match="unknown dataset 'banana'"):
        data.toy("banana")
    with pytest.raises(DataError, match="noise must be > 0"):
        data.toy("moons", noise=0)


def test_toy_splits_are_independent_draws():
    splits = data.load_dataset("moons")
    assert [len(s) for s in splits[1:4]] == list(data.TOY_SIZES.values())
    assert splits.entropy == data.ENTROPY[("moons", 0.05)]
    assert not np.array_equal(splits.train[:100], splits.test[:100])


def test_digits_are_dequantised_into_the_unit_cube():
    from sklearn.datasets import load_digits

    splits = data.load_digits(seed=0)
    x = np.concatenate([splits.train, splits.val, splits.test])
    assert x.shape == (1797, 64) and x.dtype == np.float32 and splits.levels == 17
    assert [len(splits.train), len(splits.val), len(splits.test)] == [1437, 180, 180]
    assert np.all((x >= 0) & (x < 1))
    pixels = load_digits().data
    np.testing.assert_array_equal(np.sort(np.floor(x * 17).sum(1)), np.sort(pixels.sum(1)))
    assert len(np.unique(x)) > 0.9 * x.size  # continuous after dequantisation
    images = data.load_dataset("digits-images")
    assert images.train.shape == (1437, 8, 8, 1) and images.image_shape == (8, 8, 1)
    np.testing.assert_array_equal(images.train.reshape(1437, 64), splits.train)


# --- user files ----------------------------------------------------------------------------------

X = np.arange(12, dtype=np.float32).reshape(6, 2) / 7


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_npy_npz_csv_round_trip(tmp_path):
    np.save(tmp_path / "a.npy", X)
    np.savez(tmp_path / "one.npz", anything=X)
    np.savez(tmp_path / "named.npz", x=X, labels=np.arange(6))
    np.savetxt(tmp_path / "plain.csv", X, delimiter=",")
    np.savetxt(tmp_path / "header.csv", X, delimiter=",", header="a,b", comments="")
    for name in ("a.npy", "one.npz", "named.npz", "plain.csv", "header.csv"):
        np.testing.assert_allclose(data.load_array(str(tmp_path / name)), X, rtol=1e-7)


def test_integer_npy_is_promoted(tmp_path):
    np.save(tmp_path / "i.npy", np.arange(6).reshape(3, 2))
    assert data.load_array(str(tmp_path / "i.npy")).dtype == np.float32


BAD_FILES = [
    ("ragged.csv", "1,2\n3,4,5\n", "ragged CSV: line 2 has 3 fields, expected 2"),
    ("text.csv", "a,b\n1,2\n3,x\n", "line 3, column 2: 'x' is not a number"),
    ("nan.csv", "1,2\nnan,3\n4,5\n", "1 rows hold NaN or inf.*row 1"),
    ("inf.csv", "1,2\n3,inf\n", "1 rows hold NaN or inf.*row 1"),
    ("huge.csv", "1,2\n3,1e300\n", "NaN or inf \\(after conversion to float32\\)"),
    ("empty.csv", "a,b\n", "no data rows"),
    ("onecol.csv", "1\n2\n", "D >= 2"),
    ("data.txt", "1,2\n", "unknown format '.txt'"),
    ("corrupt.npy", "not numpy", "cannot read .npy file"),
]


@pytest.mark.parametrize("name, text, message", BAD_FILES)
def test_bad_text_files(tmp_path, name, text, message):
    with pytest.raises(DataError, match=message):
        data.load_array(_write(tmp_path, name, text))


def test_bad_arrays(tmp_path):
    cases = {"empty.npy": np.zeros((0, 2)), "flat.npy": np.zeros(5), "strings.npy": np.array([["a", "b"]]),
             "complex.npy": np.ones((2, 2), complex)}
    messages = {"empty.npy": "empty data", "flat.npy": "expected a 2-D array", "strings.npy": "expected real numbers",
                "complex.npy": "expected real numbers"}
    for name, array in cases.items():
        np.save(tmp_path / name, array)
        with pytest.raises(DataError, match=messages[name]):
            data.load_array(str(tmp_path / name))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="cannot read .npy"):
        data.load_array(str(tmp_path / "objects.npy"))
    np.savez(tmp_path / "two.npz", a=X, b=X)
    with pytest.raises(DataError, match="name the data 'x'"):
        data.load_array(str(tmp_path / "two.npz"))


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        data.load_array(str(tmp_path / "missing.npy"))
    with pytest.raises(DataError, match="not a file, and not one of"):
        data.load_dataset("mooons")


def test_file_split_is_fixed(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32))
    a, b = data.load_dataset(str(tmp_path / "x.npy")), data.load_dataset(str(tmp_path / "x.npy"))
    assert (len(a.train), len(a.val), len(a.test)) == (90, 10, 0)
    np.testing.assert_array_equal(a.val, b.val)
