"""Layer kinds: each a frozen spec implementing :class:`jaxflow.core.layer.Layer`.

Names load their module on first use (PEP 562), so :mod:`jaxflow.layers.names` (the option
names the command line offers) imports without jax.
"""

from jaxflow._lazy import lazy_names

_HOMES = {
    "AffineCoupling": "jaxflow.layers.coupling",
    "Coupling": "jaxflow.layers.coupling",
    "AffineTransform": "jaxflow.layers.transforms",
    "RQSpline": "jaxflow.layers.transforms",
    "ActNorm": "jaxflow.layers.elementwise",
    "Affine": "jaxflow.layers.elementwise",
    "LULinear": "jaxflow.layers.lu",
    "Logit": "jaxflow.layers.logit",
    "Permute": "jaxflow.layers.permute",
    "Squeeze": "jaxflow.layers.squeeze",
    "Unsqueeze": "jaxflow.layers.squeeze",
    "FactorOut": "jaxflow.layers.factor_out",
    "IMAGE_MASKS": "jaxflow.layers.names",
    "MASKS": "jaxflow.layers.names",
    "SCALES": "jaxflow.layers.names",
    "PERMUTATIONS": "jaxflow.layers.names",
}


__getattr__, __dir__ = lazy_names(globals(), _HOMES)


__all__ = ["AffineCoupling", "Coupling", "AffineTransform", "RQSpline", "ActNorm", "Affine", "LULinear", "Logit", "Permute", "Squeeze", "Unsqueeze", "FactorOut",
           "MASKS", "IMAGE_MASKS", "SCALES", "PERMUTATIONS"]
