"""Every tolerance of the parity suite, in one table, and the one comparison that uses them.

The error of a jaxflow result ``a`` against the torchref result ``b`` (or of torchref against the
mathematics, ``test_torchref.py``) is the normwise relative
error ``max|a - b| / max|b|`` (0 when both are all zero), per array, and per parameter leaf
for gradients and trained parameters. Tolerances sit above the measured maxima (in the comments;
``python -m pytest parity_tests -q`` prints each run's maxima in its summary): float64 at
``1e-12`` (``1e-11`` for parameter gradients, which reached 1.4e-13 in a random, non-derandomised
thorough run), at least 25x above every measured error and 100x inside the 1e-10 required;
float32 at ``5e-5`` (``1e-4`` after 100 training steps), at least 10x above. Tight enough that a
wrong layout, a swapped ``t``/``s`` or reversed layers are caught by orders of magnitude
(``test_conversion.py``), loose enough for the last-bit differences between XLA's and torch's
matmul and transcendental kernels, amplified through up to 16 layers.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TOLERANCES", "MEASURED", "rel_err", "assert_close"]

TOLERANCES: dict[str, dict[str, float]] = {
    # comments: measured maxima, HYPOTHESIS_PROFILE=thorough python -m pytest parity_tests (CPU,
    # with the root conftest's settings); the README's table is the same run
    "float64": {
        "f": 1e-12,  # 1.2e-15
        "log_det": 1e-12,  # 3.4e-15
        "log_prob": 1e-12,  # 1.4e-15
        "g": 1e-12,  # 1.3e-14
        "g_log_det": 1e-12,  # 8.2e-15
        "g_steps": 1e-12,  # 7.1e-15
        "sample": 1e-12,  # 3.7e-16
        "grad_params": 1e-11,  # 3.2e-15
        "grad_x": 1e-11,  # 2.9e-15
        "grad_context": 1e-11,  # 6.4e-16 (test_composed.py, default profile)
        "train_sgd": 1e-12,  # 1.8e-14
        "train_adam": 1e-12,  # 2.3e-15
        # torchref against the mathematics (test_torchref.py, test_article_defects.py)
        "inverse": 1e-12,  # 3.1e-16
        "log_det_vs_jacobian": 1e-12,  # 1.1e-15
        "log_prob_formula": 1e-12,  # 1.5e-16
        # torchref's spline against nflows' (test_spline_twin.py): the same operations
        "spline_vs_nflows": 1e-15,  # 0 (bit for bit); 2.2e-17 for the identity at zero numbers
    },
    "float32": {
        "f": 5e-5,  # 1.8e-06
        "log_det": 5e-5,  # 8.2e-07
        "log_prob": 5e-5,  # 3.3e-06
        "g": 5e-5,  # 5.6e-07
        "g_log_det": 5e-5,  # 1.3e-06
        "g_steps": 5e-5,  # 5.6e-07
        "sample": 5e-5,  # 1.9e-07
        "grad_params": 5e-5,  # 1.3e-06
        "grad_x": 5e-5,  # 1.6e-06
        "grad_context": 5e-5,  # 3.3e-07 (test_composed.py, default profile)
        "train_sgd": 1e-4,  # 6.3e-06
        "train_adam": 1e-4,  # 9.6e-07
        "inverse": 1e-6,  # 5.9e-08
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
