"""The one place where jaxflow and torchref meet: building, and converting weights both ways.

Layouts, for layer ``i`` of a flow with ``d = dim // 2`` (jaxflow leaves are stacked on a
leading layer axis, layer 0 is ``flows[0]``, the first applied in ``f``)::

    torch  flows.i.theta.input.weight     (H, D - d)  <->  jax  conditioner/input/kernel[i]     (D - d, H)
    torch  flows.i.theta.hidden.k.weight  (H, H)      <->  jax  conditioner/hidden_k/kernel[i]  (H, H)
    torch  flows.i.theta.dims.weight      (2d, H)     <->  jax  conditioner/dims/kernel[i]      (H, 2d)
    (biases likewise, without the transpose)

Torch ``Linear.weight`` is ``(out, in)`` and a Flax kernel ``(in, out)``: kernels are transposed.
The ``dims`` outputs are ordered differently: torch reads them interleaved (row ``2j`` is
``t_j``, row ``2j + 1`` is ``s_j``), jaxflow blocked (column ``j`` is ``t_j``, column ``d + j``
is ``s_j``), so ``torch row r = jax column`` :func:`interleaved_order` ``(d)[r]``.

Any other :class:`jaxflow.Flow` (vector events) converts layer by layer; the torch model keeps
the spec's tree, so :func:`to_jax` recovers the same spec::

    jaxflow                                 torch                                       params
    Repeat(layer, n, unroll) (the root)     NormalizingFlow.flows = Repeat([...], unroll)  leaves stacked on axis 0
    Chain(l_1, ..., l_n)                    Chain([...]) (a ModuleList)                    list, one entry per layer
    a single layer as the root              NormalizingFlow(latent, layer), single_layer   that layer's
    AffineCoupling("half", MLP)             AffineCouplingLayer(Conditioner, Split(D))     conditioner/<name>/kernel|bias
    AffineCoupling("alternate" | bools)     AffineCouplingLayer(Conditioner, MaskSplit)    as above
    Coupling(mask, MLP, transform)          spline.Coupling(Conditioner, Split | MaskSplit,  as above, P outputs per
      AffineTransform(scale, clamp)           AffineTransform(scale, clamp)                  coordinate (P = 2)
      RQSpline(bins, bound)                   RQSpline(bins, bound)                          (P = 3 bins - 1)
    MaskedAutoregressive(transform, MADE)   autoregressive.MaskedAutoregressive(MADE,      conditioner/<name>/kernel|bias,
                                              transform)                                   dims blocked on both sides
    Invert(layer)                           autoregressive.Invert(layer's twin)            layer's
    Permute(kind, seed)                     Permutation(D, kind, seed)                     {}
    ActNorm()                               ActNorm(D): shift, log_scale                   shift, log_scale
    LULinear()                              LULinear(D): lower, upper, log_diag            lower, upper, log_diag
    Affine(shift, scale)                    Affine(shift, scale) (buffers)                 {}
    Logit(alpha)                            Logit(alpha)                                   {}
    Flow.context_affine                     NormalizingFlow.context_affine                 -
    Flow.embedding (MLP), embedding_dim E   NormalizingFlow.embedding: Conditioner(         {"embedding": <MLP params>,
                                              context_dim, E, ..., num_params=1)             "layers": <root's>}

Image flows, events ``(H, W, C)`` in jaxflow (NHWC) and ``(C, H, W)`` in torch (NCHW); the latent
is ``StandardNormal((C, H, W))``, data move with :func:`to_torch_layout` / :func:`to_jax_layout`::

    jaxflow                                 torch                                       params
    AffineCoupling(mask, ResNet, flip=f)    ImageAffineCouplingLayer(ResNet, ImageMask)    conditioner/<name>/kernel|bias
    ResNet conv <name> kernel (k, k, i, o)  theta.<name>.weight (o, i, k, k)              kernel = weight.transpose(2, 3, 1, 0)
    Squeeze() / Unsqueeze()                 Squeeze() / Unsqueeze()                       {}
    FactorOut(layer)                        FactorOut(module, channel_dim=-3)             layer's
    ActNorm / LULinear / Affine / Permute   the same with channel_dim=-3 (per channel)    as above, unchanged
    Logit(alpha)                            Logit(alpha, event_dims=3)                    {}
    MultiScaleRealNVP (from_spec/from_jax)  its layers' twins; to_jax gives                as the Flow's
                                            jaxflow.Flow(event_shape, preset.layers, context_dim)

<name> is ``input``, ``block_k_a``, ``block_k_b``, ``output`` (:meth:`jaxflow.ResNet.layer_names`).
Image conditioners are blocked ``[t | s]`` on both sides (the channel halves), and their input
is ``concat((1 - m) x, c)`` on the channel axis in both: only the kernels are transposed.

Every coupling's conditioner is laid out as above (kernels transposed, ``dims`` rows
interleaved), its input ``concat(x_C, c)`` in both; the names are :meth:`jaxflow.MLP.layer_names`.
With ``P`` numbers per transformed coordinate torch row ``P j + p`` is jax column ``p d + j``
(:func:`interleaved_order` ``(d, P)``); a spline's numbers are, in order, ``K`` widths, ``K``
heights and ``K - 1`` derivatives on both sides.
A ``jaxflow.RealNVP`` keeps the article's plain list of couplings (``flows.i.theta...``), which
converts as the ``Repeat`` it is (:func:`spec_of` reads the preset's fields from it).

Each layer kind converts through its row of :data:`TWINS` (build the twin from the spec, the spec
from the twin, params out, params in); the layouts above live in the helpers the rows share:
:func:`interleaved_order` (conditioner outputs), :func:`_linear_to_dense` / :func:`_dense_to_linear`
(``Linear`` weights), :data:`TORCH_TO_JAX_KERNEL` / :data:`JAX_TO_TORCH_KERNEL` (``Conv2d``
weights) and :func:`_torch_shape` / :func:`_jax_shape` (NCHW events).

Conversion copies values through NumPy: it is exact, keeps float32/float64, and reads torch
models on any device.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch import nn

import jaxflow
from jaxflow.core.init import check_params, params_dtype
from jaxflow.core.validation import layer_params
from torchref import autoregressive as ta
from torchref import model as tr
from torchref import spline as ts
from torchref.model import AffineCouplingLayer, Conditioner, NormalizingFlow, Split, StandardNormal

__all__ = ["build_flow", "from_spec", "spec_of", "interleaved_order", "to_jax", "to_jax_params", "from_jax",
           "to_torch_layout", "to_jax_layout", "Twin", "TWINS"]


def _is_image(event_shape) -> bool:
    return event_shape is None or len(event_shape) == 3


def to_torch_layout(x, event_shape: Optional[Tuple[int, ...]] = None):
    """Data in jaxflow's layout to torch's: images ``(..., H, W, C) -> (..., C, H, W)``.

    ``x``: a NumPy or JAX array (gives a NumPy array) or a torch tensor (gives a tensor view).
    ``event_shape``: jaxflow's event shape of ``x``; events of one axis (vectors) come back as
    they are. Default: image events.
    """
    if not _is_image(event_shape):
        return x
    return x.movedim(-1, -3) if isinstance(x, torch.Tensor) else np.moveaxis(np.asarray(x), -1, -3)


def to_jax_layout(x, event_shape: Optional[Tuple[int, ...]] = None):
    """Data in torch's layout to jaxflow's, the inverse of :func:`to_torch_layout`: ``(..., C, H, W) -> (..., H, W, C)``.

    ``x``: a torch tensor (gives a tensor view) or an array (gives a NumPy array); ``event_shape``
    is jaxflow's, as in :func:`to_torch_layout`.
    """
    if not _is_image(event_shape):
        return x
    return x.movedim(-3, -1) if isinstance(x, torch.Tensor) else np.moveaxis(np.asarray(x), -3, -1)


def build_flow(
    dim: int, num_flows: int, hidden_dim: int = 64, num_hidden: int = 2, *,
    scale: str = "exp", clamp: float = 5.0, identity_init: bool = False, negative_slope: float = 0.01,
    dtype: torch.dtype = torch.float32, device: Optional[torch.device | str] = None,
) -> NormalizingFlow:
    """The torch model of ``jaxflow.RealNVP(dim, num_flows, hidden_dim, num_hidden, ...)``.

    Weights follow ``torch.nn.Linear``'s default initialisation (the torch global RNG);
    ``identity_init`` zeroes every ``dims`` layer as jaxflow does. The arguments are validated
    by :class:`jaxflow.RealNVP`, so both sides reject the same specs with the same message.
    """
    spec = jaxflow.RealNVP(dim, num_flows, hidden_dim, num_hidden, scale=scale, clamp=clamp,
                           identity_init=identity_init, negative_slope=negative_slope)
    return from_spec(spec, dtype=dtype, device=device)


def from_spec(flow: jaxflow.FlowSpec, dtype: torch.dtype = torch.float32,
              device: Optional[torch.device | str] = None) -> NormalizingFlow:
    """The freshly initialised torch model of the spec ``flow`` (see :func:`build_flow`).

    Each layer gets its torch default (``Linear``'s initialisation; ``ActNorm`` and ``LULinear``
    the identity, as ``jaxflow.init`` without data). A ``jaxflow.RealNVP`` gives the article's
    model: ``flows`` is the plain list of its couplings.
    """
    shape = tuple(flow.event_shape)
    _check_event_shape(shape, "from_jax")
    root = _build(flow.layers, shape, flow.layer_context_dim)
    context_affine = None if flow.context_affine is None else _build(flow.context_affine, (flow.context_dim,), 0)
    flows = list(root) if isinstance(flow, jaxflow.RealNVP) else root
    model = NormalizingFlow(StandardNormal(_torch_shape(shape)), flows, context_affine=context_affine,
                            context_dim=flow.context_dim, embedding=_build_embedding(flow))
    return model.to(device=device, dtype=dtype)


def spec_of(model: NormalizingFlow, **options) -> jaxflow.RealNVP:
    """The ``jaxflow.RealNVP`` that ``model`` (the article's plain list of couplings) computes.

    ``options`` sets the fields that torch weights do not determine (``identity_init``, default
    the layers' own; ``compute_dtype``; ``scan_unroll``); the others are read from the model,
    which must be a stack of :class:`AffineCouplingLayer` with :class:`Split` and identical conditioners.
    """
    first = model.flows[0]
    if not isinstance(first, AffineCouplingLayer) or not isinstance(first.split, Split):
        raise ValueError(f"to_jax: model is not a uniform stack of affine coupling layers (flows[0] is "
                         f"{type(first).__name__}); hold other compositions in a torchref Chain or Repeat")
    try:
        stack = _spec(_root(model), (first.split.dim,), _layer_context_dim(model))
    except ValueError as err:
        raise ValueError(f"to_jax: model is not a uniform stack of affine coupling layers: "
                         f"{str(err).split(': ', 1)[-1]}") from None
    coupling, net = stack.layer, stack.layer.conditioner
    fields = dict(identity_init=coupling.identity_init) | options
    spec = jaxflow.RealNVP(first.split.dim, stack.n, net.hidden_dim, net.num_hidden, scale=coupling.scale,
                           clamp=coupling.clamp, negative_slope=net.negative_slope, context_dim=model.context_dim,
                           **_embedding_fields(model), **fields)
    if dataclasses.replace(spec.coupling, identity_init=coupling.identity_init,
                           conditioner=dataclasses.replace(spec.coupling.conditioner, compute_dtype=None)) != coupling:
        raise ValueError(f"to_jax: a RealNVP cannot hold these couplings ({coupling}); hold them in a torchref Repeat")
    return spec


def to_jax_params(model: NormalizingFlow, grad: bool = False):
    """``model``'s weights (or, with ``grad=True``, their ``.grad``) as a jaxflow params pytree."""
    def read(p: torch.Tensor) -> np.ndarray:
        """A NumPy copy (a gradient that is ``None`` reads as zeros, as JAX's)."""
        tensor = (torch.zeros_like(p) if p.grad is None else p.grad) if grad else p.data
        if tensor.dtype == torch.float64 and not jax.config.jax_enable_x64:
            raise ValueError('to_jax: float64 weights need jax.config.update("jax_enable_x64", True) first')
        return tensor.detach().cpu().numpy()

    params = _params_of(_root(model), read)
    if model.embedding is not None:
        params = {"embedding": _net_params_out(model.embedding, read), "layers": params}
    return jax.tree_util.tree_map(jnp.asarray, params)


def to_jax(model: NormalizingFlow, **options) -> Tuple[jaxflow.FlowSpec, dict]:
    """``(flow, params)`` computing exactly what ``model`` computes.

    A plain list of couplings (the article's model) gives a ``jaxflow.RealNVP`` (``options``: see
    :func:`spec_of`); a model holding a :class:`~torchref.model.Chain`, a
    :class:`~torchref.model.Repeat` or a single layer gives the ``jaxflow.Flow`` of that tree. The
    twin of a ``jaxflow.MultiScaleRealNVP`` (a Chain) gives the equivalent ``jaxflow.Flow(event_shape,
    preset.layers, context_dim)``: the same layers and params, the preset's name is not kept.
    """
    if not isinstance(model, NormalizingFlow):
        raise TypeError(f"to_jax: expected a torchref.NormalizingFlow, got {type(model).__name__}")
    if _is_preset(model):
        return spec_of(model, **options), to_jax_params(model)
    if options:
        raise TypeError(f"to_jax: options {sorted(options)} apply to RealNVP stacks only; this model is a composition")
    return _flow_spec_of(model), to_jax_params(model)


def from_jax(flow: jaxflow.FlowSpec, params, device: Optional[torch.device | str] = None) -> NormalizingFlow:
    """The torch model of ``(flow, params)``, in the params' dtype, on ``device`` (default CPU)."""
    if not isinstance(flow, jaxflow.FlowSpec):
        raise TypeError(f"from_jax: expected a jaxflow flow spec (jaxflow.Flow or jaxflow.RealNVP), got {type(flow).__name__}")
    check_params(flow, params)
    model = from_spec(flow, dtype=getattr(torch, params_dtype(params).name), device=device)
    with torch.no_grad():
        _load(_root(model), flow.layers, layer_params(flow, params))
        if flow.embedding is not None:
            _net_params_in(model.embedding, params["embedding"])
    return model


def _is_preset(model: NormalizingFlow) -> bool:
    """Whether ``model`` is the article's plain list of couplings (a ``jaxflow.RealNVP``)."""
    return type(model.flows) is nn.ModuleList and not model.single_layer


def _root(model: NormalizingFlow) -> nn.Module:
    """The module of the spec's root layer: the single layer, the Chain/Repeat ``flows``, or the
    article's plain list read as the :class:`~torchref.model.Repeat` it is (its modules, shared)."""
    if model.single_layer:
        return model.flows[0]
    return tr.Repeat(list(model.flows)) if _is_preset(model) else model.flows


def _flow_spec_of(model: NormalizingFlow) -> jaxflow.Flow:
    latent = model.latent
    if not isinstance(latent, StandardNormal):
        raise ValueError(f"to_jax: the latent must be a torchref StandardNormal (jaxflow's default), got {type(latent).__name__}")
    shape = _jax_shape(tuple(latent.loc.shape))
    _check_event_shape(shape, "to_jax")
    context_affine = None if model.context_affine is None else _spec(model.context_affine, (model.context_dim,), 0)
    flow = jaxflow.Flow(shape, _spec(_root(model), shape, _layer_context_dim(model)), model.context_dim, context_affine,
                        **_embedding_fields(model))
    permutations = lambda module: [m.perm.tolist() for m in module.modules() if isinstance(m, tr.Permutation)]
    if permutations(_build(flow.layers, shape, flow.layer_context_dim)) != permutations(_root(model)):
        raise ValueError("to_jax: the model's permutations are not those of a jaxflow flow (copy k of a Repeat draws "
                         "Permutation(..., copy=k), k counted over nested repeats)")
    return flow


def _build_embedding(flow: jaxflow.FlowSpec) -> Optional[Conditioner]:
    """The twin of the flow's context embedding: a :class:`Conditioner` with one output per
    embedded coordinate (``num_params=1``, so its rows are jaxflow's columns), or ``None``."""
    net = flow.embedding
    if net is None:
        return None
    if not isinstance(net, jaxflow.MLP):
        raise ValueError(f"from_jax: torchref has a twin of jaxflow.MLP embeddings only, got {type(net).__name__}")
    _no_compute_dtype(net)
    return Conditioner(flow.context_dim, flow.embedding_dim, net.num_hidden, net.hidden_dim, num_params=1,
                       negative_slope=net.negative_slope, activation=net.activation)


def _embedding_fields(model: NormalizingFlow) -> dict:
    """The ``embedding`` and ``embedding_dim`` of the flow spec of ``model`` (none without an embedding)."""
    theta = model.embedding
    if theta is None:
        return {}
    if not isinstance(theta, Conditioner) or theta.num_params != 1 or theta.input.in_features != model.context_dim:
        raise ValueError(f"to_jax: the embedding must be a torchref Conditioner({model.context_dim}, out_dim, ..., "
                         f"num_params=1), got {theta}")
    return {"embedding": _mlp_of(theta), "embedding_dim": theta.out_dim}


def _layer_context_dim(model: NormalizingFlow) -> int:
    """The size of the context ``model``'s layers see: the embedding's output, else the raw context's."""
    return model.context_dim if model.embedding is None else model.embedding.out_dim


# --- layouts: the one place where jaxflow's and torch's arrays differ --------------------------------


def _torch_shape(event_shape: Tuple[int, ...]) -> Tuple[int, ...]:
    """torch's event shape of jaxflow's: images ``(H, W, C) -> (C, H, W)``, vectors ``(D,)`` as they are."""
    return (event_shape[-1], *event_shape[:-1]) if len(event_shape) == 3 else tuple(event_shape)


def _jax_shape(event_shape: Tuple[int, ...]) -> Tuple[int, ...]:
    """The inverse of :func:`_torch_shape`: ``(C, H, W) -> (H, W, C)``."""
    return (*event_shape[1:], event_shape[0]) if len(event_shape) == 3 else tuple(event_shape)


def _channel_dim(event_shape: Tuple[int, ...]) -> int:
    """The torch dim of jaxflow's last event axis: ``-1`` on vectors, ``-3`` (the channels) on images."""
    return -3 if len(event_shape) == 3 else -1


def _check_event_shape(event_shape: Tuple[int, ...], who: str) -> None:
    if len(event_shape) not in (1, 3):
        raise ValueError(f"{who}: torchref twins act on vector events (D,) and images (H, W, C), "
                         f"got event shape {tuple(event_shape)}")


def interleaved_order(d: int, num_params: int = 2) -> np.ndarray:
    """The jax column of each torch row of a conditioner's last layer, ``num_params`` outputs per coordinate.

    torch reads the rows interleaved (row ``p j + k`` is output ``k`` of coordinate ``j``),
    jaxflow the columns blocked (column ``k d + j``); for ``num_params = 2``:
    ``[0, d, 1, d + 1, ..., d - 1, 2d - 1]``.
    """
    return np.arange(num_params * d).reshape(num_params, d).T.ravel()


#: axis orders between a Flax ``Conv`` kernel ``(kh, kw, in, out)`` and a ``Conv2d`` weight ``(out, in, kh, kw)``
TORCH_TO_JAX_KERNEL = (2, 3, 1, 0)
JAX_TO_TORCH_KERNEL = (3, 2, 0, 1)


def _linear_to_dense(weight: np.ndarray, module: nn.Module) -> np.ndarray:
    """A torch layer's weight as jaxflow's kernel: ``Linear (out, in) -> (in, out)``, ``Conv2d`` by :data:`TORCH_TO_JAX_KERNEL`."""
    return weight.transpose(TORCH_TO_JAX_KERNEL) if isinstance(module, nn.Conv2d) else weight.T


def _dense_to_linear(kernel: np.ndarray, module: nn.Module) -> np.ndarray:
    """The inverse of :func:`_linear_to_dense`."""
    return kernel.transpose(JAX_TO_TORCH_KERNEL) if isinstance(module, nn.Conv2d) else kernel.T


def _mlp_of(theta: Conditioner) -> jaxflow.MLP:
    """The ``jaxflow.MLP`` spec that ``theta`` computes."""
    return jaxflow.MLP(theta.input.out_features, len(theta.hidden), theta.negative_slope, activation=theta.activation)


def _resnet_of(theta: tr.ResNet) -> jaxflow.ResNet:
    """The ``jaxflow.ResNet`` spec that ``theta`` computes."""
    return jaxflow.ResNet(theta.input.out_channels, theta.num_blocks, theta.kernel_size, theta.negative_slope)


def _net_layers(theta: nn.Module) -> list[Tuple[str, nn.Module]]:
    """``(jaxflow name, Linear or Conv2d)`` of each layer of a conditioner, in order; names from ``layer_names``."""
    if isinstance(theta, tr.ResNet):
        return list(zip(_resnet_of(theta).layer_names(),
                        [theta.input, *(conv for block in theta.blocks() for conv in block), theta.output]))
    return list(zip(_mlp_of(theta).layer_names(), [theta.input, *theta.hidden, theta.dims]))


def _net_params_out(theta: nn.Module, read: "Read", order: np.ndarray | slice = slice(None)) -> dict:
    """A conditioner's jaxflow params ``{name: {"kernel", "bias"}}``; ``order`` is the jax column of each
    torch output row of the last layer (:func:`interleaved_order`; image conditioners: as they are)."""
    layers = _net_layers(theta)
    params = {}
    for i, (name, layer) in enumerate(layers):
        rows = np.argsort(order) if i == len(layers) - 1 and isinstance(order, np.ndarray) else slice(None)
        params[name] = {"kernel": _linear_to_dense(read(layer.weight)[rows], layer), "bias": read(layer.bias)[rows]}
    return params


def _net_params_in(theta: nn.Module, params: dict, order: np.ndarray | slice = slice(None)) -> None:
    """Copy a conditioner's jaxflow params into ``theta`` (the inverse of :func:`_net_params_out`)."""
    layers = _net_layers(theta)
    for i, (name, layer) in enumerate(layers):
        rows = order if i == len(layers) - 1 else slice(None)
        _copy(layer.weight, _dense_to_linear(np.asarray(params[name]["kernel"]), layer)[rows])
        _copy(layer.bias, np.asarray(params[name]["bias"])[rows])


def _copy(target: torch.Tensor, value) -> None:
    target.copy_(torch.from_numpy(np.array(value)))


def _no_compute_dtype(network) -> None:
    if network.compute_dtype is not None:
        raise ValueError(f"from_jax: torchref computes in the parameters' dtype; convert a spec with "
                         f"compute_dtype=None (got {network.compute_dtype!r})")


def _check_channels(module: nn.Module, shape: Tuple[int, ...]) -> None:
    """``ValueError`` unless a per-channel module acts on jaxflow's last axis of events of ``shape``."""
    expected = (shape[-1], _channel_dim(shape))
    got = (getattr(module, "dim", shape[-1]), module.channel_dim)
    if got != expected:
        raise ValueError(f"to_jax: {type(module).__name__}(dim={got[0]}, channel_dim={got[1]}) on events of jaxflow "
                         f"shape {tuple(shape)}; expected dim={expected[0]}, channel_dim={expected[1]}")


# --- the table: one row per jaxflow layer kind --------------------------------------------------------

Shape = Tuple[int, ...]
Read = Callable[[torch.Tensor], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Twin:
    """How one jaxflow layer kind and its torch twin convert, on events of jaxflow's ``shape``.

    ``modules``: the torch classes of the twin (exact types). ``build(layer, shape, context_dim)``:
    the freshly initialised twin of the spec. ``spec(module, shape, context_dim)``: the spec that
    ``module`` computes (``ValueError`` if none). ``params_out(module, read)``: the jaxflow params
    pytree, NumPy leaves, each torch tensor read through ``read`` (its data or its gradient).
    ``params_in(module, layer, params)``: copy the jaxflow params into ``module`` (under ``no_grad``).
    """

    modules: Tuple[type, ...]
    build: Callable[[jaxflow.Layer, Shape, int], nn.Module]
    spec: Callable[[nn.Module, Shape, int], jaxflow.Layer]
    params_out: Callable[[nn.Module, Read], Any] = lambda module, read: {}
    params_in: Callable[[nn.Module, jaxflow.Layer, Any], None] = lambda module, layer, params: None


def _build(layer: jaxflow.Layer, shape: Shape, context_dim: int) -> nn.Module:
    """The freshly initialised torch twin of the jaxflow layer spec ``layer`` on events of jaxflow's ``shape``."""
    kind = next(cls for cls in type(layer).__mro__ if not cls.__name__.startswith("_"))  # a copy's spec is its kind
    if kind not in TWINS:
        raise ValueError(f"from_jax: torchref has no twin of the jaxflow layer {type(layer).__name__}")
    return TWINS[kind].build(layer, shape, context_dim)


def _twin_of(module: nn.Module) -> Twin:
    if type(module) not in _BY_MODULE:
        raise ValueError(f"to_jax: jaxflow has no layer for the torch module {type(module).__name__}")
    return _BY_MODULE[type(module)]


def _spec(module: nn.Module, shape: Shape, context_dim: int) -> jaxflow.Layer:
    """The jaxflow layer spec that the torch ``module`` computes on events of jaxflow's ``shape`` (the inverse of :func:`_build`)."""
    return _twin_of(module).spec(module, shape, context_dim)


def _params_of(module: nn.Module, read: Read):
    """The jaxflow params of ``module`` (NumPy leaves)."""
    return _twin_of(module).params_out(module, read)


def _load(module: nn.Module, layer: jaxflow.Layer, params) -> None:
    """Copy the jaxflow ``params`` of ``layer`` into its twin ``module`` (under ``torch.no_grad``)."""
    TWINS[type(layer)].params_in(module, layer, params)


def _spec_of_repeat(module: tr.Repeat, shape: Shape, context_dim: int) -> jaxflow.Repeat:
    copies = [_spec(one, shape, context_dim) for one in module]
    if any(copy != copies[0] for copy in copies):
        raise ValueError(f"to_jax: the copies of a Repeat must be identical layers, got {sorted(set(map(repr, copies)))}")
    return jaxflow.Repeat(copies[0], len(copies), module.unroll)


def _repeat_params_in(module: tr.Repeat, layer: jaxflow.Repeat, params) -> None:
    for i, one in enumerate(module):
        _load(one, layer.layer, jax.tree_util.tree_map(lambda leaf: np.asarray(leaf)[i], params))


def _chain_params_in(module: tr.Chain, layer: jaxflow.Chain, params) -> None:
    for one, one_layer, one_params in zip(module, layer.layers, params):
        _load(one, one_layer, one_params)


def _build_chain(layer: jaxflow.Chain, shape: Shape, context_dim: int) -> tr.Chain:
    modules = []
    for one in layer.layers:
        modules.append(_build(one, shape, context_dim))
        shape = one.output_shape(shape)
    return tr.Chain(modules)


def _spec_of_chain(module: tr.Chain, shape: Shape, context_dim: int) -> jaxflow.Chain:
    layers = []
    for one in module:
        layers.append(_spec(one, shape, context_dim))
        shape = layers[-1].output_shape(shape)
    return jaxflow.Chain(*layers)


def _spec_of_factor_out(module: tr.FactorOut, shape: Shape, context_dim: int) -> jaxflow.FactorOut:
    _check_channels(module, shape)
    return jaxflow.FactorOut(_spec(module.module, jaxflow.FactorOut.inner_shape(shape), context_dim))


def _build_affine_coupling(layer: jaxflow.AffineCoupling, shape: Shape, context_dim: int) -> AffineCouplingLayer:
    _no_compute_dtype(layer.conditioner)
    in_dim, out_dim = layer.sizes(shape, context_dim)
    net = layer.conditioner
    if len(shape) == 3:
        theta = tr.ResNet(in_dim, out_dim, net.channels, net.num_blocks, net.kernel_size, net.negative_slope)
        mask = tr.ImageMask(_torch_shape(shape), layer.mask, layer.flip)
        return tr.ImageAffineCouplingLayer(theta, mask, scale=layer.scale, clamp=layer.clamp,
                                           identity_init=layer.identity_init)
    theta = Conditioner(in_dim, out_dim // 2, net.num_hidden, net.hidden_dim, num_params=2,
                        negative_slope=net.negative_slope, activation=net.activation)
    return AffineCouplingLayer(theta, _split(layer.mask, shape), scale=layer.scale, clamp=layer.clamp,
                               identity_init=layer.identity_init)


def _spec_of_affine_coupling(module: AffineCouplingLayer, shape: Shape, context_dim: int) -> jaxflow.AffineCoupling:
    if isinstance(module, tr.ImageAffineCouplingLayer):
        mask = module.mask
        spec = jaxflow.AffineCoupling(mask.kind, _resnet_of(module.theta), module.scale, module.clamp,
                                      module.identity_init, mask.flip)
        got = (module.theta.input.in_channels, module.theta.output.out_channels)
        if got != spec.sizes(shape, context_dim) or mask.shape != _torch_shape(shape):
            raise ValueError(f"to_jax: an image coupling with mask shape {mask.shape} and conditioner channels "
                             f"{got[0]} -> {got[1]} on events of jaxflow shape {tuple(shape)}, expected mask shape "
                             f"{_torch_shape(shape)} and {spec.sizes(shape, context_dim)} for {spec}")
        return spec
    spec = jaxflow.AffineCoupling(_mask_of(module.split), _mlp_of(module.theta), module.scale, module.clamp,
                                  module.identity_init)
    return _checked_sizes(spec, module.theta, shape, context_dim)


def _split(mask, shape: Shape) -> nn.Module:
    """The torch ``split`` of a vector coupling's mask: the article's :class:`Split` for ``"half"``."""
    return Split(shape[0]) if mask == "half" else tr.MaskSplit(shape[0], mask)


def _mask_of(split: nn.Module):
    """The inverse of :func:`_split`."""
    return "half" if isinstance(split, Split) else split.mask


def _checked_sizes(spec: jaxflow.Layer, theta: Conditioner, shape: Shape, context_dim: int) -> jaxflow.Layer:
    """``spec``, if ``theta``'s sizes are those that ``spec`` gives its conditioner; else ``ValueError``."""
    in_dim, out_dim = spec.sizes(shape, context_dim)
    if (theta.input.in_features, theta.dims.out_features) != (in_dim, out_dim):
        raise ValueError(f"to_jax: a coupling's conditioner maps {theta.input.in_features} -> "
                         f"{theta.dims.out_features}, expected {in_dim} -> {out_dim} for {spec}")
    return spec


def _output_order(theta: nn.Module) -> np.ndarray | slice:
    """The jax column of each torch output row: a :class:`Conditioner` is read interleaved
    (:func:`interleaved_order`), a ResNet and a MADE blocked on both sides."""
    if isinstance(theta, (tr.ResNet, ta.MADE)):
        return slice(None)
    return interleaved_order(theta.out_dim, theta.num_params)


#: jaxflow coupling transform -> its torch twin; the fields have the same names on both sides
TRANSFORMS: dict[type, type] = {jaxflow.AffineTransform: ts.AffineTransform, jaxflow.RQSpline: ts.RQSpline}


def _transform_twin(transform) -> nn.Module:
    if type(transform) not in TRANSFORMS:
        raise ValueError(f"from_jax: torchref has no twin of the coupling transform {type(transform).__name__}")
    return TRANSFORMS[type(transform)](**{f.name: getattr(transform, f.name) for f in dataclasses.fields(transform)})


def _transform_spec(module: nn.Module):
    kind = {twin: kind for kind, twin in TRANSFORMS.items()}[type(module)]
    return kind(**{f.name: getattr(module, f.name) for f in dataclasses.fields(kind)})


def _build_coupling(layer: jaxflow.Coupling, shape: Shape, context_dim: int) -> ts.Coupling:
    net = layer.conditioner
    if not isinstance(net, jaxflow.MLP):
        raise ValueError(f"from_jax: torchref has a twin of jaxflow.MLP conditioners only, got {type(net).__name__}")
    _no_compute_dtype(net)
    in_dim, out_dim = layer.sizes(shape, context_dim)
    num_params = layer.transform.num_params
    theta = Conditioner(in_dim, out_dim // num_params, net.num_hidden, net.hidden_dim, num_params=num_params,
                        negative_slope=net.negative_slope, activation=net.activation)
    return ts.Coupling(theta, _split(layer.mask, shape), _transform_twin(layer.transform), layer.identity_init)


def _spec_of_coupling(module: ts.Coupling, shape: Shape, context_dim: int) -> jaxflow.Coupling:
    spec = jaxflow.Coupling(_mask_of(module.split), _mlp_of(module.theta), _transform_spec(module.transform),
                            module.identity_init)
    return _checked_sizes(spec, module.theta, shape, context_dim)


def _build_masked_autoregressive(layer: jaxflow.MaskedAutoregressive, shape: Shape,
                                 context_dim: int) -> ta.MaskedAutoregressive:
    net, num_params = layer.conditioner, layer.transform.num_params
    theta = ta.MADE(shape[0], context_dim, num_params, net.hidden_dim, net.num_hidden, net.order, net.negative_slope,
                    net.activation)
    return ta.MaskedAutoregressive(theta, _transform_twin(layer.transform), layer.identity_init)


def _spec_of_masked_autoregressive(module: ta.MaskedAutoregressive, shape: Shape,
                                   context_dim: int) -> jaxflow.MaskedAutoregressive:
    theta = module.theta
    made = jaxflow.MADE(theta.input.out_features, len(theta.hidden), theta.order, theta.negative_slope,
                        theta.activation)
    spec = jaxflow.MaskedAutoregressive(_transform_spec(module.transform), made, module.identity_init)
    spec.check(shape, context_dim)
    return _checked_sizes(spec, theta, shape, context_dim)


def _conditioner_params_out(module: nn.Module, read: Read) -> dict:
    """A coupling's params ``{"conditioner": ...}`` from its ``theta``."""
    return {"conditioner": _net_params_out(module.theta, read, _output_order(module.theta))}


def _conditioner_params_in(module: nn.Module, layer: jaxflow.Layer, params) -> None:
    _net_params_in(module.theta, params["conditioner"], _output_order(module.theta))


def _affine_numbers(module: "tr.Affine") -> dict:
    """``shift`` and ``scale`` as given at construction, unless the buffers have been changed since."""
    def as_numbers(buffer: torch.Tensor):
        values = buffer.detach().cpu().double().numpy()
        return float(values) if values.ndim == 0 else tuple(float(v) for v in values)

    numbers = {}
    for name, given in module.numbers.items():
        buffer = getattr(module, name)
        unchanged = torch.equal(torch.as_tensor(given, dtype=torch.float64).to(buffer), buffer)
        numbers[name] = given if unchanged else as_numbers(buffer)
    return numbers


def _per_channel(make: Callable[[jaxflow.Layer, int, int], nn.Module], spec: Callable[[nn.Module], jaxflow.Layer],
                 names: Tuple[str, ...] = ()) -> dict:
    """The row of a layer acting per entry of jaxflow's last event axis (torch's ``channel_dim``),
    its parameters ``names`` the same arrays on both sides."""
    def spec_of(module, shape, context_dim):
        _check_channels(module, shape)
        return spec(module)

    def params_in(module, layer, params):
        for name in names:
            _copy(getattr(module, name), np.asarray(params[name]))

    return dict(build=lambda layer, shape, context_dim: make(layer, shape[-1], _channel_dim(shape)), spec=spec_of,
                params_out=lambda module, read: {name: read(getattr(module, name)) for name in names},
                params_in=params_in)


TWINS: dict[type, Twin] = {
    jaxflow.Repeat: Twin(
        (tr.Repeat,),
        build=lambda layer, shape, context_dim: tr.Repeat([_build(layer.copy(k), shape, context_dim) for k in range(layer.n)],
                                                          unroll=layer.unroll),
        spec=_spec_of_repeat,
        params_out=lambda module, read: jax.tree_util.tree_map(lambda *leaves: np.stack(leaves),
                                                               *[_params_of(one, read) for one in module]),
        params_in=_repeat_params_in),
    jaxflow.Chain: Twin(
        (tr.Chain,), _build_chain, _spec_of_chain,
        params_out=lambda module, read: [_params_of(one, read) for one in module],
        params_in=_chain_params_in),
    jaxflow.FactorOut: Twin(
        (tr.FactorOut,),
        build=lambda layer, shape, context_dim: tr.FactorOut(_build(layer.layer, layer.inner_shape(shape), context_dim),
                                                             _channel_dim(shape)),
        spec=_spec_of_factor_out,
        params_out=lambda module, read: _params_of(module.module, read),
        params_in=lambda module, layer, params: _load(module.module, layer.layer, params)),
    jaxflow.AffineCoupling: Twin(
        (AffineCouplingLayer, tr.ImageAffineCouplingLayer), _build_affine_coupling, _spec_of_affine_coupling,
        _conditioner_params_out, _conditioner_params_in),
    jaxflow.Coupling: Twin((ts.Coupling,), _build_coupling, _spec_of_coupling, _conditioner_params_out,
                           _conditioner_params_in),
    jaxflow.MaskedAutoregressive: Twin((ta.MaskedAutoregressive,), _build_masked_autoregressive,
                                       _spec_of_masked_autoregressive, _conditioner_params_out, _conditioner_params_in),
    jaxflow.Invert: Twin(
        (ta.Invert,),
        build=lambda layer, shape, context_dim: ta.Invert(_build(layer.layer, shape, context_dim)),
        spec=lambda module, shape, context_dim: jaxflow.Invert(_spec(module.module, shape, context_dim)),
        params_out=lambda module, read: _params_of(module.module, read),
        params_in=lambda module, layer, params: _load(module.module, layer.layer, params)),
    jaxflow.Squeeze: Twin((tr.Squeeze,), lambda layer, shape, context_dim: tr.Squeeze(),
                          lambda module, shape, context_dim: jaxflow.Squeeze()),
    jaxflow.Unsqueeze: Twin((tr.Unsqueeze,), lambda layer, shape, context_dim: tr.Unsqueeze(),
                            lambda module, shape, context_dim: jaxflow.Unsqueeze()),
    jaxflow.Permute: Twin((tr.Permutation,), **_per_channel(
        lambda layer, dim, channel_dim: tr.Permutation(dim, layer.kind, layer.seed, channel_dim, layer.per_copy,
                                                       layer.copy_index),
        lambda module: jaxflow.Permute(module.kind, module.seed, module.per_copy))),
    jaxflow.ActNorm: Twin((tr.ActNorm,), **_per_channel(
        lambda layer, dim, channel_dim: tr.ActNorm(dim, channel_dim), lambda module: jaxflow.ActNorm(),
        ("shift", "log_scale"))),
    jaxflow.LULinear: Twin((tr.LULinear,), **_per_channel(
        lambda layer, dim, channel_dim: tr.LULinear(dim, channel_dim), lambda module: jaxflow.LULinear(),
        ("lower", "upper", "log_diag"))),
    jaxflow.Affine: Twin((tr.Affine,), **_per_channel(
        lambda layer, dim, channel_dim: tr.Affine(layer.shift, layer.scale, channel_dim),
        lambda module: jaxflow.Affine(**_affine_numbers(module)))),
    jaxflow.Logit: Twin(
        (tr.Logit,), lambda layer, shape, context_dim: tr.Logit(layer.alpha, event_dims=len(shape)),
        lambda module, shape, context_dim: _spec_of_logit(module, shape)),
}
"""Every jaxflow layer kind (its class) -> its :class:`Twin`: the one place conversion knows a kind."""


def _spec_of_logit(module: tr.Logit, shape: Shape) -> jaxflow.Logit:
    if module.event_dims != len(shape):
        raise ValueError(f"to_jax: Logit(event_dims={module.event_dims}) on events of jaxflow shape {tuple(shape)}")
    return jaxflow.Logit(module.alpha)


_BY_MODULE: dict[type, Twin] = {module: twin for twin in TWINS.values() for module in twin.modules}
"""The row of each torch twin class (exact types: an image coupling is also an ``AffineCouplingLayer``)."""
