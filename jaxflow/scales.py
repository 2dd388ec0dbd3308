"""Old import path, kept for existing code: see :mod:`jaxflow.layers.scales`."""

from jaxflow.layers.scales import SCALES  # noqa: F401
