"""Old import path, kept for existing code: see :mod:`jaxflow.core.init`."""

from jaxflow.core.init import init  # noqa: F401
