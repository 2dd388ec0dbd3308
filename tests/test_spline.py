"""The rational-quadratic spline against the NSF authors' reference code (nflows, torch float64),
its log-dets against autodiff derivatives, finite gradients at the knots and at ``±B``; spline
couplings and the neural spline flow are in :mod:`test_layers`' table of flows.

nflows is a test dependency installed without its dependencies (``pip install --no-deps
nflows``: its own pin would pull another torch); the tests that need it say so when it is absent.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflow
from core_tolerances import assert_close
from jaxflow.layers.spline import _knots, identity_derivative, unconstrained_rational_quadratic_spline as spline

BOUND = 3.0

# one compile per shape (eager, every primitive of the spline would compile on its own)
jit_spline = jax.jit(spline, static_argnames=("inverse", "tail_bound"))
jit_knots = jax.jit(_knots, static_argnums=(1, 2, 3))


def _draw(num_bins: int, rows: int, seed: int, scale: float = 1.0):
    """Unnormalised widths, heights, derivatives of ``rows`` splines (``scale`` N(0, 1)) and points: uniform over ``[-1.5 B, 1.5 B]`` (a third in the tails),
    every knot of the widths and of the heights, and ``±B``; float64 numpy."""
    rng = np.random.default_rng(seed)
    w, h = scale * rng.standard_normal((2, rows, num_bins))
    d = scale * rng.standard_normal((rows, num_bins - 1))
    x_knots, _ = jit_knots(jnp.asarray(w), -BOUND, BOUND, 1e-3)
    y_knots, _ = jit_knots(jnp.asarray(h), -BOUND, BOUND, 1e-3)
    points = np.concatenate([rng.uniform(-1.5 * BOUND, 1.5 * BOUND, (rows, 8)), np.asarray(x_knots),
                             np.asarray(y_knots)], axis=1)  # (rows, P); ±B are knots 0 and K
    columns = points.shape[1]
    tile = lambda a: np.repeat(a[:, None, :], columns, axis=1)
    return points, tile(w), tile(h), tile(d)


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_spline_equals_nflows_in_float64_inside_in_the_tails_and_at_the_knots(inverse):
    nflows = pytest.importorskip("nflows.transforms.splines.rational_quadratic",
                                 reason="nflows is not installed (pip install --no-deps nflows)")
    torch = pytest.importorskip("torch")
    for num_bins in range(1, 17):
        x, w, h, d = _draw(num_bins, rows=6, seed=num_bins)
        want_y, want_ld = nflows.unconstrained_rational_quadratic_spline(
            *(torch.tensor(a) for a in (x, w, h, d)), inverse=inverse, tail_bound=BOUND)
        y, ld = jit_spline(*(jnp.asarray(a) for a in (x, w, h, d)), inverse=inverse, tail_bound=BOUND)
        assert y.dtype == ld.dtype == jnp.float64
        assert_close(y, want_y.numpy(), "spline_vs_nflows")
        assert_close(ld, want_ld.numpy(), "spline_log_det_vs_nflows")
        tails = np.abs(x) > BOUND
        assert tails.any() and np.array_equal(np.asarray(y)[tails], x[tails]) and not np.asarray(ld)[tails].any()


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
@pytest.mark.parametrize("num_bins", [1, 3, 8])
def test_log_det_is_the_log_of_the_autodiff_derivative_and_the_inverse_inverts(num_bins, inverse):
    x, w, h, d = (jnp.asarray(a) for a in _draw(num_bins, rows=4, seed=10 + num_bins))
    scalar = lambda x, w, h, d: spline(x, w, h, d, inverse=inverse, tail_bound=BOUND)[0]
    derivative = jax.jit(jax.vmap(jax.vmap(jax.grad(scalar))))(x, w, h, d)
    y, ld = jit_spline(x, w, h, d, inverse=inverse, tail_bound=BOUND)
    assert_close(ld, jnp.log(jnp.abs(derivative)), "log_det_vs_jacobian")
    x_back, ld_back = jit_spline(y, w, h, d, inverse=not inverse, tail_bound=BOUND)
    assert_close(x_back, x, "layer_stack_round_trip")
    assert_close(ld + ld_back, jnp.zeros_like(ld), "layer_stack_log_det_cancel")


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_gradients_are_finite_at_the_knots_at_the_bounds_and_in_the_tails(inverse):
    """Regression for the unused branch of a ``where``: the spline evaluated at a point outside
    ``[-B, B]`` (or the boundary's 0/0) would give NaN gradients through the selected branch."""
    x, w, h, d = (jnp.asarray(a) for a in _draw(5, rows=3, seed=3))
    x = jnp.concatenate([x, jnp.full(x.shape[:1] + (2,), 1e6) * jnp.array([-1.0, 1.0])], axis=1)
    pad = lambda a: jnp.concatenate([a, a[:, :2]], axis=1)
    w, h, d = pad(w), pad(h), pad(d)
    loss = lambda x, w, h, d: jnp.sum(sum(spline(x, w, h, d, inverse=inverse, tail_bound=BOUND)))
    for grad in jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(x, w, h, d):
        assert bool(jnp.all(jnp.isfinite(grad)))


def test_zero_numbers_are_the_identity_and_the_boundary_slope_is_one():
    x = jnp.linspace(-5.0, 5.0, 101, dtype=jnp.float64)
    transform = jaxflow.RQSpline(bins=6, bound=2.0)
    y, ld = jax.jit(transform.forward)(x, jnp.zeros(x.shape + (transform.num_params,), jnp.float64))
    assert_close(y, x, "same_math")
    assert_close(ld, jnp.zeros_like(x), "same_math")
    assert 1e-3 + float(jax.nn.softplus(identity_derivative())) == pytest.approx(1.0, abs=1e-15)


def test_rq_spline_reads_widths_heights_then_derivatives():
    """``RQSpline``'s per-coordinate order against the spline called with the pieces by hand."""
    rng = np.random.default_rng(0)
    transform = jaxflow.RQSpline(bins=4, bound=BOUND)
    theta = jnp.asarray(rng.standard_normal((5, 3, 11)))
    x = jnp.asarray(rng.uniform(-4, 4, (5, 3)))
    want = jit_spline(x, theta[..., :4], theta[..., 4:8], theta[..., 8:] + identity_derivative(), tail_bound=BOUND)
    for got, expected in zip(jax.jit(transform.forward)(x, theta), want):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def test_conditional_2d_neural_spline_flow_integrates_to_one_for_each_context():
    """A Riemann sum of exp(log_prob) over a grid, per context, with perturbed parameters (the splines
    bend, the LU shears); the context changes the density. Perturbed by 0.1 (measured |1 - sum|
    5.6e-5): at 0.3 the bins shrink to their 1e-3 floor and the grid must be 5x finer to resolve them."""
    from core_helpers import grid_densities, perturb

    flow = jaxflow.NeuralSplineFlow(2, num_layers=2, bins=6, bound=2.0, hidden_dim=8, num_hidden=1, context_dim=1)
    params = perturb(jaxflow.init(flow, jax.random.key(0), jnp.float64), 1, scale=0.1)
    densities, cell = grid_densities(flow, params, (-1.5, 2.0))
    for d in densities:
        assert_close(d.sum() * cell, jnp.asarray(1.0, jnp.float64), "integral_composed")
    assert float(0.5 * jnp.abs(densities[0] - densities[1]).sum() * cell) > 0.05
