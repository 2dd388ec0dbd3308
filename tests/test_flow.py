"""Core numerics of the flow against independent truths: autodiff Jacobians, closed forms,
finite differences, and the definition of each function."""

from __future__ import annotations

import itertools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflow
from jaxflow.layers.scales import scale_map
from core_helpers import jacobian_log_det, make
from core_tolerances import assert_close

DTYPES = [jnp.float64, jnp.float32]
# (dim, num_flows, scale): even and odd dims, several depths, every scale option
STACKS = [(2, 1, "exp"), (2, 6, "tanh"), (3, 4, "sigmoid"), (5, 3, "exp"), (8, 2, "tanh"), (7, 2, "sigmoid")]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("dim,num_flows,scale", STACKS)
def test_log_dets_and_inverses_on_whole_stacks(dim, num_flows, scale, dtype):
    """log|det| of f and of g equal slogdet of the autodiff Jacobians, they cancel, and g = f^-1."""
    flow, params, x = make(dim, num_flows, dtype, scale=scale)
    z, ld_f = jaxflow.f(flow, params, x)
    # non-trivial parameters: the stack really scales, differently per row
    assert float(jnp.std(ld_f)) > 1e-3

    assert_close(ld_f, jacobian_log_det(lambda v: jaxflow.f(flow, params, v)[0], x), "log_det_vs_jacobian")
    assert_close(jaxflow.log_det(flow, params, x), ld_f, "same_math")
    x_back, ld_g = jaxflow.g_and_log_det(flow, params, z)
    assert_close(ld_g, jacobian_log_det(lambda v: jaxflow.g(flow, params, v), z), "log_det_vs_jacobian")
    assert_close(ld_f + ld_g, jnp.zeros_like(ld_f), "log_det_cancel")

    assert_close(x_back, x, "round_trip")
    latent = jax.random.normal(jax.random.key(9), x.shape, dtype)
    assert_close(jaxflow.f(flow, params, jaxflow.g(flow, params, latent))[0], latent, "round_trip")


@pytest.mark.parametrize("dim, hidden_dim", [(5, 16), (2, 16), (4, 1)])
def test_single_layer_matches_the_article_equation(dim, hidden_dim):
    """z = concat(x1, x2 * exp(s) + t), log|det| = sum(s), with (t, s) = theta(x1) by hand; values
    and parameter gradients. dim 2 and hidden_dim 1 have one-coordinate contractions, which the
    conditioner pads (:func:`jaxflow.nets.mlp._dot_general_without_unit_contraction`)."""
    flow, params, x = make(dim, 1, jnp.float64, hidden_dim=hidden_dim)
    d = flow.split_dim
    x2, x1 = x[:, :d], x[:, d:]

    def by_hand(params):
        layer = jax.tree.map(lambda leaf: leaf[0], params["conditioner"])
        h = x1
        for name in ["input", "hidden_0", "hidden_1"]:
            h = jax.nn.leaky_relu(h @ layer[name]["kernel"] + layer[name]["bias"], 0.01)
        out = h @ layer["dims"]["kernel"] + layer["dims"]["bias"]
        t, s = out[:, :d], out[:, d:]
        return jnp.concatenate([x1, x2 * jnp.exp(s) + t], axis=-1), s.sum(-1)

    (z, ld), (z_hand, ld_hand) = jaxflow.f(flow, params, x), by_hand(params)
    assert_close(z, z_hand, "same_math")
    assert_close(ld, ld_hand, "same_math")
    summary = lambda out: jnp.sum(jnp.sin(out[0])) + jnp.sum(out[1])
    grads = jax.grad(lambda p: summary(jaxflow.f(flow, p, x)))(params)
    grads_hand = jax.grad(lambda p: summary(by_hand(p)))(params)
    jax.tree.map(lambda a, b: assert_close(a, b, "same_math"), grads, grads_hand)


