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
    Permute(kind, seed)                     Permutation(D, kind, seed)                     {}
    ActNorm()                               ActNorm(D): shift, log_scale                   shift, log_scale
    LULinear()                              LULinear(D): lower, upper, log_diag            lower, upper, log_diag
    Affine(shift, scale)                    Affine(shift, scale) (buffers)                 {}
    Logit(alpha)                            Logit(alpha)                                   {}
    Flow.context_affine                     NormalizingFlow.context_affine                 -

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
A ``jaxflow.RealNVP`` keeps the article's plain list of couplings (``flows.i.theta...``) and its
own functions (:func:`spec_of`, :func:`to_jax_params`).

Conversion copies values through NumPy: it is exact, keeps float32/float64, and reads torch
models on any device.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch import nn

import jaxflow
from jaxflow.core.init import check_params, params_dtype
from torchref import model as tr
from torchref.model import AffineCouplingLayer, Conditioner, NormalizingFlow, Split, StandardNormal

__all__ = ["build_flow", "from_spec", "spec_of", "interleaved_order", "to_jax", "to_jax_params", "from_jax",
           "to_torch_layout", "to_jax_layout"]


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

    A :class:`jaxflow.Flow` other than ``RealNVP`` gets each layer's torch default (``Linear``'s
    initialisation; ``ActNorm`` and ``LULinear`` the identity, as ``jaxflow.init`` without data).
    """
    if not isinstance(flow, jaxflow.RealNVP):
        return _from_flow_spec(flow).to(device=device, dtype=dtype)
    d = flow.split_dim
    layers = [
        AffineCouplingLayer(
            Conditioner(flow.condition_dim + flow.context_dim, d, flow.num_hidden, flow.hidden_dim, num_params=2,
                        negative_slope=flow.negative_slope),
            Split(flow.dim), scale=flow.scale, clamp=flow.clamp,
        )
        for _ in range(flow.num_flows)
    ]
    model = NormalizingFlow(StandardNormal(flow.dim), layers, context_dim=flow.context_dim)
    if flow.identity_init:
        with torch.no_grad():
            for layer in model.flows:
                layer.theta.dims.weight.zero_()
                layer.theta.dims.bias.zero_()
    return model.to(device=device, dtype=dtype)


def interleaved_order(d: int) -> np.ndarray:
    """``[0, d, 1, d + 1, ..., d - 1, 2d - 1]``: the jax column of each torch ``dims`` row."""
    return np.arange(2 * d).reshape(2, d).T.ravel()


def _mlp_of(theta: Conditioner) -> jaxflow.MLP:
    """The ``jaxflow.MLP`` spec that ``theta`` computes."""
    return jaxflow.MLP(theta.input.out_features, len(theta.hidden), theta.negative_slope)


def _linears(theta: Conditioner) -> Iterator[Tuple[str, nn.Linear]]:
    """``(jaxflow name, Linear)`` of each layer of ``theta``, in order; names from ``MLP.layer_names``."""
    yield from zip(_mlp_of(theta).layer_names(), [theta.input, *theta.hidden, theta.dims])


def _is_last(name: str) -> bool:
    return name == jaxflow.MLP(num_hidden=0).layer_names()[-1]


def _jax_order(name: str, d: int) -> slice | np.ndarray:
    """Index that puts a torch Linear's output rows in jaxflow's column order."""
    return np.argsort(interleaved_order(d)) if _is_last(name) else slice(None)


def _torch_order(name: str, d: int) -> slice | np.ndarray:
    """Index that puts jaxflow's output columns in a torch Linear's row order."""
    return interleaved_order(d) if _is_last(name) else slice(None)


def spec_of(model: NormalizingFlow, **options) -> jaxflow.RealNVP:
    """The ``jaxflow.RealNVP`` that ``model`` computes.

    ``options`` sets the fields that torch weights do not determine (``identity_init``,
    ``compute_dtype``, ``scan_unroll``); the others are read from the model, which must be a
    stack of :class:`AffineCouplingLayer` with :class:`Split` and identical conditioners.
    """
    first = model.flows[0]
    if not isinstance(first, AffineCouplingLayer) or not isinstance(first.split, Split):
        raise ValueError(f"to_jax: model is not a uniform stack of affine coupling layers (flows[0] is "
                         f"{type(first).__name__}); hold other compositions in a torchref Chain or Repeat")
    theta = first.theta
    spec = jaxflow.RealNVP(
        dim=first.split.dim, num_flows=len(model), hidden_dim=theta.input.out_features,
        num_hidden=len(theta.hidden), scale=first.scale, clamp=first.clamp,
        negative_slope=theta.negative_slope, context_dim=model.context_dim, **options,
    )
    expected = {k: v.shape for k, v in from_spec(spec, device="meta").state_dict().items()}
    got = {k: v.shape for k, v in model.state_dict().items()}
    options_of = lambda layer: (layer.scale, layer.clamp, layer.theta.negative_slope, layer.split.dim)
    if got != expected or any(options_of(layer) != options_of(first) for layer in model.flows):
        raise ValueError(f"to_jax: model is not a uniform stack of affine coupling layers matching {spec}")
    return spec


def to_jax_params(model: NormalizingFlow, grad: bool = False):
    """``model``'s weights (or, with ``grad=True``, their ``.grad``) as a jaxflow params pytree."""
    if not _is_preset(model):
        return _params_of(_root(model), grad)
    d = model.flows[0].split.d
    layers = [dict(_linears(layer.theta)) for layer in model.flows]

    def stacked(name: str, attr: str) -> jax.Array:
        tensors = [getattr(getattr(layer[name], attr), "grad" if grad else "data") for layer in layers]
        if tensors[0].dtype == torch.float64 and not jax.config.jax_enable_x64:
            raise ValueError('to_jax: float64 weights need jax.config.update("jax_enable_x64", True) first')
        arrays = np.stack([t.detach().cpu().numpy() for t in tensors])[:, _jax_order(name, d)]
        return jnp.asarray(arrays.swapaxes(1, 2) if attr == "weight" else arrays)

    return {"conditioner": {name: {"kernel": stacked(name, "weight"), "bias": stacked(name, "bias")}
                            for name in layers[0]}}


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
    dtype = getattr(torch, params_dtype(params).name)
    if not isinstance(flow, jaxflow.RealNVP):
        model = from_spec(flow, dtype=dtype, device=device)
        with torch.no_grad():
            _load(_root(model), flow.layers, params)
        return model
    model = from_spec(flow, dtype=dtype, device=device)
    d = flow.split_dim
    with torch.no_grad():
        for i, layer in enumerate(model.flows):
            for name, linear in _linears(layer.theta):
                leaf = params["conditioner"][name]
                kernel, bias = np.asarray(leaf["kernel"][i]), np.asarray(leaf["bias"][i])
                linear.weight.copy_(torch.from_numpy(kernel.T[_torch_order(name, d)].copy()))
                linear.bias.copy_(torch.from_numpy(bias[_torch_order(name, d)].copy()))
    return model


