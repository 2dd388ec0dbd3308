"""Training trajectories: optax and torch.optim, from the same weights on the same batches, end equal.

Both sides minimise the mean negative log-likelihood for ``STEPS`` steps with matching
hyper-parameters; the final parameters (and every step's loss) are compared. Both optimizers
compute the same update: SGD with heavy-ball momentum ``m <- beta m + grad``, ``p <- p - lr m``
(torch with ``dampening=0``); Adam ``p <- p - lr m_hat / (sqrt(v_hat) + eps)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import jaxflow
import torchref
from parity_tests.compositions import make_composed_pair
from parity_tests.devices import DEVICES, on
from parity_tests.pairs import make_pair, to_numpy, to_torch
from parity_tests.tolerances import assert_close, rel_err

STEPS, BATCH = 100, 64

OPTIMIZERS = {  # name -> (optax transformation, torch.optim constructor), same hyper-parameters
    "sgd": (optax.sgd(5e-3, momentum=0.9),
            functools.partial(torch.optim.SGD, lr=5e-3, momentum=0.9)),
    "adam": (optax.adam(3e-3, b1=0.9, b2=0.999, eps=1e-8),
             functools.partial(torch.optim.Adam, lr=3e-3, betas=(0.9, 0.999), eps=1e-8)),
}

FLOWS = [
    jaxflow.RealNVP(5, 4, hidden_dim=16, num_hidden=2),
    jaxflow.RealNVP(4, 3, hidden_dim=16, num_hidden=1, scale="tanh", identity_init=True),
]


def batches(dim: int, dtype) -> np.ndarray:
    """``(STEPS, BATCH, dim)`` draws of a correlated, shifted Gaussian: something to learn."""
    rng = np.random.default_rng(dim)
    mixing = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    return (rng.standard_normal((STEPS, BATCH, dim)) @ mixing + 1.0).astype(dtype)


@functools.partial(jax.jit, static_argnums=(0, 1))
def train_jax(flow: jaxflow.RealNVP, optimizer_name: str, params, data):
    """Final params and per-step losses of ``len(data)`` optax steps, one batch each."""
    optimizer = OPTIMIZERS[optimizer_name][0]

    def nll(params, batch):
        return -jnp.mean(jaxflow.log_prob(flow, params, batch))

    def step(carry, batch):
        params, state = carry
        loss, grads = jax.value_and_grad(nll)(params, batch)
        with jax.numpy_dtype_promotion("standard"):  # optax's Adam bias correction: float ** int32
            updates, state = optimizer.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), loss

    (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), data)
    return params, losses


def train_torch(model: torchref.NormalizingFlow, optimizer_name: str, data, device) -> np.ndarray:
    """Trains ``model`` in place; returns the per-step losses."""
    optimizer = OPTIMIZERS[optimizer_name][1](model.parameters())
    losses = []
    for batch in data:
        optimizer.zero_grad()
        loss = -model.log_prob(to_torch(batch, device)).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return np.array(losses)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("optimizer_name", OPTIMIZERS)
@pytest.mark.parametrize("flow", FLOWS, ids=["dim5-exp", "dim4-tanh-identity"])
def test_training_trajectories_match(flow, optimizer_name, dtype, device):
    quantity = f"train_{optimizer_name}"
    with on(device):
        params, model = make_pair(flow, 0, dtype, device, init_in="torch")
        data = batches(flow.dim, dtype)
        trained, losses = train_jax(flow, optimizer_name, params, data)
        torch_losses = train_torch(model, optimizer_name, data, device)
    assert torch_losses[-10:].mean() < torch_losses[:10].mean() - 0.1  # it learns
    assert_close(losses, torch_losses, quantity, dtype)
    expected = torchref.to_jax_params(model)
    moved = max(jax.tree_util.tree_leaves(jax.tree_util.tree_map(rel_err, trained, params)))
    assert moved > 0.01  # far from the start, so agreement is not agreement on the initial weights
    jax.tree_util.tree_map(lambda a, b: assert_close(a, to_numpy(b), quantity, dtype), trained, expected)


COMPOSED = jaxflow.Flow(  # a conditional composition of every learned layer kind
    (3,), jaxflow.Repeat(jaxflow.Chain(
        jaxflow.ActNorm(), jaxflow.AffineCoupling("alternate", jaxflow.MLP(16, 1), "tanh"), jaxflow.LULinear(),
        jaxflow.Permute("random", 1)), 2),
    context_dim=2, context_affine=jaxflow.Affine((0.5, -0.5), (2.0, 1.5)))


def conditional_batches(dtype) -> tuple[np.ndarray, np.ndarray]:
    """``(STEPS, BATCH, 3)`` draws of ``x | c ~ N(A c + 0.5, S S^T)`` and their contexts ``(STEPS, BATCH, 2)``.

    Half the scale of :func:`batches`: at twice it the random start's NLL is ~60 and SGD's first
    steps jump, amplifying float32 rounding to 5e-4 in the trajectory (measured); here 3e-6.
    """
    rng = np.random.default_rng(3)
    context = rng.standard_normal((STEPS, BATCH, 2))
    mixing, noise = rng.standard_normal((2, 3)) / 2, rng.standard_normal((3, 3)) / (2 * np.sqrt(3))
    return (context @ mixing + rng.standard_normal((STEPS, BATCH, 3)) @ noise + 0.5).astype(dtype), context.astype(dtype)


@functools.partial(jax.jit, static_argnums=(0, 1))
def train_jax_conditional(flow: jaxflow.Flow, optimizer_name: str, params, data, contexts):
    """:func:`train_jax` with a context per event."""
    optimizer = OPTIMIZERS[optimizer_name][0]

    def nll(params, batch, context):
        return -jnp.mean(jaxflow.log_prob(flow, params, batch, context=context))

    def step(carry, batch_and_context):
        params, state = carry
        loss, grads = jax.value_and_grad(nll)(params, *batch_and_context)
        with jax.numpy_dtype_promotion("standard"):  # optax's Adam bias correction: float ** int32
            updates, state = optimizer.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), loss

    (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), (data, contexts))
    return params, losses


_NSF = jaxflow.NeuralSplineFlow(3, num_layers=2, bins=4, bound=1.5, hidden_dim=16, num_hidden=1, context_dim=2)
NSF = jaxflow.Flow(_NSF.event_shape, _NSF.layers, _NSF.context_dim)
"""A conditional neural spline flow (the preset's layers, as ``torchref.to_jax`` gives them back); the
data (:func:`conditional_batches`) reach past ``±1.5``, into the tails."""

CONDITIONAL = [(COMPOSED, "sgd", np.float64), (COMPOSED, "sgd", np.float32), (COMPOSED, "adam", np.float64),
               (COMPOSED, "adam", np.float32), (NSF, "adam", np.float64)]


@pytest.mark.parametrize(("flow", "optimizer_name", "dtype"), CONDITIONAL,
                         ids=[f"{'nsf' if flow is NSF else 'composed'}-{name}-{np.dtype(dtype).name}"
                              for flow, name, dtype in CONDITIONAL])
def test_composed_conditional_training_trajectories_match(flow, optimizer_name, dtype):
    """ActNorm, an alternate-mask coupling reading the context, LULinear and a permutation, twice;
    and a conditional NSF (spline couplings, permutations and LU layers), from its identity start."""
    quantity = f"train_{optimizer_name}"
    with on("cpu"):
        params, model = make_composed_pair(flow, 0, dtype)
        data, contexts = conditional_batches(dtype)
        trained, losses = train_jax_conditional(flow, optimizer_name, params, data, contexts)
        optimizer = OPTIMIZERS[optimizer_name][1](model.parameters())
        torch_losses = []
        for batch, context in zip(data, contexts):
            optimizer.zero_grad()
            loss = -model.log_prob(to_torch(batch), to_torch(context)).mean()
            loss.backward()
            optimizer.step()
            torch_losses.append(loss.item())
        torch_losses = np.array(torch_losses)
    assert torch_losses[-10:].mean() < torch_losses[:10].mean() - 0.1  # it learns
    assert_close(losses, torch_losses, quantity, dtype)
    moved = max(jax.tree_util.tree_leaves(jax.tree_util.tree_map(rel_err, trained, params)))
    assert moved > 0.01
    jax.tree_util.tree_map(lambda a, b: assert_close(a, to_numpy(b), quantity, dtype), trained, torchref.to_jax_params(model))
