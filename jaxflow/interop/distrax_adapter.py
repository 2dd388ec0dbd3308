"""A flow with its parameters as a ``distrax.Bijector`` and a ``distrax.Transformed`` distribution.

distrax's bijectors map base samples to data, so the bijector's *forward* is jaxflow's
:func:`~jaxflow.g` (latent -> data) and its *inverse* is :func:`~jaxflow.f`. A conditional flow
is bound to one context (``(context_dim,)``, or a batch broadcast against the events).
"""

from __future__ import annotations

from typing import Optional

import distrax
import jax

from jaxflow.core.flow import f, g_and_log_det
from jaxflow.core.init import check_params
from jaxflow.core.latent import check_latent, resolve_latent
from jaxflow.core.spec import FlowSpec
from jaxflow.core.validation import as_context

__all__ = ["FlowBijector", "as_bijector", "as_distribution"]


class FlowBijector(distrax.Bijector):
    """``forward = g`` (latent -> data), ``inverse = f`` (data -> latent), on the flow's event shape."""

    def __init__(self, flow: FlowSpec, params, context=None):
        super().__init__(event_ndims_in=len(flow.event_shape))
        self.flow = flow
        self.params = params
        self.context = context

    def forward_and_log_det(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        return g_and_log_det(self.flow, self.params, z, context=self.context)

    def inverse_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return f(self.flow, self.params, x, context=self.context)


def as_bijector(flow: FlowSpec, params, context=None) -> FlowBijector:
    """The flow as a ``distrax.Bijector`` (forward: latent -> data), bound to ``context``."""
    dtype = check_params(flow, params)
    return FlowBijector(flow, params, as_context(flow, context, dtype))


def as_distribution(flow: FlowSpec, params, latent: Optional[distrax.Distribution] = None,
                    context=None) -> distrax.Transformed:
    """The flow's density ``p_X(. | context)`` as ``distrax.Transformed(latent, as_bijector(...))``."""
    check_latent(flow, latent)
    bijector = as_bijector(flow, params, context)
    return distrax.Transformed(resolve_latent(flow, latent, check_params(flow, params)), bijector)
