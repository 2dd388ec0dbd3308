"""The flow's functions, pure in ``(flow, params, array, context)``.

.. math::

    z = f(x; c), \\qquad x = g(z; c) = f^{-1}(z; c), \\qquad
    \\log p_X(x \\mid c) = \\log p_Z(f(x; c)) + \\log\\left|\\det \\frac{\\partial f(x; c)}{\\partial x}\\right|.

``f`` is the root layer of the spec (:mod:`jaxflow.core.layer`); a :class:`~jaxflow.Repeat` runs
as one ``jax.lax.scan`` (reversed for ``g``), so compile time does not grow with depth.

Every function takes events of shape ``(..., *event_shape)`` with any number of leading batch
axes and, for a conditional flow, a context ``(..., context_dim)`` whose batch axes broadcast
against them. All are pure and compose with ``jax.jit`` (``flow`` is hashable: pass it as a
static argument), ``jax.vmap`` and ``jax.grad`` with respect to ``params``, the inputs and the
context. Unlike the article's ``g``, :func:`g` and :func:`sample` are differentiable
(reparameterised sampling).
"""

from __future__ import annotations

import functools
import numbers
from typing import TYPE_CHECKING, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxflow.core.init import check_params, params_dtype
from jaxflow.core.latent import check_latent, resolve_latent
from jaxflow.core.spec import FlowSpec
from jaxflow.core.validation import as_context, as_inputs, check_key, embed_context, layer_params

if TYPE_CHECKING:  # pragma: no cover
    import distrax  # imported only where a distrax object is made or passed (jaxflow.core.latent)

__all__ = ["f", "g", "g_and_log_det", "g_steps", "log_det", "log_prob", "sample", "sample_and_log_prob"]

Latent = Optional["distrax.Distribution"]


@functools.partial(jax.jit, static_argnames="flow")
def _forward(flow: FlowSpec, params, x: jax.Array, context) -> tuple[jax.Array, jax.Array]:
    return flow.layers.forward(layer_params(flow, params), x, embed_context(flow, params, context),
                               tuple(flow.event_shape))


@functools.partial(jax.jit, static_argnames=("flow", "keep_steps"))
def _inverse(flow: FlowSpec, params, z: jax.Array, context, keep_steps: bool = False):
    context, shape = embed_context(flow, params, context), tuple(flow.event_shape)
    params = layer_params(flow, params)
    if keep_steps:
        return flow.layers.inverse_steps(params, z, context, shape)
    return (*flow.layers.inverse(params, z, context, shape), None)


def _inputs(flow, params, value, context, name):
    dtype = check_params(flow, params)
    if not jax.tree_util.tree_leaves(params):
        # no parameters to take the dtype from (e.g. Chain(Affine(...), Permute())): compute in the
        # data's floating dtype rather than cast float64 data down to params_dtype's float32
        value_dtype = getattr(value, "dtype", None)
        if value_dtype is not None and jnp.issubdtype(value_dtype, jnp.floating):
            dtype = jax.dtypes.canonicalize_dtype(value_dtype)
    return as_inputs(flow, value, context, name, dtype)


def f(flow: FlowSpec, params, x, *, context=None) -> tuple[jax.Array, jax.Array]:
    """Data to latent: ``x (..., *event) -> (z = f(x; c) (..., *event), log|det df/dx| (...))``."""
    return _forward(flow, params, *_inputs(flow, params, x, context, "x"))


def log_det(flow: FlowSpec, params, x, *, context=None) -> jax.Array:
    """``log|det df(x; c)/dx|``, shape ``(...)``."""
    return f(flow, params, x, context=context)[1]


def g_and_log_det(flow: FlowSpec, params, z, *, context=None) -> tuple[jax.Array, jax.Array]:
    """Latent to data with log-det: ``z -> (x = g(z; c), log|det dg/dz| = -log|det df/dx|)``."""
    x, total, _ = _inverse(flow, params, *_inputs(flow, params, z, context, "z"))
    return x, total


def g(flow: FlowSpec, params, z, *, context=None) -> jax.Array:
    """Latent to data, the inverse of :func:`f`: ``z (..., *event) -> x (..., *event)``."""
    return g_and_log_det(flow, params, z, context=context)[0]


