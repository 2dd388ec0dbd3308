"""Old import path, kept for existing code: see :mod:`jaxflow.presets`."""

from jaxflow.presets import RealNVP  # noqa: F401
