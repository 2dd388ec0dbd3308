"""The affine coupling layer, the article's ``AffineCouplingLayer`` with a choice of mask.

With the mask's conditioning coordinates ``C`` and transformed coordinates ``T``
(:mod:`jaxflow.layers.masks`), a context ``c`` (absent for an unconditional flow) and the scale
map ``h`` (:mod:`jaxflow.layers.scales`), forward (data -> latent):

.. math::

    (t, s) = \\theta(\\operatorname{concat}(x_C, c)), \\qquad
    z_C = x_C, \\quad z_T = x_T \\odot e^{h(s)} + t, \\qquad
    \\log\\left|\\det \\frac{\\partial z}{\\partial x}\\right| = \\sum_{j \\in T} h(s_j),

and inverse :math:`x_T = (z_T - t) \\odot e^{-h(s)}`, log-det :math:`-\\sum_j h(s_j)`, with
:math:`(t, s) = \\theta(\\operatorname{concat}(z_C, c))`.

Vector events ``x, z (..., D)``: ``theta`` is an :class:`~jaxflow.nets.MLP` whose ``2|T|``
outputs are read blocked, ``[t | s]``. Image events ``x, z (..., H, W, C)`` (the RealNVP paper's
masked convolution): with the mask's 0/1 array ``m (H, W, C)`` of transformed coordinates,
``theta`` is a :class:`~jaxflow.nets.ResNet` on ``concat((1 - m) x, c)`` (the context broadcast
to every pixel as channels) with ``2C`` output channels ``[t | s]``, and

.. math::

    z = x \\odot e^{m \\odot h(s)} + m \\odot t, \\qquad
    \\log\\left|\\det \\frac{\\partial z}{\\partial x}\\right| = \\sum_{i, j, c} m_{ijc}\\, h(s_{ijc}),

the same map as above with ``x_C = (1 - m) x``. Log-dets ``(...)``, context ``(..., context_dim)``.
Parameters: ``{"conditioner": <the conditioner's params>}``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxflow.core.layer import MAX_REAL, MIN_POSITIVE, Layer, require_real
from jaxflow.layers.masks import Mask, check_image_mask, check_mask, image_mask, resolve_mask
from jaxflow.layers.scales import SCALES, scale_map
from jaxflow.nets.mlp import MLP
from jaxflow.nets.resnet import ResNet

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
    """Affine coupling on vector events ``(D,)`` or image events ``(H, W, C)`` (equations in the module docstring).

    Args:
      mask: vector events: ``"half"`` (the article's split and swap), ``"alternate"`` or a tuple of
        bools; image events: ``"checkerboard"`` or ``"channel"``.
      conditioner: the network ``theta``; default ``MLP(hidden_dim=64, num_hidden=2)``, which suits
        vector events; image events need a :class:`~jaxflow.nets.ResNet`.
      scale: scale map, ``"exp"`` (the article), ``"tanh"`` (soft clamp) or ``"sigmoid"`` (Glow).
      clamp: ``c`` of ``"tanh"``, the largest ``|log-scale|``; unused by the others.
      identity_init: zero the conditioner's last layer, so ``t = s = 0`` at initialisation.
      flip: transform the complement of an image mask (the RealNVP paper alternates it).
    """

    mask: Mask = "half"
    conditioner: MLP | ResNet = MLP()
    scale: str = "exp"
    clamp: float = 5.0
    identity_init: bool = False
    flip: bool = False

    def __post_init__(self):
        if not isinstance(self.mask, str):
            if not all(isinstance(m, (bool, np.bool_)) for m in self.mask):
                raise TypeError(f"AffineCoupling: an explicit mask is a tuple of bools, got {self.mask!r}")
            object.__setattr__(self, "mask", tuple(bool(m) for m in self.mask))
        if not isinstance(self.conditioner, (MLP, ResNet)):
            raise TypeError("AffineCoupling: conditioner must be a jaxflow.MLP or jaxflow.ResNet, "
                            f"got {type(self.conditioner).__name__}")
        if self.scale not in SCALES:
            raise ValueError(f"AffineCoupling: scale must be one of {SCALES}, got {self.scale!r}")
        require_real("AffineCoupling", "clamp", self.clamp, MIN_POSITIVE, MAX_REAL, "a positive number")
        for name in ("identity_init", "flip"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"AffineCoupling: {name} must be a bool, got {getattr(self, name)!r}")

    def check(self, event_shape, context_dim):
        if len(event_shape) == 1:
            check_mask(self.mask, event_shape[0])
            wanted = MLP
        elif len(event_shape) == 3:
            check_image_mask(self.mask, tuple(event_shape))
            wanted = ResNet
        else:
            raise ValueError(f"AffineCoupling: acts on vector events (D,) or images (H, W, C), "
                             f"got event shape {tuple(event_shape)}")
        if not isinstance(self.conditioner, wanted):
            raise ValueError(f"AffineCoupling: events of shape {tuple(event_shape)} need conditioner=jaxflow."
                             f"{wanted.__name__}(...), got {type(self.conditioner).__name__}")
        if self.flip and len(event_shape) == 1:
            raise ValueError("AffineCoupling: flip applies to image masks; on vector events give the mask explicitly")

    def untransformed(self, coords, event_shape):
        split = resolve_mask(self.mask, event_shape[0])
        out = np.full_like(coords, -1)
        out[split.out_cond] = coords[split.cond]
        return out

    def sizes(self, event_shape, context_dim) -> tuple[int, int]:
        """The conditioner's input and output sizes: ``(|C| + context_dim, 2 |T|)`` on vectors,
        channels ``(C + context_dim, 2 C)`` on images."""
        if len(event_shape) == 3:
            return event_shape[-1] + context_dim, 2 * event_shape[-1]
        split = resolve_mask(self.mask, event_shape[0])
        return split.cond.size + context_dim, 2 * split.trans.size

    def init(self, key, event_shape, context_dim, dtype, data=None, context=None):
        in_dim, out_dim = self.sizes(event_shape, context_dim)
        return {"conditioner": self.conditioner.init(key, in_dim, out_dim, dtype, zero_last=self.identity_init)}

    def _shift_and_log_scale(self, params, x_cond: jax.Array, context, num_outputs: int):
        h = x_cond if context is None else jnp.concatenate([x_cond, context], axis=-1)
        t, s = jnp.split(self.conditioner.apply(params["conditioner"], h, 2 * num_outputs), 2, axis=-1)
        return t, scale_map(self.scale, self.clamp).log_scale(s)

    def _masked_shift_and_log_scale(self, params, x, context, event_shape):
        """Image events: ``(m t, m h(s))`` from ``theta((1 - m) x, c)``."""
        m = jnp.asarray(image_mask(self.mask, self.flip, tuple(event_shape)), x.dtype)
        if context is not None:  # the context at every pixel
            context = jnp.broadcast_to(context[..., None, None, :], x.shape[:-1] + context.shape[-1:])
        t, ls = self._shift_and_log_scale(params, (1 - m) * x, context, event_shape[-1])
        return m * t, m * ls

    def forward(self, params, x, context, event_shape):
        if len(event_shape) == 3:
            t, ls = self._masked_shift_and_log_scale(params, x, context, event_shape)
            return x * jnp.exp(ls) + t, ls.sum(axis=(-3, -2, -1))
        split = resolve_mask(self.mask, event_shape[0])
        x_cond, x_trans = _take(x, split.cond), _take(x, split.trans)
        t, ls = self._shift_and_log_scale(params, x_cond, context, split.trans.size)
        return _assemble(x_cond, split.out_cond, x_trans * jnp.exp(ls) + t, split.out_trans), ls.sum(-1)

    def inverse(self, params, z, context, event_shape):
        if len(event_shape) == 3:
            t, ls = self._masked_shift_and_log_scale(params, z, context, event_shape)
            return (z - t) * jnp.exp(-ls), -ls.sum(axis=(-3, -2, -1))
        split = resolve_mask(self.mask, event_shape[0])
        z_cond, z_trans = _take(z, split.out_cond), _take(z, split.out_trans)
        t, ls = self._shift_and_log_scale(params, z_cond, context, split.trans.size)
        return _assemble(z_cond, split.cond, (z_trans - t) * jnp.exp(-ls), split.trans), -ls.sum(-1)