def g_steps(flow: FlowSpec, params, z, *, context=None) -> jax.Array:
    """The article's ``g_steps``: ``z`` and the output of every top-level inverse step, ``(S + 1, ..., *event)``.

    The steps are the root layer's: each copy of a :class:`~jaxflow.Repeat` (each coupling of a
    :class:`~jaxflow.RealNVP`), or each element of a :class:`~jaxflow.Chain`. ``steps[0] = z`` and
    ``steps[S] = g(z)``.
    """
    z, context = _inputs(flow, params, z, context, "z")
    _, _, steps = _inverse(flow, params, z, context, keep_steps=True)
    return jnp.concatenate([z[None], steps], axis=0)


@functools.partial(jax.jit, static_argnames="flow")
def _log_prob(flow: FlowSpec, params, x: jax.Array, context, latent: Latent) -> jax.Array:
    z, ld = _forward(flow, params, x, context)
    return resolve_latent(flow, latent, x.dtype).log_prob(z) + ld


def log_prob(flow: FlowSpec, params, x, *, context=None, latent: Latent = None) -> jax.Array:
    """``log p_X(x | c) = log p_Z(f(x; c)) + log|det df/dx|``, shape ``(...)``.

    ``latent`` is any distrax distribution with the flow's event shape; default ``N(0, I)``.
    Reuse one latent object across calls: distrax distributions carry bound methods in their
    pytree metadata, so each new object compiles anew (the default costs nothing).
    """
    x, context = _inputs(flow, params, x, context, "x")
    check_latent(flow, latent)
    return _log_prob(flow, params, x, context, latent)


SampleShape = Union[int, Sequence[int]]


def _count(value, name: str = "num_samples") -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if isinstance(value, numbers.Integral):
        count = int(value)
    elif isinstance(value, (np.ndarray, np.generic, jax.Array)) and np.ndim(value) == 0 \
            and jnp.issubdtype(value.dtype, jnp.integer):
        try:
            count = int(value)
        except jax.errors.ConcretizationTypeError:
            raise TypeError(f"{name} must be a concrete int (it sets an array shape), got a traced value") from None
    else:
        raise TypeError(f"{name} must be an int or a tuple of ints, got {value!r} ({type(value).__name__})")
    if count < 0:
        raise ValueError(f"{name} must be >= 0, got {count}")
    return count


def _sample_shape(num_samples: SampleShape) -> tuple[int, ...]:
    if isinstance(num_samples, (tuple, list)):
        return tuple(_count(n) for n in num_samples)
    return (_count(num_samples),)


@functools.partial(jax.jit, static_argnames=("flow", "shape"))
def _sample_and_log_prob(flow: FlowSpec, params, key: jax.Array, shape: tuple[int, ...], context,
                         latent: Latent) -> tuple[jax.Array, jax.Array]:
    latent = resolve_latent(flow, latent, params_dtype(params))
    if context is not None:
        shape = shape + context.shape[:-1]
        context = jnp.broadcast_to(context, shape + context.shape[-1:])
    z = latent.sample(seed=key, sample_shape=shape)
    x, ld, _ = _inverse(flow, params, z, context)
    return x, latent.log_prob(z) - ld


def sample_and_log_prob(flow: FlowSpec, params, key: jax.Array, num_samples: SampleShape = 1, *, context=None,
                        latent: Latent = None) -> tuple[jax.Array, jax.Array]:
    """Draw ``x = g(z; c)``, ``z ~ latent``, and its ``log p_X(x | c) = log p_Z(z) - log|det dg/dz|`` in one pass.

    ``x`` has shape ``(num_samples, *batch, *event)`` (``(*num_samples, ...)`` for a tuple), where
    ``batch`` is the context's batch shape: a context ``(C,)`` gives ``(n, *event)``, ``(B, C)``
    gives ``(n, B, *event)``. Both outputs are differentiable in ``params`` and the context.
    """
    dtype = check_params(flow, params)
    check_key(key, "sample(flow, params, key, num_samples)")
    context = as_context(flow, context, dtype)
    check_latent(flow, latent)
    return _sample_and_log_prob(flow, params, key, _sample_shape(num_samples), context, latent)


def sample(flow: FlowSpec, params, key: jax.Array, num_samples: SampleShape = 1, *, context=None,
           latent: Latent = None) -> jax.Array:
    """Draw ``x = g(z; c)``, ``z ~ latent``: shapes as :func:`sample_and_log_prob`.

    Shares :func:`sample_and_log_prob`'s program: called eagerly it also evaluates the latent
    log-density (one elementwise pass); inside a caller's ``jit`` XLA removes it as unused.
    """
    return sample_and_log_prob(flow, params, key, num_samples, context=context, latent=latent)[0]
