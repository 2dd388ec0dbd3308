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
    # measured relative error 9.6e-11 .. 9.3e-10; in the context of a composed flow 2.9e-11 .. 3.4e-10
    "finite_difference": {"float64": (1e-7, 1e-9)},
    # Riemann sum of exp(log_prob) over an 801 x 801 grid on [-12, 12]^2; measured |1 - sum| 4.7e-7
    "integral": {"float64": (0.0, 1e-5)},
    # conditioner matmuls in bfloat16 (8-bit mantissa) against float32; measured log_prob 6.2e-3
    "bfloat16_vs_float32": {"float32": (0.0, 0.1)},
    # the rational-quadratic spline against nflows' (torch, float64), K = 1..16, unnormalised numbers
    # N(0, 1), points inside, in the tails and at every knot; measured values 5.2e-14, log-dets
    # 2.4e-11. At a knot the two codes may place a point in neighbouring bins (their knots differ by
    # an ulp: XLA's and torch's exp differ); the log-det is continuous there but its slope in the
    # bin coordinate is up to the ratio of bin slope to knot derivative, which multiplies that ulp
    # (numbers ~ 2 N(0, 1) give log-dets 1.6e-8 apart at knots, values still 3.7e-13)
    "spline_vs_nflows": {"float64": (0.0, 1e-11)},
    "spline_log_det_vs_nflows": {"float64": (0.0, 1e-9)},
    # ---- test_layers.py: every layer kind alone and composed (Chain, Repeat, random compositions),
    # perturbed off the identity (measure_errors.py also runs 10 draws of the hypothesis strategy).
    # Deep stacks of LULinear and couplings have Jacobians with condition numbers up to ~1e3
    # (measured 0.8e3 and 1.6e3 for two draws of repeat_of_chain), which the float32 truth itself
    # (autodiff Jacobian, slogdet) cannot resolve better than ~cond * eps; jaxflow's float32
    # log-det is within 6.5e-7 of its float64 value on those stacks.
    # log|det| of f or g against slogdet of the autodiff Jacobian; measured f64 6.2e-15, f32 8.1e-6
    # (2.7e-14 and 2.2e-5 with another draw of the parameters)
    "layer_stack_log_det_vs_jacobian": {"float64": (1e-10, 1e-10), "float32": (1e-4, 3e-4)},
    # g(f(x)) - x and f(g(z)) - z; measured f64 1.6e-13, f32 2.5e-5 (|z| up to 17)
    "layer_stack_round_trip": {"float64": (1e-10, 1e-10), "float32": (1e-4, 2e-4)},
    # ld_f(x) + ld_g(f(x)) = 0; measured f64 3.6e-15, f32 9.5e-7 (7.1e-15, 6.6e-6 with another draw)
    "layer_stack_log_det_cancel": {"float64": (0.0, 1e-11), "float32": (0.0, 1e-4)},
    # ActNorm's data init: |mean| and |variance - 1| of the init batch after it; measured f64 8.6e-16, f32 1.9e-7
    "standardised": {"float64": (0.0, 1e-12), "float32": (0.0, 1e-5)},
    # Riemann sum of exp(log_prob) of the conditional composed 2-d flow over a 601 x 601 grid on
    # [-12, 12]^2, per context; measured |1 - sum| 1.7e-5 (4.0e-5 with another draw; leaky_relu
    # kinks and sheared tails converge slower than the RealNVP grid above: 1.7e-4 at 401 x 401)
    "integral_composed": {"float64": (0.0, 1e-3)},
    # bfloat16 conditioners in a composed flow with every kind against float32; measured log_prob
    # relative and log-det absolute 1.4e-2 (|log_prob| up to ~140)
    "layer_stack_bfloat16_vs_float32": {"float32": (0.1, 0.1)},
    # ---- test_train.py: training runs computed two ways
    # 30 steps with steps_per_call 10 against 1 (final params, validation NLLs); measured 0.0 on
    # XLA:CPU (the scan's body is the same program), headroom for other backends' fusion choices
    "steps_per_call": {"float32": (1e-6, 1e-6)},
    # test_multi_device.py: 20 steps sharded over 4 devices (1 or 2 processes) and resumed across
    # device counts, against 1 device; the batch mean's summation order differs. Measured: params
    # 3.0e-8 relative (7.5e-8 absolute over 2 processes), validation NLLs 1.6e-7, mean_nll 3.2e-8
    "devices": {"float32": (1e-6, 1e-6)},
}


def assert_close(actual, desired, quantity: str, dtype=None) -> None:
    """``np.testing.assert_allclose`` with the table's tolerance for ``quantity`` and ``dtype``."""
    name = jnp.dtype(dtype or jnp.result_type(desired)).name
    rtol, atol = TOLERANCES[quantity][name]
    np.testing.assert_allclose(np.asarray(actual), np.asarray(desired), rtol=rtol, atol=atol, err_msg=quantity)
