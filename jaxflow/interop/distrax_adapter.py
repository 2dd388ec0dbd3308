"""A flow with its parameters as a ``distrax.Bijector`` and a ``distrax.Transformed`` distribution.

distrax's bijectors map base samples to data, so the bijector's *forward* is jaxflow's
:func:`~jaxflow.g` (latent -> data) and its *inverse* is :func:`~jaxflow.f`. A conditional flow
is bound to one context (``(context_dim,)``, or a batch broadcast against the events).

This module imports distrax (and TensorFlow Probability): ``import jaxflow`` loads it only when
one of its names is first used.

KL divergence. distrax computes ``KL(Transformed(p, b1) || Transformed(q, b2))`` as ``KL(p || q)``
once it believes ``b1`` and ``b2`` are the same bijector: the same instance, ``b1.same_as(b2)``,
or, failing both, equal *printed jaxprs* of their ``forward``. A flow's parameters are closed-over
constants in that jaxpr, so two flows with the same spec and different parameters print the same
program and distrax returned ``KL = 0`` for different densities. Hence:

* :meth:`FlowBijector.same_as` is true only for the same flow spec, the same parameters (the same
  object or equal leaves) and the same context;
* :func:`as_distribution` returns a :class:`FlowDistribution`, a ``distrax.Transformed`` whose KL
  against any ``Transformed`` uses only that test (never the jaxpr comparison): the latents' KL
  when the bijectors are the same, else ``NotImplementedError`` as distrax raises for pairs it
  cannot compute (estimate such a KL by Monte Carlo from ``sample_and_log_prob``).

A ``distrax.Transformed(latent, as_bijector(...))`` built by hand gets the same rule: distrax's
own registrations for ``Transformed`` are wrapped to use it whenever a :class:`FlowBijector` is on
either side (:func:`_guard_distrax_kl`).
"""

from __future__ import annotations

from typing import Optional

import distrax
import jax
import numpy as np
from tensorflow_probability.substrates import jax as tfp

from jaxflow.core.flow import f, g_and_log_det
from jaxflow.core.init import check_params
from jaxflow.core.latent import check_latent, standard_normal
from jaxflow.core.spec import FlowSpec
from jaxflow.core.validation import as_context

__all__ = ["FlowBijector", "FlowDistribution", "as_bijector", "as_distribution"]


def _same_arrays(a, b) -> bool:
    """The same object, or equal concrete pytrees (structure, shapes, dtypes, values); a traced
    leaf is equal only to itself (its value is unknown)."""
    if a is b:
        return True
    if (a is None) != (b is None):
        return False
    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    if tree_a != tree_b:
        return False
    for x, y in zip(leaves_a, leaves_b):
        if x is y:
            continue
        try:
            x, y = np.asarray(x), np.asarray(y)
        except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
            return False
        if x.shape != y.shape or x.dtype != y.dtype or not np.array_equal(x, y):
            return False
    return True


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

    def same_as(self, other) -> bool:
        """True only if ``other`` is a :class:`FlowBijector` of an equal flow spec with the same
        parameters (the same object or equal leaves) and the same context (both ``None``, the
        same object, or equal arrays)."""
        if other is self:
            return True
        return (isinstance(other, FlowBijector) and self.flow == other.flow
                and _same_arrays(self.params, other.params) and _same_arrays(self.context, other.context))


class FlowDistribution(distrax.Transformed):
    """``distrax.Transformed(latent, FlowBijector)`` whose KL divergence is correct (see the module docstring)."""


def _kl_flow(dist1, dist2, *unused_args, **unused_kwargs):
    """``KL(dist1 || dist2)`` for Transformed distributions of which one at least is a flow's:
    the latents' KL if the bijectors are the same (:meth:`FlowBijector.same_as`), else
    ``NotImplementedError``."""
    if dist1.distribution.event_shape != dist2.distribution.event_shape:
        raise ValueError(f"The two base distributions do not have the same event shape: "
                         f"{dist1.distribution.event_shape} and {dist2.distribution.event_shape}.")
    bij1, bij2 = dist1.bijector, dist2.bijector
    if not (bij1 is bij2 or (isinstance(bij1, FlowBijector) and bij1.same_as(bij2))):
        raise NotImplementedError(
            f"KL divergence between these flow distributions is not available in closed form: their "
            f"bijectors ({bij1.name}, {bij2.name}) are not the same flow with the same parameters and "
            f"context; estimate it by Monte Carlo (sample_and_log_prob of one, log_prob of the other)")
    return dist1.distribution.kl_divergence(dist2.distribution)


# the most specific registration wins in TFP's lookup, so these shadow distrax's
# (Transformed, Transformed) rule whenever a FlowDistribution is on either side
for _pair in [(FlowDistribution, FlowDistribution), (FlowDistribution, distrax.Transformed),
              (distrax.Transformed, FlowDistribution), (FlowDistribution, tfp.distributions.TransformedDistribution),
              (tfp.distributions.TransformedDistribution, FlowDistribution)]:
    tfp.distributions.RegisterKL(*_pair)(_kl_flow)
del _pair


def _guard_distrax_kl() -> None:
    """Route distrax's own ``Transformed``/``Transformed`` KL rule through :func:`_kl_flow` when a
    :class:`FlowBijector` is on either side, so a hand-built ``distrax.Transformed(latent,
    as_bijector(...))`` cannot reach the jaxpr comparison either; every other pair is untouched.
    TFP offers no public way to replace a registration: this edits its registry (private, so
    skipped if absent; :class:`FlowDistribution` is covered by the public registrations above)."""
    from tensorflow_probability.substrates.jax.distributions import kullback_leibler

    registry = getattr(kullback_leibler, "_DIVERGENCES", None)
    if not isinstance(registry, dict):
        return
    for pair, rule in list(registry.items()):
        if distrax.Transformed not in pair or rule is _kl_flow or getattr(rule, "_jaxflow_guard", False):
            continue

        def guarded(dist1, dist2, *args, _rule=rule, **kwargs):
            bijectors = (getattr(dist1, "bijector", None), getattr(dist2, "bijector", None))
            if any(isinstance(b, FlowBijector) for b in bijectors):
                return _kl_flow(dist1, dist2)
            return _rule(dist1, dist2, *args, **kwargs)

        guarded._jaxflow_guard = True
        registry[pair] = guarded


_guard_distrax_kl()


def as_bijector(flow: FlowSpec, params, context=None) -> FlowBijector:
    """The flow as a ``distrax.Bijector`` (forward: latent -> data), bound to ``context``."""
    dtype = check_params(flow, params)
    return FlowBijector(flow, params, as_context(flow, context, dtype))


def as_distribution(flow: FlowSpec, params, latent: Optional[distrax.Distribution] = None,
                    context=None) -> FlowDistribution:
    """The flow's density ``p_X(. | context)`` as a ``distrax.Transformed(latent, as_bijector(...))``
    (a :class:`FlowDistribution`; default latent ``N(0, I)`` in the parameters' dtype).

    With a batch of contexts ``(B, C)`` the default latent has batch shape ``(B,)``, so
    ``sample(n)`` draws ``(n, B, D)`` independently for every context, as :func:`jaxflow.sample`
    does; a latent you pass is used as it is (give it that batch shape for independent draws)."""
    check_latent(flow, latent)
    bijector = as_bijector(flow, params, context)
    if latent is None:
        batch = () if bijector.context is None else bijector.context.shape[:-1]
        latent = standard_normal(flow.event_shape, check_params(flow, params), batch)
    return FlowDistribution(latent, bijector)
