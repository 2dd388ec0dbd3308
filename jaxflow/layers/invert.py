"""Any layer with its two directions swapped: ``Invert(layer)``.

.. math::

    f_{\\text{Invert}} = g_{\\text{layer}}, \\qquad g_{\\text{Invert}} = f_{\\text{layer}}, \\qquad
    \\log\\left|\\det \\frac{\\partial f_{\\text{Invert}}(x)}{\\partial x}\\right|
    = \\log\\left|\\det \\frac{\\partial g_{\\text{layer}}(x)}{\\partial x}\\right|.

``Invert(MaskedAutoregressive(...))`` is the inverse autoregressive flow (IAF): sampling (``g``)
is the MADE's single pass, the density (``f``) its ``D`` sequential passes. Events keep their
shape; log-dets ``(...)``; the parameters are the inner layer's, laid out by it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxflow.core.layer import Layer

__all__ = ["Invert"]


@dataclasses.dataclass(frozen=True)
class Invert(Layer):
    """``layer`` with forward and inverse swapped (module docstring); it must keep the event shape.

    ``init`` is the inner layer's *without data*: a data-dependent start (:class:`~jaxflow.ActNorm`)
    standardises the inner layer's ``f``-input, which under ``Invert`` is the output, so an inverted
    ActNorm starts at the identity instead (the layers after it still see the data as transformed).
    """

    layer: Layer

    def __post_init__(self):
        if not isinstance(self.layer, Layer):
            raise TypeError(f"Invert: layer must be a jaxflow layer, got {type(self.layer).__name__}")

    def check(self, event_shape, context_dim):
        self.layer.check(event_shape, context_dim)
        if self.layer.output_shape(event_shape) != tuple(event_shape):
            raise ValueError(f"Invert: the inverted layer must keep the event shape {tuple(event_shape)}, "
                             f"it maps it to {self.layer.output_shape(event_shape)}")

    def untransformed(self, coords, event_shape):
        """The inner layer's coverage map read backwards: where it carries input ``i`` untransformed to
        output ``j``, this layer carries its input ``j`` to output ``i``."""
        carried = self.layer.untransformed(np.arange(event_shape[0]), event_shape)
        if carried is None:
            return None
        out = np.full_like(coords, -1)
        kept = carried >= 0
        out[carried[kept]] = coords[kept]
        return out

    def at_copy(self, index, copies):
        inner = self.layer.at_copy(index, copies)
        return self if inner is self.layer else Invert(inner)

    def init(self, key, event_shape, context_dim, dtype, data=None, context=None):
        return self.layer.init(key, event_shape, context_dim, dtype)

    def forward(self, params, x, context, event_shape):
        return self.layer.inverse(params, x, context, event_shape)

    def inverse(self, params, z, context, event_shape):
        return self.layer.forward(params, z, context, event_shape)
