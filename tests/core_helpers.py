"""Shared fixtures-as-functions for the core tests: specs, random parameters and data."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

import jaxflow


@functools.lru_cache(maxsize=None)
def make(dim: int, num_flows: int, dtype, *, seed: int = 0, hidden_dim: int = 16, num_hidden: int = 2, **options):
    """A spec, random (non-identity) parameters in ``dtype``, and a batch ``x`` of shape ``(7, dim)``.

    Cached: tests that ask for the same configuration share one initialisation (and its compile).
    """
    flow = jaxflow.RealNVP(dim=dim, num_flows=num_flows, hidden_dim=hidden_dim, num_hidden=num_hidden, **options)
    params = jaxflow.init(flow, jax.random.key(seed), dtype=dtype)
    x = 1.5 * jax.random.normal(jax.random.key(seed + 1), (7, dim), dtype)
    return flow, params, x


def jacobian_log_det(fn, x: jax.Array) -> jax.Array:
    """``log|det d fn / dx|`` per row of ``x (N, D)`` from the autodiff Jacobian (independent truth)."""
    jacobians = jax.vmap(jax.jacfwd(fn))(x)
    sign, logabsdet = jnp.linalg.slogdet(jacobians)
    assert bool(jnp.all(sign != 0)), "Jacobian is singular"
    return logabsdet


def event_jacobian_log_det(fn, x: jax.Array, event_shape, *row_args) -> jax.Array:
    """``log|det d fn / dx|`` per event of ``x (N, *event_shape)``, the Jacobian taken over the
    flattened event (so events of any rank work); ``row_args`` (each ``(N, ...)``, e.g. a context)
    are passed to ``fn`` row by row and not differentiated."""
    size = math.prod(event_shape)
    flat = lambda v, *args: fn(v.reshape(event_shape), *args).reshape(size)
    jacobians = jax.vmap(jax.jacfwd(flat))(x.reshape(-1, size), *row_args)
    sign, logabsdet = jnp.linalg.slogdet(jacobians)
    assert bool(jnp.all(sign != 0)), "Jacobian is singular"
    return logabsdet


def perturb(params, seed: int, scale: float = 0.3):
    """``params`` plus ``scale * N(0, 1)`` noise on every leaf: moves identity-initialised layers
    (ActNorm, LULinear) off the identity, so tests on them can fail. The noise is numpy's, so
    nothing compiles (an eager ``jax.random`` draw compiles a program per leaf shape)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: jnp.asarray(np.asarray(leaf) + scale * rng.standard_normal(leaf.shape),
                                                 leaf.dtype), params)


def grid_densities(flow, params, contexts, half_width: float = 12.0, points: int = 601):
    """``(densities, cell)``: ``exp(log_prob)`` of a 2-D ``flow`` on a ``points x points`` grid over
    ``[-half_width, half_width]^2``, one array per context value in ``contexts`` (a conditional flow
    of one context number), and the area of a grid cell; ``density.sum() * cell`` is a Riemann sum
    of the total mass (independent truth: 1)."""
    edge = jnp.linspace(-half_width, half_width, points, dtype=jnp.float64)
    cell = float(edge[1] - edge[0]) ** 2
    grid = jnp.stack(jnp.meshgrid(edge, edge), axis=-1)
    density = jax.jit(lambda context: jnp.exp(jaxflow.log_prob(flow, params, grid, context=context)))
    return [density(jnp.array([value], jnp.float64)) for value in contexts], cell
