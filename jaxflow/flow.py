"""Old import path, kept for existing code: see :mod:`jaxflow.core.flow`."""

from jaxflow.core.flow import f, g, g_and_log_det, g_steps, log_det, log_prob, sample, sample_and_log_prob  # noqa: F401
