"""Every tolerance of the parity suite, in one table, and the one comparison that uses them.

The error of a jaxflow result ``a`` against the torchref result ``b`` is the normwise relative
error ``max|a - b| / max|b|`` (0 when both are all zero), per array, and per parameter leaf
for gradients and trained parameters. Each tolerance is the measured maximum over the suite
(``python -m pytest parity_tests -q`` prints it in its summary) rounded up with headroom of
about 10x: tight enough that a wrong layout, a swapped ``t``/``s`` or a changed scale map is
caught (``test_conversion.py`` shows it), loose enough for the last-bit differences between
XLA's and torch's matmul and transcendental kernels, amplified through up to 16 layers.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TOLERANCES", "MEASURED", "rel_err", "assert_close"]

TOLERANCES: dict[str, dict[str, float]] = {
    # measured maxima over the thorough profile (120 generated configurations) in the comments
    "float64": {
        "f": 1e-12,  # 6e-16
        "log_det": 1e-12,  # 3e-15
        "log_prob": 1e-12,  # 1e-14
        "g": 1e-12,  # 3e-15
        "g_log_det": 1e-12,  # 2e-15
        "g_steps": 1e-12,  # 3e-15
        "sample": 1e-12,  # 4e-16
        "grad_params": 1e-11,  # 1.4e-13
        "grad_x": 1e-11,  # 2e-14
        "train_sgd": 1e-12,  # 2e-14
        "train_adam": 1e-12,  # 3e-15
        # torchref against the mathematics (test_torchref.py, test_article_defects.py)
        "inverse": 1e-12,  # 3e-16
        "log_det_vs_jacobian": 1e-12,  # 1.1e-15
        "log_prob_formula": 1e-12,  # 1.5e-16
    },
    "float32": {
        "f": 5e-5,  # 6e-6
        "log_det": 5e-5,  # 1.1e-6
        "log_prob": 5e-5,  # 1e-6
        "g": 5e-5,  # 1.7e-6
        "g_log_det": 5e-5,  # 2.4e-6
        "g_steps": 5e-5,  # 1.5e-6
        "sample": 5e-5,  # 6e-7
        "grad_params": 5e-5,  # 1.4e-6
        "grad_x": 5e-5,  # 3.6e-6
        "train_sgd": 1e-4,  # 1e-5
        "train_adam": 1e-4,  # 1.3e-6
        "inverse": 1e-6,  # 6e-8
    },
}
"""``TOLERANCES[dtype][quantity]``: the largest accepted :func:`rel_err` of jaxflow vs torchref."""

MEASURED: dict[tuple[str, str], float] = {}
"""``(dtype, quantity) -> largest rel_err seen in this run``; printed in the pytest summary."""


def rel_err(actual, expected) -> float:
    """``max|actual - expected| / max|expected|`` over all elements (0 if equal, inf if only ``expected`` is 0)."""
    a, b = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"shape mismatch: {a.shape} vs expected {b.shape}")
    diff, scale = np.max(np.abs(a - b), initial=0.0), np.max(np.abs(b), initial=0.0)
    if diff == 0:
        return 0.0
    return diff / scale if scale > 0 else np.inf


def assert_close(actual, expected, quantity: str, dtype) -> None:
    """Assert ``rel_err(actual, expected) <= TOLERANCES[dtype][quantity]`` and record the error."""
    name = np.dtype(dtype).name
    err, tol = rel_err(actual, expected), TOLERANCES[name][quantity]
    MEASURED[name, quantity] = max(err, MEASURED.get((name, quantity), 0.0))
    assert err <= tol, f"{quantity} ({name}): relative error {err:.3g} > tolerance {tol:.0e}"
