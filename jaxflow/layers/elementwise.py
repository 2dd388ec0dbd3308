"""Per-coordinate affine maps of the last axis: fixed (:class:`Affine`) and learned (:class:`ActNorm`).

Both are :math:`z = (x - \\mu) \\odot e^{-\\ell}` on the last axis of the event (its features, or
an image's channels), with the same :math:`\\mu, \\ell` at every other event position:

.. math::

    \\log\\left|\\det \\frac{\\partial z}{\\partial x}\\right| = -P \\sum_j \\ell_j, \\qquad
    P = \\prod(\\text{event\\_shape}[:-1]), \\qquad x = \\mu + z \\odot e^{\\ell}.

:class:`Affine` holds ``shift`` :math:`\\mu` and ``scale`` :math:`e^{\\ell}` in its spec (no
parameters): the trainer puts the standardisation of the data at the front of a flow this way,
so every likelihood is in the data's units. :class:`ActNorm` learns them (Glow's activation
normalisation); with ``data`` at :func:`jaxflow.init` it starts at the batch's mean and standard
deviation, so that batch comes out with mean 0 and variance 1.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxflow.core.layer import MIN_POSITIVE, Layer, batch_shape, require_real

__all__ = ["Affine", "ActNorm"]


def _log_det(x, log_scale, event_shape) -> jax.Array:
    """``-P sum(log_scale)`` in ``x``'s batch shape (a scalar ``log_scale`` counts once per coordinate)."""
    log_scale = jnp.broadcast_to(log_scale, tuple(event_shape[-1:]))
    return jnp.broadcast_to(-math.prod(event_shape[:-1]) * log_scale.sum(), batch_shape(x, event_shape))


def _forward(x, shift, log_scale, event_shape):
    return (x - shift) * jnp.exp(-log_scale), _log_det(x, log_scale, event_shape)


def _inverse(z, shift, log_scale, event_shape):
    return shift + z * jnp.exp(log_scale), -_log_det(z, log_scale, event_shape)


Numbers = Union[float, tuple[float, ...]]


def _as_floats(owner: str, name: str, value) -> Numbers:
    values = np.asarray(value, dtype=object)
    if values.ndim > 1 or values.size == 0:
        raise ValueError(f"{owner}: {name} must be a number or a flat tuple of numbers, got {value!r}")
    items = [values.item()] if values.ndim == 0 else list(values)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, numbers.Real) or not math.isfinite(item):
            raise ValueError(f"{owner}: {name} must hold finite numbers, got {item!r}")
        require_real(owner, f"each {name}", item)
    floats = tuple(float(item) for item in items)
    return floats[0] if values.ndim == 0 else floats


@dataclasses.dataclass(frozen=True)
class Affine(Layer):
    """Fixed ``z = (x - shift) / scale`` per coordinate of the last axis; ``scale > 0``.

    ``shift`` and ``scale`` are numbers or tuples of the last axis' size.
    """

    shift: Numbers = 0.0
    scale: Numbers = 1.0

    def __post_init__(self):
        object.__setattr__(self, "shift", _as_floats("Affine", "shift", self.shift))
        object.__setattr__(self, "scale", _as_floats("Affine", "scale", self.scale))
        if min(np.atleast_1d(self.scale)) <= 0:
            raise ValueError(f"Affine: scale must be > 0, got {self.scale!r}")
        require_real("Affine", "each scale", float(min(np.atleast_1d(self.scale))), MIN_POSITIVE, what="a positive number")

    def check(self, event_shape, context_dim):
        for name in ("shift", "scale"):
            value = getattr(self, name)
            if isinstance(value, tuple) and len(value) != event_shape[-1]:
                raise ValueError(f"Affine: {name} has {len(value)} entries, the event's last axis has {event_shape[-1]}")

    def _arrays(self, dtype):
        return jnp.asarray(self.shift, dtype), jnp.log(jnp.asarray(self.scale, dtype))

    def forward(self, params, x, context, event_shape):
        return _forward(x, *self._arrays(x.dtype), event_shape)

    def inverse(self, params, z, context, event_shape):
        return _inverse(z, *self._arrays(z.dtype), event_shape)


@dataclasses.dataclass(frozen=True)
class ActNorm(Layer):
    """Learned ``z = (x - shift) * exp(-log_scale)`` per coordinate of the last axis.

    Parameters ``{"shift": (K,), "log_scale": (K,)}``, ``K = event_shape[-1]``: zeros (the
    identity), or with ``data`` at init the data's mean and log standard deviation over every
    axis but the last.
    """

    def init(self, key, event_shape, context_dim, dtype, data=None, context=None):
        size = event_shape[-1]
        if data is None:
            return {"shift": jnp.zeros(size, dtype), "log_scale": jnp.zeros(size, dtype)}
        rows = data.reshape(-1, size)
        std = rows.std(0)
        return {"shift": rows.mean(0), "log_scale": jnp.log(jnp.where(std > 0, std, 1))}  # constant: scale 1

    def forward(self, params, x, context, event_shape):
        return _forward(x, params["shift"], params["log_scale"], event_shape)

    def inverse(self, params, z, context, event_shape):
        return _inverse(z, params["shift"], params["log_scale"], event_shape)
