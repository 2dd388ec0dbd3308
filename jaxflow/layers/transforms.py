"""Coupling transforms: the elementwise bijections a coupling applies to its transformed coordinates.

A transform is a frozen spec with ``P = num_params`` numbers per transformed coordinate::

    num_params -> P
    forward(x, theta) -> (y, log|dy/dx|)      x (..., n), theta (..., n, P), log-dets elementwise (..., n)
    inverse(y, theta) -> (x, log|dx/dy|)

where ``theta[..., j, p]`` is number ``p`` of coordinate ``j``. A coupling's conditioner emits
``P n`` numbers read *blocked* by number: its output index ``p n + j`` is ``theta[..., j, p]``
(for the affine map, ``[t_1..t_n | s_1..s_n]``). Every transform is the identity (or, for Glow's
``sigmoid`` scale, a fixed scale) at ``theta = 0``, so a coupling whose conditioner's last layer
is zero (``identity_init``) starts there.

========================== === ============================================ ======================
transform                   P   numbers of coordinate ``j``, in order       at ``theta = 0``
========================== === ============================================ ======================
:class:`AffineTransform`    2   ``t`` (shift), ``s`` (raw log-scale)          identity; ``sigmoid``:
                                                                              scale ``sigma(2)``
:class:`RQSpline`          3K-1 ``K`` widths, ``K`` heights, ``K - 1``       identity
                                inner-knot derivatives (unnormalised)
========================== === ============================================ ======================
"""

from __future__ import annotations

import dataclasses
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from jaxflow.core.layer import require_int
from jaxflow.core.serialize import register
from jaxflow.layers.scales import SCALES, scale_map
from jaxflow.layers.spline import identity_derivative, unconstrained_rational_quadratic_spline

__all__ = ["Transform", "AffineTransform", "RQSpline"]


class Transform:
    """Base class of coupling transforms (protocol in the module docstring)."""

    @property
    def num_params(self) -> int:
        raise NotImplementedError

    def forward(self, x: jax.Array, theta: jax.Array) -> tuple[jax.Array, jax.Array]:
        raise NotImplementedError

    def inverse(self, y: jax.Array, theta: jax.Array) -> tuple[jax.Array, jax.Array]:
        raise NotImplementedError


def _positive(owner: str, name: str, value) -> None:
    if isinstance(value, bool) or not (isinstance(value, numbers.Real) and 0 < value < np.inf):
        raise ValueError(f"{owner}: {name} must be a positive number, got {value!r}")


@register
@dataclasses.dataclass(frozen=True)
class AffineTransform(Transform):
    """``y = x e^{h(s)} + t``, ``log|dy/dx| = h(s)``; inverse ``x = (y - t) e^{-h(s)}``.

    ``theta[..., 0] = t``, ``theta[..., 1] = s``; ``h`` is the scale map ``scale``
    (:mod:`jaxflow.layers.scales`: ``"exp"``, ``"tanh"`` with ``clamp``, ``"sigmoid"``).
    At ``t = s = 0``: the identity for ``"exp"`` and ``"tanh"``, scale ``sigma(2) ~ 0.881`` for Glow's ``"sigmoid"``.
    """

    scale: str = "exp"
    clamp: float = 5.0

    def __post_init__(self):
        if self.scale not in SCALES:
            raise ValueError(f"AffineTransform: scale must be one of {SCALES}, got {self.scale!r}")
        _positive("AffineTransform", "clamp", self.clamp)

    @property
    def num_params(self) -> int:
        return 2

    def _shift_and_log_scale(self, theta):
        return theta[..., 0], scale_map(self.scale, self.clamp).log_scale(theta[..., 1])

    def forward(self, x, theta):
        t, log_scale = self._shift_and_log_scale(theta)
        return x * jnp.exp(log_scale) + t, log_scale

    def inverse(self, y, theta):
        t, log_scale = self._shift_and_log_scale(theta)
        return (y - t) * jnp.exp(-log_scale), -log_scale


@register
@dataclasses.dataclass(frozen=True)
class RQSpline(Transform):
    """The rational-quadratic spline of neural spline flows on ``[-bound, bound]``, identity tails.

    With ``K = bins``, coordinate ``j``'s ``3K - 1`` numbers are, in order, the unnormalised
    widths ``theta[..., j, :K]``, heights ``theta[..., j, K:2K]`` and inner-knot derivatives
    ``theta[..., j, 2K:]``; the derivatives enter
    :func:`~jaxflow.layers.spline.unconstrained_rational_quadratic_spline` shifted by
    ``log(e^{1 - 1e-3} - 1) ~ 0.5405`` (:func:`~jaxflow.layers.spline.identity_derivative`), so
    ``theta = 0`` gives equal bins and slope 1 at every knot: the identity. Minimal bin width,
    height and derivative are the spline's defaults, ``1e-3``.
    """

    bins: int = 8
    bound: float = 3.0

    def __post_init__(self):
        require_int("RQSpline", "bins", self.bins, 1, 999)  # K * min_bin_width must stay below 1
        _positive("RQSpline", "bound", self.bound)

    @property
    def num_params(self) -> int:
        return 3 * self.bins - 1

    def _spline(self, x, theta, inverse: bool):
        k = self.bins
        return unconstrained_rational_quadratic_spline(
            x, theta[..., :k], theta[..., k:2 * k], theta[..., 2 * k:] + identity_derivative(),
            inverse=inverse, tail_bound=self.bound)

    def forward(self, x, theta):
        return self._spline(x, theta, inverse=False)

    def inverse(self, y, theta):
        return self._spline(y, theta, inverse=True)
