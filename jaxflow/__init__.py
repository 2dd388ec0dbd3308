"""jaxflow: normalizing flows as pure JAX functions over a parameter pytree.

>>> import jax, jaxflow as jf
>>> flow = jf.RealNVP(dim=2, num_flows=8, hidden_dim=64, num_hidden=2)      # the article's model
>>> params = jf.init(flow, jax.random.key(0))
>>> x = jf.sample(flow, params, jax.random.key(1), 5)
>>> jf.log_prob(flow, params, x).shape
(5,)
>>> flow = jf.Flow(event_shape=(2,), context_dim=1,                        # any composition
...                layers=jf.Repeat(jf.Chain(jf.AffineCoupling(mask="alternate"), jf.LULinear()), 4))
>>> params = jf.init(flow, jax.random.key(0))
>>> jf.sample(flow, params, jax.random.key(1), 5, context=jax.numpy.ones((3, 1))).shape
(5, 3, 2)

Layout: :mod:`jaxflow.core` (the layer protocol, ``Chain``/``Repeat``, flow specs, ``f``/``g``/
``log_prob``, init, validation), :mod:`jaxflow.layers` (coupling, masks, scale maps,
permutations, ActNorm, affine, LU), :mod:`jaxflow.nets` (conditioners), :mod:`jaxflow.presets`
(``RealNVP``), :mod:`jaxflow.interop` (distrax, imported on first use of ``as_distribution``,
``as_bijector`` or ``FlowBijector``); the application (``train``, ``data``, ``checkpoint``,
``cli``, ``plotting``) builds on them.
"""

from typing import TYPE_CHECKING

from jaxflow.core.flow import f, g, g_and_log_det, g_steps, log_det, log_prob, sample, sample_and_log_prob
from jaxflow.core.init import init
from jaxflow.core.latent import standard_normal
from jaxflow.core.layer import Chain, Layer, Repeat
from jaxflow.core.spec import Flow, FlowSpec
from jaxflow.layers import MASKS, SCALES, ActNorm, Affine, AffineCoupling, LULinear, Permute
from jaxflow.nets import MLP
from jaxflow.presets import RealNVP

__version__ = "0.2.0"

# distrax (and TensorFlow Probability under it) cost seconds to import and are needed only for
# distrax objects: these names load jaxflow.interop.distrax_adapter on first use
_DISTRAX_NAMES = ("FlowBijector", "as_bijector", "as_distribution")


def __getattr__(name):
    if name in _DISTRAX_NAMES:
        from jaxflow.interop import distrax_adapter

        value = getattr(distrax_adapter, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jaxflow' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_DISTRAX_NAMES))


if TYPE_CHECKING:  # pragma: no cover  (static analysers see the lazy names)
    from jaxflow.interop.distrax_adapter import FlowBijector, as_bijector, as_distribution  # noqa: F401

__all__ = [
    "RealNVP",
    "Flow",
    "FlowSpec",
    "Layer",
    "Chain",
    "Repeat",
    "AffineCoupling",
    "Permute",
    "ActNorm",
    "Affine",
    "LULinear",
    "MLP",
    "MASKS",
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
