"""Conditioner networks: specs that own their parameter names, shapes and initialisation."""

from jaxflow.nets.mlp import MLP

__all__ = ["MLP"]
