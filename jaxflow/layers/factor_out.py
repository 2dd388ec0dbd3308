"""Factoring out half of the channels (the RealNVP paper's multi-scale step, section 3.6).

``FactorOut(layer)`` on events ``x (..., *spatial, C)`` sends the first ``k = C // 2`` channels
to the latent unchanged and applies ``layer`` (any layer or composition that keeps its event
shape) to the other ``C - k``:

.. math::

    z = \\operatorname{concat}(x_{[:k]},\\; f_{\\text{layer}}(x_{[k:]})), \\qquad
    \\log\\left|\\det \\frac{\\partial z}{\\partial x}\\right| =
    \\log\\left|\\det \\frac{\\partial f_{\\text{layer}}}{\\partial x_{[k:]}}\\right|,

and inverse ``x = concat(z_[:k], g_layer(z_[k:]))``. The factored coordinates stay in the event
(the latent keeps the data's shape), and no later layer sees them. Parameters: ``layer``'s.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from jaxflow.core.layer import Layer

__all__ = ["FactorOut"]


@dataclasses.dataclass(frozen=True)
class FactorOut(Layer):
    """``layer`` on the last ``C - C // 2`` channels; the first ``C // 2`` go to the latent."""

    layer: Layer

    def __post_init__(self):
        if not isinstance(self.layer, Layer):
            raise TypeError(f"FactorOut: layer must be a jaxflow layer, got {type(self.layer).__name__}")

    @staticmethod
    def inner_shape(event_shape) -> tuple[int, ...]:
        """The event shape ``layer`` acts on: ``(*spatial, C - C // 2)``."""
        return (*event_shape[:-1], event_shape[-1] - event_shape[-1] // 2)

    def check(self, event_shape, context_dim):
        if event_shape[-1] < 2:
            raise ValueError(f"FactorOut: needs >= 2 channels (last axis), got event shape {tuple(event_shape)}")
        inner = self.inner_shape(event_shape)
        self.layer.check(inner, context_dim)
        if self.layer.output_shape(inner) != inner:
            raise ValueError(f"FactorOut: the inner layer must keep its event shape {inner}, "
                             f"it maps it to {self.layer.output_shape(inner)}")

    def init(self, key, event_shape, context_dim, dtype, data=None, context=None):
        kept = None if data is None else data[..., event_shape[-1] // 2:]
        return self.layer.init(key, self.inner_shape(event_shape), context_dim, dtype, kept, context)

    def _apply(self, params, x, context, event_shape, direction: str):
        k = event_shape[-1] // 2
        y, ld = getattr(self.layer, direction)(params, x[..., k:], context, self.inner_shape(event_shape))
        return jnp.concatenate([x[..., :k], y], axis=-1), ld

    def forward(self, params, x, context, event_shape):
        return self._apply(params, x, context, event_shape, "forward")

    def inverse(self, params, z, context, event_shape):
        return self._apply(params, z, context, event_shape, "inverse")
