"""A flow with its parameters in NumPyro: a distribution, a transform, an autoguide, and so NeuTra.

* :func:`as_numpyro` gives the flow's density as a ``numpyro.distributions.Distribution``
  (:class:`FlowDistribution`): ``log_prob`` *is* :func:`jaxflow.log_prob` and ``sample`` *is*
  :func:`jaxflow.sample` (reparameterised), the support is ``real`` over the event
  (``real_vector`` for vector events), the batch shape the context's batch shape. It serves as a
  prior or likelihood in a model, so NUTS can sample a flow's density.
* :class:`FlowTransform` is the flow as a ``numpyro.distributions.transforms.Transform``: forward
  :func:`~jaxflow.g` (latent -> data), inverse :func:`~jaxflow.f`,
  ``log_abs_det_jacobian(z, x) = log|det dg/dz|``.
* :class:`AutoFlowGuide` is an ``AutoContinuous`` guide, as NumPyro's ``AutoIAFNormal`` is: the
  model's latent sites, mapped to the real line by ``biject_to(site.support)`` and flattened into
  one vector :math:`u \\in \\mathbb R^D`, get the posterior :math:`q(u) = g_\\# \\mathcal N(0, I_D)`,
  the flow pushing a standard normal forward; NumPyro's ``SVI`` fits its parameters (one param site
  ``"{prefix}_flow"`` holding the flow's parameter pytree). Trained, it goes into
  ``numpyro.infer.reparam.NeuTraReparam(guide, params)``, which runs HMC in the flow's latent
  space, where the posterior is closer to :math:`\\mathcal N(0, I)`.

NumPyro is an optional dependency (``pip install jaxflow[numpyro]``): ``import jaxflow`` never
imports it; this module does.
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.distributions.transforms import Transform
from numpyro.infer.autoguide import AutoContinuous
from numpyro.infer.initialization import init_to_uniform

from jaxflow.core.flow import f, g, g_and_log_det, log_prob, sample
from jaxflow.core.init import check_params, init
from jaxflow.core.spec import FlowSpec
from jaxflow.core.validation import as_context

__all__ = ["FlowDistribution", "FlowTransform", "AutoFlowGuide", "as_numpyro"]


def _real_events(flow: FlowSpec) -> constraints.Constraint:
    """``real`` over the flow's event: ``real_vector`` for vector events."""
    ndim = len(flow.event_shape)
    return constraints.real_vector if ndim == 1 else constraints.independent(constraints.real, ndim)


class FlowTransform(Transform):
    """The flow as a NumPyro bijection ``z -> x = g(z; c)`` with ``log|det dg/dz|``, bound to ``context``."""

    def __init__(self, flow: FlowSpec, params, context=None):
        self.flow, self.params, self.context = flow, params, context

    @property
    def domain(self) -> constraints.Constraint:
        return _real_events(self.flow)

    @property
    def codomain(self) -> constraints.Constraint:
        return _real_events(self.flow)

    def __call__(self, z):
        return g(self.flow, self.params, z, context=self.context)

    def call_with_intermediates(self, z):
        """``(x, log|det dg/dz|)``: the log-det travels with the sample, so ``log_prob`` never inverts."""
        return g_and_log_det(self.flow, self.params, z, context=self.context)

    def _inverse(self, x):
        return f(self.flow, self.params, x, context=self.context)[0]

    def log_abs_det_jacobian(self, z, x, intermediates=None):
        """``log|det dg/dz|`` at ``z``: the one :meth:`call_with_intermediates` kept, else recomputed
        from ``z`` (the same pass as ``g(z)``, which ``jit`` computes once)."""
        if intermediates is not None:
            return intermediates
        return g_and_log_det(self.flow, self.params, z, context=self.context)[1]

    def tree_flatten(self):
        return (self.params, self.context), (("params", "context"), {"flow": self.flow})


