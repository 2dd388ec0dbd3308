"""Parity on random compositions of every layer kind (:mod:`parity_tests.compositions`).

For each generated flow both sides hold the same random weights (every ActNorm and LULinear
perturbed away from the identity); jaxflow's ``f``, ``log_det``, ``log_prob``, ``g``,
``g_and_log_det``, ``g_steps`` and ``sample`` (on the same latent draws), and the gradients of
the mean NLL with respect to the parameters, the inputs and the context, are compared with the
torchref model's. A context of the events' batch shape, or one context broadcast against all.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

import jaxflow
import torchref
from parity_tests.compositions import COMPOSED_EDGE_CASES, composed_flows, make_composed_pair
from parity_tests.devices import DEVICES, on
from parity_tests.pairs import to_numpy, to_torch
from parity_tests.test_parity import _well_conditioned
from parity_tests.tolerances import assert_close

NUM_SAMPLES = 3

# each example compiles its own program (a new spec, ~2-4 s), so half the RealNVP test's examples
EXAMPLES = max(4, settings.default.max_examples // 2)


def _with_edge_cases(test):
    for flow, dtype in [(COMPOSED_EDGE_CASES[0], np.float64), (COMPOSED_EDGE_CASES[0], np.float32),
                        (COMPOSED_EDGE_CASES[1], np.float64)]:
        test = example(flow=flow, dtype=dtype, shared_context=False, seed=0)(test)
    return test


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=EXAMPLES)
@_with_edge_cases
@given(flow=composed_flows(), dtype=st.sampled_from([np.float64, np.float32]), shared_context=st.booleans(),
       seed=st.integers(0, 2**16))
def test_composed_values_steps_sample_and_gradients(device, flow, dtype, shared_context, seed):
    compare_with_the_twin(device, flow, dtype, shared_context, seed)


_MAF = jaxflow.MAF(4, num_layers=2, hidden_dim=8, transform=jaxflow.RQSpline(4, 1.0), context_dim=2)
_AUTOREGRESSIVE_FLOWS = [  # always run: MAF's layers (spline, orders reversed between layers, conditional) and an IAF,
    # torch's random weights rather than the identity of identity_init
    jaxflow.Flow((4,), jaxflow.Repeat(jaxflow.Chain(dataclasses.replace(_MAF.autoregressive_layer, identity_init=False),
                                                    jaxflow.Permute()), 2), context_dim=2),
    jaxflow.Flow((3,), jaxflow.Repeat(jaxflow.Invert(jaxflow.Chain(jaxflow.MaskedAutoregressive(
        jaxflow.AffineTransform("tanh", 2.0), jaxflow.MADE(8, 1, order=(1, 2, 0)), identity_init=False),
        jaxflow.Permute("random", 3))), 2), context_dim=1),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("flow", _AUTOREGRESSIVE_FLOWS, ids=["maf-spline-context", "iaf"])
def test_masked_autoregressive_flows_match_the_twin(flow, dtype):
    compare_with_the_twin("cpu", flow, dtype, False, seed=1)


def compare_with_the_twin(device, flow, dtype, shared_context, seed):
    """Both sides' values, steps, samples and gradients on the same random weights (module docstring)."""
    with on(device):
        params, model = make_composed_pair(flow, seed, dtype, device)
        # jaxflow.sample draws in the params' dtype, float32 for a flow without parameters
        assume(jax.tree_util.tree_leaves(params))
        rng = np.random.default_rng(seed)
        x, z = rng.standard_normal((2, 8, flow.event_size)).astype(dtype)
        context = None
        if flow.context_dim:
            batch = () if shared_context else (8,)
            context = rng.standard_normal(batch + (flow.context_dim,)).astype(dtype)
        with torch.no_grad():  # discard ill-conditioned examples before compiling anything
            assume(_well_conditioned([*model.f(to_torch(x, device), _maybe(context, device)),
                                      *model.g_steps(to_torch(z, device), _maybe(context, device))]))
        key = jax.random.key(seed)
        results = _jax_results(flow, params, x, z, context, key)
        expected = _torch_results(model, x, z, context, results.pop("latent_draws"), device)
        for quantity, value in results.items():
            jax.tree_util.tree_map(lambda a, b: assert_close(a, to_numpy(b), quantity, dtype), value, expected[quantity])


