"""Conditioner networks: specs that own their parameter names, shapes and initialisation.

:class:`MLP` for vector events, :class:`ResNet` (convolutional) for image events ``(H, W, C)``.
"""

from jaxflow.nets.mlp import MLP
from jaxflow.nets.resnet import ResNet

__all__ = ["MLP", "ResNet"]
