"""A fixed permutation of the last axis: ``z = x[..., perm]``, ``x = z[..., argsort(perm)]``, log-det 0.

``Permute("reverse")`` reverses the coordinates; ``Permute("random", seed=s)`` draws one
permutation with ``numpy.random.default_rng(s)`` when the layer is applied, the same every time,
so it is part of the spec and has no parameters. Inside a :class:`~jaxflow.Repeat` of ``n``
copies, copy ``k`` draws its own, from ``numpy.random.default_rng([s, k])`` (nested repeats
number their copies ``k = k_outer * n_inner + k_inner``): still fixed by the spec, still one scan
(the copies' permutations are one constant table, each copy gathers its row).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxflow.core.layer import Layer, require_int, zero_log_det
from jaxflow.layers.names import PERMUTATIONS

__all__ = ["Permute", "PERMUTATIONS"]


@functools.lru_cache(maxsize=1024)
def _permutation(kind: str, seed: int, size: int, copy: Optional[int] = None) -> np.ndarray:
    """The permutation of ``size`` coordinates; ``copy``: that copy's own in a ``Repeat``."""
    if kind == "reverse":
        return np.arange(size)[::-1].copy()
    return np.random.default_rng(seed if copy is None else [seed, copy]).permutation(size)


@functools.lru_cache(maxsize=256)
def _copy_tables(seed: int, size: int, copies: int) -> tuple[np.ndarray, np.ndarray]:
    """``(perms, inverses)``, each ``(copies, size)``: row ``k`` is copy ``k``'s permutation and its inverse."""
    perms = np.stack([_permutation("random", seed, size, k) for k in range(copies)])
    return perms, np.argsort(perms, axis=-1)


@dataclasses.dataclass(frozen=True)
class Permute(Layer):
    """``z_j = x_{perm_j}`` over the last axis of the event.

    Args:
      kind: ``"reverse"`` or ``"random"``.
      seed: the random permutation's seed.
      per_copy: inside a ``Repeat``, each copy draws its own random permutation (module
        docstring); ``False`` repeats one. Checkpoints written before copies had their own
        permutation load with ``False``, so they compute what they computed.
    """

    kind: str = "reverse"
    seed: int = 0
    per_copy: bool = True

    def __post_init__(self):
        if self.kind not in PERMUTATIONS:
            raise ValueError(f"Permute: kind must be one of {PERMUTATIONS}, got {self.kind!r}")
        require_int("Permute", "seed", self.seed, 0)
        if not isinstance(self.per_copy, bool):
            raise TypeError(f"Permute: per_copy must be a bool, got {self.per_copy!r}")

    @classmethod
    def from_fields(cls, per_copy: bool = False, **fields) -> "Permute":
        return cls(per_copy=per_copy, **fields)

    def permutation(self, event_shape) -> np.ndarray:
        """``perm``: output coordinate ``j`` is input coordinate ``perm[j]``."""
        return _permutation(self.kind, self.seed, event_shape[-1])

    @property
    def copy_index(self) -> Optional[int]:
        """The copy of a ``Repeat`` this permutation is (:meth:`at_copy` with an int); ``None``: not a copy."""
        return None

    def untransformed(self, coords, event_shape):
        return coords[self.permutation(event_shape)]

    def at_copy(self, index, copies: int) -> Layer:
        if self.kind == "reverse" or not self.per_copy:
            return self
        return _PermuteCopy(self.kind, self.seed, self.per_copy, index, copies)

    def forward(self, params, x, context, event_shape):
        return x[..., self.permutation(event_shape)], zero_log_det(x, event_shape)

    def inverse(self, params, z, context, event_shape):
        return z[..., np.argsort(self.permutation(event_shape))], zero_log_det(z, event_shape)


@dataclasses.dataclass(frozen=True)
class _PermuteCopy(Permute):
    """Copy ``index`` of ``copies`` of a random ``Permute`` in a ``Repeat``; ``index`` is an int,
    or a traced scalar inside the scan (then each application gathers its row of the table)."""

    index: Any = 0
    copies: int = 1

    def permutation(self, event_shape) -> np.ndarray:
        return _permutation(self.kind, self.seed, event_shape[-1], self.copy_index)

    @property
    def copy_index(self) -> int:
        return int(self.index)

    def _rows(self, event_shape) -> tuple[jax.Array, jax.Array]:
        perms, inverses = _copy_tables(self.seed, event_shape[-1], self.copies)
        return jnp.asarray(perms)[self.index], jnp.asarray(inverses)[self.index]

    def forward(self, params, x, context, event_shape):
        if isinstance(self.index, int):
            return super().forward(params, x, context, event_shape)
        return jnp.take(x, self._rows(event_shape)[0], axis=-1), zero_log_det(x, event_shape)

    def inverse(self, params, z, context, event_shape):
        if isinstance(self.index, int):
            return super().inverse(params, z, context, event_shape)
        return jnp.take(z, self._rows(event_shape)[1], axis=-1), zero_log_det(z, event_shape)