class FlowDistribution(dist.Distribution):
    """The flow's density ``p_X(x | context)`` as a NumPyro distribution (see :func:`as_numpyro`)."""

    pytree_data_fields = ("params", "context")
    pytree_aux_fields = ("flow",)

    def __init__(self, flow: FlowSpec, params, context=None, *, validate_args: Optional[bool] = None):
        self.flow, self.params, self.context = flow, params, context
        batch_shape = () if context is None else tuple(context.shape[:-1])
        super().__init__(batch_shape, tuple(flow.event_shape), validate_args=validate_args)

    @property
    def support(self) -> constraints.Constraint:
        return _real_events(self.flow)

    def sample(self, key, sample_shape=()):
        """``x = g(z; c)``, ``z ~ N(0, I)``: shape ``sample_shape + batch_shape + event_shape``, differentiable."""
        return sample(self.flow, self.params, key, tuple(sample_shape), context=self.context)

    def rsample(self, key, sample_shape=()):
        return self.sample(key, sample_shape)

    def log_prob(self, value):
        """:func:`jaxflow.log_prob` of ``value (..., *event_shape)``, shape ``(...)``."""
        return log_prob(self.flow, self.params, value, context=self.context)


def as_numpyro(flow: FlowSpec, params, context=None) -> FlowDistribution:
    """The flow's density as a ``numpyro.distributions.Distribution``, bound to ``context``
    (``(context_dim,)``, or a batch ``(B, context_dim)`` giving batch shape ``(B,)``)."""
    dtype = check_params(flow, params)
    return FlowDistribution(flow, params, as_context(flow, context, dtype))


class AutoFlowGuide(AutoContinuous):
    """An ``AutoContinuous`` guide whose posterior over the model's unconstrained latent vector
    ``u (D,)`` is the flow's density ``g_# N(0, I_D)`` (module docstring).

    Args:
      model: a NumPyro model with continuous latent sites of fixed shapes (no local latents).
      flow: an unconditional flow spec with event shape ``(D,)``, or a function ``D -> flow spec``
        (``D`` is known only once the guide has traced the model), e.g.
        ``lambda d: jaxflow.RealNVP(dim=d, num_flows=4, scale="tanh", identity_init=True)``.
        A flow that starts as the identity starts the guide at ``N(0, I)``, as ``AutoIAFNormal``.
      prefix, init_loc_fn: as ``AutoContinuous``'s (``init_loc_fn`` only sets the prototype trace).

    Its parameters are one param site ``"{prefix}_flow"``: ``svi.get_params(state)[f"{prefix}_flow"]``
    is the flow's parameter pytree, so ``as_numpyro(guide.flow, that)`` is the fitted posterior over ``u``.
    """

    def __init__(self, model: Callable, *, flow: Union[FlowSpec, Callable[[int], FlowSpec]], prefix: str = "auto",
                 init_loc_fn: Callable = init_to_uniform):
        if not isinstance(flow, FlowSpec) and not callable(flow):
            raise TypeError(f"AutoFlowGuide: flow must be a flow spec or a function latent_dim -> flow spec, "
                            f"got {type(flow).__name__}")
        self._flow_or_builder = flow
        self.flow: Optional[FlowSpec] = None  # set when the guide first traces the model
        super().__init__(model, prefix=prefix, init_loc_fn=init_loc_fn)

    def _setup_prototype(self, *args, **kwargs):
        super()._setup_prototype(*args, **kwargs)
        flow = self._flow_or_builder
        flow = flow if isinstance(flow, FlowSpec) else flow(self.latent_dim)
        if not isinstance(flow, FlowSpec):
            raise TypeError(f"AutoFlowGuide: the flow builder returned a {type(flow).__name__}, not a flow spec")
        if tuple(flow.event_shape) != (self.latent_dim,) or flow.context_dim != 0:
            raise ValueError(f"AutoFlowGuide: the model has {self.latent_dim} unconstrained latent dimensions, so the "
                             f"flow needs event shape ({self.latent_dim},) and no context; got event shape "
                             f"{tuple(flow.event_shape)}, context_dim {flow.context_dim}")
        self.flow = flow

    def _get_posterior(self):
        dtype = jnp.result_type(self._init_latent)
        params = numpyro.param(f"{self.prefix}_flow", lambda key: init(self.flow, key, dtype))
        return dist.TransformedDistribution(self.get_base_dist(), FlowTransform(self.flow, params))

    def get_base_dist(self):
        return dist.Normal(jnp.zeros(self.latent_dim, jnp.result_type(self._init_latent)), 1).to_event(1)
