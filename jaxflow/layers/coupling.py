"""Couplings: a mask, a conditioner and a transform (:class:`Coupling`), and :class:`AffineCoupling`.

With the mask's conditioning coordinates ``C`` and transformed coordinates ``T``
(:mod:`jaxflow.layers.masks`), a context ``c`` (absent for an unconditional flow), a conditioner
``theta`` (:mod:`jaxflow.nets`) and an elementwise transform ``tau`` with ``P`` numbers per
coordinate (:mod:`jaxflow.layers.transforms`), forward (data -> latent):

.. math::

    \\phi = \\theta(\\operatorname{concat}(x_C, c)), \\qquad
    z_C = x_C, \\quad z_j = \\tau(x_j; \\phi_j) \\ (j \\in T), \\qquad
    \\log\\left|\\det \\frac{\\partial z}{\\partial x}\\right| = \\sum_{j \\in T} \\log|\\tau'(x_j; \\phi_j)|,

and inverse :math:`x_j = \\tau^{-1}(z_j; \\phi_j)` with :math:`\\phi = \\theta(\\operatorname{concat}(z_C, c))`.
``theta`` emits ``P |T|`` numbers read blocked by number: output ``p |T| + j`` is number ``p`` of
the ``j``-th transformed coordinate (for the affine map ``[t | s]``). With an
:class:`~jaxflow.layers.transforms.AffineTransform` this is the article's coupling
:math:`z_T = x_T \\odot e^{h(s)} + t`, log-det :math:`\\sum_j h(s_j)`.

Vector events ``x, z (..., D)``: :class:`Coupling`. Image events ``x, z (..., H, W, C)`` (the
RealNVP paper's masked convolution, :class:`AffineCoupling` with an image mask): with the mask's
0/1 array ``m (H, W, C)`` of transformed coordinates, ``theta`` is a :class:`~jaxflow.nets.ResNet`
on ``concat((1 - m) x, c)`` (the context broadcast to every pixel as channels) with ``P C`` output
channels, and :math:`z = \\tau(x)` where ``m = 1``, ``z = x`` elsewhere, log-det summed over
``m = 1``. Log-dets ``(...)``, context ``(..., context_dim)``.
Parameters: ``{"conditioner": <the conditioner's params>}``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxflow.core.layer import Layer
from jaxflow.layers.masks import Mask, check_image_mask, check_mask, image_mask, resolve_mask
from jaxflow.layers.transforms import AffineTransform, RQSpline, Transform
from jaxflow.nets.base import check_conditioner
from jaxflow.nets.made import MADE
from jaxflow.nets.mlp import MLP
from jaxflow.nets.resnet import ResNet

__all__ = ["Coupling", "AffineCoupling"]


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


def _explicit_mask(owner: str, mask: Mask) -> Mask:
    """A named mask as given; an explicit one as a tuple of Python bools."""
    if isinstance(mask, str):
        return mask
    if not all(isinstance(m, (bool, np.bool_)) for m in mask):
        raise TypeError(f"{owner}: an explicit mask is a tuple of bools, got {mask!r}")
    return tuple(bool(m) for m in mask)


def _check_bools(owner: str, spec, names: tuple[str, ...]) -> None:
    for name in names:
        if not isinstance(getattr(spec, name), bool):
            raise TypeError(f"{owner}: {name} must be a bool, got {getattr(spec, name)!r}")


def conditioner_numbers(conditioner, params, h: jax.Array, transform: Transform, n: int, **apply_options) -> jax.Array:
    """``theta (..., n, P)`` from the conditioner's blocked output ``(..., P n)`` (``apply_options``:
    the conditioner's own, e.g. MADE's ``dim``)."""
    out = conditioner.apply(params["conditioner"], h, transform.num_params * n, **apply_options)
    return jnp.swapaxes(out.reshape(out.shape[:-1] + (transform.num_params, n)), -1, -2)


def with_context(h: jax.Array, context) -> jax.Array:
    return h if context is None else jnp.concatenate([h, context], axis=-1)


@dataclasses.dataclass(frozen=True)
class Coupling(Layer):
    """A coupling on vector events ``(D,)``: mask x conditioner x transform (module docstring).

    Args:
      mask: ``"half"`` (the article's split and swap), ``"alternate"`` or a tuple of bools
        (``True`` = transformed); :mod:`jaxflow.layers.masks`.
      conditioner: the network ``theta`` (:mod:`jaxflow.nets`: :class:`~jaxflow.MLP`, or your
        own :class:`~jaxflow.FlaxConditioner`); it maps ``|C| + context_dim`` inputs to
        ``P |T|`` numbers.
      transform: :class:`~jaxflow.RQSpline` (``P = 3K - 1``) or :class:`~jaxflow.AffineTransform`
        (``P = 2``).
      identity_init: zero the conditioner's last layer, so every number is 0 at initialisation:
        the identity map (:mod:`jaxflow.layers.transforms`).

    Parameters: ``{"conditioner": <the conditioner's params>}``; for :class:`~jaxflow.MLP` the
    ``dims`` layer has ``P |T|`` outputs, read blocked (output ``p |T| + j`` is number ``p`` of
    transformed coordinate ``j``; for :class:`~jaxflow.RQSpline` numbers ``0..K-1`` are the widths,
    ``K..2K-1`` the heights, ``2K..3K-2`` the inner derivatives).
    """

    mask: Mask = "alternate"
    conditioner: MLP = MLP()
    transform: Transform = RQSpline()
    identity_init: bool = True

    def __post_init__(self):
        object.__setattr__(self, "mask", _explicit_mask("Coupling", self.mask))
        check_conditioner("Coupling", self.conditioner)
        if isinstance(self.conditioner, MADE):
            raise TypeError("Coupling: MADE is the conditioner of jaxflow.MaskedAutoregressive; a coupling takes "
                            "jaxflow.MLP or a jaxflow.FlaxConditioner")
        if not isinstance(self.transform, Transform):
            raise TypeError(f"Coupling: transform must be a jaxflow.RQSpline or jaxflow.AffineTransform, "
                            f"got {self.transform!r}")
        _check_bools("Coupling", self, ("identity_init",))

    def check(self, event_shape, context_dim):
        if len(event_shape) != 1:
            raise ValueError(f"Coupling: acts on vector events (D,), got event shape {tuple(event_shape)}")
        check_mask(self.mask, event_shape[0], "Coupling")
        if isinstance(self.conditioner, ResNet):
            raise ValueError("Coupling: vector events need a conditioner of vectors (jaxflow.MLP), got ResNet")

    def untransformed(self, coords, event_shape):
        split = resolve_mask(self.mask, event_shape[0])
        out = np.full_like(coords, -1)
        out[split.out_cond] = coords[split.cond]
        return out

    def sizes(self, event_shape, context_dim) -> tuple[int, int]:
        """The conditioner's input and output sizes: ``(|C| + context_dim, P |T|)``."""
        split = resolve_mask(self.mask, event_shape[0])
        return split.cond.size + context_dim, self.transform.num_params * split.trans.size

    def init(self, key, event_shape, context_dim, dtype, data=None, context=None):
        in_dim, out_dim = self.sizes(event_shape, context_dim)
        return {"conditioner": self.conditioner.init(key, in_dim, out_dim, dtype, zero_last=self.identity_init)}

    def forward(self, params, x, context, event_shape):
        split = resolve_mask(self.mask, event_shape[0])
        x_cond, x_trans = _take(x, split.cond), _take(x, split.trans)
        theta = conditioner_numbers(self.conditioner, params, with_context(x_cond, context), self.transform,
                                    split.trans.size)
        z_trans, log_det = self.transform.forward(x_trans, theta)
        return _assemble(x_cond, split.out_cond, z_trans, split.out_trans), log_det.sum(-1)

    def inverse(self, params, z, context, event_shape):
        split = resolve_mask(self.mask, event_shape[0])
        z_cond, z_trans = _take(z, split.out_cond), _take(z, split.out_trans)
        theta = conditioner_numbers(self.conditioner, params, with_context(z_cond, context), self.transform,
                                    split.trans.size)
        x_trans, log_det = self.transform.inverse(z_trans, theta)
        return _assemble(z_cond, split.cond, x_trans, split.trans), log_det.sum(-1)


@dataclasses.dataclass(frozen=True)
class _MaskedCoupling(Layer):
    """A coupling on image events ``(H, W, C)`` in masked form (module docstring); built by
    :class:`AffineCoupling` for image masks (not a layer kind of its own)."""

    mask: str
    conditioner: ResNet
    transform: Transform
    identity_init: bool
    flip: bool

    def sizes(self, event_shape, context_dim) -> tuple[int, int]:
        """The conditioner's input and output channels: ``(C + context_dim, P C)``."""
        return event_shape[-1] + context_dim, self.transform.num_params * event_shape[-1]

    init = Coupling.init

    def _numbers(self, params, x, context, event_shape):
        """``(m, theta)``: the mask as bools ``(H, W, C)`` and ``theta (..., H, W, C, P)`` from
        ``theta((1 - m) x, c)``, zero where ``m`` is 0 (the double-where: the transform's unused
        values stay finite, and so do their gradients)."""
        m = image_mask(self.mask, self.flip, tuple(event_shape))
        if context is not None:  # the context at every pixel
            context = jnp.broadcast_to(context[..., None, None, :], x.shape[:-1] + context.shape[-1:])
        h = with_context(jnp.asarray(1 - m, x.dtype) * x, context)
        theta = conditioner_numbers(self.conditioner, params, h, self.transform, event_shape[-1])
        m = m.astype(bool)
        return m, jnp.where(m[..., None], theta, jnp.zeros_like(theta))

    def _apply(self, params, x, context, event_shape, transform):
        m, theta = self._numbers(params, x, context, event_shape)
        y, log_det = transform(x, theta)
        return jnp.where(m, y, x), jnp.where(m, log_det, jnp.zeros_like(log_det)).sum(axis=(-3, -2, -1))

    def forward(self, params, x, context, event_shape):
        return self._apply(params, x, context, event_shape, self.transform.forward)

    def inverse(self, params, z, context, event_shape):
        return self._apply(params, z, context, event_shape, self.transform.inverse)


@dataclasses.dataclass(frozen=True)
class AffineCoupling(Layer):
    """Affine coupling on vector events ``(D,)`` or image events ``(H, W, C)``: a coupling with an
    :class:`~jaxflow.AffineTransform` (:class:`Coupling` on vectors, the masked form on images).

    Args:
      mask: vector events: ``"half"`` (the article's split and swap), ``"alternate"`` or a tuple of
        bools; image events: ``"checkerboard"`` or ``"channel"``.
      conditioner: the network ``theta``; default ``MLP(hidden_dim=64, num_hidden=2)``, which suits
        vector events; image events need a :class:`~jaxflow.nets.ResNet`.
      scale: scale map, ``"exp"`` (the article), ``"tanh"`` (soft clamp) or ``"sigmoid"`` (Glow).
      clamp: ``c`` of ``"tanh"``, the largest ``|log-scale|``; unused by the others.
      identity_init: zero the conditioner's last layer, so ``t = s = 0`` at initialisation.
      flip: transform the complement of an image mask (the RealNVP paper alternates it).

    Parameters: ``{"conditioner": ...}``, the conditioner's ``2 |T|`` outputs (``2 C`` channels
    on images) read blocked, ``[t | s]``.
    """

    mask: Mask = "half"
    conditioner: MLP | ResNet = MLP()
    scale: str = "exp"
    clamp: float = 5.0
    identity_init: bool = False
    flip: bool = False

    def __post_init__(self):
        object.__setattr__(self, "mask", _explicit_mask("AffineCoupling", self.mask))
        if not isinstance(self.conditioner, (MLP, ResNet)):
            raise TypeError("AffineCoupling: conditioner must be a jaxflow.MLP or jaxflow.ResNet, "
                            f"got {type(self.conditioner).__name__}")
        try:
            AffineTransform(self.scale, self.clamp)
        except ValueError as err:
            raise ValueError(f"AffineCoupling: {str(err).split(': ', 1)[1]}") from None
        _check_bools("AffineCoupling", self, ("identity_init", "flip"))

    def check(self, event_shape, context_dim):
        if len(event_shape) == 1:
            check_mask(self.mask, event_shape[0], "AffineCoupling")
            wanted = MLP
        elif len(event_shape) == 3:
            check_image_mask(self.mask, tuple(event_shape), "AffineCoupling")
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
        return self.coupling(event_shape).untransformed(coords, event_shape)

    def coupling(self, event_shape) -> Layer:
        """The coupling this layer is on events of ``event_shape``: a :class:`Coupling` on vectors,
        the masked form on images."""
        transform = AffineTransform(self.scale, self.clamp)
        if len(event_shape) == 3:
            return _MaskedCoupling(self.mask, self.conditioner, transform, self.identity_init, self.flip)
        return Coupling(self.mask, self.conditioner, transform, self.identity_init)

    def sizes(self, event_shape, context_dim) -> tuple[int, int]:
        """The conditioner's input and output sizes: ``(|C| + context_dim, 2 |T|)`` on vectors,
        channels ``(C + context_dim, 2 C)`` on images."""
        return self.coupling(event_shape).sizes(event_shape, context_dim)

    def init(self, key, event_shape, context_dim, dtype, data=None, context=None):
        return self.coupling(event_shape).init(key, event_shape, context_dim, dtype, data, context)

    def forward(self, params, x, context, event_shape):
        return self.coupling(event_shape).forward(params, x, context, event_shape)

    def inverse(self, params, z, context, event_shape):
        return self.coupling(event_shape).inverse(params, z, context, event_shape)
