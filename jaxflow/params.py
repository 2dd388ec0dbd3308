"""Parameter initialisation: the plain pytree that every jaxflow function takes.

Layout: ``{"conditioner": flax_params}`` where ``flax_params`` are the Flax ``Dense`` parameters
of :class:`jaxflow.conditioner.Conditioner` with every leaf stacked on a leading layer axis of
size ``num_flows`` (layer 0 is applied first in ``f``), e.g. for ``RealNVP(dim=5, num_flows=8,
hidden_dim=64, num_hidden=2)``::

    conditioner/input/kernel    (8, 3, 64)    conditioner/input/bias    (8, 64)
    conditioner/hidden_0/kernel (8, 64, 64)   conditioner/hidden_0/bias (8, 64)
    conditioner/hidden_1/kernel (8, 64, 64)   conditioner/hidden_1/bias (8, 64)
    conditioner/dims/kernel     (8, 64, 4)    conditioner/dims/bias     (8, 4)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxflow.coupling import conditioner_module
from jaxflow.spec import RealNVP

__all__ = ["init"]


def init(flow: RealNVP, key: jax.Array, dtype=jnp.float32) -> dict:
    """Random parameters for ``flow``, independent across layers, in ``dtype`` (float32 or float64).

    float64 requires ``jax.config.update("jax_enable_x64", True)`` beforehand.
    """
    if not isinstance(flow, RealNVP):
        raise TypeError(f"init: expected a jaxflow.RealNVP spec, got {type(flow).__name__}")
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"init: dtype must be a floating dtype, got {dtype}")
    if dtype.itemsize == 8 and not jax.config.jax_enable_x64:
        raise ValueError('init: dtype float64 needs jax.config.update("jax_enable_x64", True) first')
    return _init(flow, key, dtype)


@functools.partial(jax.jit, static_argnames=("flow", "dtype"))
def _init(flow: RealNVP, key: jax.Array, dtype: jnp.dtype) -> dict:
    module = conditioner_module(flow, param_dtype=dtype)
    x1 = jnp.zeros((1, flow.condition_dim), dtype)
    keys = jax.random.split(key, flow.num_flows)
    variables = jax.vmap(lambda k: module.init(k, x1))(keys)
    return {"conditioner": variables["params"]}
