"""A fixed permutation of the last axis: ``z = x[..., perm]``, ``x = z[..., argsort(perm)]``, log-det 0.

``Permute("reverse")`` reverses the coordinates; ``Permute("random", seed=s)`` draws one
permutation with ``numpy.random.default_rng(s)`` when the layer is applied, the same every time,
so it is part of the spec and has no parameters.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from jaxflow.core.layer import Layer, require_int, zero_log_det
from jaxflow.layers.names import PERMUTATIONS

__all__ = ["Permute", "PERMUTATIONS"]


@functools.lru_cache(maxsize=1024)
def _permutation(kind: str, seed: int, size: int) -> np.ndarray:
    if kind == "reverse":
        return np.arange(size)[::-1].copy()
    return np.random.default_rng(seed).permutation(size)


@dataclasses.dataclass(frozen=True)
class Permute(Layer):
    """``z_j = x_{perm_j}`` over the last axis of the event."""

    kind: str = "reverse"
    seed: int = 0

    def __post_init__(self):
        if self.kind not in PERMUTATIONS:
            raise ValueError(f"Permute: kind must be one of {PERMUTATIONS}, got {self.kind!r}")
        require_int("Permute", "seed", self.seed, 0)

    def permutation(self, event_shape) -> np.ndarray:
        """``perm``: output coordinate ``j`` is input coordinate ``perm[j]``."""
        return _permutation(self.kind, self.seed, event_shape[-1])

    def forward(self, params, x, context, event_shape):
        return x[..., self.permutation(event_shape)], zero_log_det(x, event_shape)

    def inverse(self, params, z, context, event_shape):
        return z[..., np.argsort(self.permutation(event_shape))], zero_log_det(z, event_shape)
