"""Training: likelihood in data units, one compilation, learning, early stopping, divergence, resumption."""

import dataclasses
import math
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflow
from jaxflow import checkpoint, data, train

FLOW = jaxflow.RealNVP(dim=2, num_flows=2, hidden_dim=8, num_hidden=1, scale="tanh", identity_init=True)
CONFIG = train.TrainConfig(steps=30, batch_size=32, eval_every=5)  # most tests share its compiled step


def _moons(n=2000, seed=0):
    return data.toy("moons").sample(n, seed)


def _leaves_equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True))


@pytest.mark.parametrize("dtype, tol", [(jnp.float32, 2e-5), (jnp.float64, 1e-12)])
def test_identity_flow_nll_is_the_gaussian_nll_in_data_units(dtype, tol):
    """An identity-initialised flow on standardised data is N(mu, diag sigma^2) in data units.

    With ``t = s = 0`` every layer only swaps the halves (log-det 0), and N(0, I) is invariant to
    that permutation, so ``log p_flow(u) = log N(u; 0, I)`` exactly.
    """
    flow = FLOW
    rng = np.random.default_rng(0)
    x = rng.normal([5.0, -2.0], [10.0, 0.1], size=(1000, 2))
    std = train.standardization(x, dtype=dtype)
    params = jaxflow.init(flow, jax.random.key(0), dtype)
    mu, sigma = x.mean(0), x.std(0)
    gaussian = 0.5 * (((x - mu) / sigma) ** 2 + np.log(2 * np.pi * sigma**2)).sum(-1)  # float64 closed form
    x_in = x.astype(dtype)
    np.testing.assert_allclose(-np.asarray(train.data_log_prob(flow, params, std, x_in)), gaussian, rtol=tol, atol=tol)
    assert abs(train.mean_nll(flow, params, std, x_in, chunk=300) - gaussian.mean()) < tol * 10


def test_standardization_rejects_constant_columns_and_can_be_off():
    x = np.stack([np.arange(5.0), np.ones(5)], -1)
    with pytest.raises(ValueError, match=r"column\(s\) \[1\]"):
        train.standardization(x)
    off = train.standardization(x, enabled=False)
    np.testing.assert_array_equal(off.mean, 0)
    np.testing.assert_array_equal(off.scale, 1)


def test_data_sample_is_in_data_units():
    """Identity-initialised flow (a permutation of N(0, I)): samples are mean + scale * N(0, I)."""
    std = train.Standardization(jnp.array([10.0, -5.0], jnp.float32), jnp.array([2.0, 0.5], jnp.float32))
    params = jaxflow.init(FLOW, jax.random.key(0), jnp.float32)
    x = np.asarray(train.data_sample(FLOW, params, std, jax.random.key(1), 20_000))
    np.testing.assert_allclose(x.mean(0), [10.0, -5.0], atol=0.05)
    np.testing.assert_allclose(x.std(0), [2.0, 0.5], rtol=0.03)


def test_step_compiles_once_loss_falls_and_every_parameter_learns():
    x = _moons()
    std = train.standardization(x)
    config = train.TrainConfig(steps=150, batch_size=64, lr=1e-2, eval_every=50, patience=0)
    step = train.make_train_step(FLOW, config)
    start = train.init_state(FLOW, config)
    initial_nll = train.mean_nll(FLOW, start.params, std, x[:500])
    result = train.fit(FLOW, std, x[500:], x[:500], config, progress=False, train_step=step)
    assert step._cache_size() == 1
    assert result.status == "completed" and result.state.step == 150
    assert result.state.best_val_nll < initial_nll - 0.3
    for path, before, after in zip(jax.tree_util.tree_leaves_with_path(start.params),
                                   jax.tree_util.tree_leaves(start.params), jax.tree_util.tree_leaves(result.state.params)):
        assert not np.array_equal(before, after), f"{jax.tree_util.keystr(path[0])} never changed"
    assert train.mean_nll(FLOW, result.state.best_params, std, x[:500]) == pytest.approx(result.state.best_val_nll,
                                                                                         abs=1e-6)


