"""Print the measured errors that the core tolerance table (core_tolerances.py) is chosen from.

Run: ``python tests/measure_errors.py`` (about a minute). Same configurations as test_flow.py.
"""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402

import jaxflow  # noqa: E402
from core_helpers import jacobian_log_det, make  # noqa: E402
from test_flow import STACKS  # noqa: E402


def max_errors(dtype) -> dict:
    worst = {"log_det_vs_jacobian": 0.0, "round_trip": 0.0, "log_det_cancel": 0.0, "jit_vs_eager": 0.0}
    for dim, num_flows, scale in STACKS:
        flow, params, x = make(dim, num_flows, dtype, scale=scale)
        z, ld_f = jaxflow.f(flow, params, x)
        x_back, ld_g = jaxflow.g_and_log_det(flow, params, z)
        errors = {
            "log_det_vs_jacobian": max(
                jnp.max(jnp.abs(ld_f - jacobian_log_det(lambda v: jaxflow.f(flow, params, v)[0], x))),
                jnp.max(jnp.abs(ld_g - jacobian_log_det(lambda v: jaxflow.g(flow, params, v), z)))),
            "round_trip": jnp.max(jnp.abs(x_back - x)),
            "log_det_cancel": jnp.max(jnp.abs(ld_f + ld_g)),
        }
        errors["jit_vs_eager"] = jnp.max(jnp.abs(jaxflow.log_prob(flow, params, x) - _eager_log_prob(flow, params, x)))
        worst = {k: max(worst[k], float(errors[k])) for k in worst}
    return worst


def _eager_log_prob(flow, params, x):
    with jax.disable_jit():
        return jaxflow.log_prob(flow, params, x)


if __name__ == "__main__":
    for dtype in (jnp.float64, jnp.float32):
        print(dtype.__name__, {k: f"{v:.1e}" for k, v in max_errors(dtype).items()})
