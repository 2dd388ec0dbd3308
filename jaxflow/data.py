"""Datasets: built-in 2-D generators, pixel datasets (digits, MNIST, Fashion-MNIST), the user's arrays.

Nothing is downloaded here: the toys are generated from a seed, ``digits`` ships inside the
scikit-learn wheel, MNIST and Fashion-MNIST are read from the cache that ``jaxflow data fetch``
fills once (:mod:`jaxflow.pixel_data`), and files are read from disk without pickle. Pixel data
are dequantised into the unit cube, ``x = (k + u) / levels``, and their NLLs reported on the
pixel lattice (:mod:`jaxflow.units`).

Every toy has a density that can be evaluated (:meth:`Toy.log_prob`), so its differential
entropy :math:`H = -\\mathbb{E}_p[\\log p(x)]`, the smallest expected NLL any model can reach, is
computable by Monte Carlo (:func:`estimate_entropy`). The values in :data:`ENTROPY` were
produced by ``python -m jaxflow.data`` (10^6 samples each; the standard error is printed beside
them). For moons the issue quoted "about 0.288"; this estimate, 0.2901 +- 0.0007, is on the
exact density below.

============ ===================================================================== ==============
name         generator (``u ~ U(0, 1)``, ``e ~ N(0, noise^2 I)``)                   entropy (nats)
============ ===================================================================== ==============
moons        scikit-learn's two moons, ``t = pi u``: upper ``(cos t, sin t)``,       0.2901
             lower ``(1 - cos t, 1/2 - sin t)``, each w.p. 1/2, plus ``e``;
             noise 0.05
circles      radius 1 or 1/2 w.p. 1/2 each, angle ``2 pi u``, plus ``e``; noise 0.05  0.6063
8gaussians   ``N(2 (cos a_k, sin a_k), noise^2 I)``, ``a_k = k pi / 4``, w.p. 1/8;    1.6985
             noise 0.2
checkerboard uniform on the 8 black squares of side 1 of a 4 x 4 board on           log 8 (exact)
             ``[-2, 2]^2``; noise 0 (none)
spirals      two arms ``+-(t cos t, -t sin t) / 3``, ``t = 3 pi sqrt(u)``, plus ``e``; 2.5409
             noise 0.1
pinwheel     Johnson et al. (2016): 5 arms, ``r ~ N(1, 0.3^2)``, tangential          2.3173
             ``N(0, 0.1^2)``, rotated by ``2 pi k / 5 + 0.25 e^r``, times 2; noise
             is the tangential std
============ ===================================================================== ==============

The curve datasets (moons, circles, spirals) have densities
:math:`p(x) = \\sum_k w_k \\int p_k(t)\\, \\mathcal{N}(x; c_k(t), \\sigma^2 I)\\, dt`, which
:meth:`Toy.log_prob` evaluates with the midpoint rule on nodes spaced at most ``noise / 2`` along
each curve: a Gaussian mixture with one component per node. Along the interior of a curve the
rule's error is spectrally small (1e-13 in ``log p``); beyond the open end of a curve it is an
endpoint term of order ``(h / noise)^2``, growing with the distance past the end (2e-3 in
``log p`` just past a moon's tip, up to 0.1 for rare points 0.3 from a spiral's outer end). The
entropies move by 3e-6 (moons) and 5e-6 (spirals) against nodes 8 times finer. The pinwheel's
density follows from the change of variables ``(r, tau) -> x``, summed over preimages
(``_pinwheel_log_prob``).

.. warning:: scikit-learn's ``make_moons``/``make_circles`` place ``t`` on an even grid
   (``linspace``); here ``t`` is random, so that samples are i.i.d. from the density above.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np

__all__ = [
    "DataError",
    "TooFewRows",
    "Toy",
    "TOYS",
    "ENTROPY",
    "Splits",
    "toy",
    "estimate_entropy",
    "load_digits",
    "load_array",
    "load_arrays",
    "ConditionalToy",
    "CONDITIONAL_TOYS",
    "load_dataset",
    "dequantized",
    "BUILTIN",
]


class DataError(ValueError):
    """Bad data: the message names the file and the problem in one line."""


class TooFewRows(DataError):
    """A file with too few rows to split off validation data (it can still be scored whole)."""


# --- the 2-D generators ----------------------------------------------------------------------


class _Mixture(NamedTuple):
    """Gaussian mixture ``sum_i exp(log_w[i]) N(x; centers[i], noise^2 I)``; ``centers (M, 2)``."""

    centers: np.ndarray
    log_w: np.ndarray


def _gaussian_mixture_log_prob(mixture: _Mixture, noise: float, x: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """``log sum_i w_i N(x; c_i, noise^2 I)`` for ``x (N, 2)`` -> ``(N,)``, in float64."""
    out = np.empty(len(x))
    offset = mixture.log_w - np.log(2 * np.pi * noise**2) - (mixture.centers**2).sum(-1) / (2 * noise**2)
    for start in range(0, len(x), chunk):
        xs = x[start : start + chunk]
        terms = offset + (xs @ mixture.centers.T) / noise**2 - (xs**2).sum(-1, keepdims=True) / (2 * noise**2)
        top = terms.max(-1)
        out[start : start + chunk] = top + np.log(np.exp(terms - top[:, None]).sum(-1))
    return out


def _curve_mixture(curves: list[Callable[[np.ndarray], np.ndarray]], t_max: float, t_density, noise: float,
                   max_speed: float) -> _Mixture:
    """Midpoint-rule nodes of ``t in [0, t_max]`` with density ``t_density``, for curves of equal weight.

    ``max_speed`` bounds ``|dc/dt|``, so that nodes are at most ``noise / 2`` apart along a curve.
    """
    num = int(math.ceil(2 * max_speed * t_max / noise))
    t = (np.arange(num) + 0.5) * t_max / num
    w = t_density(t)
    log_w = np.log(w / w.sum() / len(curves))
    centers = np.concatenate([curve(t) for curve in curves])
    return _Mixture(centers, np.tile(log_w, len(curves)))


def _upper_moon(t):
    return np.stack([np.cos(t), np.sin(t)], -1)


def _lower_moon(t):
    return np.stack([1 - np.cos(t), 0.5 - np.sin(t)], -1)


def _circle(radius):
    return lambda t: radius * np.stack([np.cos(t), np.sin(t)], -1)


def _spiral(sign):
    return lambda t: sign * np.stack([t * np.cos(t), -t * np.sin(t)], -1) / 3


_SPIRAL_TURNS = 3 * np.pi
_uniform = np.ones_like


def _spiral_density(t):
    """``t = 3 pi sqrt(u)``, ``u ~ U(0, 1)`` has density ``2 t / (3 pi)^2``."""
    return 2 * t / _SPIRAL_TURNS**2


def _moons_sample(rng, n, noise):
    t = np.pi * rng.random(n)
    upper = rng.random(n) < 0.5
    x = np.where(upper[:, None], _upper_moon(t), _lower_moon(t))
    return x + noise * rng.standard_normal((n, 2))


def _circles_sample(rng, n, noise):
    t = 2 * np.pi * rng.random(n)
    radius = np.where(rng.random(n) < 0.5, 1.0, 0.5)
    return radius[:, None] * _circle(1.0)(t) + noise * rng.standard_normal((n, 2))


_EIGHT_ANGLES = np.arange(8) * np.pi / 4
_EIGHT_CENTERS = 2 * np.stack([np.cos(_EIGHT_ANGLES), np.sin(_EIGHT_ANGLES)], -1)


def _eight_sample(rng, n, noise):
    return _EIGHT_CENTERS[rng.integers(0, 8, n)] + noise * rng.standard_normal((n, 2))


def _checkerboard_squares() -> np.ndarray:
    """Lower-left corners ``(8, 2)`` of the black squares: ``floor(x) + floor(y)`` even on ``[-2, 2]^2``."""
    corners = np.stack(np.meshgrid(np.arange(-2, 2), np.arange(-2, 2), indexing="ij"), -1).reshape(-1, 2)
    return corners[corners.sum(-1) % 2 == 0].astype(float)


def _checkerboard_sample(rng, n, noise):
    del noise
    squares = _checkerboard_squares()
    return squares[rng.integers(0, len(squares), n)] + rng.random((n, 2))


def _checkerboard_log_prob(x, noise):
    del noise
    on_black = (np.floor(x).sum(-1) % 2 == 0) & np.all(np.abs(x) <= 2, -1)
    return np.where(on_black, -np.log(len(_checkerboard_squares())), -np.inf)


def _spirals_sample(rng, n, noise):
    t = _SPIRAL_TURNS * np.sqrt(rng.random(n))
    sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    return sign[:, None] * _spiral(1.0)(t) + noise * rng.standard_normal((n, 2))


_ARMS, _RADIAL_STD, _RATE = 5, 0.3, 0.25


def _pinwheel_sample(rng, n, noise):
    """``x = 2 R(2 pi k / 5 + rate e^r) (r, tau)``, ``r ~ N(1, 0.3^2)``, ``tau ~ N(0, noise^2)``."""
    r = 1 + _RADIAL_STD * rng.standard_normal(n)
    tau = noise * rng.standard_normal(n)
    angle = 2 * np.pi * rng.integers(0, _ARMS, n) / _ARMS + _RATE * np.exp(r)
    cos, sin = np.cos(angle), np.sin(angle)
    return 2 * np.stack([cos * r - sin * tau, sin * r + cos * tau], -1)


def _normal_pdf(value, mean, std):
    return np.exp(-0.5 * ((value - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))


def _pinwheel_log_prob(x, noise, chunk=256):
    """Change of variables summed over preimages: with ``y = x / 2 = rho (cos a, sin a)``, arm ``k``'s
    preimages are the roots ``r`` of ``F(r) = r - rho cos(psi(r))``, ``psi(r) = a - 2 pi k / 5 - rate e^r``,
    with ``tau = rho sin(psi(r))`` and ``|det d y / d(r, tau)| = |1 - rate e^r tau| = |F'(r)|``:

    .. math:: p(x) = \\frac{1}{4 \\cdot 5} \\sum_k \\sum_{F(r) = 0}
              \\frac{\\mathcal{N}(r; 1, 0.3^2)\\, \\mathcal{N}(\\tau; 0, \\text{noise}^2)}{|F'(r)|}.

    Roots are bracketed on a grid of ``r`` over ``1 +- 6 * 0.3`` (spacing 0.003; the mass beyond is
    2e-9), found by linear interpolation and one Newton step kept inside the bracket.
    """
    y = x / 2
    rho, alpha = np.hypot(y[:, 0], y[:, 1]), np.arctan2(y[:, 1], y[:, 0])
    grid = 1 + _RADIAL_STD * np.linspace(-6, 6, 1201)
    arm = 2 * np.pi * np.arange(_ARMS) / _ARMS
    density = np.zeros(len(x))
    for start in range(0, len(x), chunk):
        rows = slice(start, start + chunk)
        f = grid - rho[rows, None, None] * np.cos(alpha[rows, None, None] - arm[:, None] - _RATE * np.exp(grid))
        i, k, j = np.nonzero(f[..., :-1] * f[..., 1:] < 0)
        r = grid[j] - f[i, k, j] * (grid[j + 1] - grid[j]) / (f[i, k, j + 1] - f[i, k, j])
        i = i + start
        psi = alpha[i] - arm[k] - _RATE * np.exp(r)
        slope = 1 - _RATE * np.exp(r) * rho[i] * np.sin(psi)
        r = np.clip(r - (r - rho[i] * np.cos(psi)) / slope, grid[j], grid[j + 1])
        psi = alpha[i] - arm[k] - _RATE * np.exp(r)
        tau = rho[i] * np.sin(psi)
        jacobian = np.abs(1 - _RATE * np.exp(r) * tau)
        np.add.at(density, i, _normal_pdf(r, 1, _RADIAL_STD) * _normal_pdf(tau, 0, noise) / jacobian)
    with np.errstate(divide="ignore"):
        return np.log(density / (4 * _ARMS))


def _mixture_log_prob(make: Callable[[float], _Mixture]):
    return lambda x, noise: _gaussian_mixture_log_prob(make(noise), noise, x)


_MIXTURES: dict[str, Callable[[float], _Mixture]] = {
    "moons": lambda noise: _curve_mixture([_upper_moon, _lower_moon], np.pi, _uniform, noise, 1.0),
    "circles": lambda noise: _curve_mixture([_circle(1.0), _circle(0.5)], 2 * np.pi, _uniform, noise, 1.0),
    "8gaussians": lambda noise: _Mixture(_EIGHT_CENTERS, np.full(8, -np.log(8))),
    "spirals": lambda noise: _curve_mixture(
        [_spiral(1.0), _spiral(-1.0)], _SPIRAL_TURNS, _spiral_density, noise,
        math.hypot(1, _SPIRAL_TURNS) / 3),
}


@dataclasses.dataclass(frozen=True)
class Toy:
    """A built-in 2-D distribution: ``sample(n, seed) -> (n, 2)`` float32, ``log_prob(x) -> (n,)`` float64."""

    name: str
    noise: float
    _sample: Callable
    _log_prob: Callable

    def sample(self, n: int, seed: int, dtype=np.float32) -> np.ndarray:
        """``n`` i.i.d. draws, a pure function of ``seed``."""
        return self._sample(np.random.default_rng(seed), n, self.noise).astype(dtype)

    def log_prob(self, x) -> np.ndarray:
        """The generator's true log-density at ``x (N, 2)``."""
        return self._log_prob(np.asarray(x, np.float64), self.noise)

    @property
    def entropy(self) -> Optional[float]:
        """True differential entropy in nats at this noise (from :data:`ENTROPY`), or ``None``."""
        return ENTROPY.get((self.name, self.noise))


_DEFAULT_NOISE = {"moons": 0.05, "circles": 0.05, "8gaussians": 0.2, "checkerboard": 0.0, "spirals": 0.1,
                  "pinwheel": 0.1}
_SAMPLERS = {"moons": _moons_sample, "circles": _circles_sample, "8gaussians": _eight_sample,
             "checkerboard": _checkerboard_sample, "spirals": _spirals_sample, "pinwheel": _pinwheel_sample}
_LOG_PROBS = {name: _mixture_log_prob(make) for name, make in _MIXTURES.items()}
_LOG_PROBS["checkerboard"] = _checkerboard_log_prob
_LOG_PROBS["pinwheel"] = _pinwheel_log_prob

TOYS = tuple(_SAMPLERS)

#: ``(name, noise) -> entropy`` in nats: Monte Carlo with 10^6 samples (``python -m jaxflow.data``,
#: standard errors beside), except checkerboard, which is exactly log 8 (uniform on area 8).
ENTROPY: dict[tuple[str, float], float] = {
    ("moons", 0.05): 0.2901,  # +- 0.0007
    ("circles", 0.05): 0.6063,  # +- 0.0008
    ("8gaussians", 0.2): 1.6985,  # +- 0.0010; well-separated limit log 8 + log(2 pi e 0.2^2) = 1.6983
    ("checkerboard", 0.0): math.log(8),
    ("spirals", 0.1): 2.5409,  # +- 0.0007
    ("pinwheel", 0.1): 2.3173,  # +- 0.0010
}


def toy(name: str, noise: Optional[float] = None) -> Toy:
    """The built-in toy ``name`` (one of :data:`TOYS`) at ``noise`` (default: its documented level)."""
    if name not in _SAMPLERS:
        raise DataError(f"unknown dataset {name!r}; built-in: {', '.join(TOYS + ('digits',))}")
    noise = _DEFAULT_NOISE[name] if noise is None else float(noise)
    if noise < 0 or (noise == 0 and name != "checkerboard"):
        raise DataError(f"{name}: noise must be > 0, got {noise}")
    return Toy(name, noise, _SAMPLERS[name], _LOG_PROBS[name])


def estimate_entropy(dataset: Toy, num_samples: int = 100_000, seed: int = 0) -> tuple[float, float]:
    """Monte Carlo :math:`H = -\\frac1N \\sum_n \\log p(x_n)`, ``x_n ~ p``: returns ``(H, standard error)``."""
    log_p = dataset.log_prob(dataset.sample(num_samples, seed, np.float64))
    return float(-log_p.mean()), float(log_p.std(ddof=1) / math.sqrt(num_samples))


# --- a conditional toy ------------------------------------------------------------------------

#: centre of the moons (the mean of their two curves), the point the conditional toy rotates about
MOONS_CENTER = np.array([0.5, 0.25])


@dataclasses.dataclass(frozen=True)
class ConditionalToy:
    """``rotated-moons``: moons rotated about their centre ``m`` by the context ``theta ~ U(0, pi)``.

    ``x = m + R(theta) (y - m)``, ``y ~ moons(noise)``. A rotation keeps volume, so the exact
    conditional density is ``log p(x | theta) = log p_moons(m + R(-theta) (x - m))`` and the
    conditional entropy ``H(X | C)`` equals the moons' entropy at every ``theta``: the smallest
    expected NLL any conditional model can reach.
    """

    name: str = "rotated-moons"
    noise: float = 0.05

    def sample(self, n: int, seed: int, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
        """``(x (n, 2), theta (n, 1))``, a pure function of ``seed``."""
        rng = np.random.default_rng(seed)
        theta = np.pi * rng.random(n)
        x = _rotate(_moons_sample(rng, n, self.noise), theta)
        return x.astype(dtype), theta[:, None].astype(dtype)

    def log_prob(self, x, context) -> np.ndarray:
        """``log p(x | theta)`` for ``x (N, 2)`` and ``context (N, 1)``, float64."""
        theta = np.asarray(context, np.float64)[:, 0]
        return toy("moons", self.noise).log_prob(_rotate(np.asarray(x, np.float64), -theta))

    @property
    def entropy(self) -> Optional[float]:
        """``H(X | C)`` in nats (the moons' entropy at this noise), or ``None``."""
        return ENTROPY.get(("moons", self.noise))


def _rotate(x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """``m + R(theta) (x - m)`` per row."""
    cos, sin = np.cos(theta), np.sin(theta)
    u = x - MOONS_CENTER
    return MOONS_CENTER + np.stack([cos * u[:, 0] - sin * u[:, 1], sin * u[:, 0] + cos * u[:, 1]], -1)


CONDITIONAL_TOYS = {"rotated-moons": ConditionalToy()}


# --- real data and the user's files ----------------------------------------------------------


class Splits(NamedTuple):
    """A dataset split three ways, each ``(N_i, D)`` or ``(N_i, H, W, C)`` float32; ``entropy``: the true
    one in nats or ``None`` (for a conditional dataset ``H(X | C)``); ``*_context``: each split's context
    ``(N_i, C)``, or ``None``; ``levels``: for dequantised pixels ``x = (k + u) / levels`` in the unit
    cube, the number of pixel values (:mod:`jaxflow.units`: NLLs are reported on that lattice), else
    ``None``; ``image_shape``: the ``(H, W, C)`` an example's coordinates come from (a vector form of
    an image lays them out row-major), else ``None``."""

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    entropy: Optional[float] = None
    train_context: Optional[np.ndarray] = None
    val_context: Optional[np.ndarray] = None
    test_context: Optional[np.ndarray] = None
    levels: Optional[int] = None
    image_shape: Optional[tuple[int, int, int]] = None

    @property
    def event_shape(self) -> tuple[int, ...]:
        """The shape of one example, ``(D,)`` or ``(H, W, C)``."""
        return tuple(self.train.shape[1:])

    def context(self, split: str) -> Optional[np.ndarray]:
        """The context of ``split`` (``"train"``, ``"val"`` or ``"test"``)."""
        return getattr(self, f"{split}_context")


def _split_rows(x: np.ndarray, name: str, val_fraction: float, test_fraction: float, seed: int = 0,
                context: Optional[np.ndarray] = None) -> Splits:
    """Shuffle rows (and their context) with ``seed`` and cut them into train/val/test by the given fractions."""
    perm = np.random.default_rng(seed).permutation(len(x))
    num_val, num_test = int(round(val_fraction * len(x))), int(round(test_fraction * len(x)))
    if len(x) - num_val - num_test < 2 or (val_fraction > 0 and num_val == 0):
        raise TooFewRows(f"{name}: {len(x)} rows are too few to split off validation data")
    cut = lambda a: np.split(a[perm], [num_val, num_val + num_test])
    val, test, train = cut(x)
    if context is None:
        return Splits(name, train, val, test)
    val_c, test_c, train_c = cut(context)
    return Splits(name, train, val, test, None, train_c, val_c, test_c)


DIGITS_LEVELS = 17  # scikit-learn's digits are 8x8 pixels with values 0..16


def load_digits(seed: int = 0, images: bool = False, labels: bool = False) -> Splits:
    """scikit-learn's 8x8 digits (1797 images, pixels ``k`` in 0..16), dequantised into the unit
    cube: ``x = (k + u) / 17`` (:func:`jaxflow.units.dequantize`), ``(N, 64)`` or with ``images``
    ``(N, 8, 8, 1)``; NLLs are reported on the pixel lattice (``levels = 17``). Rows are split
    80/10/10 (a fixed order); ``seed`` draws the dequantisation noise. With ``labels`` each
    row's digit ``0..9`` comes one-hot as its context ``(N, 10)`` (the same rows in each split).
    """
    from sklearn.datasets import load_digits as sklearn_digits

    from jaxflow.units import dequantize

    digits = sklearn_digits()
    x = dequantize(digits.data.astype(np.int64), DIGITS_LEVELS, seed)
    context = np.eye(10, dtype=np.float32)[digits.target] if labels else None
    splits = _split_rows(x.reshape(-1, 8, 8, 1) if images else x, "digits-images" if images else "digits", 0.1, 0.1,
                         context=context)
    return splits._replace(levels=DIGITS_LEVELS, image_shape=(8, 8, 1))


def _read_csv(path: str) -> np.ndarray:
    """Numeric CSV, comma separated; the first row is a header if any of its cells is not a number."""
    with open(path, newline="") as handle:
        rows = [(line, row) for line, row in enumerate(csv.reader(handle), 1) if row]
    if rows and not all(_is_number(cell) for cell in rows[0][1]):
        rows = rows[1:]
    if not rows:
        raise DataError(f"{path}: no data rows")
    width = len(rows[0][1])
    values = np.empty((len(rows), width))
    for i, (line, row) in enumerate(rows):
        if len(row) != width:
            raise DataError(f"{path}: ragged CSV: line {line} has {len(row)} fields, expected {width}")
        for j, cell in enumerate(row):
            if not _is_number(cell):
                raise DataError(f"{path}: line {line}, column {j + 1}: {cell.strip()!r} is not a number")
            values[i, j] = float(cell)
    return values


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _read_npz(path: str) -> tuple[np.ndarray, Optional[np.ndarray]]:
    with np.load(path, allow_pickle=False) as archive:
        keys = list(archive.keys())
        if "x" in keys:
            return archive["x"], archive["context"] if "context" in keys else None
        if len(keys) == 1:
            return archive[keys[0]], None
        raise DataError(f"{path}: .npz holds {keys}; store one array, or name the data 'x' (and its context 'context')")


_READERS = {".npy": lambda path: (np.load(path, allow_pickle=False), None), ".npz": _read_npz,
            ".csv": lambda path: (_read_csv(path), None)}


def _checked(x, path: str, what: str, min_columns: int) -> np.ndarray:
    """``x`` as finite float32 ``(N, D)``, ``D >= min_columns`` (data may also be images ``(N, H, W, C)``),
    or a one-line :class:`DataError`.

    ``what`` is ``"data"`` or ``"context"``; messages about the context say so.
    """
    x = np.asarray(x)
    of = "" if what == "data" else f" in the {what}"
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or np.issubdtype(x.dtype, np.complexfloating) \
            or np.issubdtype(x.dtype, np.timedelta64):
        raise DataError(f"{path}: expected real numbers{of}, got dtype {x.dtype}")
    if x.ndim != 2 and not (what == "data" and x.ndim == 4):
        images = " or images (N, H, W, C)" if what == "data" else ""
        raise DataError(f"{path}: expected a 2-D array (N, D){images}{of}, got shape {x.shape}")
    if x.shape[0] == 0 or 0 in x.shape[1:]:
        raise DataError(f"{path}: empty {what}, shape {x.shape}")
    if x.ndim == 2 and x.shape[1] < min_columns:
        raise DataError(f"{path}: a flow needs D >= {min_columns} columns{of}, got shape {x.shape}")
    with np.errstate(over="ignore"):  # overflow becomes inf, reported next
        x = x.astype(np.float32)
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(-1)
    if bad.any():
        raise DataError(f"{path}: {bad.sum()} rows{of} hold NaN or inf (after conversion to float32), "
                        f"the first is row {np.flatnonzero(bad)[0]} (0-based)")
    return x


def load_arrays(path: str, context_columns: Optional[Sequence[int]] = None) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Read ``x (N, D)`` and its context ``(N, C)`` (or ``None``) from ``.npy``, ``.npz`` or ``.csv``; float32.

    The context is the ``.npz`` key ``context`` beside ``x``, or the columns ``context_columns``
    (0-based) of the file's one array. Raises :class:`DataError` with a one-line message for
    every bad input: a missing file, an unknown extension, unreadable content, pickled objects,
    non-numeric or ragged values, a shape other than ``(N, D)`` with ``N >= 1`` and ``D >= 2``,
    rows with NaN or inf, and a context whose rows do not match.
    """
    ext = os.path.splitext(path)[1].lower()
    if ext not in _READERS:
        raise DataError(f"{path}: unknown format {ext or '(no extension)'!r}; use .npy, .npz or .csv")
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    try:
        x, context = _READERS[ext](path)
        x = np.asarray(x)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot read {ext} file: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    if context_columns:
        if context is not None:
            raise DataError(f"{path}: holds a 'context' array; --context-columns is for files of one array")
        columns = list(context_columns)
        width = x.shape[1] if x.ndim == 2 else 0
        if any(not 0 <= j < width for j in columns) or len(set(columns)) != len(columns):
            raise DataError(f"{path}: context columns {columns} must be distinct, in 0..{width - 1}")
        context, x = x[:, columns], np.delete(x, columns, axis=1)
    return _with_context(x, context, path)


def _with_context(x, context, path: str) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """The checked data (:func:`_checked`) and context, which must have as many rows."""
    x = _checked(x, path, "data", 2)
    if context is None:
        return x, None
    context = _checked(context, path, "context", 1)
    if len(context) != len(x):
        raise DataError(f"{path}: the context has {len(context)} rows, the data {len(x)}")
    return x, context


def load_array(path: str) -> np.ndarray:
    """The data ``x (N, D)`` of :func:`load_arrays`, for files without a context."""
    return load_arrays(path)[0]


#: The pixel datasets: name -> (loader source, images?). Digits ship in scikit-learn; MNIST and
#: Fashion-MNIST are fetched once (:mod:`jaxflow.pixel_data`).
PIXEL_BUILTIN = {"digits": ("digits", False), "digits-images": ("digits", True),
                 "mnist": ("mnist", True), "mnist-vectors": ("mnist", False),
                 "fashion-mnist": ("fashion-mnist", True), "fashion-mnist-vectors": ("fashion-mnist", False)}

#: Built-in dataset names: the toys, the conditional toys and the pixel datasets.
BUILTIN = TOYS + tuple(CONDITIONAL_TOYS) + tuple(PIXEL_BUILTIN)

#: Sizes of the built-in toys' splits (each drawn with its own fixed seed).
TOY_SIZES = {"train": 50_000, "val": 5_000, "test": 50_000}

#: levels of 8-bit images
BYTE_LEVELS = 256


def _pixel_splits(name: str, source: str, images: bool) -> Splits:
    """A fetched 28x28 dataset, dequantised ``x = (k + u) / 256``, each split with its own seed (0, 1, 2)."""
    from jaxflow.pixel_data import load_pixels
    from jaxflow.units import dequantize

    pixels = load_pixels(source)
    parts = []
    for seed, split in enumerate(("train", "val", "test")):
        x = dequantize(pixels[split], BYTE_LEVELS, seed)
        parts.append(x if images else x.reshape(len(x), -1))
    return Splits(name, *parts, levels=BYTE_LEVELS, image_shape=tuple(pixels["train"].shape[1:]))


def _as_pixels(x: np.ndarray, levels: int, path: str) -> np.ndarray:
    """``x`` as integer pixels in ``[0, levels)``, or a one-line :class:`DataError`."""
    if not 2 <= levels <= 2**16:
        raise DataError(f"--levels must be in [2, 65536], got {levels}")
    if not np.all(x == np.round(x)) or x.min() < 0 or x.max() > levels - 1:
        bad = np.flatnonzero(~((x == np.round(x)) & (x >= 0) & (x <= levels - 1)).reshape(len(x), -1).all(1))[0]
        raise DataError(f"{path}: pixel data must be integers in [0, {levels - 1}] (--levels {levels}); "
                        f"row {bad} is not")
    return x.astype(np.int64)


def _read_fixed_splits(path: str) -> Optional[dict]:
    """The arrays of an ``.npz`` with keys ``train``, ``val`` (and ``test``; each optionally with
    ``<split>_context``), or ``None`` for any other file."""
    if os.path.splitext(path)[1].lower() != ".npz" or not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "train" not in archive.keys():
                return None
            allowed = {"train", "val", "test", "train_context", "val_context", "test_context"}
            unknown = sorted(set(archive.keys()) - allowed)
            if unknown or "val" not in archive.keys():
                raise DataError(f"{path}: a fixed split needs keys 'train' and 'val' (and 'test', "
                                f"'<split>_context'); got {sorted(archive.keys())}")
            return {key: archive[key] for key in archive.keys()}
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: cannot read .npz file: {err}") from None


def load_dataset(source: str, val_fraction: float = 0.1, test_fraction: float = 0.0,
                 context_columns: Optional[Sequence[int]] = None, levels: Optional[int] = None) -> Splits:
    """``source`` is a built-in name (:data:`BUILTIN`) or a file path (:func:`load_arrays`).

    A toy's splits are independent draws with seeds 0/1/2 (sizes :data:`TOY_SIZES`). A file's
    rows (with their context) are shuffled with seed 0 and cut by ``val_fraction`` and
    ``test_fraction``, unless it is an ``.npz`` holding the split itself (keys ``train``, ``val``,
    ``test``, and ``<split>_context``). With ``levels``, a file holds integer pixels in
    ``[0, levels)``, dequantised into the unit cube as the built-in images are (split ``i`` with
    seed ``i``), and its NLLs are reported on their lattice.
    """
    if source in BUILTIN:
        _refuse_file_options(source, context_columns, levels)
    if source in TOYS:
        dataset = toy(source)
        train, val, test = (dataset.sample(TOY_SIZES[split], seed) for seed, split in enumerate(TOY_SIZES))
        return Splits(source, train, val, test, dataset.entropy)
    if source in CONDITIONAL_TOYS:
        dataset = CONDITIONAL_TOYS[source]
        (train, c_train), (val, c_val), (test, c_test) = (dataset.sample(TOY_SIZES[split], seed)
                                                          for seed, split in enumerate(TOY_SIZES))
        return Splits(source, train, val, test, dataset.entropy, c_train, c_val, c_test)
    if source in PIXEL_BUILTIN:
        loader, images = PIXEL_BUILTIN[source]
        return load_digits(images=images) if loader == "digits" else _pixel_splits(source, loader, images)
    if os.path.splitext(source)[1] == "" and not os.path.exists(source):
        raise DataError(f"unknown dataset {source!r}: not a file, and not one of {', '.join(BUILTIN)}")
    fixed = _read_fixed_splits(source)
    if fixed is not None:
        if context_columns:
            raise DataError(f"{source}: holds a fixed split; --context-columns is for files of one array")
        parts = {}
        for split in ("train", "val", "test"):
            x, context = fixed.get(split), fixed.get(f"{split}_context")
            if x is None:
                parts[split], parts[f"{split}_context"] = np.zeros((0,) + fixed["train"].shape[1:], np.float32), None
                continue
            parts[split], parts[f"{split}_context"] = _with_context(x, context, f"{source}[{split}]")
        shapes = {parts[split].shape[1:] for split in ("train", "val", "test")}
        if len(shapes) != 1:
            raise DataError(f"{source}: the splits' examples have different shapes {sorted(shapes)}")
        splits = Splits(source, parts["train"], parts["val"], parts["test"], None,
                        parts["train_context"], parts["val_context"], parts["test_context"])
    else:
        x, context = load_arrays(source, context_columns)
        splits = _split_rows(x, source, val_fraction, test_fraction, context=context)
    return splits if levels is None else dequantized(splits, levels)


def _refuse_file_options(name: str, context_columns: Optional[Sequence[int]], levels: Optional[int]) -> None:
    """A built-in carries its own context and pixel levels: ``--context-columns`` and ``--levels`` are for files."""
    given = [flag for flag, value in (("--context-columns", context_columns), ("--levels", levels))
             if value is not None]
    if given:
        raise DataError(f"{' and '.join(given)}: for data files only; {name} is a built-in dataset "
                        "(it carries its own context and units)")


def dequantized(splits: Splits, levels: int) -> Splits:
    """``splits`` of integer pixels in ``[0, levels)`` dequantised into the unit cube (split ``i`` with
    seed ``i``); a one-line :class:`DataError` for other values."""
    from jaxflow.units import dequantize

    parts = {split: dequantize(_as_pixels(getattr(splits, split), levels, splits.name), levels, seed)
             for seed, split in enumerate(("train", "val", "test")) if len(getattr(splits, split))}
    image_shape = splits.event_shape if len(splits.event_shape) == 3 else None
    return splits._replace(**parts, levels=levels, image_shape=image_shape)


def _print_entropy_table(num_samples: int = 1_000_000) -> None:
    """The script behind :data:`ENTROPY`: ``python -m jaxflow.data``."""
    for name in TOYS:
        dataset = toy(name)
        entropy, stderr = estimate_entropy(dataset, num_samples, seed=12345)
        print(f"{name:13s} noise {dataset.noise:<5g} H = {entropy:.4f} +- {stderr:.4f} nats", flush=True)


if __name__ == "__main__":
    _print_entropy_table()
