"""Layer kinds: each a frozen spec implementing :class:`jaxflow.core.layer.Layer`.

Names load their module on first use (PEP 562), so :mod:`jaxflow.layers.names` (the option
names the command line offers) imports without jax.
"""

import importlib

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
    "MaskedAutoregressive": "jaxflow.layers.autoregressive",
    "Invert": "jaxflow.layers.invert",
    "IMAGE_MASKS": "jaxflow.layers.names",
    "MASKS": "jaxflow.layers.names",
    "SCALES": "jaxflow.layers.names",
    "PERMUTATIONS": "jaxflow.layers.names",
}


__getattr__, __dir__ = lazy_names(globals(), _HOMES)


def import_all() -> None:
    """Import every layer module, so every layer kind is registered (:data:`jaxflow.core.layer.LAYERS`).

    Kinds register when their module is first imported; a fresh process reading a spec (a
    checkpoint) needs them all, whichever names it happened to touch.
    """
    for module in sorted(set(_HOMES.values())):
        importlib.import_module(module)


__all__ = ["AffineCoupling", "Coupling", "AffineTransform", "RQSpline", "ActNorm", "Affine", "LULinear", "Logit",
           "Permute", "Squeeze", "Unsqueeze", "FactorOut", "MaskedAutoregressive", "Invert",
           "MASKS", "IMAGE_MASKS", "SCALES", "PERMUTATIONS"]
