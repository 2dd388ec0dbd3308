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
``log_prob``, init, validation), :mod:`jaxflow.layers` (couplings, transforms (affine, rational-quadratic spline), masks, scale maps,
permutations, ActNorm, affine, LU, masked autoregressive, Invert), :mod:`jaxflow.nets` (conditioners: MLP, MADE,
ResNet, your own Flax module), :mod:`jaxflow.presets` (``RealNVP``, ``MultiScaleRealNVP``, ``NeuralSplineFlow``,
``MAF``), :mod:`jaxflow.interop` (distrax, imported on first use of ``as_distribution``,
``as_bijector`` or ``FlowBijector``; NumPyro, optional, on first use of ``as_numpyro``); the application
(``train`` with ``vi``'s variational fitting, ``data``, ``checkpoint``,
``cli``, ``plotting``) builds on them.
"""

from typing import TYPE_CHECKING

from jaxflow._lazy import lazy_names

__version__ = "0.3.0"  # the one source: pyproject.toml reads it, as do `jaxflow --version` and -V

# Every public name loads its module on first use (PEP 562): ``import jaxflow`` and the
# ``jaxflow --help`` command import neither jax (1.2-2 s here) nor distrax/TFP (seconds more).
_HOMES = {
    **dict.fromkeys(("f", "g", "g_and_log_det", "g_steps", "log_det", "log_prob", "sample", "sample_and_log_prob"),
                    "jaxflow.core.flow"),
    "init": "jaxflow.core.init",
    **dict.fromkeys(("save", "load"), "jaxflow.model_file"),
    "standard_normal": "jaxflow.core.latent",
    **dict.fromkeys(("Chain", "Layer", "Repeat"), "jaxflow.core.layer"),
    **dict.fromkeys(("Flow", "FlowSpec"), "jaxflow.core.spec"),
    **dict.fromkeys(("MASKS", "IMAGE_MASKS", "SCALES", "ActNorm", "Affine", "AffineCoupling", "Coupling",
                     "AffineTransform", "RQSpline", "LULinear", "Logit", "Permute", "Squeeze", "Unsqueeze",
                     "FactorOut", "MaskedAutoregressive", "Invert"), "jaxflow.layers"),
    **dict.fromkeys(("MLP", "MADE", "ResNet", "FlaxConditioner"), "jaxflow.nets"),
    "register": "jaxflow.core.serialize",
    **dict.fromkeys(("RealNVP", "MultiScaleRealNVP", "Glow", "NeuralSplineFlow", "MAF"), "jaxflow.presets"),
    **dict.fromkeys(("FlowBijector", "as_bijector", "as_distribution"), "jaxflow.interop.distrax_adapter"),
    "as_numpyro": "jaxflow.interop.numpyro",
}


__getattr__, __dir__ = lazy_names(globals(), _HOMES)


if TYPE_CHECKING:  # pragma: no cover  (static analysers see the lazy names)
    from jaxflow.core.flow import f, g, g_and_log_det, g_steps, log_det, log_prob, sample, sample_and_log_prob  # noqa: F401
    from jaxflow.core.init import init  # noqa: F401
    from jaxflow.model_file import load, save  # noqa: F401
    from jaxflow.core.latent import standard_normal  # noqa: F401
    from jaxflow.core.layer import Chain, Layer, Repeat  # noqa: F401
    from jaxflow.core.spec import Flow, FlowSpec  # noqa: F401
    from jaxflow.interop.distrax_adapter import FlowBijector, as_bijector, as_distribution  # noqa: F401
    from jaxflow.interop.numpyro import as_numpyro  # noqa: F401
    from jaxflow.core.serialize import register  # noqa: F401
    from jaxflow.layers import (  # noqa: F401
        IMAGE_MASKS, MASKS, SCALES, ActNorm, Affine, AffineCoupling, AffineTransform, Coupling, FactorOut, Invert,
        LULinear, Logit, MaskedAutoregressive, Permute, RQSpline, Squeeze, Unsqueeze,
    )
    from jaxflow.nets import MADE, MLP, FlaxConditioner, ResNet  # noqa: F401
    from jaxflow.presets import MAF, Glow, MultiScaleRealNVP, NeuralSplineFlow, RealNVP  # noqa: F401

__all__ = [
    "RealNVP",
    "MultiScaleRealNVP",
    "Glow",
    "NeuralSplineFlow",
    "MAF",
    "Flow",
    "FlowSpec",
    "Layer",
    "Chain",
    "Repeat",
    "AffineCoupling",
    "Coupling",
    "AffineTransform",
    "RQSpline",
    "Permute",
    "ActNorm",
    "Affine",
    "LULinear",
    "Logit",
    "Squeeze",
    "Unsqueeze",
    "FactorOut",
    "MaskedAutoregressive",
    "Invert",
    "MLP",
    "MADE",
    "ResNet",
    "FlaxConditioner",
    "register",
    "MASKS",
    "IMAGE_MASKS",
    "SCALES",
    "init",
    "save",
    "load",
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
    "as_numpyro",
]