@pytest.mark.parametrize("scale", jaxflow.SCALES)
def test_scale_maps_closed_forms(scale):
    flow, params, x = make(4, 1, jnp.float64, scale=scale, clamp=2.0)
    s = jnp.linspace(-40.0, 40.0, 101, dtype=jnp.float64)
    ls = scale_map(scale, flow.clamp).log_scale(s)
    expected = {
        "exp": s,
        "tanh": 2.0 * jnp.tanh(s / 2.0),
        "sigmoid": jnp.log(1.0 / (1.0 + jnp.exp(-(s + 2.0)))),
    }[scale]
    assert_close(ls, expected, "same_math")
    if scale == "tanh":
        assert float(jnp.max(jnp.abs(ls))) <= 2.0


def test_log_prob_integrates_to_one_on_a_grid():
    flow, params, _ = make(2, 4, jnp.float64, hidden_dim=8)
    edge = jnp.linspace(-12.0, 12.0, 801, dtype=jnp.float64)
    cell = float(edge[1] - edge[0]) ** 2
    grid = jnp.stack(jnp.meshgrid(edge, edge), axis=-1)  # (801, 801, 2): batch axes of any rank
    density = jnp.exp(jaxflow.log_prob(flow, params, grid))
    assert_close(density.sum() * cell, jnp.asarray(1.0, jnp.float64), "integral")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_log_prob_is_latent_log_prob_plus_log_det(dtype):
    flow, params, x = make(3, 3, dtype)
    latent = distrax.MultivariateNormalDiag(jnp.arange(3, dtype=dtype), jnp.array([0.5, 1.0, 2.0], dtype))
    z, ld = jaxflow.f(flow, params, x)
    by_hand = jnp.sum(-0.5 * ((z - latent.loc) / latent.scale_diag) ** 2 - jnp.log(latent.scale_diag), -1)
    by_hand = by_hand - 1.5 * jnp.log(2 * jnp.pi).astype(dtype) + ld
    assert_close(jaxflow.log_prob(flow, params, x, latent=latent), by_hand, "same_math")
    standard = jnp.sum(-0.5 * z**2, -1) - 1.5 * jnp.log(2 * jnp.pi).astype(dtype) + ld
    assert_close(jaxflow.log_prob(flow, params, x), standard, "same_math")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_sample_is_g_of_latent_draws(dtype):
    flow, params, _ = make(5, 3, dtype)
    key = jax.random.key(3)
    latent = jaxflow.standard_normal(5, dtype)
    z = latent.sample(seed=key, sample_shape=(11,))
    xs = jaxflow.sample(flow, params, key, 11)
    assert xs.shape == (11, 5) and xs.dtype == dtype
    assert_close(xs, jaxflow.g(flow, params, z), "same_math")
    assert jaxflow.sample(flow, params, key, (2, 3)).shape == (2, 3, 5)
    x2, lp = jaxflow.sample_and_log_prob(flow, params, key, 11)
    assert_close(x2, xs, "same_math")
    assert_close(lp, jaxflow.log_prob(flow, params, xs), "round_trip")


def test_g_steps_are_the_successive_inverse_layers():
    flow, params, x = make(5, 4, jnp.float64)
    z, _ = jaxflow.f(flow, params, x)
    steps = jaxflow.g_steps(flow, params, z)
    assert steps.shape == (5, 7, 5)
    assert_close(steps[0], z, "same_math")
    assert_close(steps[-1], jaxflow.g(flow, params, z), "same_math")
    for k in range(1, 5):  # steps[k] = g of the top k layers
        top = jaxflow.RealNVP(dim=5, num_flows=k, hidden_dim=16)
        top_params = jax.tree.map(lambda leaf: leaf[-k:], params)
        assert_close(steps[k], jaxflow.g(top, top_params, z), "same_math")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_jit_equals_eager(dtype):
    flow, params, x = make(5, 3, dtype)
    jitted = jax.jit(jaxflow.log_prob, static_argnums=0)(flow, params, x)
    with jax.disable_jit():
        eager = jaxflow.log_prob(flow, params, x)
        eager_sample = jaxflow.sample(flow, params, jax.random.key(1), 4)
    assert_close(jitted, eager, "same_math")
    assert_close(jax.jit(jaxflow.sample, static_argnums=(0, 3))(flow, params, jax.random.key(1), 4), eager_sample, "same_math")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_vmap_of_single_events_equals_batched_call(dtype):
    flow, params, x = make(3, 3, dtype)
    for fn in (jaxflow.log_prob, jaxflow.log_det, jaxflow.g):
        assert_close(jax.vmap(lambda v: fn(flow, params, v))(x), fn(flow, params, x), "same_math")
    z_single, ld_single = jax.vmap(lambda v: jaxflow.f(flow, params, v))(x)
    z, ld = jaxflow.f(flow, params, x)
    assert_close(z_single, z, "same_math")
    assert_close(ld_single, ld, "same_math")
    # vmap over parameters: an ensemble of flows
    ensemble = jax.vmap(lambda k: jaxflow.init(flow, k, dtype))(jax.random.split(jax.random.key(0), 2))
    per_member = jax.vmap(lambda p: jaxflow.log_prob(flow, p, x))(ensemble)
    assert_close(per_member[1], jaxflow.log_prob(flow, jax.tree.map(lambda a: a[1], ensemble), x), "same_math")