# --- any jaxflow.Flow: one builder, reader and loader per layer kind -------------------------------


def _is_preset(model: NormalizingFlow) -> bool:
    """Whether ``model`` is the article's plain list of couplings (a ``jaxflow.RealNVP``)."""
    return type(model.flows) is nn.ModuleList and not model.single_layer


def _root(model: NormalizingFlow) -> nn.Module:
    """The module of the spec's root layer: the single layer, or the Chain/Repeat ``flows``."""
    return model.flows[0] if model.single_layer else model.flows


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


#: axis orders between a Flax ``Conv`` kernel ``(kh, kw, in, out)`` and a ``Conv2d`` weight ``(out, in, kh, kw)``
TORCH_TO_JAX_KERNEL = (2, 3, 1, 0)
JAX_TO_TORCH_KERNEL = (3, 2, 0, 1)


def _from_flow_spec(flow: jaxflow.FlowSpec) -> NormalizingFlow:
    shape = tuple(flow.event_shape)
    _check_event_shape(shape, "from_jax")
    root = _build(flow.layers, shape, flow.context_dim)
    context_affine = None if flow.context_affine is None else _build(flow.context_affine, (flow.context_dim,), 0)
    return NormalizingFlow(StandardNormal(_torch_shape(shape)), root, context_affine=context_affine,
                           context_dim=flow.context_dim)


