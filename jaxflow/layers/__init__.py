"""Layer kinds: each a frozen spec implementing :class:`jaxflow.core.layer.Layer`."""

from jaxflow.layers.coupling import AffineCoupling
from jaxflow.layers.elementwise import ActNorm, Affine
from jaxflow.layers.lu import LULinear
from jaxflow.layers.masks import MASKS
from jaxflow.layers.permute import Permute
from jaxflow.layers.scales import SCALES

__all__ = ["AffineCoupling", "ActNorm", "Affine", "LULinear", "Permute", "MASKS", "SCALES"]
