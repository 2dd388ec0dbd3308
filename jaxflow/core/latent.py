"""The latent distribution :math:`p_Z`: the default ``N(0, I)`` and checks of a user's choice.

The default latent used by :func:`~jaxflow.log_prob` and :func:`~jaxflow.sample` is written
directly in ``jax.numpy``/``jax.random`` (:class:`StandardNormal`), so ``import jaxflow`` does not
import distrax (and TensorFlow Probability under it, seconds of import time). It gives the same
numbers as ``distrax.MultivariateNormalDiag(zeros, ones)``: the same draws bit for bit for the
same key (distrax draws ``jax.random.normal(key, (n, *event))`` and scales by 1, shifts by 0)
and the same log-density to rounding. distrax is imported only where a distrax object is made
(:func:`standard_normal`, :mod:`jaxflow.interop`) or has been passed in.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Optional, Sequence, Union

import jax
import jax.numpy as jnp

from jaxflow.core.spec import FlowSpec

if TYPE_CHECKING:  # pragma: no cover
    import distrax

__all__ = ["standard_normal", "StandardNormal", "check_latent", "resolve_latent", "is_distrax_distribution"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _shape(event_shape: Union[int, Sequence[int]]) -> tuple[int, ...]:
    return (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)


def standard_normal(event_shape: Union[int, Sequence[int]], dtype=jnp.float32,
                    batch_shape: Sequence[int] = ()) -> "distrax.Distribution":
    """:math:`\\mathcal{N}(0, I)` over events of ``event_shape`` (an int ``D`` means ``(D,)``), a distrax distribution
    (imports distrax); ``batch_shape`` gives a batch of independent ones."""
    import distrax

    shape = _shape(event_shape)
    full = tuple(batch_shape) + shape
    if len(shape) == 1:
        return distrax.MultivariateNormalDiag(jnp.zeros(full, dtype), jnp.ones(full, dtype))
    return distrax.Independent(distrax.Normal(jnp.zeros(full, dtype), jnp.ones(full, dtype)), len(shape))


class StandardNormal:
    """The default latent ``N(0, I)`` without distrax: ``log_prob`` and ``sample`` with distrax's
    signatures and numbers (not a ``distrax.Distribution``: pass distrax latents for anything else)."""

    def __init__(self, event_shape: Union[int, Sequence[int]], dtype=jnp.float32):
        self.event_shape = _shape(event_shape)
        self.dtype = jnp.dtype(dtype)

    def log_prob(self, value: jax.Array) -> jax.Array:
        value = jnp.asarray(value)
        # distrax's order of operations: per element -x^2/2 - log(2 pi)/2, summed over the event
        per_element = -0.5 * jnp.square(value) - jnp.asarray(_HALF_LOG_2PI, value.dtype)
        return jnp.sum(per_element, axis=tuple(range(-len(self.event_shape), 0)))

    def sample(self, *, seed: jax.Array, sample_shape: Union[int, Sequence[int]] = ()) -> jax.Array:
        sample_shape = _shape(sample_shape)
        # as distrax: n = prod(sample_shape) flat draws, then reshaped (the same bits for the same key)
        n = math.prod(sample_shape)
        draws = jax.random.normal(seed, (n, *self.event_shape), self.dtype)
        return draws.reshape(sample_shape + self.event_shape)


def is_distrax_distribution(value) -> bool:
    """``isinstance(value, distrax.Distribution)`` without importing distrax: an object of that
    class can only exist once distrax has been imported by whoever made it."""
    distrax = sys.modules.get("distrax")
    return distrax is not None and isinstance(value, distrax.Distribution)


def check_latent(flow: FlowSpec, latent: Optional["distrax.Distribution"]) -> None:
    """Raise unless ``latent`` is ``None`` (the default) or a distrax distribution on events of the flow's shape."""
    if latent is None:
        return
    if not is_distrax_distribution(latent):
        kind = type(latent)
        name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
        how = ("wrap it: latent=distrax.as_distribution(d)" if kind.__module__.startswith("tensorflow_probability")
               else "subclass distrax.Distribution (its _sample_n and log_prob), or wrap a TensorFlow Probability "
                    "distribution with distrax.as_distribution")
        raise TypeError(f"latent must be a distrax.Distribution, got {name}; {how}")
    if tuple(latent.event_shape) != tuple(flow.event_shape):
        raise ValueError(f"latent must have event shape {tuple(flow.event_shape)}, got {tuple(latent.event_shape)}")


def resolve_latent(flow: FlowSpec, latent: Optional["distrax.Distribution"], dtype):
    """``latent``, or the default ``N(0, I)`` in ``dtype`` (a :class:`StandardNormal`).

    Call it inside traced code: it is built at trace time, so it costs nothing per call.
    """
    return StandardNormal(flow.event_shape, dtype) if latent is None else latent