def test_same_seed_same_run_other_seed_other_run():
    x = _moons(600)
    std = train.standardization(x)
    runs = [train.fit(FLOW, std, x[100:], x[:100], dataclasses.replace(CONFIG, seed=s), progress=False).state.params
            for s in (0, 0, 1)]
    assert _leaves_equal(runs[0], runs[1])
    assert not _leaves_equal(runs[0], runs[2])


def test_early_stopping_counts_evaluations_and_keeps_best():
    """With a learning rate far below float32 resolution the parameters never change, so no later
    evaluation improves on the first: the run stops exactly ``patience`` evaluations later."""
    x = _moons(600)
    std = train.standardization(x)
    config = train.TrainConfig(steps=1000, batch_size=32, lr=1e-30, lr_schedule="constant", eval_every=5, patience=3)
    result = train.fit(FLOW, std, x[100:], x[:100], config, progress=False)
    assert result.status == "early_stopped"
    assert result.state.step == 5 * (1 + 3)
    assert result.state.evals_since_best == 3
    assert train.is_finished(result.state, config)


def test_validate_keeps_the_best_parameters():
    state = train.init_state(FLOW, train.TrainConfig())
    x = _moons(200)
    std = train.standardization(x)
    better, nll = train._validate(FLOW, std, x, state)
    assert better.best_val_nll == nll and better.evals_since_best == 0
    worse = better._replace(params=jax.tree_util.tree_map(lambda p: p + 1.0, better.params), best_val_nll=-math.inf)
    kept, _ = train._validate(FLOW, std, x, worse)
    assert kept.evals_since_best == 1 and kept.best_params is worse.best_params


def test_divergence_stops_naming_the_step_and_keeps_last_checkpoint(tmp_path):
    """A non-finite loss at step 8 (injected) stops the run; the checkpoint of step 5 stays."""
    x = _moons(600)
    std = train.standardization(x)
    config = CONFIG
    real_step = train.make_train_step(FLOW, config)

    def poisoned_step(params, opt_state, rng, k, u):
        params, opt_state, loss = real_step(params, opt_state, rng, k, u)
        return params, opt_state, jnp.where(k == 7, jnp.nan, loss)

    saved = []
    with pytest.raises(train.TrainingDiverged, match=r"loss is nan at step 8; the last good checkpoint \(step 5\).*tanh"):
        train.fit(FLOW, std, x[100:], x[:100], config, progress=False, train_step=poisoned_step,
                  checkpoint=lambda s: (saved.append(s.step), checkpoint.save(str(tmp_path), FLOW, config, std, s, {})))
    assert saved == [5]
    assert checkpoint.load(str(tmp_path)).state.step == 5


def test_divergence_on_unstandardised_huge_data():
    """Raw data around 1e30 overflow the float32 latent log-density in the first step: no silent NaN training."""
    x = np.full((100, 2), 1e30, np.float32) * np.random.default_rng(0).uniform(1, 2, (100, 2)).astype(np.float32)
    std = train.standardization(x, enabled=False)
    with pytest.raises(train.TrainingDiverged, match="at step 1; no checkpoint was written yet"):
        train.fit(FLOW, std, x, x, CONFIG, progress=False)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_and_resume_is_bit_identical(tmp_path, sig):
    """A signal at step 10 saves and stops; resuming from disk ends where an uninterrupted run ends."""
    x = _moons(600)
    std = train.standardization(x)
    config = CONFIG
    step = train.make_train_step(FLOW, config)
    straight = train.fit(FLOW, std, x[100:], x[:100], config, progress=False, train_step=step).state

    def save_and_signal(state):
        checkpoint.save(str(tmp_path), FLOW, config, std, state, {})
        if state.step == 10:
            os.kill(os.getpid(), sig)

    handler = signal.getsignal(sig)
    first = train.fit(FLOW, std, x[100:], x[:100], config, progress=False, train_step=step, checkpoint=save_and_signal)
    assert (first.status, first.signal, first.state.step) == ("interrupted", sig, 10)
    assert signal.getsignal(sig) is handler  # restored
    loaded = checkpoint.load(str(tmp_path))
    resumed = train.fit(FLOW, loaded.standardization, x[100:], x[:100], loaded.config, state=loaded.state,
                        progress=False, train_step=step).state
    assert resumed.step == straight.step == 30
    assert _leaves_equal(resumed, straight)
