"""Old import path, kept for existing code: see :mod:`jaxflow.interop.distrax_adapter`."""

from jaxflow.interop.distrax_adapter import FlowBijector, as_bijector, as_distribution  # noqa: F401
