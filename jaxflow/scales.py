"""Scale maps: how the conditioner's raw output ``s`` becomes the log-scale of the coupling.

Every option is written as a log-scale ``ls = h(s)``, so that all couplings share one form:

.. math::

    z_2 = x_2 \\odot e^{h(s)} + t, \\qquad \\log\\left|\\det \\frac{\\partial z}{\\partial x}\\right|
    = \\sum_j h(s_j).

======== ============================================ ============================ ==============
name     :math:`h(s)`                                 scale range                  origin
======== ============================================ ============================ ==============
exp      :math:`s`                                    :math:`(0, \\infty)`          the article
tanh     :math:`c \\tanh(s / c)`                       :math:`(e^{-c}, e^{c})`       soft clamp
sigmoid  :math:`\\log \\sigma(s + 2)`                   :math:`(0, 1)`               Glow
======== ============================================ ============================ ==============

``exp`` is unbounded and overflows easily in training; ``tanh`` (a smooth soft clamp with
slope 1 at the origin) and ``sigmoid`` are the stable remedies. ``exp`` and ``tanh`` are the
identity at ``s = 0``; Glow's ``sigmoid`` gives scale :math:`\\sigma(2) \\approx 0.881` there.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

__all__ = ["SCALES", "log_scale"]

SCALES = ("exp", "tanh", "sigmoid")


def _exp(s: jax.Array, clamp: float) -> jax.Array:
    del clamp
    return s


def _tanh(s: jax.Array, clamp: float) -> jax.Array:
    return clamp * jnp.tanh(s / clamp)


def _sigmoid(s: jax.Array, clamp: float) -> jax.Array:
    del clamp
    return jax.nn.log_sigmoid(s + 2)


_LOG_SCALES: dict[str, Callable[[jax.Array, float], jax.Array]] = {
    "exp": _exp,
    "tanh": _tanh,
    "sigmoid": _sigmoid,
}


def log_scale(name: str, s: jax.Array, clamp: float) -> jax.Array:
    """Log-scale ``h(s)`` of the scale map ``name``; elementwise, same shape as ``s``."""
    return _LOG_SCALES[name](s, clamp)