def test_any_number_of_batch_axes():
    flow, params, _ = make(3, 2, jnp.float64)
    x = jax.random.normal(jax.random.key(0), (2, 4, 5, 3), jnp.float64)
    lp = jaxflow.log_prob(flow, params, x)
    assert lp.shape == (2, 4, 5)
    assert_close(lp.reshape(-1), jaxflow.log_prob(flow, params, x.reshape(-1, 3)), "same_math")
    single = jaxflow.f(flow, params, x[0, 0, 0])
    assert single[0].shape == (3,) and single[1].shape == ()


def test_scan_equals_unrolled():
    flow, params, x = make(5, 4, jnp.float64)
    unrolled = jaxflow.RealNVP(**{**flow.__dict__, "scan_unroll": True})
    assert_close(jaxflow.log_prob(unrolled, params, x), jaxflow.log_prob(flow, params, x), "same_math")
    assert_close(jaxflow.g(unrolled, params, x), jaxflow.g(flow, params, x), "same_math")


def _random_like(tree, seed: int):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return treedef.unflatten([jax.random.normal(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves)])


def assert_gradient_matches_finite_differences(loss, point, seed: int = 5, step: float = 1e-6):
    """Autodiff directional derivative of scalar ``loss`` at pytree ``point`` against central differences."""
    direction = _random_like(point, seed)
    along = lambda eps: loss(jax.tree.map(lambda p, d: p + eps * d, point, direction))
    numeric = (along(step) - along(-step)) / (2 * step)
    grads = jax.grad(loss)(point)
    autodiff = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
    assert_close(autodiff, numeric, "finite_difference")
    return grads


def test_gradient_in_inputs_matches_finite_differences():
    flow, params, x = make(3, 3, jnp.float64)
    assert_gradient_matches_finite_differences(lambda v: jaxflow.log_prob(flow, params, v).sum(), x)


@pytest.mark.parametrize("scale", jaxflow.SCALES)
def test_every_parameter_receives_a_gradient_matching_finite_differences(scale):
    flow, params, x = make(5, 3, jnp.float64, scale=scale)
    grads = assert_gradient_matches_finite_differences(lambda p: -jaxflow.log_prob(flow, p, x).mean(), params)
    for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
        assert bool(jnp.all(leaf != 0)), f"zero gradient entries in {jax.tree_util.keystr(path)}"


def test_sampling_is_differentiable_reparameterisation():
    """The article's g runs under no_grad; ours must carry gradients to the parameters."""
    flow, params, _ = make(3, 3, jnp.float64)
    key = jax.random.key(2)
    grads = assert_gradient_matches_finite_differences(lambda p: jnp.sum(jaxflow.sample(flow, p, key, 5) ** 2), params)
    assert all(bool(jnp.any(leaf != 0)) for leaf in jax.tree.leaves(grads))
    _, lp_grads = jax.value_and_grad(lambda p: jaxflow.sample_and_log_prob(flow, p, key, 5)[1].mean())(params)
    assert all(bool(jnp.any(leaf != 0)) for leaf in jax.tree.leaves(lp_grads))