def _maybe(context, device):
    return None if context is None else to_torch(context, device)


@functools.partial(jax.jit, static_argnums=0)
def _jax_results(flow, params, x, z, context, key) -> dict:
    """Every public jaxflow function on data ``x``, latents ``z`` and ``context``; and the latent
    draws behind ``sample(key)``, ``(NUM_SAMPLES, *context batch, D)``."""

    def nll(params, x, context):
        return -jnp.mean(jaxflow.log_prob(flow, params, x, context=context))

    grads = jax.grad(nll, argnums=(0, 1, 2) if context is not None else (0, 1))(params, x, context)
    batch = () if context is None else context.shape[:-1]
    latent = jaxflow.standard_normal(flow.event_shape, x.dtype)
    results = {
        "f": jaxflow.f(flow, params, x, context=context)[0],
        "log_det": jaxflow.log_det(flow, params, x, context=context),
        "log_prob": jaxflow.log_prob(flow, params, x, context=context),
        "g": jaxflow.g(flow, params, z, context=context),
        "g_log_det": jaxflow.g_and_log_det(flow, params, z, context=context)[1],
        "g_steps": jaxflow.g_steps(flow, params, z, context=context),
        "sample": jaxflow.sample(flow, params, key, NUM_SAMPLES, context=context),
        "latent_draws": latent.sample(seed=key, sample_shape=(NUM_SAMPLES, *batch)),
        "grad_params": grads[0],
        "grad_x": grads[1],
    }
    if context is not None:
        results["grad_context"] = grads[2]
    return results


def _torch_results(model: torchref.NormalizingFlow, x, z, context, latent_draws, device) -> dict:
    """The torchref counterparts of :func:`_jax_results`."""
    tx = to_torch(x, device, requires_grad=True)
    tc = None if context is None else to_torch(context, device, requires_grad=True)
    latent, log_det = model.f(tx, tc)
    steps = model.g_steps(to_torch(z, device), tc)
    log_prob = model.log_prob(tx, tc)
    model.zero_grad()
    (-log_prob.mean()).backward()
    g_log_det = -model.f(steps[-1], tc)[1]  # log|det dg/dz| = -log|det df/dx| at x = g(z)
    results = {
        "f": latent,
        "log_det": log_det,
        "log_prob": log_prob,
        "g": steps[-1],
        "g_log_det": g_log_det,
        "g_steps": torch.stack(steps),
        "sample": model.g(to_torch(latent_draws, device), tc),
        "grad_params": torchref.to_jax_params(model, grad=True),
        "grad_x": tx.grad,
    }
    if tc is not None:
        results["grad_context"] = torch.zeros_like(tc) if tc.grad is None else tc.grad  # no coupling reads it
    return results



_LOGIT_FLOWS = [  # Logit first, as on pixels: the data lie in [0, 1]
    jaxflow.Flow((2,), jaxflow.Chain(jaxflow.Logit(0.05), COMPOSED_EDGE_CASES[1].layers)),
    jaxflow.Flow((5,), jaxflow.Chain(jaxflow.Logit(0.0), jaxflow.ActNorm(),
                                     jaxflow.AffineCoupling("alternate", jaxflow.MLP(8, 1), "tanh")), context_dim=2),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("flow", _LOGIT_FLOWS, ids=["logit-repeat", "logit-conditional"])
def test_logit_first_on_unit_interval_data(flow, dtype):
    params, model = make_composed_pair(flow, 3, dtype)
    rng = np.random.default_rng(3)
    x = rng.uniform(0.01, 0.99, (8, flow.event_size)).astype(dtype)
    z = rng.standard_normal((8, flow.event_size)).astype(dtype)
    context = rng.standard_normal((8, flow.context_dim)).astype(dtype) if flow.context_dim else None
    key = jax.random.key(3)
    results = _jax_results(flow, params, x, z, context, key)
    expected = _torch_results(model, x, z, context, results.pop("latent_draws"), "cpu")
    for quantity, value in results.items():
        jax.tree_util.tree_map(lambda a, b: assert_close(a, to_numpy(b), quantity, dtype), value, expected[quantity])
