"""Presets: named flows built from the layers. :class:`RealNVP` is the article's model;
:class:`MultiScaleRealNVP` the RealNVP paper's image architecture; :class:`Glow` Glow's;
:class:`NeuralSplineFlow` the NSF paper's coupling (or autoregressive) flow; :class:`MAF` the masked
autoregressive flow."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

from jaxflow.core.layer import Chain, Layer, Repeat, require_int
from jaxflow.core.spec import FlowSpec
from jaxflow.layers.autoregressive import MaskedAutoregressive
from jaxflow.layers.coupling import AffineCoupling, Coupling
from jaxflow.layers.elementwise import ActNorm
from jaxflow.layers.factor_out import FactorOut
from jaxflow.layers.lu import LULinear
from jaxflow.layers.permute import Permute
from jaxflow.layers.scales import SCALES
from jaxflow.layers.squeeze import Squeeze, Unsqueeze
from jaxflow.layers.transforms import AffineTransform, RQSpline, Transform
from jaxflow.nets.made import MADE
from jaxflow.nets.mlp import MLP
from jaxflow.nets.resnet import ResNet

__all__ = ["RealNVP", "MultiScaleRealNVP", "Glow", "NeuralSplineFlow", "MAF"]


def _check_vector_preset(spec, layers: str) -> None:
    """The fields a vector preset shares, in one-line errors: ``dim >= 2``, the number of layers
    (the field named ``layers``) and ``scan_unroll`` (``True`` normalised to that number: ``1 ==
    True`` in Python, so a bool would collide in jit's cache); then the layers themselves, each
    error prefixed with the preset's name."""
    name = type(spec).__name__
    require_int(name, "dim", spec.dim, 2)
    require_int(name, layers, getattr(spec, layers), 1, 2**16)
    if isinstance(spec.scan_unroll, bool):
        object.__setattr__(spec, "scan_unroll", getattr(spec, layers) if spec.scan_unroll else 1)
    require_int(name, "scan_unroll", spec.scan_unroll, 1)
    try:
        spec.layers
        spec._check()
    except (TypeError, ValueError) as err:
        raise type(err)(f"{name}: {str(err).split(': ', 1)[-1]}") from None


def _check_image_preset(spec, num_squeezes: int, steps: str) -> None:
    """The fields an image preset shares, in one-line errors: ``event_shape`` a tuple ``(H, W, C)``
    with ``H`` and ``W`` divisible by ``2 ** num_squeezes``, ``num_scales``, the steps per scale (the
    field named ``steps``), and ``scan_unroll`` (``True`` normalised to the steps per scale)."""
    name = type(spec).__name__
    if isinstance(spec.event_shape, (list, tuple)):
        object.__setattr__(spec, "event_shape", tuple(spec.event_shape))
    if not isinstance(spec.event_shape, tuple) or len(spec.event_shape) != 3:
        raise ValueError(f"{name}: event_shape must be (H, W, C), a tuple, got {spec.event_shape!r}")
    require_int(name, "num_scales", spec.num_scales, 1, 16)
    require_int(name, steps, getattr(spec, steps), 1, 2**10)
    if isinstance(spec.scan_unroll, bool):  # normalised to an int, as RealNVP's
        object.__setattr__(spec, "scan_unroll", getattr(spec, steps) if spec.scan_unroll else 1)
    require_int(name, "scan_unroll", spec.scan_unroll, 1)
    factor = 2 ** num_squeezes
    height, width = spec.event_shape[:2]
    if isinstance(height, int) and isinstance(width, int) and (height % factor or width % factor):
        raise ValueError(f"{name}: {spec.num_scales} scales need height and width divisible by "
                         f"{factor}, got event shape {spec.event_shape}")


def _alternating(step: Callable[[bool], Layer], n: int, unroll: int) -> list[Layer]:
    """``n`` steps alternating ``flip`` (``step(False)``, ``step(True)``, ...): the pairs as one
    ``Repeat`` (unrolled by ``unroll``), and one more ``step(False)`` if ``n`` is odd."""
    pair = Chain(step(False), step(True))
    layers = [Repeat(pair, n // 2, unroll=min(unroll, n // 2))] if n >= 2 else []
    return layers + [step(False)] * (n % 2)


@dataclasses.dataclass(frozen=True)
class RealNVP(FlowSpec):
    """The article's normalizing flow: ``num_flows`` affine coupling layers on ``R^dim``.

    Each layer splits ``x`` into ``x2 = x[..., :d]`` (transformed, ``d = dim // 2``) and
    ``x1 = x[..., d:]`` (conditioning, ``dim - d`` coordinates), and maps

    .. math::

        (t, s) = \\theta(x_1, c), \\qquad z = \\operatorname{concat}(x_1,\\; x_2 \\odot e^{h(s)} + t),
        \\qquad \\log|\\det \\partial z / \\partial x| = \\textstyle\\sum_j h(s_j),

    so the conditioning half moves to the front and consecutive layers take turns. ``h`` is the
    scale map (:mod:`jaxflow.layers.scales`). The conditioner :math:`\\theta` is an MLP
    ``Linear(dim - d + context_dim -> hidden_dim)``, leaky_relu, ``num_hidden`` x
    [``Linear(hidden_dim -> hidden_dim)``, leaky_relu], ``Linear(hidden_dim -> 2 d)``
    (:class:`~jaxflow.nets.MLP`); with ``context_dim > 0`` it also sees the context ``c``.

    As layers: ``Repeat(AffineCoupling(mask="half", conditioner=MLP(hidden_dim, num_hidden,
    negative_slope, compute_dtype), scale, clamp, identity_init), num_flows, unroll=scan_unroll)``
    (:attr:`layers`), so its parameters are ``{"conditioner": ...}`` stacked on a layer axis.

    Args:
      dim: data dimension ``D >= 2``.
      num_flows: number of coupling layers ``L >= 1``.
      hidden_dim: conditioner width ``H``.
      num_hidden: number of hidden ``H -> H`` layers in each conditioner.
      scale: scale map, one of ``"exp"`` (the article), ``"tanh"``, ``"sigmoid"``.
      clamp: ``c`` of the ``"tanh"`` soft clamp, the largest ``|log-scale|``; ignored otherwise.
      identity_init: zero the conditioner's last layer, so that ``t = s = 0`` at initialisation.
        For ``"exp"`` and ``"tanh"`` every coupling is then the identity on values and only the
        article's swap of halves remains: ``f(x) = roll(x, -d L)`` with log-det 0, so the
        density starts as exactly the latent's (for the default isotropic ``N(0, I)``).
      negative_slope: slope of leaky_relu for negative inputs (0.01, as torch and flax).
      compute_dtype: dtype of the conditioner's matmuls (e.g. ``"bfloat16"``); ``None`` computes in
        the dtype of the parameters. The coupling and log-det always stay in the parameter dtype.
      scan_unroll: ``unroll`` of the ``jax.lax.scan`` over layers; ``1`` keeps compile time flat in
        ``num_flows``, ``True`` (stored as ``num_flows``) unrolls every layer, for comparison.
      context_dim: size of the context of a conditional density ``p(x | c)``; ``0``: unconditional.
      embedding, embedding_dim: a learned network of the context and the size of its output, which
        every conditioner sees instead of ``c`` (:class:`~jaxflow.FlowSpec`); ``None``, ``0``: none.
    """

    dim: int
    num_flows: int
    hidden_dim: int = 64
    num_hidden: int = 2
    scale: str = "exp"
    clamp: float = 5.0
    identity_init: bool = False
    negative_slope: float = 0.01
    compute_dtype: Optional[str] = None
    scan_unroll: int | bool = 1
    context_dim: int = 0
    embedding: Optional[Any] = None
    embedding_dim: int = 0

    context_affine = None

    def __post_init__(self):
        require_int("RealNVP", "hidden_dim", self.hidden_dim, 1, 2**16)
        require_int("RealNVP", "num_hidden", self.num_hidden, 0, 1024)
        if self.scale not in SCALES:
            raise ValueError(f"RealNVP: scale must be one of {SCALES}, got {self.scale!r}")
        _check_vector_preset(self, "num_flows")

    @property
    def event_shape(self) -> tuple[int]:
        return (self.dim,)

    @property
    def coupling(self) -> AffineCoupling:
        """One of the ``num_flows`` identical coupling specs."""
        conditioner = MLP(self.hidden_dim, self.num_hidden, self.negative_slope, self.compute_dtype)
        return AffineCoupling("half", conditioner, self.scale, self.clamp, self.identity_init)

    @property
    def layers(self) -> Repeat:
        return Repeat(self.coupling, self.num_flows, unroll=self.scan_unroll)

    @property
    def split_dim(self) -> int:
        """``d``: the number of transformed coordinates, ``x2 = x[..., :d]``."""
        return self.dim // 2

    @property
    def condition_dim(self) -> int:
        """``D - d``: the number of conditioning coordinates, ``x1 = x[..., d:]``."""
        return self.dim - self.split_dim


@dataclasses.dataclass(frozen=True)
class MultiScaleRealNVP(FlowSpec):
    """The RealNVP paper's multi-scale architecture (Dinh et al. 2017, section 3.6) on images ``(H, W, C)``.

    Scale ``s`` of ``num_scales`` acts on ``(H_s, W_s, C_s)`` (``H_0, W_0, C_0 = H, W, C``)::

        s < num_scales - 1:  k checkerboard couplings        on (H_s, W_s, C_s)
                             Squeeze                           -> (H_s/2, W_s/2, 4 C_s)
                             k channel couplings
                             FactorOut(scale s + 1)            scale s + 1 on the last 2 C_s channels
                             Unsqueeze                         -> (H_s, W_s, C_s)
        last scale:          k + 1 checkerboard couplings

    with ``k = couplings_per_scale``, consecutive couplings alternating the mask (``flip``), each
    coupling preceded by an :class:`~jaxflow.ActNorm` (``actnorm=True``; the paper's batch
    normalisation, as Glow) and conditioned by ``ResNet(channels, num_blocks)`` with its last
    convolution zero (every coupling starts as the identity). Pairs of identical couplings run
    as one ``lax.scan`` (:class:`~jaxflow.Repeat`), unrolled by ``scan_unroll``. ``f`` maps
    ``(..., H, W, C)`` to a latent of the same shape (the factored coordinates put back in place by the ``Unsqueeze``), and
    ``log_prob`` uses ``N(0, I)`` over all ``H W C`` coordinates. ``H`` and ``W`` must divide
    by ``2 ** (num_scales - 1)``. ``context_dim``, ``embedding`` and ``embedding_dim``: as :class:`Glow`'s.

    ``scan_unroll`` is each ``Repeat``'s ``unroll`` (at most its length); ``True`` (stored as
    ``couplings_per_scale``), the default, unrolls them all. On XLA:CPU a convolution's gradient
    inside a ``lax.scan`` loop body runs ~40x slower than outside one (``bench/conv_scan.py``),
    and the default ``couplings_per_scale=3`` makes every ``Repeat`` one pair, so unrolling costs
    no compile time there; ``1`` keeps compile time flat for deep scales on accelerators.
    """

    event_shape: tuple[int, int, int]
    num_scales: int = 2
    couplings_per_scale: int = 3
    channels: int = 64
    num_blocks: int = 4
    kernel_size: int = 3
    scale: str = "tanh"
    clamp: float = 5.0
    actnorm: bool = True
    negative_slope: float = 0.01
    compute_dtype: Optional[str] = None
    scan_unroll: int | bool = True
    context_dim: int = 0
    embedding: Optional[Any] = None
    embedding_dim: int = 0

    context_affine = None

    def __post_init__(self):
        _check_image_preset(self, self.num_scales - 1, "couplings_per_scale")
        if not isinstance(self.actnorm, bool):
            raise TypeError(f"MultiScaleRealNVP: actnorm must be a bool, got {self.actnorm!r}")
        try:
            self._check()
        except (TypeError, ValueError) as err:
            raise type(err)(f"MultiScaleRealNVP: {str(err).split(': ', 1)[-1]}") from None

    def _coupling(self, mask: str, flip: bool) -> Layer:
        conditioner = ResNet(self.channels, self.num_blocks, self.kernel_size, self.negative_slope, self.compute_dtype)
        coupling = AffineCoupling(mask, conditioner, self.scale, self.clamp, identity_init=True, flip=flip)
        return Chain(ActNorm(), coupling) if self.actnorm else coupling

    def _couplings(self, mask: str, n: int) -> list[Layer]:
        """``n`` couplings alternating ``flip``: pairs as one ``Repeat``, and one more if ``n`` is odd."""
        return _alternating(lambda flip: self._coupling(mask, flip), n, self.scan_unroll)

    def _scale(self, index: int) -> Layer:
        k = self.couplings_per_scale
        if index == self.num_scales - 1:
            return Chain(*self._couplings("checkerboard", k + 1))
        return Chain(*self._couplings("checkerboard", k), Squeeze(), *self._couplings("channel", k),
                     FactorOut(self._scale(index + 1)), Unsqueeze())

    @property
    def layers(self) -> Layer:
        return self._scale(0)


@dataclasses.dataclass(frozen=True)
class Glow(FlowSpec):
    """Glow's multi-scale architecture (Kingma & Dhariwal 2018) on images ``(H, W, C)``.

    Scale ``s`` of ``num_scales`` (``K = steps_per_scale``)::

        Squeeze                             (H_s, W_s, C_s) -> (H_s/2, W_s/2, 4 C_s)
        K steps of flow, each:
            ActNorm()                       per channel, data-dependent start
            LULinear()                      the invertible 1x1 convolution W = L U
            AffineCoupling("channel", ResNet(channels, num_blocks), "sigmoid", flip)
        FactorOut(scale s + 1)              s < num_scales - 1: scale s + 1 on the last 2 C_s channels
        Unsqueeze                           -> (H_s, W_s, C_s)

    The coupling transforms one half of the channels, :math:`z_T = x_T \\odot \\sigma(u + 2) + t`,
    :math:`(t, u) = \\theta(x_C, c)`, log-det :math:`\\sum_T \\log \\sigma(u + 2)` (Glow's
    ``"sigmoid"`` scale, :mod:`jaxflow.layers.scales`), its ResNet's last convolution zero, so
    every step starts as ``W = I`` and ``z_T = \\sigma(2) x_T``. Consecutive steps alternate the transformed
    half (``flip``), so the coupling does not keep conditioning on the same channels while
    ``W = I``; pairs of steps run as one ``lax.scan`` (:class:`~jaxflow.Repeat`) unrolled by
    ``scan_unroll`` (default ``True``: every copy, as :class:`MultiScaleRealNVP`'s, for XLA:CPU).
    The whole map is

    .. math::

        \\log\\left|\\det \\frac{\\partial z}{\\partial x}\\right| = \\sum_{\\text{steps}}
        \\Big( HW\\!\\sum_c \\log|a_c| + HW\\!\\sum_c v_c + \\sum_T \\log \\sigma(u_T + 2) \\Big)

    (ActNorm scales ``a``, ``diag U = e^v``, ``H W`` the pixels at that scale). ``f`` maps
    ``(..., H, W, C)`` to a latent of the same shape and ``log_prob`` uses ``N(0, I)`` over all
    ``H W C`` coordinates. ``H`` and ``W`` must divide by ``2 ** num_scales``.

    .. warning:: Glow's factored-out halves have a learned Gaussian prior conditioned on the
       kept half (``split2d`` in the official code) and its ``W`` starts as a random rotation;
       here the latent is ``N(0, I)`` throughout (as :class:`MultiScaleRealNVP`) and ``W`` starts
       as ``I`` (:class:`~jaxflow.LULinear`), with alternating halves instead.

    Args:
      event_shape: ``(H, W, C)``.
      num_scales: ``L``, squeezes (and ``L - 1`` factor-outs).
      steps_per_scale: ``K``, steps of flow per scale.
      channels, num_blocks, kernel_size: the conditioner :class:`~jaxflow.ResNet`'s width,
        residual blocks and kernel.
      scale: the coupling's scale map (Glow's ``"sigmoid"``; ``"tanh"`` and ``"exp"`` too).
      clamp: ``c`` of ``"tanh"``; unused by the others.
      negative_slope, compute_dtype: the ResNet's leaky_relu slope and matmul dtype.
      scan_unroll: ``unroll`` of each pair ``Repeat`` (``True``: all).
      context_dim: size of the context of ``p(x | c)``, broadcast to every pixel as channels of
        every conditioner's input; ``0``: unconditional.
      embedding, embedding_dim: a learned network of the context and the size of its output, which
        every conditioner sees instead of ``c`` (:class:`~jaxflow.FlowSpec`); ``None``, ``0``: none.

    References:
      Kingma, Dhariwal. Glow: Generative Flow with Invertible 1x1 Convolutions. NeurIPS 2018.
    """

    event_shape: tuple[int, int, int]
    num_scales: int = 2
    steps_per_scale: int = 4
    channels: int = 64
    num_blocks: int = 1
    kernel_size: int = 3
    scale: str = "sigmoid"
    clamp: float = 5.0
    negative_slope: float = 0.01
    compute_dtype: Optional[str] = None
    scan_unroll: int | bool = True
    context_dim: int = 0
    embedding: Optional[Any] = None
    embedding_dim: int = 0

    context_affine = None

    def __post_init__(self):
        _check_image_preset(self, self.num_scales, "steps_per_scale")
        try:
            self._check()
        except (TypeError, ValueError) as err:
            raise type(err)(f"Glow: {str(err).split(': ', 1)[-1]}") from None

    def _step(self, flip: bool) -> Chain:
        conditioner = ResNet(self.channels, self.num_blocks, self.kernel_size, self.negative_slope, self.compute_dtype)
        coupling = AffineCoupling("channel", conditioner, self.scale, self.clamp, identity_init=True, flip=flip)
        return Chain(ActNorm(), LULinear(), coupling)

    def _scale(self, index: int) -> Chain:
        steps = _alternating(self._step, self.steps_per_scale, self.scan_unroll)
        inner = [FactorOut(self._scale(index + 1))] if index < self.num_scales - 1 else []
        return Chain(Squeeze(), *steps, *inner, Unsqueeze())

    @property
    def layers(self) -> Chain:
        return self._scale(0)


@dataclasses.dataclass(frozen=True)
class NeuralSplineFlow(FlowSpec):
    """A rational-quadratic neural spline flow on ``R^dim`` (Durkan et al. 2019): RQ-NSF (C), or
    RQ-NSF (AR) with ``autoregressive=True``.

    ``num_layers`` steps, each (``layers[0]`` first in ``f``)::

        Coupling(mask="alternate", conditioner=MLP(hidden_dim, num_hidden), transform=RQSpline(bins, bound))
        Permute("reverse")      # the next coupling transforms the other coordinates (even dim)
        LULinear()              # with the reversal, the paper's W = P L U between couplings

    each spline transforming the even coordinates ``0, 2, ...`` on ``[-bound, bound]`` with
    ``bins`` bins and identity tails, conditioned on the odd ones (and the context ``c``; the
    conditioner emits ``3 bins - 1`` numbers per transformed coordinate). With ``autoregressive``
    the coupling is ``MaskedAutoregressive(RQSpline(bins, bound), MADE(hidden_dim, num_hidden))``:
    every coordinate's spline conditioned on the coordinates before it (:class:`~jaxflow.MaskedAutoregressive`;
    ``g``, sampling, takes ``dim`` sequential passes). Every coupling starts as
    the identity (``identity_init``) and every ``LULinear`` as ``I``, so the density starts as the
    latent's up to the reversals. Runs as one ``Repeat`` (``lax.scan``) of the step, unrolled by
    ``scan_unroll``; parameters ``[{"conditioner": ...}, {}, {"lower", "upper", "log_diag"}]``
    stacked on a leading layer axis.

    Args:
      dim: data dimension ``D >= 2``.
      num_layers: number of spline couplings.
      bins: ``K``, bins of each spline.
      bound: ``B``, the spline's interval ``[-B, B]``; the identity outside.
      hidden_dim, num_hidden: the conditioner MLP's width and hidden layers.
      negative_slope: leaky_relu's slope in the conditioner.
      scan_unroll: ``unroll`` of the scan over layers (``True``: all).
      context_dim: size of the context of a conditional density ``p(x | c)``; ``0``: unconditional.
      autoregressive: RQ-NSF (AR), a masked autoregressive spline in place of each coupling.
      embedding, embedding_dim: a learned network of the context and the size of its output, which
        every conditioner sees instead of ``c`` (:class:`~jaxflow.FlowSpec`); ``None``, ``0``: none.

    References:
      Durkan, Bekasov, Murray, Papamakarios. Neural Spline Flows. NeurIPS 2019.
    """

    dim: int
    num_layers: int = 4
    bins: int = 8
    bound: float = 3.0
    hidden_dim: int = 64
    num_hidden: int = 2
    negative_slope: float = 0.01
    scan_unroll: int | bool = 1
    context_dim: int = 0
    autoregressive: bool = False
    embedding: Optional[Any] = None
    embedding_dim: int = 0

    context_affine = None

    def __post_init__(self):
        if not isinstance(self.autoregressive, bool):
            raise TypeError(f"NeuralSplineFlow: autoregressive must be a bool, got {self.autoregressive!r}")
        _check_vector_preset(self, "num_layers")

    @property
    def event_shape(self) -> tuple[int]:
        return (self.dim,)

    @property
    def coupling(self) -> Coupling | MaskedAutoregressive:
        """One of the ``num_layers`` identical spline coupling (or autoregressive) specs."""
        spline = RQSpline(self.bins, self.bound)
        if self.autoregressive:
            return MaskedAutoregressive(spline, MADE(self.hidden_dim, self.num_hidden,
                                                     negative_slope=self.negative_slope))
        return Coupling("alternate", MLP(self.hidden_dim, self.num_hidden, self.negative_slope), spline,
                        identity_init=True)

    @property
    def layers(self) -> Repeat:
        return Repeat(Chain(self.coupling, Permute("reverse"), LULinear()), self.num_layers, unroll=self.scan_unroll)


@dataclasses.dataclass(frozen=True)
class MAF(FlowSpec):
    """The masked autoregressive flow on ``R^dim`` (Papamakarios et al. 2017).

    ``num_layers`` steps, each (``layers[0]`` first in ``f``)::

        MaskedAutoregressive(transform, MADE(hidden_dim, num_hidden))    # natural order
        Permute("reverse")                                               # the next layer's order reversed

    so layer ``k`` is autoregressive in the natural order for even ``k`` and in the reversed one
    for odd ``k``, as the MAF paper's (and nflows' ``MaskedAutoregressiveFlow``, flowjax's
    ``masked_autoregressive_flow``). The reversal is a permutation between identical layers, not
    a reversed ``MADE(order=...)``: the steps stay identical specs, so they run as one ``Repeat``
    (``lax.scan``, compile time flat in ``num_layers``) and the masks stay one constant.
    With the affine ``transform`` (default ``AffineTransform("tanh", 5.0)``: the MAF paper's
    :math:`z_j = (x_j - \\mu_j) e^{-\\alpha_j}`, up to the sign of the learned log-scale, with
    its magnitude soft-clamped to 5 as the command line's default) the density is

    .. math::

        \\log p(x \\mid c) = \\log \\mathcal N(f(x; c); 0, I)
        + \\sum_{k=1}^{L} \\sum_{j=1}^{D} h(s^{(k)}_j),

    every ``s`` computed in one pass per layer; sampling takes ``dim`` passes per layer
    (:class:`~jaxflow.Invert` the layers for an IAF, fast to sample). Every layer starts as the
    identity (``identity_init``), so the density starts as the latent's.
    Parameters ``[{"conditioner": ...}, {}]`` stacked on a leading layer axis.

    Args:
      dim: data dimension ``D >= 2``.
      num_layers: ``L``, masked autoregressive layers.
      hidden_dim, num_hidden: each MADE's width and hidden ``H -> H`` layers after its input
        layer (default 1: the MAF paper's two hidden layers).
      negative_slope: leaky_relu's slope in the MADE.
      transform: the elementwise transform (:class:`~jaxflow.AffineTransform` or
        :class:`~jaxflow.RQSpline`).
      scan_unroll: ``unroll`` of the scan over layers (``True``: all).
      context_dim: size of the context of a conditional density ``p(x | c)``; ``0``: unconditional.
      embedding, embedding_dim: a learned network of the context and the size of its output, which
        every conditioner sees instead of ``c`` (:class:`~jaxflow.FlowSpec`); ``None``, ``0``: none.

    References:
      Papamakarios, Pavlakou, Murray. Masked Autoregressive Flow for Density Estimation. NeurIPS 2017.
    """

    dim: int
    num_layers: int = 5
    hidden_dim: int = 64
    num_hidden: int = 1
    negative_slope: float = 0.01
    transform: Transform = AffineTransform("tanh", 5.0)
    scan_unroll: int | bool = 1
    context_dim: int = 0
    embedding: Optional[Any] = None
    embedding_dim: int = 0

    context_affine = None

    def __post_init__(self):
        _check_vector_preset(self, "num_layers")

    @property
    def event_shape(self) -> tuple[int]:
        return (self.dim,)

    @property
    def autoregressive_layer(self) -> MaskedAutoregressive:
        """One of the ``num_layers`` identical masked autoregressive specs."""
        return MaskedAutoregressive(self.transform, MADE(self.hidden_dim, self.num_hidden,
                                                         negative_slope=self.negative_slope))

    @property
    def layers(self) -> Repeat:
        return Repeat(Chain(self.autoregressive_layer, Permute("reverse")), self.num_layers, unroll=self.scan_unroll)
