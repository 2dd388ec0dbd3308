"""Conditioner networks: specs that own their parameter names, shapes and initialisation.

:class:`MLP` for vector events, :class:`MADE` (masked) for autoregressive layers, :class:`ResNet`
(convolutional) for image events ``(H, W, C)``, :class:`FlaxConditioner` for your own Flax module; the protocol they share is in
:mod:`jaxflow.nets.base`.
"""

from jaxflow.nets.base import ConditionerNet, FlaxConditioner
from jaxflow.nets.made import MADE
from jaxflow.nets.mlp import MLP
from jaxflow.nets.resnet import ResNet

__all__ = ["MLP", "MADE", "ResNet", "FlaxConditioner", "ConditionerNet"]
