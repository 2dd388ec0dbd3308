"""Every tolerance of the core tests, in one table, chosen from measured error.

``python tests/measure_errors.py`` prints the measured maxima (absolute) these were chosen from;
the comments quote them. Headroom is about 1000x in float64 and 10-100x in float32. Values are
``(rtol, atol)`` per dtype name.
"""

import jax.numpy as jnp
import numpy as np

TOLERANCES = {
    # log|det| of f or g against slogdet of the autodiff Jacobian; measured f64 5.6e-16, f32 3.3e-7
    "log_det_vs_jacobian": {"float64": (1e-12, 1e-12), "float32": (1e-5, 3e-5)},
    # g(f(x)) - x and f(g(z)) - z; measured f64 8.9e-16, f32 4.8e-7
    "round_trip": {"float64": (1e-12, 1e-12), "float32": (1e-5, 1e-5)},
    # ld_f(x) + ld_g(f(x)) = 0; measured f64 1.1e-16, f32 6.0e-8
    "log_det_cancel": {"float64": (0.0, 1e-12), "float32": (0.0, 1e-5)},
    # one computation in two equivalent programs (jit vs eager, vmap vs batch, scan vs unrolled,
    # distrax adapter vs jaxflow); measured jit vs eager log_prob f64 7.1e-15, f32 3.8e-6
    "same_math": {"float64": (1e-12, 1e-12), "float32": (1e-5, 1e-5)},
    # autodiff directional derivative against central finite differences (step 1e-6, float64);
    # measured relative error 9.6e-11 .. 9.3e-10
    "finite_difference": {"float64": (1e-7, 1e-9)},
    # Riemann sum of exp(log_prob) over an 801 x 801 grid on [-12, 12]^2; measured |1 - sum| 4.7e-7
    "integral": {"float64": (0.0, 1e-5)},
    # conditioner matmuls in bfloat16 (8-bit mantissa) against float32; measured log_prob 6.2e-3
    "bfloat16_vs_float32": {"float32": (0.0, 0.1)},
}


def assert_close(actual, desired, quantity: str, dtype=None) -> None:
    """``np.testing.assert_allclose`` with the table's tolerance for ``quantity`` and ``dtype``."""
    name = jnp.dtype(dtype or jnp.result_type(desired)).name
    rtol, atol = TOLERANCES[quantity][name]
    np.testing.assert_allclose(np.asarray(actual), np.asarray(desired), rtol=rtol, atol=atol, err_msg=quantity)
