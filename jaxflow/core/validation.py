"""Input checks that turn misuse into one clear ``TypeError``/``ValueError`` at trace time.

All checks read only static information (shapes, dtypes, tree structure), so they cost nothing
inside ``jit`` and work on tracers under ``vmap`` and ``grad``.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxflow.core.spec import FlowSpec

__all__ = ["check_flow", "check_key", "describe", "as_events", "as_context", "as_inputs", "embed_context", "layer_params"]


def check_flow(flow, where: str = "") -> None:
    """``TypeError`` unless ``flow`` is a jaxflow flow spec."""
    if not isinstance(flow, FlowSpec):
        prefix = f"{where}: " if where else ""
        raise TypeError(f"{prefix}expected a jaxflow flow spec (jaxflow.Flow or jaxflow.RealNVP) as first argument, "
                        f"got {type(flow).__name__}")


def check_key(key, where: str) -> None:
    """``TypeError`` unless ``key`` is one JAX PRNG key: a typed key (``jax.random.key(seed)``) of
    shape ``()``, or a raw ``uint32`` key (``jax.random.PRNGKey(seed)``)."""
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if np.shape(key) != ():
            raise TypeError(f"{where}: key must be one PRNG key, got a batch of keys of shape {np.shape(key)}")
        return
    if dtype == np.uint32 and np.ndim(key) == 1:
        return
    got = f"{type(key).__name__} {key!r}" if np.ndim(key) == 0 else f"{type(key).__name__} of shape {np.shape(key)}"
    raise TypeError(f"{where}: key must be a JAX PRNG key such as jax.random.key(0), got {got}")


def describe(flow: FlowSpec) -> str:
    """A one-line name of ``flow`` for messages (its repr, unless that is long)."""
    text = repr(flow)
    if len(text) <= 300:
        return text
    return f"{type(flow).__name__}(event_shape={flow.event_shape}, context_dim={flow.context_dim}, ...)"


def _numeric(value, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a real numeric array-like, or a one-line ``TypeError``."""
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
    return tuple(np.shape(value)), dtype


def as_events(flow: FlowSpec, value, name: str, dtype) -> jax.Array:
    """Validate ``value`` as events ``(..., *event_shape)`` and return it in ``dtype``.

    Integer and boolean data are promoted, and floating data of another width is cast, so
    outputs always have the parameters' dtype.
    """
    shape, _ = _numeric(value, name)
    event = tuple(flow.event_shape)
    if len(shape) < len(event) or shape[len(shape) - len(event):] != event:
        expected = ", ".join(["..."] + [str(n) for n in event])
        raise ValueError(f"{name} must have shape ({expected}) for {describe(flow)}, got shape {shape}")
    return jnp.asarray(value, dtype=dtype)


def as_context(flow: FlowSpec, context, dtype) -> Optional[jax.Array]:
    """Validate ``context`` against ``flow.context_dim`` and return it in ``dtype`` (``None`` if unconditional)."""
    if flow.context_dim == 0:
        if context is not None:
            raise ValueError(f"context: this flow is unconditional (context_dim=0), got a context of shape "
                             f"{tuple(np.shape(context))}")
        return None
    if context is None:
        raise ValueError(f"context: this flow is conditional, expected a context of shape (..., {flow.context_dim}), "
                         "got None")
    shape, _ = _numeric(context, "context")
    if len(shape) == 0 or shape[-1] != flow.context_dim:
        raise ValueError(f"context must have shape (..., {flow.context_dim}), got shape {shape}")
    return jnp.asarray(context, dtype=dtype)


def as_inputs(flow: FlowSpec, value, context, name: str, dtype) -> tuple[jax.Array, Optional[jax.Array]]:
    """Events and context, validated, in ``dtype``, broadcast to one batch shape."""
    x = as_events(flow, value, name, dtype)
    c = as_context(flow, context, dtype)
    if c is None:
        return x, None
    x_batch, c_batch = x.shape[: x.ndim - len(flow.event_shape)], c.shape[:-1]
    try:
        batch = np.broadcast_shapes(x_batch, c_batch)
    except ValueError:
        raise ValueError(f"{name} has batch shape {x_batch} and context batch shape {c_batch}, which do not "
                         "broadcast") from None
    return (jnp.broadcast_to(x, batch + tuple(flow.event_shape)),
            jnp.broadcast_to(c, batch + (flow.context_dim,)))


def layer_params(flow: FlowSpec, params):
    """The root layer's part of the flow's ``params``: ``params["layers"]`` with an embedding, else all of them."""
    return params if flow.embedding is None else params["layers"]


def embed_context(flow: FlowSpec, params, context: Optional[jax.Array]) -> Optional[jax.Array]:
    """The context as the layers see it (traced code): ``flow.context_affine``, then
    ``flow.embedding`` with ``params["embedding"]``, each applied if present (:class:`FlowSpec`)."""
    if context is None:
        return None
    if flow.context_affine is not None:
        context = flow.context_affine.forward({}, context, None, (flow.context_dim,))[0]
    if flow.embedding is not None:
        context = flow.embedding.apply(params["embedding"], context, flow.embedding_dim)
    return context