def _flow_spec_of(model: NormalizingFlow) -> jaxflow.Flow:
    latent = model.latent
    if not isinstance(latent, StandardNormal):
        raise ValueError(f"to_jax: the latent must be a torchref StandardNormal (jaxflow's default), got {type(latent).__name__}")
    shape = _jax_shape(tuple(latent.loc.shape))
    _check_event_shape(shape, "to_jax")
    context_affine = None if model.context_affine is None else _spec(model.context_affine, (model.context_dim,), 0)
    return jaxflow.Flow(shape, _spec(_root(model), shape, model.context_dim), model.context_dim, context_affine)


def _no_compute_dtype(network) -> None:
    if network.compute_dtype is not None:
        raise ValueError(f"from_jax: torchref computes in the parameters' dtype; convert a spec with "
                         f"compute_dtype=None (got {network.compute_dtype!r})")


def _resnet_of(theta: tr.ResNet) -> jaxflow.ResNet:
    """The ``jaxflow.ResNet`` spec that ``theta`` computes."""
    return jaxflow.ResNet(theta.input.out_channels, theta.num_blocks, theta.kernel_size, theta.negative_slope)


def _convs(theta: tr.ResNet) -> Iterator[Tuple[str, nn.Conv2d]]:
    """``(jaxflow name, Conv2d)`` of each layer of ``theta``, in order; names from ``ResNet.layer_names``."""
    convs = [theta.input, *(conv for block in theta.blocks() for conv in block), theta.output]
    yield from zip(_resnet_of(theta).layer_names(), convs)


def _build(layer: jaxflow.Layer, shape: Tuple[int, ...], context_dim: int) -> nn.Module:
    """The freshly initialised torch twin of the jaxflow layer spec ``layer`` on events of jaxflow's ``shape``."""
    channels, channel_dim = shape[-1], _channel_dim(shape)
    if isinstance(layer, jaxflow.Repeat):
        return tr.Repeat([_build(layer.layer, shape, context_dim) for _ in range(layer.n)], unroll=layer.unroll)
    if isinstance(layer, jaxflow.Chain):
        modules = []
        for one in layer.layers:
            modules.append(_build(one, shape, context_dim))
            shape = one.output_shape(shape)
        return tr.Chain(modules)
    if isinstance(layer, jaxflow.FactorOut):
        return tr.FactorOut(_build(layer.layer, layer.inner_shape(shape), context_dim), channel_dim)
    if isinstance(layer, jaxflow.AffineCoupling):
        _no_compute_dtype(layer.conditioner)
        in_dim, out_dim = layer.sizes(shape, context_dim)
        net = layer.conditioner
        if len(shape) == 3:
            theta = tr.ResNet(in_dim, out_dim, net.channels, net.num_blocks, net.kernel_size, net.negative_slope)
            mask = tr.ImageMask(_torch_shape(shape), layer.mask, layer.flip)
            return tr.ImageAffineCouplingLayer(theta, mask, scale=layer.scale, clamp=layer.clamp,
                                               identity_init=layer.identity_init)
        split = Split(shape[0]) if layer.mask == "half" else tr.MaskSplit(shape[0], layer.mask)
        theta = Conditioner(in_dim, out_dim // 2, net.num_hidden, net.hidden_dim, num_params=2,
                            negative_slope=net.negative_slope)
        return AffineCouplingLayer(theta, split, scale=layer.scale, clamp=layer.clamp, identity_init=layer.identity_init)
    if isinstance(layer, jaxflow.Squeeze):
        return tr.Squeeze()
    if isinstance(layer, jaxflow.Unsqueeze):
        return tr.Unsqueeze()
    if isinstance(layer, jaxflow.Permute):
        return tr.Permutation(channels, layer.kind, layer.seed, channel_dim)
    if isinstance(layer, jaxflow.ActNorm):
        return tr.ActNorm(channels, channel_dim)
    if isinstance(layer, jaxflow.LULinear):
        return tr.LULinear(channels, channel_dim)
    if isinstance(layer, jaxflow.Affine):
        return tr.Affine(layer.shift, layer.scale, channel_dim)
    if isinstance(layer, jaxflow.Logit):
        return tr.Logit(layer.alpha, event_dims=len(shape))
    raise ValueError(f"from_jax: torchref has no twin of the jaxflow layer {type(layer).__name__}")


