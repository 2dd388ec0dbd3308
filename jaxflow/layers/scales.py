"""Scale maps: how the conditioner's raw output ``s`` becomes the log-scale of an affine coupling.

Every option is a log-scale ``h(s)``, so that all couplings share one form:

.. math::

    z_T = x_T \\odot e^{h(s)} + t, \\qquad \\log\\left|\\det \\frac{\\partial z}{\\partial x}\\right|
    = \\sum_j h(s_j).

======== ============================================ ============================ ==============
name     :math:`h(s)`                                 scale range                  origin
======== ============================================ ============================ ==============
exp      :math:`s`                                    :math:`(0, \\infty)`          the article
tanh     :math:`c \\tanh(s / c)`                       :math:`(e^{-c}, e^{c})`       soft clamp
sigmoid  :math:`\\log \\sigma(s + 2)`                   :math:`(0, 1)`               Glow
======== ============================================ ============================ ==============

``exp`` is unbounded and overflows easily in training (a finite input of 1e10 can give inf and
then NaN); ``tanh`` (a smooth soft clamp with slope 1 at the origin) and ``sigmoid`` are the
stable remedies. ``exp`` and ``tanh`` are the identity at ``s = 0``; Glow's ``sigmoid`` gives
scale :math:`\\sigma(2) \\approx 0.881` there.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxflow.layers.names import SCALES

__all__ = ["SCALES", "ExpScale", "TanhScale", "SigmoidScale", "scale_map"]


@dataclasses.dataclass(frozen=True)
class ExpScale:
    """``h(s) = s``: the article's ``e^s``."""

    def log_scale(self, s: jax.Array) -> jax.Array:
        return s


@dataclasses.dataclass(frozen=True)
class TanhScale:
    """``h(s) = clamp * tanh(s / clamp)``: ``|log-scale| < clamp``."""

    clamp: float

    def log_scale(self, s: jax.Array) -> jax.Array:
        return self.clamp * jnp.tanh(s / self.clamp)


@dataclasses.dataclass(frozen=True)
class SigmoidScale:
    """``h(s) = log sigmoid(s + 2)``: Glow's scale in ``(0, 1)``."""

    def log_scale(self, s: jax.Array) -> jax.Array:
        return jax.nn.log_sigmoid(s + 2)


def scale_map(name: str, clamp: float):
    """The scale map called ``name`` (one of :data:`SCALES`); ``clamp`` is used by ``"tanh"`` only."""
    return {"exp": ExpScale, "tanh": lambda: TanhScale(clamp), "sigmoid": SigmoidScale}[name]()
