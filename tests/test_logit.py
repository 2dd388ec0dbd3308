"""The logit layer against independent truths: the autodiff Jacobian, the closed form written
with NumPy, and the exact density of a flow that is nothing but the logit of uniform data."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxflow
from jaxflow import Logit
from core_helpers import event_jacobian_log_det
from core_tolerances import assert_close

DTYPES = [jnp.float64, jnp.float32]


def _unit_data(shape, dtype, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(0.0, 1.0, shape), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("event_shape", [(5,), (3, 2, 2)], ids=["vector", "image"])
@pytest.mark.parametrize("alpha", [0.0, 0.05, 1e-6])
def test_logit_log_det_matches_the_autodiff_jacobian_both_ways(alpha, event_shape, dtype):
    layer, x = Logit(alpha), _unit_data((4, *event_shape), dtype)
    y, ld = layer.forward({}, x, None, event_shape)
    truth = event_jacobian_log_det(lambda v: layer.forward({}, v, None, event_shape)[0], x, event_shape)
    assert_close(ld, truth, "log_det_vs_jacobian", dtype)
    back, ld_back = layer.inverse({}, y, None, event_shape)
    truth_back = event_jacobian_log_det(lambda v: layer.inverse({}, v, None, event_shape)[0], y, event_shape)
    assert_close(ld_back, truth_back, "log_det_vs_jacobian", dtype)
    assert_close(back, x, "round_trip", dtype)
    assert_close(ld + ld_back, np.zeros(4), "log_det_cancel", dtype)


def test_logit_values_are_the_closed_form():
    x = np.random.default_rng(1).uniform(0, 1, (6, 4))
    alpha = 0.05
    p = alpha + (1 - 2 * alpha) * x
    y, ld = Logit(alpha).forward({}, jnp.asarray(x), None, (4,))
    assert_close(y, np.log(p / (1 - p)), "same_math")
    assert_close(ld, np.sum(np.log((1 - 2 * alpha) / (p * (1 - p))), -1), "same_math")


@pytest.mark.parametrize("alpha", [0.0, 0.05])
def test_the_mass_of_a_logit_flow_on_the_unit_interval_is_the_closed_form(alpha):
    """``N(0, 1)`` pushed through the inverse logit puts mass ``P(|y| < logit(1 - alpha))`` on
    ``[0, 1]``: all of it for ``alpha = 0``, 0.99677 for ``alpha = 0.05`` (the rest lies just outside)."""
    from scipy.special import logit, ndtr

    flow = jaxflow.Flow((1,), Logit(alpha))
    grid = (np.arange(200_000) + 0.5) / 200_000
    density = np.exp(np.asarray(jaxflow.log_prob(flow, {}, jnp.asarray(grid[:, None]))))
    edge = np.inf if alpha == 0 else logit(1 - alpha)
    assert_close(density.mean(), ndtr(edge) - ndtr(-edge), "integral")


def test_logit_inverse_is_finite_far_out():
    x, ld = Logit(0.0).inverse({}, jnp.asarray([[-800.0, 800.0]]), None, (2,))
    assert np.isfinite(np.asarray(ld)).all() and np.asarray(x).tolist() == [[0.0, 1.0]]


@pytest.mark.parametrize("alpha", [-0.1, 0.5, 2.0, float("nan"), True, "0.1"])
def test_logit_refuses_a_bad_alpha(alpha):
    with pytest.raises(ValueError, match="Logit: alpha"):
        Logit(alpha)


def test_logit_twin_in_torchref_agrees():
    import torchref

    x = np.random.default_rng(2).uniform(0, 1, (5, 3))
    twin = torchref.Logit(0.05)
    y, ld = twin.f(torch.from_numpy(x))
    y_jax, ld_jax = Logit(0.05).forward({}, jnp.asarray(x), None, (3,))
    assert_close(y_jax, y.numpy(), "same_math")
    assert_close(ld_jax, ld.numpy(), "same_math")
    assert_close(twin.g(y).numpy(), x, "round_trip")
