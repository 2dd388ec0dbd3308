"""The article's PyTorch classes, with its defects fixed (see :mod:`torchref` for the list).

Names, constructor signatures, methods and attribute names are the article's, so a
``state_dict`` reads ``flows.0.theta.input.weight``, ``flows.0.theta.hidden.1.bias``,
``flows.0.theta.dims.weight``, ... One coupling layer with ``d = split.d`` maps

.. math::

    x_2, x_1 = x_{[:d]}, x_{[d:]}, \\quad (t, s) = \\theta(x_1), \\quad
    z = \\operatorname{concat}(x_1,\\; x_2 \\odot e^{h(s)} + t), \\quad
    \\log|\\det \\partial z / \\partial x| = \\textstyle\\sum_j h(s_j),

and back, splitting at ``D - d`` where the forward put the conditioning half:

.. math::

    z_1, z_2 = z_{[:D-d]}, z_{[D-d:]}, \\quad (t, s) = \\theta(z_1), \\quad
    x = \\operatorname{concat}((z_2 - t) \\odot e^{-h(s)},\\; z_1).

``h`` is the scale map (:data:`LOG_SCALES`); the article's is ``h(s) = s``. The conditioner's
last layer is read *interleaved*, as in the article: output row ``2j`` is ``t_j`` and row
``2j + 1`` is ``s_j``. With a context ``c`` (a conditional flow) the conditioner sees
``concat(x_1, c)``; :class:`MaskSplit` splits by an in-place mask instead of halves.

Besides the coupling, every layer kind of jaxflow has its twin here, each with ``f(x, context)
-> (z, log|det dz/dx|)`` and ``g(z, context) -> x`` on vector events ``(..., D)`` (the context is
ignored by all but the couplings): :class:`Permutation`, :class:`LULinear`, :class:`ActNorm`,
:class:`Affine`, :class:`Logit`, and the compositions :class:`Chain` and :class:`Repeat`.

Image events are NCHW tensors ``(..., C, H, W)``, as a torch user writes them: the RealNVP
paper's masked coupling :class:`ImageAffineCouplingLayer` (an :class:`ImageMask`, checkerboard
or channel, optionally flipped; a :class:`ResNet` of ``nn.Conv2d`` as ``theta``, its ``2C``
output channels read blocked ``[t | s]``), :class:`Squeeze` / :class:`Unsqueeze` (jaxflow's
channel order ``(2a + b) C + c``, not ``PixelUnshuffle``'s), :class:`FactorOut`, and the
per-channel layers above with ``channel_dim=-3`` (:class:`Logit` with ``event_dims=3``); log-dets
have the batch shape ``(...)``. This module does not import jaxflow: it is the independent reference.
"""

from __future__ import annotations

import math

from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Independent, Normal

__all__ = [
    "LOG_SCALES", "ACTIVATIONS", "Split", "MaskSplit", "StandardNormal", "Conditioner", "AffineCouplingLayer",
    "ResNet", "ImageMask", "ImageAffineCouplingLayer", "Squeeze", "Unsqueeze", "FactorOut",
    "Permutation", "LULinear", "ActNorm", "Affine", "Logit", "Chain", "Repeat", "NormalizingFlow",
]

LOG_SCALES: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "exp": lambda s, clamp: s,  # the article: scale e^s
    "tanh": lambda s, clamp: clamp * torch.tanh(s / clamp),  # soft clamp, |log-scale| < clamp
    "sigmoid": lambda s, clamp: F.logsigmoid(s + 2),  # Glow: scale sigmoid(s + 2)
}
"""Log-scale maps ``h(s)``: the coupling multiplies by ``e^{h(s)}`` and adds ``sum h(s)`` to the log-det."""