def _check_channels(module: nn.Module, shape: Tuple[int, ...]) -> None:
    """``ValueError`` unless a per-channel module acts on jaxflow's last axis of events of ``shape``."""
    expected = (shape[-1], _channel_dim(shape))
    got = (getattr(module, "dim", shape[-1]), module.channel_dim)
    if got != expected:
        raise ValueError(f"to_jax: {type(module).__name__}(dim={got[0]}, channel_dim={got[1]}) on events of jaxflow "
                         f"shape {tuple(shape)}; expected dim={expected[0]}, channel_dim={expected[1]}")


def _spec(module: nn.Module, shape: Tuple[int, ...], context_dim: int) -> jaxflow.Layer:
    """The jaxflow layer spec that the torch ``module`` computes on events of jaxflow's ``shape`` (the inverse of :func:`_build`)."""
    if isinstance(module, tr.Repeat):
        copies = [_spec(one, shape, context_dim) for one in module]
        if any(copy != copies[0] for copy in copies):
            raise ValueError(f"to_jax: the copies of a Repeat must be identical layers, got {sorted(set(map(repr, copies)))}")
        return jaxflow.Repeat(copies[0], len(copies), module.unroll)
    if isinstance(module, tr.Chain):
        layers = []
        for one in module:
            layers.append(_spec(one, shape, context_dim))
            shape = layers[-1].output_shape(shape)
        return jaxflow.Chain(*layers)
    if isinstance(module, tr.FactorOut):
        _check_channels(module, shape)
        return jaxflow.FactorOut(_spec(module.module, jaxflow.FactorOut.inner_shape(shape), context_dim))
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
    if isinstance(module, AffineCouplingLayer):
        split = module.split
        mask = "half" if isinstance(split, Split) else split.mask
        spec = jaxflow.AffineCoupling(mask, _mlp_of(module.theta), module.scale, module.clamp, module.identity_init)
        in_dim, out_dim = spec.sizes(shape, context_dim)
        if (module.theta.input.in_features, module.theta.dims.out_features) != (in_dim, out_dim):
            raise ValueError(f"to_jax: a coupling's conditioner maps {module.theta.input.in_features} -> "
                             f"{module.theta.dims.out_features}, expected {in_dim} -> {out_dim} for {spec}")
        return spec
    if isinstance(module, tr.Squeeze):
        return jaxflow.Squeeze()
    if isinstance(module, tr.Unsqueeze):
        return jaxflow.Unsqueeze()
    if isinstance(module, (tr.Permutation, tr.ActNorm, tr.LULinear, tr.Affine)):
        _check_channels(module, shape)
    if isinstance(module, tr.Permutation):
        return jaxflow.Permute(module.kind, module.seed)
    if isinstance(module, tr.ActNorm):
        return jaxflow.ActNorm()
    if isinstance(module, tr.LULinear):
        return jaxflow.LULinear()
    if isinstance(module, tr.Affine):
        return jaxflow.Affine(**_affine_numbers(module))
    if isinstance(module, tr.Logit):
        if module.event_dims != len(shape):
            raise ValueError(f"to_jax: Logit(event_dims={module.event_dims}) on events of jaxflow shape {tuple(shape)}")
        return jaxflow.Logit(module.alpha)
    raise ValueError(f"to_jax: jaxflow has no layer for the torch module {type(module).__name__}")


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


