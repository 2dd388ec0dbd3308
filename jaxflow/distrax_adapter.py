"""A flow with its parameters as a ``distrax.Bijector`` and a ``distrax.Transformed`` distribution.

distrax's bijectors map base samples to data, so the bijector's *forward* is jaxflow's
:func:`~jaxflow.g` (latent -> data) and its *inverse* is :func:`~jaxflow.f`.
"""

from __future__ import annotations

from typing import Optional

import distrax
import jax

from jaxflow.flow import check_latent, f, g_and_log_det, resolve_latent
from jaxflow.validation import params_dtype
from jaxflow.spec import RealNVP

__all__ = ["FlowBijector", "as_bijector", "as_distribution"]


class FlowBijector(distrax.Bijector):
    """``forward = g`` (latent -> data), ``inverse = f`` (data -> latent), event_ndims 1."""

    def __init__(self, flow: RealNVP, params):
        super().__init__(event_ndims_in=1)
        self.flow = flow
        self.params = params

    def forward_and_log_det(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        return g_and_log_det(self.flow, self.params, z)

    def inverse_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return f(self.flow, self.params, x)


def as_bijector(flow: RealNVP, params) -> FlowBijector:
    """The flow as a ``distrax.Bijector`` (forward: latent -> data)."""
    return FlowBijector(flow, params)


def as_distribution(flow: RealNVP, params, latent: Optional[distrax.Distribution] = None) -> distrax.Transformed:
    """The flow's density ``p_X`` as a ``distrax.Transformed(latent, as_bijector(flow, params))``."""
    check_latent(flow, latent)
    return distrax.Transformed(resolve_latent(flow, latent, params_dtype(params)), as_bijector(flow, params))
