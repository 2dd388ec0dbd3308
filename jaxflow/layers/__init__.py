"""Layer kinds: each a frozen spec implementing :class:`jaxflow.core.layer.Layer`.

Names load their module on first use (PEP 562), so :mod:`jaxflow.layers.names` (the option
names the command line offers) imports without jax.
"""

import importlib

_HOMES = {
    "AffineCoupling": "jaxflow.layers.coupling",
    "ActNorm": "jaxflow.layers.elementwise",
    "Affine": "jaxflow.layers.elementwise",
    "LULinear": "jaxflow.layers.lu",
    "Permute": "jaxflow.layers.permute",
    "MASKS": "jaxflow.layers.names",
    "SCALES": "jaxflow.layers.names",
    "PERMUTATIONS": "jaxflow.layers.names",
}


def __getattr__(name):
    if name not in _HOMES:
        raise AttributeError(f"module 'jaxflow.layers' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


__all__ = ["AffineCoupling", "ActNorm", "Affine", "LULinear", "Permute", "MASKS", "SCALES", "PERMUTATIONS"]
