"""Old import path, kept for existing code: see :mod:`jaxflow.nets.mlp`."""

from jaxflow.nets.mlp import Conditioner  # noqa: F401
