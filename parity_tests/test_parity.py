"""jaxflow computes what torchref computes: values, intermediate steps and gradients.

For each configuration (dimension, depth, width, scale map, initialisation, dtype, batch shape)
both sides hold the same weights; every public jaxflow function is compared with the torchref
model's answer on the same inputs; ``sample`` on the same latent draws.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import assume, example, given
from hypothesis import strategies as st

import jaxflow
import torchref
from parity_tests.devices import DEVICES, on
from parity_tests.pairs import make_pair, to_numpy, to_torch
from parity_tests.tolerances import assert_close

flows = st.builds(
    jaxflow.RealNVP,
    dim=st.integers(2, 65),
    num_flows=st.integers(1, 16),
    hidden_dim=st.sampled_from([1, 8, 32, 64]),
    num_hidden=st.integers(0, 3),
    scale=st.sampled_from(jaxflow.SCALES),
    identity_init=st.booleans(),
)
dtypes = st.sampled_from([np.float64, np.float32])
batch_shapes = st.sampled_from([(16,), (3, 5), ()])

EDGE_CASES = [  # smallest, largest, odd and identity configurations, always run; weights from
    # jaxflow.init in two of them (slow to compile, so generated examples initialise in torch)
    (jaxflow.RealNVP(2, 1, hidden_dim=8, num_hidden=0), np.float64, "torch"),
    (jaxflow.RealNVP(3, 16, hidden_dim=32, num_hidden=2, scale="tanh"), np.float64, "jax"),
    (jaxflow.RealNVP(65, 16, hidden_dim=64, num_hidden=2), np.float32, "torch"),
    (jaxflow.RealNVP(64, 4, hidden_dim=64, num_hidden=3, scale="sigmoid", identity_init=True), np.float64, "jax"),
]


def _with_edge_cases(test):
    for flow, dtype, init_in in EDGE_CASES:
        test = example(flow=flow, dtype=dtype, batch_shape=(16,), init_in=init_in, seed=0)(test)
    return test


@pytest.mark.parametrize("device", DEVICES)
@_with_edge_cases
@given(flow=flows, dtype=dtypes, batch_shape=batch_shapes, init_in=st.just("torch"), seed=st.integers(0, 2**16))
def test_values_steps_and_gradients(device, flow, dtype, batch_shape, init_in, seed):
    with on(device):
        params, model = make_pair(flow, seed, dtype, device, init_in)
        x, z = np.random.default_rng(seed).standard_normal((2, *batch_shape, flow.dim)).astype(dtype)
        expected = _torch_results(model, x, z, device)
        for quantity, value in _jax_results(flow, params, x, z).items():
            jax.tree_util.tree_map(lambda a, b: assert_close(a, to_numpy(b), quantity, dtype), value, expected[quantity])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("flow", "dtype", "init_in"), EDGE_CASES[:3],
                         ids=[f"dim{f.dim}-{f.scale}-{np.dtype(d).name}-{i}_init" for f, d, i in EDGE_CASES[:3]])
def test_sample_is_g_of_the_latent_draws(device, flow, dtype, init_in):
    """``jaxflow.sample(key) = g(z)`` for ``z`` the latent's draws with ``key``, with ``log p(g(z))``
    from :func:`jaxflow.sample_and_log_prob`; torch's ``sample`` is ``g`` of its latent's draws."""
    with on(device):
        params, model = make_pair(flow, 0, dtype, device, init_in)
        key = jax.random.key(1)
        z = jaxflow.standard_normal(flow.dim, dtype).sample(seed=key, sample_shape=(4, 8))
        x = model.g(to_torch(z, device))
        assert_close(jaxflow.sample(flow, params, key, (4, 8)), to_numpy(x), "sample", dtype)
        samples, log_prob = jaxflow.sample_and_log_prob(flow, params, key, (4, 8))
        assert_close(samples, to_numpy(x), "sample", dtype)
        assert_close(log_prob, to_numpy(model.log_prob(x)), "log_prob", dtype)
        torch.manual_seed(2)
        samples = model.sample(8)
        torch.manual_seed(2)
        assert torch.equal(samples, model.g(model.latent_sample(8)))


def _well_conditioned(values, bound: float = 1e4) -> bool:
    """Whether all ``values`` (tensors) are finite and within ``bound``.

    Flows that blow up standard-normal inputs (the unbounded ``exp`` scale with tiny, deep
    conditioners: ``RealNVP(2, 14, hidden_dim=1, num_hidden=0)`` reaches ``|x| ~ 1e259``)
    amplify the last-bit differences of both sides past any fixed tolerance, or overflow; they
    say nothing about parity and are discarded.
    """
    return all(bool(torch.isfinite(v).all()) and float(v.detach().abs().max()) <= bound for v in values)


@functools.partial(jax.jit, static_argnums=0)
def _jax_results(flow, params, x, z) -> dict:
    """Every public deterministic jaxflow function on data ``x`` and latents ``z``."""

    def nll(params, x):
        return -jnp.mean(jaxflow.log_prob(flow, params, x))

    grad_params, grad_x = jax.grad(nll, argnums=(0, 1))(params, x)
    return {
        "f": jaxflow.f(flow, params, x)[0],
        "log_det": jaxflow.log_det(flow, params, x),
        "log_prob": (jaxflow.log_prob(flow, params, x), jaxflow.as_distribution(flow, params).log_prob(x)),
        "g": jaxflow.g(flow, params, z),
        "g_log_det": jaxflow.g_and_log_det(flow, params, z)[1],
        "g_steps": jaxflow.g_steps(flow, params, z),
        "grad_params": grad_params,
        "grad_x": grad_x,
    }


def _torch_results(model, x, z, device) -> dict:
    """The torchref counterparts of :func:`_jax_results`, keyed alike.

    Discards (hypothesis ``assume``) configurations that are not :func:`_well_conditioned`.
    """
    tx = to_torch(x, device, requires_grad=True)
    latent, log_det = model.f(tx)
    steps = model.g_steps(to_torch(z, device))
    assume(_well_conditioned([latent, log_det, *steps]))
    log_prob = model.log_prob(tx)
    model.zero_grad()
    (-log_prob.mean()).backward()
    # log|det dg_i/dz_i| = -log|det df_i/dx_i| at x_i = g_i(z_i): f_i conditions on the half
    # that g_i copied unchanged from z_i, so this is the inverse pass's own log-det.
    g_log_det = -sum(layer.f(x_i)[1] for layer, x_i in zip(reversed(model.flows), steps[1:]))
    return {
        "f": latent,
        "log_det": log_det,
        "log_prob": (log_prob, log_prob),
        "g": steps[-1],
        "g_log_det": g_log_det,
        "g_steps": torch.stack(steps),
        "grad_params": torchref.to_jax_params(model, grad=True),
        "grad_x": tx.grad,
    }
