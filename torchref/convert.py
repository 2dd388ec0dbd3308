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

Conversion copies values through NumPy: it is exact, keeps float32/float64, and reads torch
models on any device.
"""

from __future__ import annotations

from typing import Iterator, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch import nn

import jaxflow
from jaxflow.core.init import check_params, params_dtype
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


def from_spec(flow: jaxflow.RealNVP, dtype: torch.dtype = torch.float32,
              device: Optional[torch.device | str] = None) -> NormalizingFlow:
    """The freshly initialised torch model of the spec ``flow`` (see :func:`build_flow`)."""
    d = flow.split_dim
    layers = [
        AffineCouplingLayer(
            Conditioner(flow.condition_dim, d, flow.num_hidden, flow.hidden_dim, num_params=2,
                        negative_slope=flow.negative_slope),
            Split(flow.dim), scale=flow.scale, clamp=flow.clamp,
        )
        for _ in range(flow.num_flows)
    ]
    model = NormalizingFlow(StandardNormal(flow.dim), layers)
    if flow.identity_init:
        with torch.no_grad():
            for layer in model.flows:
                layer.theta.dims.weight.zero_()
                layer.theta.dims.bias.zero_()
    return model.to(device=device, dtype=dtype)


def interleaved_order(d: int) -> np.ndarray:
    """``[0, d, 1, d + 1, ..., d - 1, 2d - 1]``: the jax column of each torch ``dims`` row."""
    return np.arange(2 * d).reshape(2, d).T.ravel()


def _linears(theta: Conditioner) -> Iterator[Tuple[str, nn.Linear]]:
    yield "input", theta.input
    for k, hidden in enumerate(theta.hidden):
        yield f"hidden_{k}", hidden
    yield "dims", theta.dims


def _jax_order(name: str, d: int) -> slice | np.ndarray:
    """Index that puts a torch Linear's output rows in jaxflow's column order."""
    return np.argsort(interleaved_order(d)) if name == "dims" else slice(None)


def _torch_order(name: str, d: int) -> slice | np.ndarray:
    """Index that puts jaxflow's output columns in a torch Linear's row order."""
    return interleaved_order(d) if name == "dims" else slice(None)


def spec_of(model: NormalizingFlow, **options) -> jaxflow.RealNVP:
    """The ``jaxflow.RealNVP`` that ``model`` computes.

    ``options`` sets the fields that torch weights do not determine (``identity_init``,
    ``compute_dtype``, ``scan_unroll``); the others are read from the model, which must be a
    stack of :class:`AffineCouplingLayer` with :class:`Split` and identical conditioners.
    """
    first = model.flows[0]
    theta = first.theta
    spec = jaxflow.RealNVP(
        dim=first.split.dim, num_flows=len(model), hidden_dim=theta.input.out_features,
        num_hidden=len(theta.hidden), scale=first.scale, clamp=first.clamp,
        negative_slope=theta.negative_slope, **options,
    )
    expected = {k: v.shape for k, v in from_spec(spec, device="meta").state_dict().items()}
    got = {k: v.shape for k, v in model.state_dict().items()}
    options_of = lambda layer: (layer.scale, layer.clamp, layer.theta.negative_slope, layer.split.dim)
    if got != expected or any(options_of(layer) != options_of(first) for layer in model.flows):
        raise ValueError(f"to_jax: model is not a uniform stack of affine coupling layers matching {spec}")
    return spec


def to_jax_params(model: NormalizingFlow, grad: bool = False) -> dict:
    """``model``'s weights (or, with ``grad=True``, their ``.grad``) as a jaxflow params pytree."""
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


def to_jax(model: NormalizingFlow, **options) -> Tuple[jaxflow.RealNVP, dict]:
    """``(flow, params)`` computing exactly what ``model`` computes (``options``: see :func:`spec_of`)."""
    return spec_of(model, **options), to_jax_params(model)


def from_jax(flow: jaxflow.RealNVP, params, device: Optional[torch.device | str] = None) -> NormalizingFlow:
    """The torch model of ``(flow, params)``, in the params' dtype, on ``device`` (default CPU)."""
    check_params(flow, params)
    model = from_spec(flow, dtype=getattr(torch, params_dtype(params).name), device=device)
    d = flow.split_dim
    with torch.no_grad():
        for i, layer in enumerate(model.flows):
            for name, linear in _linears(layer.theta):
                leaf = params["conditioner"][name]
                kernel, bias = np.asarray(leaf["kernel"][i]), np.asarray(leaf["bias"][i])
                linear.weight.copy_(torch.from_numpy(kernel.T[_torch_order(name, d)].copy()))
                linear.bias.copy_(torch.from_numpy(bias[_torch_order(name, d)].copy()))
    return model
