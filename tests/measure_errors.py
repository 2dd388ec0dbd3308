"""Print the measured errors that the core tolerance table (core_tolerances.py) is chosen from.

Run: ``python tests/measure_errors.py`` (about two minutes). Same configurations as test_flow.py
and test_layers.py.
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




def max_layer_errors(dtype) -> dict:
    """The layer tests' configurations (test_layers.py): every kind alone and the fixed compositions."""
    from test_layers import FLOWS, _data, setup  # noqa: E402
    from core_helpers import event_jacobian_log_det

    worst = {"log_det_vs_jacobian": 0.0, "round_trip": 0.0, "log_det_cancel": 0.0}
    for flow, params, x, c in [setup(name, dtype) for name in FLOWS] + _random_compositions(dtype):
        rows = (c,) if c is not None else ()
        fwd = lambda v, *cc: jaxflow.f(flow, params, v, context=cc[0] if cc else None)[0]
        inv = lambda v, *cc: jaxflow.g(flow, params, v, context=cc[0] if cc else None)
        z, ld_f = jaxflow.f(flow, params, x, context=c)
        x_back, ld_g = jaxflow.g_and_log_det(flow, params, z, context=c)
        errors = {
            "log_det_vs_jacobian": max(
                jnp.max(jnp.abs(ld_f - event_jacobian_log_det(fwd, x, flow.event_shape, *rows))),
                jnp.max(jnp.abs(ld_g - event_jacobian_log_det(inv, z, flow.event_shape, *rows)))),
            "round_trip": jnp.max(jnp.abs(x_back - x)),
            "log_det_cancel": jnp.max(jnp.abs(ld_f + ld_g)),
        }
        worst = {k: max(worst[k], float(errors[k])) for k in worst}
    worst = {f"layer_stack_{k}": v for k, v in worst.items()}
    # ActNorm data init: |mean| and |var - 1| of the standardised init batch (ActNorm after a Permute)
    data = _data(dtype)
    flow = jaxflow.Flow(event_shape=(4,), layers=jaxflow.Chain(jaxflow.Permute("random", seed=5), jaxflow.ActNorm()))
    out = jaxflow.f(flow, jaxflow.init(flow, jax.random.key(0), dtype, data=data), data)[0]
    worst["standardised"] = float(max(jnp.max(jnp.abs(out.mean(0))), jnp.max(jnp.abs(out.var(0) - 1))))
    if dtype == jnp.float64:
        worst.update(_float64_layer_errors())
    else:
        worst["layer_stack_bfloat16_vs_float32"] = _bfloat16_error()
    return worst


def _random_compositions(dtype, count: int = 10) -> list:
    """``count`` flows from test_layers' hypothesis strategy (its own derandomized draw) with their data."""
    from hypothesis import given, settings
    from test_layers import compositions, draw

    flows = []

    @settings(max_examples=count, deadline=None, derandomize=True, database=None)
    @given(flow=compositions())
    def collect(flow):
        flows.append(flow)

    collect()
    return [(flow, *draw(flow, dtype, seed=4)) for flow in flows]


def _float64_layer_errors() -> dict:
    from test_layers import CONDITIONAL_2D, setup  # noqa: E402
    from core_helpers import perturb

    params = perturb(jaxflow.init(CONDITIONAL_2D, jax.random.key(0), jnp.float64), 1)
    edge = jnp.linspace(-12.0, 12.0, 601, dtype=jnp.float64)
    grid = jnp.stack(jnp.meshgrid(edge, edge), axis=-1)
    integral = max(abs(1 - float(jnp.exp(jaxflow.log_prob(CONDITIONAL_2D, params, grid, context=jnp.array([v])))
                                 .sum() * float(edge[1] - edge[0]) ** 2)) for v in (-1.5, 2.0))
    flow, params, x, context = setup("chain_of_every_kind", jnp.float64)
    loss = lambda c: jnp.sum(jaxflow.log_prob(flow, params, x, context=c))
    direction = jax.random.normal(jax.random.key(5), context.shape, jnp.float64)
    numeric = (loss(context + 1e-6 * direction) - loss(context - 1e-6 * direction)) / 2e-6
    autodiff = jnp.vdot(jax.grad(loss)(context), direction)
    return {"integral_composed": integral, "finite_difference_context": float(jnp.abs(autodiff - numeric) / jnp.abs(numeric))}


def _bfloat16_error() -> float:
    from test_layers import every_kind, setup  # noqa: E402

    full, params, x, context = setup("chain_of_every_kind", jnp.float32)
    low = jaxflow.Flow(event_shape=(5,), context_dim=2,
                       layers=every_kind(jaxflow.MLP(hidden_dim=8, num_hidden=1, compute_dtype="bfloat16")))
    lp_low, lp = (jaxflow.log_prob(spec, params, x, context=context) for spec in (low, full))
    ld_low, ld = (jaxflow.log_det(spec, params, x, context=context) for spec in (low, full))
    return float(max(jnp.max(jnp.abs(lp_low - lp) / jnp.abs(lp)), jnp.max(jnp.abs(ld_low - ld))))


if __name__ == "__main__":
    for dtype in (jnp.float64, jnp.float32):
        print(dtype.__name__, "RealNVP", {k: f"{v:.1e}" for k, v in max_errors(dtype).items()})
        print(dtype.__name__, "layers", {k: f"{v:.1e}" for k, v in max_layer_errors(dtype).items()})
