"""jaxflow: the article's affine-coupling normalizing flow as pure JAX functions.

>>> import jax, jaxflow
>>> flow = jaxflow.RealNVP(dim=2, num_flows=8, hidden_dim=64, num_hidden=2)
>>> params = jaxflow.init(flow, jax.random.key(0))
>>> x = jaxflow.sample(flow, params, jax.random.key(1), 5)
>>> jaxflow.log_prob(flow, params, x).shape
(5,)
"""

from jaxflow.distrax_adapter import FlowBijector, as_bijector, as_distribution
from jaxflow.flow import (
    f,
    g,
    g_and_log_det,
    g_steps,
    log_det,
    log_prob,
    sample,
    sample_and_log_prob,
    standard_normal,
)
from jaxflow.params import init
from jaxflow.scales import SCALES
from jaxflow.spec import RealNVP

__version__ = "0.1.0"

__all__ = [
    "RealNVP",
    "SCALES",
    "init",
    "f",
    "g",
    "g_and_log_det",
    "g_steps",
    "log_det",
    "log_prob",
    "sample",
    "sample_and_log_prob",
    "standard_normal",
    "FlowBijector",
    "as_bijector",
    "as_distribution",
]
