"""The affine coupling layer, the article's ``AffineCouplingLayer`` with a choice of mask.

With the mask's conditioning coordinates ``C`` and transformed coordinates ``T``
(:mod:`jaxflow.layers.masks`), a context ``c`` (absent for an unconditional flow) and the scale
map ``h`` (:mod:`jaxflow.layers.scales`), forward (data -> latent):

.. math::

    (t, s) = \\theta(\\operatorname{concat}(x_C, c)), \\qquad
    z_C = x_C, \\quad z_T = x_T \\odot e^{h(s)} + t, \\qquad
    \\log\\left|\\det \\frac{\\partial z}{\\partial x}\\right| = \\sum_{j \\in T} h(s_j),

and inverse :math:`x_T = (z_T - t) \\odot e^{-h(s)}`, log-det :math:`-\\sum_j h(s_j)`, with
:math:`(t, s) = \\theta(\\operatorname{concat}(z_C, c))`. ``theta`` is the conditioner (an
:class:`~jaxflow.nets.MLP`), whose ``2|T|`` outputs are read blocked, ``[t | s]``.

Shapes: ``x, z (..., D)``, ``c (..., context_dim)``, log-dets ``(...)``. Parameters:
``{"conditioner": <the conditioner's params>}``.
"""

from __future__ import annotations

import dataclasses
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from jaxflow.core.layer import Layer
from jaxflow.layers.masks import Mask, check_mask, resolve_mask
from jaxflow.layers.scales import SCALES, scale_map
from jaxflow.nets.mlp import MLP

__all__ = ["AffineCoupling"]


def _take(x: jax.Array, index: np.ndarray) -> jax.Array:
    """``x[..., index]`` for a static index array; a slice where ``index`` is a contiguous range."""
    if index.size and np.array_equal(index, np.arange(index[0], index[0] + index.size)):
        return x[..., index[0] : index[0] + index.size]
    return x[..., index]


def _assemble(a: jax.Array, a_index: np.ndarray, b: jax.Array, b_index: np.ndarray) -> jax.Array:
    """The event with ``a``'s coordinates at ``a_index`` and ``b``'s at ``b_index``."""
    order = np.concatenate([a_index, b_index])
    if np.array_equal(order, np.arange(order.size)):
        return jnp.concatenate([a, b], axis=-1)
    if np.array_equal(np.concatenate([b_index, a_index]), np.arange(order.size)):
        return jnp.concatenate([b, a], axis=-1)
    return _take(jnp.concatenate([a, b], axis=-1), np.argsort(order))


@dataclasses.dataclass(frozen=True)
class AffineCoupling(Layer):
    """Affine coupling on vector events ``(D,)`` (equations in the module docstring).

    Args:
      mask: ``"half"`` (the article's split and swap), ``"alternate"`` or a tuple of bools.
      conditioner: the network ``theta``; default ``MLP(hidden_dim=64, num_hidden=2)``.
      scale: scale map, ``"exp"`` (the article), ``"tanh"`` (soft clamp) or ``"sigmoid"`` (Glow).
      clamp: ``c`` of ``"tanh"``, the largest ``|log-scale|``; unused by the others.
      identity_init: zero the conditioner's last layer, so ``t = s = 0`` at initialisation.
    """

    mask: Mask = "half"
    conditioner: MLP = MLP()
    scale: str = "exp"
    clamp: float = 5.0
    identity_init: bool = False

    def __post_init__(self):
        if not isinstance(self.mask, str):
            if not all(isinstance(m, (bool, np.bool_)) for m in self.mask):
                raise TypeError(f"AffineCoupling: an explicit mask is a tuple of bools, got {self.mask!r}")
            object.__setattr__(self, "mask", tuple(bool(m) for m in self.mask))
        if not isinstance(self.conditioner, MLP):
            raise TypeError(f"AffineCoupling: conditioner must be a jaxflow.MLP, got {type(self.conditioner).__name__}")
        if self.scale not in SCALES:
            raise ValueError(f"AffineCoupling: scale must be one of {SCALES}, got {self.scale!r}")
        if isinstance(self.clamp, bool) or not (isinstance(self.clamp, numbers.Real) and 0 < self.clamp < np.inf):
            raise ValueError(f"AffineCoupling: clamp must be a positive number, got {self.clamp!r}")
        if not isinstance(self.identity_init, bool):
            raise TypeError(f"AffineCoupling: identity_init must be a bool, got {self.identity_init!r}")

    def check(self, event_shape, context_dim):
        if len(event_shape) != 1:
            raise ValueError(f"AffineCoupling: acts on vector events (D,), got event shape {tuple(event_shape)}")
        check_mask(self.mask, event_shape[0])

    def sizes(self, event_shape, context_dim) -> tuple[int, int]:
        """The conditioner's input and output sizes, ``(|C| + context_dim, 2 |T|)``."""
        split = resolve_mask(self.mask, event_shape[0])
        return split.cond.size + context_dim, 2 * split.trans.size

    def init(self, key, event_shape, context_dim, dtype, data=None, context=None):
        in_dim, out_dim = self.sizes(event_shape, context_dim)
        return {"conditioner": self.conditioner.init(key, in_dim, out_dim, dtype, zero_last=self.identity_init)}

    def _shift_and_log_scale(self, params, x_cond: jax.Array, context, num_transformed: int):
        h = x_cond if context is None else jnp.concatenate([x_cond, context], axis=-1)
        t, s = jnp.split(self.conditioner.apply(params["conditioner"], h, 2 * num_transformed), 2, axis=-1)
        return t, scale_map(self.scale, self.clamp).log_scale(s)

    def forward(self, params, x, context, event_shape):
        split = resolve_mask(self.mask, event_shape[0])
        x_cond, x_trans = _take(x, split.cond), _take(x, split.trans)
        t, ls = self._shift_and_log_scale(params, x_cond, context, split.trans.size)
        return _assemble(x_cond, split.out_cond, x_trans * jnp.exp(ls) + t, split.out_trans), ls.sum(-1)

    def inverse(self, params, z, context, event_shape):
        split = resolve_mask(self.mask, event_shape[0])
        z_cond, z_trans = _take(z, split.out_cond), _take(z, split.out_trans)
        t, ls = self._shift_and_log_scale(params, z_cond, context, split.trans.size)
        return _assemble(z_cond, split.cond, (z_trans - t) * jnp.exp(-ls), split.trans), -ls.sum(-1)
