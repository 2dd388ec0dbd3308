"""Parameters: :func:`init` makes the plain pytree every jaxflow function takes, and
:func:`check_params` checks a pytree against the spec.

The layout is the root layer's (:mod:`jaxflow.core.layer`): a :class:`~jaxflow.Chain` holds the
list of its layers' params, a :class:`~jaxflow.Repeat` its layer's params with every leaf stacked
on a leading axis. For ``RealNVP(dim=5, num_flows=8, hidden_dim=64, num_hidden=2)``, a
``Repeat`` of 8 couplings::

    conditioner/input/kernel    (8, 3, 64)    conditioner/input/bias    (8, 64)
    conditioner/hidden_0/kernel (8, 64, 64)   conditioner/hidden_0/bias (8, 64)
    conditioner/hidden_1/kernel (8, 64, 64)   conditioner/hidden_1/bias (8, 64)
    conditioner/dims/kernel     (8, 64, 4)    conditioner/dims/bias     (8, 4)

A flow with a context ``embedding`` holds ``{"embedding": <its params>, "layers": <the root
layer's params>}`` (:class:`~jaxflow.FlowSpec`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxflow.core.spec import FlowSpec
from jaxflow.core.validation import as_inputs, check_flow, check_key, describe, embed_context

__all__ = ["init", "param_shapes", "check_params", "params_dtype"]


def init(flow: FlowSpec, key: jax.Array, dtype=jnp.float32, *, data=None, context=None):
    """Random parameters for ``flow`` in ``dtype`` (float32, or float64 with x64 enabled).

    Each layer draws its own (:class:`~jaxflow.nets.MLP`: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
    per ``Dense``, as ``torch.nn.Linear``; ``LULinear`` and ``ActNorm``: the identity). With
    ``data`` (events ``(..., *event_shape)``, and ``context`` for a conditional flow), layers with
    a data-dependent start see the data as transformed by the layers before them: each
    :class:`~jaxflow.ActNorm` makes its input batch zero-mean and unit-variance.
    """
    check_flow(flow, "init")
    check_key(key, "init(flow, key)")
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"init: dtype must be a floating dtype, got {dtype}")
    if dtype.itemsize == 8 and not jax.config.jax_enable_x64:
        raise ValueError('init: dtype float64 needs jax.config.update("jax_enable_x64", True) first')
    if data is None:
        if context is not None:
            raise ValueError("init: context= is used only with data= (a data-dependent initialisation)")
        return _init(flow, key, dtype)
    x, c = as_inputs(flow, data, context, "data", dtype)
    x = x.reshape((-1,) + tuple(flow.event_shape))
    if x.shape[0] == 0:
        raise ValueError("init: data= holds no events")
    return _init_from_data(flow, key, x, None if c is None else c.reshape(-1, flow.context_dim))


def _init_tree(flow: FlowSpec, key: jax.Array, dtype, x=None, context=None):
    """The params pytree; with an embedding ``{"embedding": ..., "layers": ...}``, the layers seeing
    the context as embedded by the embedding's starting params (:class:`~jaxflow.FlowSpec`)."""
    shape = tuple(flow.event_shape)
    if flow.embedding is None:
        return flow.layers.init(key, shape, flow.context_dim, dtype, x, embed_context(flow, {}, context))
    embedding_key, key = jax.random.split(key)
    embedding = {"embedding": flow.embedding.init(embedding_key, flow.context_dim, flow.embedding_dim, dtype)}
    layers = flow.layers.init(key, shape, flow.embedding_dim, dtype, x, embed_context(flow, embedding, context))
    return {**embedding, "layers": layers}


@functools.partial(jax.jit, static_argnames=("flow", "dtype"))
def _init(flow: FlowSpec, key: jax.Array, dtype: jnp.dtype):
    return _init_tree(flow, key, dtype)


@functools.partial(jax.jit, static_argnames="flow")
def _init_from_data(flow: FlowSpec, key: jax.Array, x: jax.Array, context):
    return _init_tree(flow, key, x.dtype, x, context)


@functools.lru_cache(maxsize=256)
def param_shapes(flow: FlowSpec) -> dict[str, tuple[int, ...]]:
    """``{path: shape}`` of the parameter pytree of ``flow`` (cached per spec; nothing is computed)."""
    shapes = jax.eval_shape(lambda: _init(flow, jax.random.key(0), jnp.dtype(jnp.float32)))
    return {jax.tree_util.keystr(path): leaf.shape for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)}


def check_params(flow: FlowSpec, params) -> jnp.dtype:
    """Raise ``ValueError`` unless ``params`` has exactly the structure and shapes ``flow`` needs; returns their dtype."""
    check_flow(flow)
    expected = param_shapes(flow)
    try:
        leaves = jax.tree_util.tree_leaves_with_path(params)
    except Exception as err:  # pragma: no cover - jax raises only on exotic pytrees
        raise TypeError(f"params is not a pytree of arrays: {err}") from None
    got = {jax.tree_util.keystr(path): jnp.shape(leaf) for path, leaf in leaves}
    if got.keys() != expected.keys():
        missing, extra = sorted(expected.keys() - got.keys()), sorted(got.keys() - expected.keys())
        raise ValueError(
            f"params do not match {describe(flow)}: missing {missing or 'nothing'}, unexpected {extra or 'nothing'}"
        )
    for path, shape in expected.items():
        if tuple(got[path]) != tuple(shape):
            raise ValueError(f"params do not match {describe(flow)}: params{path} has shape {tuple(got[path])}, "
                             f"expected {shape}")
    return params_dtype(params)


def params_dtype(params) -> jnp.dtype:
    """The single floating dtype of all parameters (float32 for a flow without parameters)."""
    dtypes = {jnp.result_type(leaf) for leaf in jax.tree_util.tree_leaves(params)}
    if not dtypes:
        return jnp.dtype(jnp.float32)
    if len(dtypes) != 1 or not jnp.issubdtype(next(iter(dtypes)), jnp.floating):
        raise TypeError(f"params must all share one real floating dtype, got {sorted(map(str, dtypes))}")
    return next(iter(dtypes))
