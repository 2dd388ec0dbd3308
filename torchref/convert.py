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

__all__ = ["build_flow", "from_spec", "spec_of", "interleaved_order", "to_jax", "to_jax_params", "from_jax"]


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
    :class:`~torchref.model.Repeat` or a single layer gives the ``jaxflow.Flow`` of that tree.
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


def _from_flow_spec(flow: jaxflow.FlowSpec) -> NormalizingFlow:
    if len(flow.event_shape) != 1:
        raise ValueError(f"from_jax: torchref twins act on vector events (D,), got event shape {flow.event_shape}")
    dim = flow.event_shape[0]
    root = _build(flow.layers, dim, flow.context_dim)
    context_affine = None if flow.context_affine is None else _build(flow.context_affine, flow.context_dim, 0)
    return NormalizingFlow(StandardNormal(dim), root, context_affine=context_affine, context_dim=flow.context_dim)


def _flow_spec_of(model: NormalizingFlow) -> jaxflow.Flow:
    latent = model.latent
    if not isinstance(latent, StandardNormal):
        raise ValueError(f"to_jax: the latent must be a torchref StandardNormal (jaxflow's default), got {type(latent).__name__}")
    dim = latent.loc.shape[-1]
    context_affine = None if model.context_affine is None else _spec(model.context_affine, model.context_dim, 0)
    return jaxflow.Flow((dim,), _spec(_root(model), dim, model.context_dim), model.context_dim, context_affine)


def _build(layer: jaxflow.Layer, dim: int, context_dim: int) -> nn.Module:
    """The freshly initialised torch twin of the jaxflow layer spec ``layer`` on ``R^dim``."""
    if isinstance(layer, jaxflow.Repeat):
        return tr.Repeat([_build(layer.layer, dim, context_dim) for _ in range(layer.n)], unroll=layer.unroll)
    if isinstance(layer, jaxflow.Chain):
        return tr.Chain([_build(one, dim, context_dim) for one in layer.layers])
    if isinstance(layer, jaxflow.AffineCoupling):
        mlp = layer.conditioner
        if mlp.compute_dtype is not None:
            raise ValueError(f"from_jax: torchref computes in the parameters' dtype; convert a spec with "
                             f"compute_dtype=None (got {mlp.compute_dtype!r})")
        split = Split(dim) if layer.mask == "half" else tr.MaskSplit(dim, layer.mask)
        in_dim, out_dim = layer.sizes((dim,), context_dim)
        theta = Conditioner(in_dim, out_dim // 2, mlp.num_hidden, mlp.hidden_dim, num_params=2,
                            negative_slope=mlp.negative_slope)
        return AffineCouplingLayer(theta, split, scale=layer.scale, clamp=layer.clamp, identity_init=layer.identity_init)
    if isinstance(layer, jaxflow.Permute):
        return tr.Permutation(dim, layer.kind, layer.seed)
    if isinstance(layer, jaxflow.ActNorm):
        return tr.ActNorm(dim)
    if isinstance(layer, jaxflow.LULinear):
        return tr.LULinear(dim)
    if isinstance(layer, jaxflow.Affine):
        return tr.Affine(layer.shift, layer.scale)
    if isinstance(layer, jaxflow.Logit):
        return tr.Logit(layer.alpha)
    raise ValueError(f"from_jax: torchref has no twin of the jaxflow layer {type(layer).__name__}")


def _spec(module: nn.Module, dim: int, context_dim: int) -> jaxflow.Layer:
    """The jaxflow layer spec that the torch ``module`` computes (the inverse of :func:`_build`)."""
    if isinstance(module, tr.Repeat):
        copies = [_spec(one, dim, context_dim) for one in module]
        if any(copy != copies[0] for copy in copies):
            raise ValueError(f"to_jax: the copies of a Repeat must be identical layers, got {sorted(set(map(repr, copies)))}")
        return jaxflow.Repeat(copies[0], len(copies), module.unroll)
    if isinstance(module, tr.Chain):
        return jaxflow.Chain(*(_spec(one, dim, context_dim) for one in module))
    if isinstance(module, AffineCouplingLayer):
        split = module.split
        mask = "half" if isinstance(split, Split) else split.mask
        spec = jaxflow.AffineCoupling(mask, _mlp_of(module.theta), module.scale, module.clamp, module.identity_init)
        in_dim, out_dim = spec.sizes((dim,), context_dim)
        if (module.theta.input.in_features, module.theta.dims.out_features) != (in_dim, out_dim):
            raise ValueError(f"to_jax: a coupling's conditioner maps {module.theta.input.in_features} -> "
                             f"{module.theta.dims.out_features}, expected {in_dim} -> {out_dim} for {spec}")
        return spec
    if isinstance(module, tr.Permutation):
        return jaxflow.Permute(module.kind, module.seed)
    if isinstance(module, tr.ActNorm):
        return jaxflow.ActNorm()
    if isinstance(module, tr.LULinear):
        return jaxflow.LULinear()
    if isinstance(module, tr.Affine):
        return jaxflow.Affine(**_affine_numbers(module))
    if isinstance(module, tr.Logit):
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
    elif isinstance(layer, jaxflow.AffineCoupling):
        d = module.theta.out_dim
        for name, linear in _linears(module.theta):
            leaf = params["conditioner"][name]
            copy(linear.weight, np.asarray(leaf["kernel"]).T[_torch_order(name, d)])
            copy(linear.bias, np.asarray(leaf["bias"])[_torch_order(name, d)])
    elif type(module) in _PLAIN_PARAMS:
        for name in _PLAIN_PARAMS[type(module)]:
            copy(getattr(module, name), np.asarray(params[name]))
