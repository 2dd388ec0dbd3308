"""The logit transform of data in the unit interval: the first layer of a flow on pixels.

Every coordinate of an event ``x`` in ``[0, 1]`` (pixels dequantised and divided by their number
of levels, :mod:`jaxflow.data`) is squeezed away from the ends by ``alpha`` and mapped to the
real line (Dinh et al. 2017, section 4.1; Papamakarios et al. 2017, "logit space"):

.. math::

    p = \\alpha + (1 - 2\\alpha)\\, x, \\qquad y = \\operatorname{logit}(p) = \\log p - \\log(1 - p),

    \\log\\left|\\det \\frac{\\partial y}{\\partial x}\\right| =
    \\sum_{j} \\left[\\log(1 - 2\\alpha) - \\log p_j - \\log(1 - p_j)\\right],

and inverse :math:`x = (\\sigma(y) - \\alpha) / (1 - 2\\alpha)` with the negated log-det, where
:math:`\\log \\sigma(y) = -\\operatorname{softplus}(-y)` and :math:`\\log(1 - \\sigma(y)) =
-\\operatorname{softplus}(y)` keep it finite for large ``|y|``. The sum runs over every
coordinate of the event, of any shape. No parameters.

The map is defined where ``0 < p < 1``, i.e. for ``x`` in ``(-alpha / (1 - 2 alpha), 1 + alpha /
(1 - 2 alpha))``; outside, ``f`` gives NaN. :func:`jaxflow.train.preprocess` refuses data outside
``[0, 1]`` in one line before training.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import jax
import jax.numpy as jnp

from jaxflow.core.layer import Layer

__all__ = ["Logit"]


def _event_sum(values: jax.Array, event_shape) -> jax.Array:
    return values.sum(axis=tuple(range(-len(event_shape), 0)))


@dataclasses.dataclass(frozen=True)
class Logit(Layer):
    """Fixed ``y = logit(alpha + (1 - 2 alpha) x)`` per coordinate; ``0 <= alpha < 1/2``."""

    alpha: float = 0.05

    def __post_init__(self):
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, numbers.Real) or not 0 <= self.alpha < 0.5:
            raise ValueError(f"Logit: alpha must be a number in [0, 0.5), got {self.alpha!r}")
        object.__setattr__(self, "alpha", float(self.alpha))

    def forward(self, params, x, context, event_shape):
        p = self.alpha + (1 - 2 * self.alpha) * x
        log_p, log_q = jnp.log(p), jnp.log1p(-p)
        return log_p - log_q, _event_sum(math.log1p(-2 * self.alpha) - log_p - log_q, event_shape)

    def inverse(self, params, z, context, event_shape):
        x = (jax.nn.sigmoid(z) - self.alpha) / (1 - 2 * self.alpha)
        log_p, log_q = -jax.nn.softplus(-z), -jax.nn.softplus(z)
        return x, _event_sum(log_p + log_q - math.log1p(-2 * self.alpha), event_shape)
