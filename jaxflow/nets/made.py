"""MADE, the masked conditioner of an autoregressive layer (Germain et al. 2015).

``h = concat(x, c) (..., D + C) -> out (..., P D)``: the :class:`~jaxflow.MLP`'s stack of
``Dense`` layers (``input``, ``hidden_k``, ``dims``; same names, shapes, activation and
initialisation), each kernel multiplied by a fixed 0/1 mask, so that

.. math::

    \\frac{\\partial\\, \\mathrm{out}_{pD + j}}{\\partial x_i} = 0 \\quad \\text{unless} \\quad
    \\mathrm{order}_i < \\mathrm{order}_j,

while every output may depend on the whole context ``c``. ``order[i]`` is the position of
coordinate ``i`` in the autoregressive order (default ``0 .. D-1``: coordinate ``j`` sees
``x_0 .. x_{j-1}``). Outputs are read *blocked*, as a coupling's: output ``p D + j`` is number
``p`` of coordinate ``j``.

**Degrees** (deterministic, nflows' ``MADE(random_mask=False)``, with flowjax's degree 0 for a
context): input ``x_i`` has degree ``m(i) = order[i] + 1``, a context input degree 0; hidden
unit ``k`` of every hidden layer has degree ``lo + k mod (D - lo)``, with ``lo = 1`` for an
unconditional MADE on ``D >= 2`` (degrees cycle ``1 .. D-1``) and ``lo = 0`` otherwise (``0 .. D-1``:
units of degree 0 see only the context, and carry it to the first coordinate); output ``p D + j``
has degree ``m(j)``. A hidden unit of degree ``d`` sees the units below of degree ``<= d``; an
output of degree ``d`` the last hidden units of degree ``< d``. The masks are constants of the
spec (:meth:`MADE.masks`), not parameters; masked kernel entries stay in the parameters (and
get zero gradients), so the layout is the MLP's: ``{"input": {"kernel" (D + C, H), "bias"},
"hidden_k": ..., "dims": {"kernel" (H, P D), "bias"}}``.

References:
  Germain, Gregor, Murray, Larochelle. MADE: Masked Autoencoder for Distribution Estimation. ICML 2015.
  Papamakarios, Pavlakou, Murray. Masked Autoregressive Flow for Density Estimation. NeurIPS 2017.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxflow.core.serialize import register
from jaxflow.nets.mlp import DenseStack, activation_function

__all__ = ["MADE", "made_degrees"]


def made_degrees(order: tuple[int, ...], context_dim: int, hidden_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``(input degrees (D + C,), hidden degrees (H,))`` for ``order`` (module docstring)."""
    dim = len(order)
    inputs = np.concatenate([np.asarray(order, np.int64) + 1, np.zeros(context_dim, np.int64)])
    low = 1 if context_dim == 0 and dim > 1 else 0
    return inputs, low + np.arange(hidden_dim) % (dim - low)


@register
@dataclasses.dataclass(frozen=True)
class MADE(DenseStack):
    """Spec of the MADE conditioner (module docstring): width ``hidden_dim``, ``num_hidden`` hidden
    ``H -> H`` layers after the input layer (as :class:`~jaxflow.MLP`), autoregressive ``order``
    (``None``: natural; else a tuple, a permutation of ``range(D)``, ``order[i]`` the position of
    coordinate ``i``), ``activation`` and ``negative_slope`` as the MLP's.

    The conditioner of :class:`~jaxflow.MaskedAutoregressive`. ``init(key, in_dim, out_dim,
    dtype, zero_last)`` is the conditioner protocol's; ``apply(params, h, out_dim, dim)`` also takes
    ``dim``, the number ``D`` of autoregressive coordinates at the front of ``h``.
    """

    hidden_dim: int = 64
    num_hidden: int = 2
    order: Optional[tuple[int, ...]] = None
    negative_slope: float = 0.01
    activation: str = "leaky_relu"

    def __post_init__(self):
        self._check_stack()
        if self.order is not None:
            if not isinstance(self.order, (tuple, list)) or any(
                    isinstance(i, bool) or not isinstance(i, numbers.Integral) for i in self.order):
                raise TypeError(f"MADE: order must be a tuple of ints, a permutation of range(D), got {self.order!r}")
            object.__setattr__(self, "order", tuple(int(i) for i in self.order))
            if sorted(self.order) != list(range(len(self.order))):
                raise ValueError(f"MADE: order must be a permutation of range({len(self.order)}), got {self.order}")

    def check_dim(self, dim: int) -> None:
        """``ValueError`` unless ``order`` fits ``D = dim`` coordinates."""
        if self.order is not None and len(self.order) != dim:
            raise ValueError(f"MADE: order has {len(self.order)} entries, the events have D = {dim} coordinates")

    def positions(self, dim: int) -> tuple[int, ...]:
        """``order``, or the natural order ``(0, ..., D-1)``."""
        self.check_dim(dim)
        return tuple(range(dim)) if self.order is None else self.order

    def masks(self, dim: int, in_dim: int, out_dim: int) -> tuple[np.ndarray, ...]:
        """The 0/1 masks of the kernels, in :meth:`layer_names`' order and the kernels' shapes
        ``(fan_in, fan_out)``, for ``D = dim`` coordinates, ``in_dim - dim`` context inputs and
        ``out_dim = P D`` outputs."""
        return _masks(self, dim, in_dim, out_dim)

    def apply(self, params: dict, h: jax.Array, out_dim: int, dim: int) -> jax.Array:
        """``concat(x, c) (..., in_dim) -> (..., out_dim)`` in ``h``'s dtype; ``x`` is the first ``dim`` entries."""
        act = activation_function(self.activation, self.negative_slope)
        masks = self.masks(dim, h.shape[-1], out_dim)
        names = self.layer_names()
        for name, mask in zip(names, masks):
            layer = params[name]
            h = h @ (layer["kernel"] * jnp.asarray(mask, layer["kernel"].dtype)) + layer["bias"]
            if name != names[-1]:
                h = act(h)
        return h


@functools.lru_cache(maxsize=256)
def _masks(made: MADE, dim: int, in_dim: int, out_dim: int) -> tuple[np.ndarray, ...]:
    if out_dim % dim or in_dim < dim:
        raise ValueError(f"MADE: {in_dim} inputs and {out_dim} outputs do not fit D = {dim} coordinates "
                         "(in_dim = D + context, out_dim = P D)")
    inputs, hidden = made_degrees(made.positions(dim), in_dim - dim, made.hidden_dim)
    outputs = np.tile(inputs[:dim], out_dim // dim)  # blocked: output p D + j is coordinate j's
    masks = [hidden[None, :] >= inputs[:, None]]
    masks += [hidden[None, :] >= hidden[:, None]] * made.num_hidden
    masks.append(outputs[None, :] > hidden[:, None])
    return tuple(mask.astype(np.float32) for mask in masks)