def _array(tensor: Optional[torch.Tensor], like: torch.Tensor) -> np.ndarray:
    """A NumPy copy (a gradient that is ``None`` reads as zeros, as JAX's)."""
    tensor = torch.zeros_like(like) if tensor is None else tensor
    if tensor.dtype == torch.float64 and not jax.config.jax_enable_x64:
        raise ValueError('to_jax: float64 weights need jax.config.update("jax_enable_x64", True) first')
    return tensor.detach().cpu().numpy()


#: jaxflow leaf names of each torch layer whose parameters map one to one (no layout change).
_PLAIN_PARAMS: dict[type, Tuple[str, ...]] = {
    tr.ActNorm: ("shift", "log_scale"),
    tr.LULinear: ("lower", "upper", "log_diag"),
}


def _params_of(module: nn.Module, grad: bool = False):
    """The jaxflow params of ``module`` (or of its ``.grad`` with ``grad=True``)."""
    get: Callable[[torch.Tensor], np.ndarray] = lambda p: _array(p.grad if grad else p.data, p)
    if isinstance(module, tr.Repeat):
        copies = [_params_of(one, grad) for one in module]
        return jax.tree_util.tree_map(lambda *leaves: jnp.asarray(np.stack(leaves)), *copies)
    if isinstance(module, tr.Chain):
        return [_params_of(one, grad) for one in module]
    if isinstance(module, tr.FactorOut):
        return _params_of(module.module, grad)
    if isinstance(module, tr.ImageAffineCouplingLayer):  # Conv2d weight (out, in, kh, kw) -> kernel (kh, kw, in, out)
        return {"conditioner": {
            name: {"kernel": jnp.asarray(get(conv.weight).transpose(TORCH_TO_JAX_KERNEL)), "bias": jnp.asarray(get(conv.bias))}
            for name, conv in _convs(module.theta)}}
    if isinstance(module, AffineCouplingLayer):
        d = module.theta.out_dim
        return {"conditioner": {
            name: {"kernel": jnp.asarray(get(linear.weight)[_jax_order(name, d)].T),
                   "bias": jnp.asarray(get(linear.bias)[_jax_order(name, d)])}
            for name, linear in _linears(module.theta)}}
    if type(module) in _PLAIN_PARAMS:
        return {name: jnp.asarray(get(getattr(module, name))) for name in _PLAIN_PARAMS[type(module)]}
    return {}  # Permutation, Affine, Logit: no parameters


def _load(module: nn.Module, layer: jaxflow.Layer, params) -> None:
    """Copy the jaxflow ``params`` of ``layer`` into its twin ``module`` (under ``torch.no_grad``)."""
    copy = lambda target, value: target.copy_(torch.from_numpy(np.array(value)))
    if isinstance(layer, jaxflow.Repeat):
        for i, one in enumerate(module):
            _load(one, layer.layer, jax.tree_util.tree_map(lambda leaf: np.asarray(leaf)[i], params))
    elif isinstance(layer, jaxflow.Chain):
        for one, one_layer, one_params in zip(module, layer.layers, params):
            _load(one, one_layer, one_params)
    elif isinstance(layer, jaxflow.FactorOut):
        _load(module.module, layer.layer, params)
    elif isinstance(module, tr.ImageAffineCouplingLayer):  # kernel (kh, kw, in, out) -> Conv2d weight (out, in, kh, kw)
        for name, conv in _convs(module.theta):
            leaf = params["conditioner"][name]
            copy(conv.weight, np.asarray(leaf["kernel"]).transpose(JAX_TO_TORCH_KERNEL))
            copy(conv.bias, np.asarray(leaf["bias"]))
    elif isinstance(layer, jaxflow.AffineCoupling):
        d = module.theta.out_dim
        for name, linear in _linears(module.theta):
            leaf = params["conditioner"][name]
            copy(linear.weight, np.asarray(leaf["kernel"]).T[_torch_order(name, d)])
            copy(linear.bias, np.asarray(leaf["bias"])[_torch_order(name, d)])
    elif type(module) in _PLAIN_PARAMS:
        for name in _PLAIN_PARAMS[type(module)]:
            copy(getattr(module, name), np.asarray(params[name]))
