"""A learned invertible linear map of the last axis in LU form (Glow's invertible 1x1 convolution).

.. math::

    z = W x, \\qquad W = L U, \\qquad L = I + \\operatorname{tril}(A, -1), \\qquad
    U = \\operatorname{triu}(B, 1) + \\operatorname{diag}(e^{v}),

    \\log\\left|\\det \\frac{\\partial z}{\\partial x}\\right| = P \\sum_j \\log|U_{jj}| = P \\sum_j v_j,
    \\qquad P = \\prod(\\text{event\\_shape}[:-1]).

The permutation of the general ``W = P L U`` is the identity here (a :class:`~jaxflow.Permute`
before the layer supplies one), and the diagonal of ``U`` is ``e^v``, so ``W`` is invertible for
every parameter value. Parameters ``{"lower": A (K, K), "upper": B (K, K), "log_diag": v (K,)}``,
``K = event_shape[-1]``; only ``A``'s strictly lower and ``B``'s strictly upper triangles are read.
All zero at init: ``W = I``. The inverse is ``x = U^{-1} L^{-1} z`` by triangular solves.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from jaxflow.core.layer import Layer, batch_shape

__all__ = ["LULinear", "lu_factors"]


def lu_factors(params) -> tuple[jax.Array, jax.Array]:
    """``(L, U)`` of the parameters: unit lower triangular ``L``, upper ``U`` with diagonal ``e^v``."""
    eye = jnp.eye(params["log_diag"].shape[-1], dtype=params["log_diag"].dtype)
    lower = jnp.tril(params["lower"], -1) + eye
    upper = jnp.triu(params["upper"], 1) + jnp.diag(jnp.exp(params["log_diag"]))
    return lower, upper


def _log_det(params, x, event_shape) -> jax.Array:
    return jnp.broadcast_to(math.prod(event_shape[:-1]) * params["log_diag"].sum(), batch_shape(x, event_shape))


@dataclasses.dataclass(frozen=True)
class LULinear(Layer):
    """``z = W x`` over the last axis, ``W = L U`` learned (equations in the module docstring)."""

    def init(self, key, event_shape, context_dim, dtype, data=None, context=None):
        size = event_shape[-1]
        return {"lower": jnp.zeros((size, size), dtype), "upper": jnp.zeros((size, size), dtype),
                "log_diag": jnp.zeros(size, dtype)}

    def untransformed(self, coords, event_shape):
        return None  # every output coordinate mixes all inputs

    def forward(self, params, x, context, event_shape):
        lower, upper = lu_factors(params)
        return x @ (lower @ upper).T, _log_det(params, x, event_shape)

    def inverse(self, params, z, context, event_shape):
        lower, upper = lu_factors(params)
        eye = jnp.eye(lower.shape[0], dtype=lower.dtype)
        w_inverse = solve_triangular(upper, solve_triangular(lower, eye, lower=True, unit_diagonal=True), lower=False)
        return z @ w_inverse.T, -_log_det(params, z, event_shape)
