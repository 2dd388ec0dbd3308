"""Input checks that turn misuse into one clear ``TypeError``/``ValueError`` at trace time.

All checks read only static information (shapes, dtypes, tree structure), so they cost nothing
inside ``jit`` and work on tracers under ``vmap`` and ``grad``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxflow.params import init
from jaxflow.spec import RealNVP

__all__ = ["check_params", "params_dtype", "as_events", "expected_param_shapes"]


@functools.lru_cache(maxsize=256)
def expected_param_shapes(flow: RealNVP) -> dict:
    """``{path: shape}`` of the parameter pytree of ``flow`` (cached per spec)."""
    shapes = jax.eval_shape(lambda: init(flow, jax.random.key(0)))
    return {jax.tree_util.keystr(path): leaf.shape for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)}


def check_params(flow: RealNVP, params) -> None:
    """Raise ``ValueError`` unless ``params`` has exactly the structure and shapes ``flow`` needs."""
    if not isinstance(flow, RealNVP):
        raise TypeError(f"expected a jaxflow.RealNVP spec as first argument, got {type(flow).__name__}")
    expected = expected_param_shapes(flow)
    try:
        leaves = jax.tree_util.tree_leaves_with_path(params)
    except Exception as err:  # pragma: no cover - jax raises only on exotic pytrees
        raise TypeError(f"params is not a pytree of arrays: {err}") from None
    got = {jax.tree_util.keystr(path): jnp.shape(leaf) for path, leaf in leaves}
    if got.keys() != expected.keys():
        missing, extra = sorted(expected.keys() - got.keys()), sorted(got.keys() - expected.keys())
        raise ValueError(
            f"params do not match {flow}: missing {missing or 'nothing'}, unexpected {extra or 'nothing'}"
        )
    for path, shape in expected.items():
        if tuple(got[path]) != tuple(shape):
            raise ValueError(f"params do not match {flow}: params{path} has shape {tuple(got[path])}, expected {shape}")
    params_dtype(params)


def params_dtype(params) -> jnp.dtype:
    """The single floating dtype of all parameters."""
    dtypes = {jnp.result_type(leaf) for leaf in jax.tree_util.tree_leaves(params)}
    if len(dtypes) != 1 or not jnp.issubdtype(next(iter(dtypes)), jnp.floating):
        raise TypeError(f"params must all share one real floating dtype, got {sorted(map(str, dtypes))}")
    return next(iter(dtypes))


def as_events(flow: RealNVP, params, value, name: str) -> jax.Array:
    """Validate ``value`` as a batch of events ``(..., dim)`` and return it in the params' dtype.

    Integer and boolean data are promoted, and floating data of another width is cast, to the
    parameters' dtype, so outputs always have the parameters' dtype.
    """
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        try:
            dtype = np.asarray(value).dtype
        except Exception:
            raise TypeError(f"{name} must be a numeric array, got {type(value).__name__}") from None
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(f"{name} must be real, got complex dtype {dtype}")
    if not (jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_)):
        raise TypeError(f"{name} must be a numeric array, got dtype {dtype}")
    shape = np.shape(value)
    if len(shape) == 0 or shape[-1] != flow.dim:
        raise ValueError(f"{name} must have shape (..., {flow.dim}) for {flow}, got shape {tuple(shape)}")
    return jnp.asarray(value, dtype=params_dtype(params))