class Split(nn.Module):
    """The ``split`` callable of a coupling layer on ``R^dim``, correct for odd ``dim`` too.

    ``split(x) = (x[..., :d], x[..., d:])`` with ``d = dim // 2``: the transformed part ``x2``
    and the conditioning part ``x1`` of ``f``. ``split.inverse(z) = (z[..., :dim - d],
    z[..., dim - d:])``: the conditioning part ``z1`` and the transformed part ``z2`` of ``g``,
    which ``f`` wrote in that order. The article's ``g`` reused ``split`` itself, which is the
    inverse only when ``dim`` is even.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim, self.d = dim, dim // 2

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return x[..., : self.d], x[..., self.d :]

    def inverse(self, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return z[..., : self.dim - self.d], z[..., self.dim - self.d :]

    def join(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """``f``'s output from the conditioning part ``z1`` and the transformed part ``z2``: the article's swap."""
        return torch.cat((z1, z2), dim=-1)

    def inverse_join(self, x2: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """``g``'s output from the transformed part ``x2`` and the conditioning part ``x1``."""
        return torch.cat((x2, x1), dim=-1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, d={self.d}"


class MaskSplit(nn.Module):
    """The ``split`` of a coupling layer by an in-place mask: coordinates keep their places.

    ``mask`` is ``"alternate"`` (the even coordinates ``0, 2, ...`` are transformed) or a sequence
    of ``dim`` bools (``True``: transformed; at least one of each). With ``T`` the transformed
    and ``C`` the conditioning coordinates (ascending), ``split(x) = (x[..., T], x[..., C])``,
    ``split.inverse(z) = (z[..., C], z[..., T])``, and :meth:`join` / :meth:`inverse_join` put
    the parts back at ``C`` and ``T``. ``d = |T|`` is the conditioner's ``out_dim``.
    """

    def __init__(self, dim: int, mask: Union[str, Sequence[bool]] = "alternate"):
        super().__init__()
        if isinstance(mask, str):
            if mask != "alternate":
                raise ValueError(f"MaskSplit: mask must be 'alternate' or a sequence of bools, got {mask!r}")
            transformed = np.arange(dim) % 2 == 0
        else:
            mask = tuple(bool(m) for m in mask)
            transformed = np.asarray(mask, bool)
        if transformed.shape != (dim,) or transformed.all() or not transformed.any():
            raise ValueError(f"MaskSplit: need {dim} entries with some coordinates transformed and some not, got {mask!r}")
        self.dim, self.mask, self.d = dim, mask, int(transformed.sum())
        trans, cond = np.flatnonzero(transformed), np.flatnonzero(~transformed)
        self.register_buffer("trans", torch.as_tensor(trans), persistent=False)
        self.register_buffer("cond", torch.as_tensor(cond), persistent=False)
        # position in concat(cond, trans) of each output coordinate
        self.register_buffer("order", torch.as_tensor(np.argsort(np.concatenate([cond, trans]))), persistent=False)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return x[..., self.trans], x[..., self.cond]

    def inverse(self, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return z[..., self.cond], z[..., self.trans]

    def join(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """``f``'s output: the conditioning part ``z1`` back at ``C``, the transformed ``z2`` at ``T``."""
        return torch.cat((z1, z2), dim=-1)[..., self.order]

    def inverse_join(self, x2: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """``g``'s output: the transformed part ``x2`` back at ``T``, the conditioning ``x1`` at ``C``."""
        return torch.cat((x1, x2), dim=-1)[..., self.order]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, mask={self.mask!r}"


class StandardNormal(nn.Module):
    """The latent ``N(0, I)`` over events of shape ``dim`` as a module, so that it follows ``.to(device)`` and ``.double()``.

    ``dim`` is an int ``D`` (vector events ``(D,)``) or a shape, e.g. ``(C, H, W)`` for images.
    ``loc`` and ``scale`` are non-persistent buffers (they move and cast with the model but stay
    out of ``state_dict``, which holds the flow's parameters only); the
    ``torch.distributions`` object is built on demand from them.
    """

    def __init__(self, dim: int | Sequence[int]):
        super().__init__()
        shape = (dim,) if isinstance(dim, int) else tuple(dim)
        self.register_buffer("loc", torch.zeros(shape), persistent=False)
        self.register_buffer("scale", torch.ones(shape), persistent=False)

    @property
    def event_shape(self) -> torch.Size:
        return self.loc.shape

    def distribution(self) -> Distribution:
        return Independent(Normal(self.loc, self.scale), self.loc.ndim)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.distribution().log_prob(z)

    def sample(self, sample_shape: Sequence[int] = ()) -> torch.Tensor:
        return self.distribution().sample(torch.Size(sample_shape))


ACTIVATIONS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "leaky_relu": F.leaky_relu,  # the article's
    "relu": lambda x, negative_slope: F.relu(x),
    "gelu": lambda x, negative_slope: F.gelu(x, approximate="tanh"),  # flax's nn.gelu default, not torch's
    "silu": lambda x, negative_slope: F.silu(x),
    "elu": lambda x, negative_slope: F.elu(x),
    "tanh": lambda x, negative_slope: torch.tanh(x),
}
"""The conditioner's activations ``a(x, negative_slope)`` by name (only leaky_relu reads the slope).

.. warning:: ``"gelu"`` is the tanh approximation, as Flax's ``nn.gelu``; torch's ``F.gelu``
   defaults to the exact (erf) form.
"""


class Conditioner(nn.Module):
    """``theta``: ``x (..., in_dim) -> [p_1, ..., p_num_params]``, each ``(..., out_dim)``.

    ``input = Linear(in_dim, hidden_dim)``, ``num_hidden`` x ``Linear(hidden_dim, hidden_dim)``
    in ``hidden``, each followed by the activation (:data:`ACTIVATIONS`; the article's
    leaky_relu), then ``dims = Linear(hidden_dim, out_dim * num_params)`` whose row
    ``num_params * j + k`` is ``p_{k+1}`` of coordinate ``j`` (interleaved, as the article's
    ``reshape(..., out_dim, num_params)``).
    """

    def __init__(
        self, in_dim: int, out_dim: int,
        num_hidden: int, hidden_dim: int,
        num_params: int, negative_slope: float = 0.01, activation: str = "leaky_relu",
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"Conditioner: activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
        self.input = nn.Linear(in_dim, hidden_dim)
        self.hidden = nn.ModuleList([nn.Linear(hidden_dim, hidden_dim) for _ in range(num_hidden)])
        self.num_params = num_params
        self.out_dim = out_dim
        self.negative_slope = negative_slope
        self.activation = activation
        self.dims = nn.Linear(hidden_dim, out_dim * num_params)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        act = ACTIVATIONS[self.activation]
        x = act(self.input(x), self.negative_slope)
        for h in self.hidden:
            x = act(h(x), self.negative_slope)
        batch_params = self.dims(x).reshape(*x.shape[:-1], self.out_dim, self.num_params)
        return list(batch_params.unbind(-1))


class AffineCouplingLayer(nn.Module):
    """One affine coupling ``f_i`` and its inverse ``g_i`` (equations in the module docstring).

    ``split`` must also offer ``split.inverse``, ``split.join`` and ``split.inverse_join`` (see
    :class:`Split`, the article's halves, and :class:`MaskSplit`); ``scale`` names the log-scale
    map ``h`` in :data:`LOG_SCALES` (``"exp"``: the article's ``h(s) = s``), ``clamp`` is the
    bound of ``"tanh"``. A context ``c (..., C)`` is concatenated after the conditioning part,
    ``theta(concat(x1, c))``, so ``theta``'s ``in_dim`` is ``dim - d + C``. ``identity_init``
    zeroes ``theta.dims`` now (``t = s = 0``: the identity) and is remembered for conversion.
    """

    def __init__(self, theta: nn.Module, split: nn.Module, scale: str = "exp", clamp: float = 5.0,
                 identity_init: bool = False):
        super().__init__()
        if scale not in LOG_SCALES:
            raise ValueError(f"AffineCouplingLayer: scale must be one of {tuple(LOG_SCALES)}, got {scale!r}")
        self.theta = theta
        self.split = split
        self.scale = scale
        self.clamp = clamp
        self.identity_init = identity_init
        if identity_init:
            with torch.no_grad():
                for p in self.last_layer().parameters():
                    p.zero_()

    def last_layer(self) -> nn.Module:
        """``theta``'s output layer (``theta.dims``), the one ``identity_init`` zeroes."""
        return self.theta.dims

    def _shift_and_log_scale(self, h: torch.Tensor, context: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        t, s = self.theta(h if context is None else torch.cat((h, context), dim=-1))
        return t, LOG_SCALES[self.scale](s, self.clamp)

    def f(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """f : x -> (z, log|det dz/dx|). The inverse of g."""
        x2, x1 = self.split(x)
        t, ls = self._shift_and_log_scale(x1, context)
        z1, z2 = x1, x2 * torch.exp(ls) + t
        return self.split.join(z1, z2), ls.sum(-1)

    def g(self, z: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        """g : z -> x. The inverse of f."""
        z1, z2 = self.split.inverse(z)
        t, ls = self._shift_and_log_scale(z1, context)
        x1, x2 = z1, (z2 - t) * torch.exp(-ls)
        return self.split.inverse_join(x2, x1)

    def extra_repr(self) -> str:
        return f"scale={self.scale!r}, clamp={self.clamp}" + (", identity_init=True" if self.identity_init else "")


class ResNet(nn.Module):
    """``theta`` of an image coupling: ``h (..., in_channels, H, W) -> (..., out_channels, H, W)``.

    Every convolution is ``nn.Conv2d(..., kernel_size, padding=kernel_size // 2)`` (``H x W``
    kept, zero padding), ``a`` = leaky_relu::

        input       Conv2d(in_channels -> channels)
        block_k_a   \\
        block_k_b   /  h <- h + block_k_b(a(block_k_a(a(h))))     k = 0 .. num_blocks - 1
        output      Conv2d(channels -> out_channels) applied to a(h)

    so a ``state_dict`` reads ``theta.input.weight``, ``theta.block_0_a.weight``, ...,
    ``theta.output.bias``; weights ``(out, in, k, k)``. Any leading batch shape.
    """

    def __init__(self, in_channels: int, out_channels: int, channels: int, num_blocks: int,
                 kernel_size: int = 3, negative_slope: float = 0.01):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"ResNet: kernel_size must be odd (padding k // 2 keeps H x W), got {kernel_size}")
        conv = lambda n_in, n_out: nn.Conv2d(n_in, n_out, kernel_size, padding=kernel_size // 2)
        self.input = conv(in_channels, channels)
        for k in range(num_blocks):
            setattr(self, f"block_{k}_a", conv(channels, channels))
            setattr(self, f"block_{k}_b", conv(channels, channels))
        self.output = conv(channels, out_channels)
        self.num_blocks, self.kernel_size, self.negative_slope = num_blocks, kernel_size, negative_slope

    def blocks(self) -> List[Tuple[nn.Conv2d, nn.Conv2d]]:
        """``[(block_0_a, block_0_b), ...]``."""
        return [(getattr(self, f"block_{k}_a"), getattr(self, f"block_{k}_b")) for k in range(self.num_blocks)]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        act = lambda a: F.leaky_relu(a, self.negative_slope)
        batch = h.shape[:-3]
        h = self.input(h.reshape(-1, *h.shape[-3:]))
        for conv_a, conv_b in self.blocks():
            h = h + conv_b(act(conv_a(act(h))))
        out = self.output(act(h))
        return out.reshape(*batch, *out.shape[-3:])


class ImageMask(nn.Module):
    """The 0/1 mask ``m (C, H, W)`` of an image coupling's transformed coordinates ``(c, i, j)``.

    ``kind="checkerboard"``: ``i + j`` even (every channel of the "black" pixels);
    ``kind="channel"``: ``c < C // 2``; ``flip=True``: the complement. A non-persistent buffer.
    """

    def __init__(self, shape: Sequence[int], kind: str = "checkerboard", flip: bool = False):
        super().__init__()
        channels, height, width = shape
        if kind == "checkerboard":
            i, j = torch.arange(height)[:, None], torch.arange(width)[None, :]
            transformed = ((i + j) % 2 == 0).expand(channels, height, width)
        elif kind == "channel":
            transformed = (torch.arange(channels) < channels // 2)[:, None, None].expand(channels, height, width)
        else:
            raise ValueError(f"ImageMask: kind must be 'checkerboard' or 'channel', got {kind!r}")
        self.shape, self.kind, self.flip = (channels, height, width), kind, flip
        self.register_buffer("m", (transformed != flip).to(torch.float32), persistent=False)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, kind={self.kind!r}" + (", flip=True" if self.flip else "")


class ImageAffineCouplingLayer(AffineCouplingLayer):
    """The RealNVP paper's masked affine coupling on images ``x (..., C, H, W)``, mask ``m`` (:class:`ImageMask`):

    .. math::

        (t, s) = \\theta(\\operatorname{concat}((1 - m) \\odot x,\\; c)), \\quad
        z = x \\odot e^{m \\odot h(s)} + m \\odot t, \\quad
        \\log|\\det \\partial z / \\partial x| = \\textstyle\\sum_{c, i, j} m_{cij}\\, h(s_{cij}),

    and back ``x = (z - m t) e^{-m h(s)}`` with :math:`(t, s)` from ``(1 - m) z`` (the same
    coordinates). ``theta`` (a :class:`ResNet`, ``2C`` output channels) is read blocked on the
    channel dim: ``t, s = theta(...).chunk(2, dim=-3)``. The context ``c (..., context_dim)`` is
    broadcast to every pixel and concatenated after the image's channels. ``scale``, ``clamp``
    and ``identity_init`` (zeroes ``theta.output``) as :class:`AffineCouplingLayer`'s.
    """

    def __init__(self, theta: nn.Module, mask: ImageMask, scale: str = "exp", clamp: float = 5.0,
                 identity_init: bool = False):
        super().__init__(theta, mask, scale, clamp, identity_init)

    @property
    def mask(self) -> ImageMask:
        return self.split

    def last_layer(self) -> nn.Module:
        return self.theta.output

    def _masked_shift_and_log_scale(self, x: torch.Tensor, context: Optional[torch.Tensor]):
        m = self.mask.m
        h = (1 - m) * x
        if context is not None:  # the context as extra channels, the same at every pixel
            h = torch.cat((h, context[..., :, None, None].expand(*context.shape, *x.shape[-2:])), dim=-3)
        t, s = self.theta(h).chunk(2, dim=-3)
        return m * t, m * LOG_SCALES[self.scale](s, self.clamp)

    def f(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """f : x -> (z, log|det dz/dx|). The inverse of g."""
        t, ls = self._masked_shift_and_log_scale(x, context)
        return x * torch.exp(ls) + t, ls.sum(dim=(-3, -2, -1))

    def g(self, z: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        """g : z -> x. The inverse of f."""
        t, ls = self._masked_shift_and_log_scale(z, context)
        return (z - t) * torch.exp(-ls)


def _zeros(x: torch.Tensor, event_dims: int = 1) -> torch.Tensor:
    """A zero log-det of ``x``'s batch shape: all but the last ``event_dims`` axes."""
    return x.new_zeros(x.shape[: x.ndim - event_dims])


def _check_channel_dim(channel_dim: int) -> int:
    if channel_dim not in (-1, -3):
        raise ValueError(f"channel_dim must be -1 (vector events (..., D)) or -3 (images (..., C, H, W)), "
                         f"got {channel_dim!r}")
    return channel_dim


def _channel_repr(channel_dim: int) -> str:
    return "" if channel_dim == -1 else f", channel_dim={channel_dim}"


def _per_channel(values: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """``values (dim,)`` shaped to broadcast along ``channel_dim`` of an event: ``(dim, 1, 1)`` for ``-3``."""
    return values if channel_dim == -1 else values.reshape(values.shape[-1:] + (1,) * (-channel_dim - 1))


def _positions(x: torch.Tensor, channel_dim: int) -> int:
    """``P``: the number of event positions that share one channel's parameters (``H W`` on images, 1 on vectors)."""
    return math.prod(x.shape[x.ndim + channel_dim + 1 :])


class Permutation(nn.Module):
    """``z_j = x_{perm_j}``, ``x = z[..., argsort(perm)]``, log-det 0, over the ``dim`` entries of ``channel_dim``.

    ``kind="reverse"``: ``perm = [dim - 1, ..., 0]``; ``kind="random"``:
    ``perm = numpy.random.default_rng(seed).permutation(dim)``, or for copy ``k`` of a
    :class:`Repeat` (jaxflow's ``Permute(per_copy=True)``: ``copy=k``, nested repeats numbering
    ``k = k_outer * n_inner + k_inner``) ``default_rng([seed, k])``. ``perm`` and its inverse are
    non-persistent buffers (part of the structure, not of the ``state_dict``). ``channel_dim``
    is ``-1`` for vector events ``(..., D)`` and ``-3`` for images ``(..., C, H, W)`` (the
    channels, the same permutation at every pixel).
    """

    def __init__(self, dim: int, kind: str = "reverse", seed: int = 0, channel_dim: int = -1, per_copy: bool = True,
                 copy: Optional[int] = None):
        super().__init__()
        if kind not in ("reverse", "random"):
            raise ValueError(f"Permutation: kind must be 'reverse' or 'random', got {kind!r}")
        rng = np.random.default_rng(seed if copy is None else [seed, copy])
        perm = np.arange(dim)[::-1].copy() if kind == "reverse" else rng.permutation(dim)
        self.dim, self.kind, self.seed, self.channel_dim = dim, kind, seed, _check_channel_dim(channel_dim)
        self.per_copy, self.copy = per_copy, copy
        self.register_buffer("perm", torch.as_tensor(perm), persistent=False)
        self.register_buffer("inverse_perm", torch.as_tensor(np.argsort(perm)), persistent=False)

    def f(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        return x.index_select(self.channel_dim, self.perm), _zeros(x, -self.channel_dim)

    def g(self, z: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        return z.index_select(self.channel_dim, self.inverse_perm)

    def extra_repr(self) -> str:
        random = f", seed={self.seed}" + (f", copy={self.copy}" if self.copy is not None else "") \
            + ("" if self.per_copy else ", per_copy=False")
        return f"dim={self.dim}, kind={self.kind!r}" + (random if self.kind == "random" else "") + _channel_repr(self.channel_dim)


class LULinear(nn.Module):
    """``z = W x`` with ``W = L U`` learned, over the ``dim`` entries of ``channel_dim`` (Glow's invertible 1x1 convolution).

    .. math::

        L = I + \\operatorname{tril}(A, -1), \\quad U = \\operatorname{triu}(B, 1) + \\operatorname{diag}(e^v),
        \\quad \\log|\\det| = P \\textstyle\\sum_j v_j.

    Parameters ``lower`` (``A``), ``upper`` (``B``), ``log_diag`` (``v``); only ``A``'s strictly
    lower and ``B``'s strictly upper triangles are read. All zero at construction: ``W = I``.
    ``g`` solves ``L U x = z`` by two triangular solves. ``channel_dim=-1``: vector events
    ``(..., D)``, ``P = 1``; ``channel_dim=-3``: images ``(..., C, H, W)``, the same ``W`` mixes
    the channels of every pixel, ``P = H W``.
    """

    def __init__(self, dim: int, channel_dim: int = -1):
        super().__init__()
        self.dim, self.channel_dim = dim, _check_channel_dim(channel_dim)
        self.lower = nn.Parameter(torch.zeros(dim, dim))
        self.upper = nn.Parameter(torch.zeros(dim, dim))
        self.log_diag = nn.Parameter(torch.zeros(dim))

    def factors(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(L, U)``."""
        eye = torch.eye(self.dim, dtype=self.lower.dtype, device=self.lower.device)
        return torch.tril(self.lower, -1) + eye, torch.triu(self.upper, 1) + torch.diag(torch.exp(self.log_diag))

    def _log_det(self, x: torch.Tensor) -> torch.Tensor:
        return (_positions(x, self.channel_dim) * self.log_diag.sum()).expand(x.shape[: x.ndim + self.channel_dim])

    def f(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        lower, upper = self.factors()
        z = x.movedim(self.channel_dim, -1) @ (lower @ upper).T
        return z.movedim(-1, self.channel_dim), self._log_det(x)

    def g(self, z: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        lower, upper = self.factors()
        last = z.movedim(self.channel_dim, -1)
        columns = last.reshape(-1, self.dim).T  # one event per column: solve L U X = Z
        y = torch.linalg.solve_triangular(lower, columns, upper=False, unitriangular=True)
        x = torch.linalg.solve_triangular(upper, y, upper=True).T.reshape(last.shape)
        return x.movedim(-1, self.channel_dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}" + _channel_repr(self.channel_dim)


class ActNorm(nn.Module):
    """Learned ``z = (x - shift) e^{-log_scale}`` per entry of ``channel_dim``, log-det ``-P sum(log_scale)`` (Glow).

    Parameters ``shift`` and ``log_scale`` ``(dim,)``, zero at construction (the identity).
    ``channel_dim=-1``: vector events ``(..., D)``, ``P = 1``; ``channel_dim=-3``: images
    ``(..., C, H, W)``, per channel, ``P = H W``.
    """

    def __init__(self, dim: int, channel_dim: int = -1):
        super().__init__()
        self.dim, self.channel_dim = dim, _check_channel_dim(channel_dim)
        self.shift = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def _log_det(self, x: torch.Tensor) -> torch.Tensor:
        return (-_positions(x, self.channel_dim) * self.log_scale.sum()).expand(x.shape[: x.ndim + self.channel_dim])

    def f(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        shift, log_scale = _per_channel(self.shift, self.channel_dim), _per_channel(self.log_scale, self.channel_dim)
        return (x - shift) * torch.exp(-log_scale), self._log_det(x)

    def g(self, z: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        shift, log_scale = _per_channel(self.shift, self.channel_dim), _per_channel(self.log_scale, self.channel_dim)
        return shift + z * torch.exp(log_scale)

    def extra_repr(self) -> str:
        return f"dim={self.dim}" + _channel_repr(self.channel_dim)


Numbers = Union[float, Sequence[float]]


class Affine(nn.Module):
    """Fixed ``z = (x - shift) / scale`` per entry of ``channel_dim``, log-det ``-P sum_j log scale_j``; ``scale > 0``.

    ``shift`` and ``scale`` are numbers (the same for every coordinate) or sequences of ``dim``
    numbers. They are (persistent) buffers: they move and cast with the model and are in the
    ``state_dict``, but no optimizer sees them. ``numbers`` keeps them as given (the buffers
    are rounded to the model's dtype), for an exact conversion back to a spec. ``channel_dim``
    as :class:`ActNorm`'s.
    """

    def __init__(self, shift: Numbers = 0.0, scale: Numbers = 1.0, channel_dim: int = -1):
        super().__init__()
        self.numbers = {"shift": shift, "scale": scale}
        self.channel_dim = _check_channel_dim(channel_dim)
        self.register_buffer("shift", torch.as_tensor(shift, dtype=torch.float64))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float64))
        if bool((self.scale <= 0).any()):
            raise ValueError(f"Affine: scale must be > 0, got {scale!r}")

    def _log_det(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[self.channel_dim : x.ndim + self.channel_dim + 1]
        log_det = -torch.log(self.scale).expand(channels).sum()
        return (_positions(x, self.channel_dim) * log_det).expand(x.shape[: x.ndim + self.channel_dim])

    def _shift_and_scale(self) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.shift.ndim == 0 and self.scale.ndim == 0:
            return self.shift, self.scale
        return _per_channel(self.shift, self.channel_dim), _per_channel(self.scale, self.channel_dim)

    def f(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        shift, scale = self._shift_and_scale()
        return (x - shift) / scale, self._log_det(x)

    def g(self, z: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        shift, scale = self._shift_and_scale()
        return shift + z * scale

    def extra_repr(self) -> str:
        return f"shift={self.numbers['shift']!r}, scale={self.numbers['scale']!r}" + _channel_repr(self.channel_dim)


class Logit(nn.Module):
    """Fixed ``y = logit(p)``, ``p = alpha + (1 - 2 alpha) x``, per coordinate of every event axis
    after the first ``batch_dims`` axes; log-det ``sum_j [log(1 - 2 alpha) - log p_j - log(1 - p_j)]``."""

    def __init__(self, alpha: float = 0.05, event_dims: int = 1):
        super().__init__()
        if not 0 <= alpha < 0.5:
            raise ValueError(f"Logit: alpha must be in [0, 0.5), got {alpha!r}")
        self.alpha, self.event_dims = float(alpha), event_dims

    def f(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        p = self.alpha + (1 - 2 * self.alpha) * x
        log_det = math.log1p(-2 * self.alpha) - torch.log(p) - torch.log1p(-p)
        return torch.logit(p), log_det.sum(dim=tuple(range(-self.event_dims, 0)))

    def g(self, z: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        return (torch.sigmoid(z) - self.alpha) / (1 - 2 * self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha!r}"


def _space_to_depth(x: torch.Tensor) -> torch.Tensor:
    """``(..., C, H, W) -> (..., 4C, H/2, W/2)``, channel ``(2a + b) C + c`` from pixel ``(2i + a, 2j + b)``."""
    *batch, channels, height, width = x.shape
    blocks = x.reshape(*batch, channels, height // 2, 2, width // 2, 2)  # (c, i, a, j, b)
    n = len(batch)
    blocks = blocks.permute(*range(n), n + 2, n + 4, n, n + 1, n + 3)  # (a, b, c, i, j)
    return blocks.reshape(*batch, 4 * channels, height // 2, width // 2)


def _depth_to_space(z: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`_space_to_depth`: ``(..., 4C, H, W) -> (..., C, 2H, 2W)``."""
    *batch, channels, height, width = z.shape
    blocks = z.reshape(*batch, 2, 2, channels // 4, height, width)  # (a, b, c, i, j)
    n = len(batch)
    blocks = blocks.permute(*range(n), n + 2, n + 3, n, n + 4, n + 1)  # (c, i, a, j, b)
    return blocks.reshape(*batch, channels // 4, 2 * height, 2 * width)


class Squeeze(nn.Module):
    """Space to depth on images ``(..., C, H, W) -> (..., 4C, H/2, W/2)``, log-det 0 (the RealNVP paper's squeeze):

    .. math::

        z_{(2a + b) C + c,\\, i,\\, j} = x_{c,\\, 2i + a,\\, 2j + b}, \\qquad a, b \\in \\{0, 1\\}.

    .. warning:: ``torch.nn.PixelUnshuffle(2)`` puts the same values in another channel order,
       ``4c + 2a + b``; this order is jaxflow's (``jaxflow.Squeeze``).
    """

    def f(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        return _space_to_depth(x), _zeros(x, 3)

    def g(self, z: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        return _depth_to_space(z)


class Unsqueeze(nn.Module):
    """Depth to space ``(..., 4C, H, W) -> (..., C, 2H, 2W)``, log-det 0: the inverse of :class:`Squeeze`."""

    def f(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        return _depth_to_space(x), _zeros(x, 3)

    def g(self, z: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        return _space_to_depth(z)


class FactorOut(nn.Module):
    """The first ``k = C // 2`` entries of ``channel_dim`` go to the latent unchanged, ``module`` acts on the rest:

    .. math::

        z = \\operatorname{concat}(x_{[:k]},\\; f_{\\text{module}}(x_{[k:]})), \\qquad
        \\log|\\det \\partial z / \\partial x| = \\log|\\det \\partial f_{\\text{module}} / \\partial x_{[k:]}|,

    slices and concatenation along ``channel_dim`` (``-3``: the channels of images ``(..., C, H,
    W)``, the RealNVP paper's multi-scale step; ``-1``: vector events). ``module`` must keep
    the shape of its events.
    """

    def __init__(self, module: nn.Module, channel_dim: int = -3):
        super().__init__()
        self.module, self.channel_dim = module, _check_channel_dim(channel_dim)

    def _split(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        k = x.shape[self.channel_dim] // 2
        return x.narrow(self.channel_dim, 0, k), x.narrow(self.channel_dim, k, x.shape[self.channel_dim] - k)

    def f(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        kept, rest = self._split(x)
        z, log_abs_det = self.module.f(rest, context)
        return torch.cat((kept, z), dim=self.channel_dim), log_abs_det

    def g(self, z: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        kept, rest = self._split(z)
        return torch.cat((kept, self.module.g(rest, context)), dim=self.channel_dim)

    def extra_repr(self) -> str:
        return f"channel_dim={self.channel_dim}"


class Chain(nn.ModuleList):
    """The composition ``f = f_n o ... o f_1`` of its flows (``self[0]`` applied first in ``f``).

    A :class:`torch.nn.ModuleList`, so a nested model's ``state_dict`` reads
    ``flows.1.0.theta.input.weight`` (element 0 of the chain at top-level step 1).
    """

    def f(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        sum_log_abs_det = x.new_zeros(())  # broadcasts to the layers' log-dets, of the batch shape (vector or image events)
        for flow in self:
            x, log_abs_det = flow.f(x, context)
            sum_log_abs_det = sum_log_abs_det + log_abs_det
        return x, sum_log_abs_det

    def g(self, z: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        for flow in reversed(self):
            z = flow.g(z, context)
        return z


class Repeat(Chain):
    """A :class:`Chain` of copies of one layer, each with its own parameters.

    The same map as a :class:`Chain`; it marks the structure that jaxflow runs as one scan over
    stacked parameters (``jaxflow.Repeat``), so the copies must have identical structure.
    ``unroll`` is that scan's unroll, kept for conversion; it changes nothing here.
    """

    def __init__(self, flows: Sequence[nn.Module], unroll: int = 1):
        super().__init__(flows)
        self.unroll = unroll

    def extra_repr(self) -> str:
        return f"unroll={self.unroll}"


class NormalizingFlow(nn.Module):
    """``f = f_L o ... o f_1`` (``flows[0]`` applied first), ``g = f^{-1}``, and the density

    .. math::

        \\log p_X(x \\mid c) = \\log p_Z(f(x; c)) + \\sum_{i=1}^{L} \\log|\\det \\partial f_i / \\partial x_{i-1}|.

    ``latent`` needs ``log_prob(z)`` and ``sample(shape)``; pass a module such as
    :class:`StandardNormal` so that it moves and casts with the flow. ``flows`` is a list (the
    article's stack), a :class:`Chain` or :class:`Repeat` (kept as given: the structure of the
    composition), or one layer module (``flows`` is then that one-element list, and
    ``single_layer`` is set). ``context_dim`` is the size of the context ``c`` of a conditional
    flow (``0``: unconditional); ``context_affine`` (an :class:`Affine`) maps it first, then
    ``embedding`` (a learned :class:`Conditioner` with ``num_params=1``: its one output, of size
    ``embedding.out_dim``, is the context every layer sees).

    Every method takes the context as its second argument (``None`` for an unconditional flow);
    its batch axes broadcast against ``x``'s.
    """

    def __init__(self, latent: Distribution | nn.Module, flows: Sequence[nn.Module] | nn.Module,
                 context_affine: Optional[nn.Module] = None, context_dim: int = 0,
                 embedding: Optional[Conditioner] = None):
        super().__init__()
        self.latent = latent
        self.event_dims = len(latent.event_shape)  # 1 for vectors (..., D), 3 for images (..., C, H, W)
        self.single_layer = isinstance(flows, nn.Module) and not isinstance(flows, nn.ModuleList)
        self.flows = flows if isinstance(flows, nn.ModuleList) else nn.ModuleList([flows] if self.single_layer else flows)
        self.context_affine = context_affine
        self.context_dim = context_dim
        self.embedding = embedding

    def _condition(self, x: torch.Tensor, context: Optional[torch.Tensor]):
        """``x`` and the context (``context_affine`` and ``embedding`` applied), broadcast to one batch shape."""
        if self.context_dim == 0:
            if context is not None:
                raise ValueError(f"context: this flow is unconditional, got a context of shape {tuple(context.shape)}")
            return x, None
        if context is None or context.ndim == 0 or context.shape[-1] != self.context_dim:
            got = None if context is None else tuple(context.shape)
            raise ValueError(f"context must have shape (..., {self.context_dim}), got {got}")
        if self.context_affine is not None:
            context = self.context_affine.f(context)[0]
        if self.embedding is not None:
            (context,) = self.embedding(context)
        event = x.shape[x.ndim - self.event_dims :]
        batch = torch.broadcast_shapes(x.shape[: x.ndim - self.event_dims], context.shape[:-1])
        return x.expand(*batch, *event), context.expand(*batch, context.shape[-1])

    def latent_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.latent.log_prob(z)

    def latent_sample(self, num_samples: int | Sequence[int] = 1) -> torch.Tensor:
        return self.latent.sample(tuple(num_samples) if isinstance(num_samples, (tuple, list)) else (num_samples,))

    def sample(self, num_samples: int = 1, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Sample x = g(z; c), z ~ latent; differentiable in the parameters (and the context).

        Shapes as jaxflow's: a context ``(C,)`` gives ``(num_samples, *event)``, ``(B, C)`` gives
        ``(num_samples, B, *event)``; ``event`` is ``(D,)`` or ``(C, H, W)``.
        """
        shape = (num_samples,) if context is None else (num_samples, *context.shape[:-1])
        return self.g(self.latent_sample(shape), context)

    def f(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """x (..., *event) -> (z = f(x; c) (..., *event), log|det df/dx| (...)). Inverse of g."""
        x, context = self._condition(x, context)
        z, sum_log_abs_det = x, _zeros(x, self.event_dims)
        for flow in self.flows:
            z, log_abs_det = flow.f(z, context)
            sum_log_abs_det = sum_log_abs_det + log_abs_det
        return z, sum_log_abs_det

    def g(self, z: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        """z (..., *event) -> x = g(z; c) (..., *event). Inverse of f."""
        return self.g_steps(z, context)[-1]

    def g_steps(self, z: torch.Tensor, context: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        """[z, g_L(z), g_{L-1}(g_L(z)), ..., g(z)]: z and the output of every inverse step (each of ``flows``)."""
        z, context = self._condition(z, context)
        xs = [z]
        for flow in reversed(self.flows):
            xs.append(flow.g(xs[-1], context))
        return xs

    def log_prob(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        """log p(x | c) = log p_Z(f(x; c)) + log|det df/dx|, shape (...)."""
        z, log_abs_det = self.f(x, context)
        return self.latent_log_prob(z) + log_abs_det

    def __len__(self) -> int:
        return len(self.flows)
