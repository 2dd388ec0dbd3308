"""Training: likelihood in data units, one compilation, learning, early stopping, divergence, resumption."""

import dataclasses
import math
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxflow
from jaxflow import checkpoint, data, train
from core_tolerances import assert_close

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
    that permutation, so ``log p_flow(u) = log N(u; 0, I)`` exactly; the standardisation layer
    adds ``-sum log sigma``.
    """
    rng = np.random.default_rng(0)
    x = rng.normal([5.0, -2.0], [10.0, 0.1], size=(1000, 2))
    flow = train.standardize(FLOW, x)
    assert isinstance(flow.layers.layers[0], jaxflow.Affine) and flow.layers.layers[1] == FLOW.layers
    params = jaxflow.init(flow, jax.random.key(0), dtype)
    mu, sigma = x.mean(0), x.std(0)
    gaussian = 0.5 * (((x - mu) / sigma) ** 2 + np.log(2 * np.pi * sigma**2)).sum(-1)  # float64 closed form
    x_in = x.astype(dtype)
    np.testing.assert_allclose(-np.asarray(jaxflow.log_prob(flow, params, x_in)), gaussian, rtol=tol, atol=tol)
    assert abs(train.mean_nll(flow, params, x_in, chunk=300) - gaussian.mean()) < tol * 10


def test_standardize_rejects_constant_and_non_finite_columns_and_can_be_off():
    x = np.stack([np.arange(5.0), np.ones(5)], -1)
    with pytest.raises(ValueError, match=r"column\(s\) \[1\]"):
        train.standardize(FLOW, x)
    with pytest.raises(ValueError, match=r"data: holds NaN or inf \(row 2\)"):
        train.standardize(FLOW, np.where(np.arange(5)[:, None] == 2, np.inf, x + np.arange(2.0)))
    off = train.standardize(FLOW, x, enabled=False).layers.layers[0]
    assert off.shift == (0.0, 0.0) and off.scale == (1.0, 1.0)


def test_standardize_covers_the_context():
    flow = jaxflow.RealNVP(dim=2, num_flows=2, hidden_dim=8, context_dim=1)
    rng = np.random.default_rng(0)
    x, c = rng.normal(size=(500, 2)), rng.normal(3.0, 2.0, size=(500, 1))
    fitted = train.standardize(flow, x, c)
    np.testing.assert_allclose([fitted.context_affine.shift[0], fitted.context_affine.scale[0]], [c.mean(), c.std()])
    params = jaxflow.init(fitted, jax.random.key(0), jnp.float64)
    inner = jaxflow.Flow((2,), flow.layers, 1)
    u, v = (x - x.mean(0)) / x.std(0), (c - c.mean()) / c.std()
    expected = jaxflow.log_prob(inner, params[1], u, context=v) - np.log(x.std(0)).sum()
    np.testing.assert_allclose(jaxflow.log_prob(fitted, params, x, context=c), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="the flow has context_dim 1, got no context"):
        train.standardize(flow, x)


def test_data_sample_is_in_data_units():
    """Identity-initialised flow (a permutation of N(0, I)) behind Affine: samples are mean + scale * N(0, I)."""
    flow = jaxflow.Flow((2,), jaxflow.Chain(jaxflow.Affine((10.0, -5.0), (2.0, 0.5)), FLOW.layers))
    params = jaxflow.init(flow, jax.random.key(0), jnp.float32)
    x = np.asarray(jaxflow.sample(flow, params, jax.random.key(1), 20_000))
    np.testing.assert_allclose(x.mean(0), [10.0, -5.0], atol=0.05)
    np.testing.assert_allclose(x.std(0), [2.0, 0.5], rtol=0.03)


def test_a_conditional_flow_learns_its_context():
    """rotated-moons: after a short fit the NLL given the true rotation beats the NLL given a wrong one."""
    splits = data.load_dataset("rotated-moons")
    x, c = splits.train[:4000], splits.train_context[:4000]
    flow = train.standardize(jaxflow.RealNVP(dim=2, num_flows=4, hidden_dim=16, scale="tanh", identity_init=True,
                                             context_dim=1), x, c)
    config = train.TrainConfig(steps=300, batch_size=128, lr=1e-2, eval_every=100, patience=0)
    result = train.fit(flow, x, splits.val[:1000], config, context_train=c, context_val=splits.val_context[:1000],
                       progress=False)
    params = result.state.best_params
    right = train.mean_nll(flow, params, splits.test[:2000], splits.test_context[:2000])
    wrong = train.mean_nll(flow, params, splits.test[:2000], (splits.test_context[:2000] + np.pi / 2) % np.pi)
    assert right < wrong - 0.2, (right, wrong)


def test_a_nan_row_in_the_validation_data_is_named():
    x = _moons(300)
    bad = x[:100].copy()
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match=r"validation data: row 7 holds NaN or inf"):
        train.fit(train.standardize(FLOW, x), x[100:], bad, CONFIG, progress=False)


def test_fit_starts_actnorm_from_the_training_data():
    x = _moons(2000) * np.float32(3.0) + np.float32(1.0)
    flow = jaxflow.Flow((2,), jaxflow.Chain(jaxflow.ActNorm(), FLOW.layers))
    state = train.init_state(flow, CONFIG, jnp.float32, x[: train.INIT_ROWS])
    z, _ = jaxflow.f(flow, state.params, x[: train.INIT_ROWS])
    np.testing.assert_allclose(np.asarray(z).mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(z).std(0), 1, atol=1e-5)


def test_step_compiles_once_loss_falls_and_every_parameter_learns():
    x = _moons()
    flow = train.standardize(FLOW, x)
    config = train.TrainConfig(steps=150, batch_size=64, lr=1e-2, eval_every=50, patience=0)
    step = train.make_train_step(flow, config)
    start = train.init_state(flow, config)
    initial_nll = train.mean_nll(flow, start.params, x[:500])
    result = train.fit(flow, x[500:], x[:500], config, progress=False, train_step=step)
    assert step._cache_size() == 1
    assert result.status == "completed" and result.state.step == 150
    assert result.state.best_val_nll < initial_nll - 0.3
    for path, before, after in zip(jax.tree_util.tree_leaves_with_path(start.params),
                                   jax.tree_util.tree_leaves(start.params), jax.tree_util.tree_leaves(result.state.params)):
        assert not np.array_equal(before, after), f"{jax.tree_util.keystr(path[0])} never changed"
    assert train.mean_nll(flow, result.state.best_params, x[:500]) == pytest.approx(result.state.best_val_nll,
                                                                                         abs=1e-6)


def test_same_seed_same_run_other_seed_other_run():
    x = _moons(600)
    flow = train.standardize(FLOW, x)
    runs = [train.fit(flow, x[100:], x[:100], dataclasses.replace(CONFIG, seed=s), progress=False).state.params
            for s in (0, 0, 1)]
    assert _leaves_equal(runs[0], runs[1])
    assert not _leaves_equal(runs[0], runs[2])


def test_early_stopping_counts_evaluations_and_keeps_best():
    """With a learning rate far below float32 resolution the parameters never change, so no later
    evaluation improves on the first: the run stops exactly ``patience`` evaluations later."""
    x = _moons(600)
    config = train.TrainConfig(steps=1000, batch_size=32, lr=1e-30, lr_schedule="constant", eval_every=5, patience=3)
    result = train.fit(train.standardize(FLOW, x), x[100:], x[:100], config, progress=False)
    assert result.status == "early_stopped"
    assert result.state.step == 5 * (1 + 3)
    assert result.state.evals_since_best == 3
    assert train.is_finished(result.state, config)


def test_validate_keeps_the_best_parameters():
    x = _moons(200)
    flow = train.standardize(FLOW, x)
    state = train.init_state(flow, train.TrainConfig())
    better, nll = train._validate(flow, x, None, state)
    assert better.best_val_nll == nll and better.evals_since_best == 0
    worse = better._replace(params=jax.tree_util.tree_map(lambda p: p + 1.0, better.params), best_val_nll=-math.inf)
    kept, _ = train._validate(flow, x, None, worse)
    assert kept.evals_since_best == 1 and kept.best_params is worse.best_params


def test_learning_rate_warms_up_linearly_then_decays_as_a_cosine():
    """The closed form of :func:`train.learning_rate` at every step, with and without warm-up."""
    steps, lr, a = 200, 1e-2, 0.01
    k = np.arange(steps + 1)
    for fraction, warmup in ((0.1, 20), (0.0, 0)):
        config = train.TrainConfig(steps=steps, lr=lr, final_lr_fraction=a, warmup_fraction=fraction)
        cosine = lr * (a + (1 - a) * (1 + np.cos(np.pi * np.clip(k - warmup, 0, None) / (steps - warmup))) / 2)
        expected = np.where(k < warmup, lr * k / max(warmup, 1), cosine)
        schedule = train.learning_rate(config)
        with jax.numpy_dtype_promotion("standard"):  # optax's schedules mix int counts with floats
            np.testing.assert_allclose([float(schedule(i)) for i in k], expected, rtol=1e-6, atol=1e-12)
    constant = train.learning_rate(train.TrainConfig(lr=lr, lr_schedule="constant", warmup_fraction=0.5))
    assert float(constant(0)) == float(constant(steps)) == pytest.approx(lr)


def test_a_config_from_before_warmup_keeps_its_schedule():
    """A checkpoint's config written before ``warmup_fraction`` existed loads as no warm-up: the
    plain cosine it was trained with, step for step, so a resumed run continues as it began."""
    old = {key: value for key, value in dataclasses.asdict(train.TrainConfig(steps=300, lr=3e-3)).items()
           if key != "warmup_fraction"}
    schedule, cosine = train.learning_rate(train.TrainConfig(**old)), optax.cosine_decay_schedule(3e-3, 300, alpha=0.01)
    assert all(float(schedule(i)) == float(cosine(i)) for i in range(301))


@pytest.mark.parametrize("fraction", [1.0, -0.1, True, "0.1", math.nan])
def test_warmup_fraction_out_of_range_is_refused(fraction):
    with pytest.raises(ValueError, match=r"TrainConfig: warmup_fraction must be a number in \[0, 1\)"):
        train.TrainConfig(warmup_fraction=fraction)


def _batch_rows(k: int, n: int, config: train.TrainConfig) -> set[int]:
    """The rows of step ``k``'s batch (0-based), by make_train_step's documented draw."""
    rng = jax.random.fold_in(jax.random.key(config.seed), 1)  # init_state's batch key
    key = jax.random.fold_in(rng, k)
    return set(np.asarray(jax.random.randint(key, (config.batch_size,), 0, n, dtype=jnp.int32)).tolist())


@pytest.mark.parametrize("steps_per_call", [1, 4])
def test_divergence_stops_at_the_step_keeping_the_last_good_parameters(tmp_path, steps_per_call):
    """A finite row of 1e30 (after standardisation) makes the loss non-finite at the first step
    whose batch draws it, step 8 here: the run stops there, the checkpoint of step 5 stays, and the
    error carries the parameters after step 7, as 7 steps on data without that row give them."""
    x = _moons(600)
    flow = train.standardize(FLOW, x)
    clean = x[100:]
    config = dataclasses.replace(CONFIG, steps_per_call=steps_per_call)  # K = 4: steps 8..9 are one call
    row = min(_batch_rows(7, len(clean), config).difference(*(_batch_rows(k, len(clean), config) for k in range(7))))
    poisoned = clean.copy()
    poisoned[row] = 1e30
    saved = []
    with pytest.raises(train.TrainingDiverged, match=r"loss is (nan|inf) at step 8; the last good checkpoint \(step 5\).*tanh") as err:
        train.fit(flow, poisoned, x[:100], config, progress=False,
                  checkpoint=lambda s: (saved.append(s.step), checkpoint.save(str(tmp_path), flow, config, s, {})))
    assert saved == [5]
    assert checkpoint.load(str(tmp_path)).state.step == 5
    one_step = train.make_train_step(flow, CONFIG)
    state = train.init_state(flow, CONFIG)
    params, opt_state = state.params, state.opt_state
    for k in range(7):
        params, opt_state, _ = one_step(params, opt_state, state.rng, np.int32(k), np.int32(1), clean, None)
    assert err.value.state.step == 7
    assert _leaves_equal(err.value.state.params, params)


def test_steps_per_call_gives_the_same_run_and_validates_at_the_same_steps():
    """K = 10 against K = 1 with eval_every 7 (calls of 7, 7, 7, 7 and 2 steps): the same validation
    steps and NLLs, and the same parameters (measured: bit-identical on XLA:CPU)."""
    x = _moons(600)
    flow = train.standardize(FLOW, x)
    runs = []
    for k in (1, 10):
        config = dataclasses.replace(CONFIG, eval_every=7, steps_per_call=k)
        saved = []
        state = train.fit(flow, x[100:], x[:100], config, progress=False,
                          checkpoint=lambda s: saved.append((s.step, s.best_val_nll))).state
        runs.append((saved, state.params))
    (saved_1, params_1), (saved_10, params_10) = runs
    assert [s for s, _ in saved_1] == [s for s, _ in saved_10] == [7, 14, 21, 28, 30]
    assert_close([v for _, v in saved_10], [v for _, v in saved_1], "steps_per_call", jnp.float32)
    for a, b in zip(jax.tree_util.tree_leaves(params_10), jax.tree_util.tree_leaves(params_1), strict=True):
        assert_close(a, b, "steps_per_call", jnp.float32)


def test_the_step_donates_its_buffers_and_fit_never_donates_the_callers():
    x = _moons(600)
    flow = train.standardize(FLOW, x)
    state = train.init_state(flow, CONFIG)  # best_params is params: both must survive
    step = train.make_train_step(flow, CONFIG)
    params = jax.tree_util.tree_map(jnp.copy, state.params)
    step(params, jax.tree_util.tree_map(jnp.copy, state.opt_state), state.rng, np.int32(0), np.int32(1), x, None)
    assert all(leaf.is_deleted() for leaf in jax.tree_util.tree_leaves(params))
    first, second = (train.fit(flow, x[100:], x[:100], CONFIG, state=state, progress=False).state for _ in range(2))
    assert _leaves_equal(first, second)
    arrays = (state.params, state.opt_state, state.best_params, first.params, first.opt_state, first.best_params)
    assert not any(leaf.is_deleted() for leaf in jax.tree_util.tree_leaves(arrays))


def test_divergence_on_unstandardised_huge_data():
    """Raw data around 1e30 overflow the float32 latent log-density in the first step: no silent NaN training."""
    x = np.full((100, 2), 1e30, np.float32) * np.random.default_rng(0).uniform(1, 2, (100, 2)).astype(np.float32)
    with pytest.raises(train.TrainingDiverged, match="at step 1; no checkpoint was written yet"):
        train.fit(train.standardize(FLOW, x, enabled=False), x, x, CONFIG, progress=False)


@pytest.mark.parametrize("sig, steps_per_call", [(signal.SIGINT, 1), (signal.SIGTERM, 4)])
def test_signal_saves_and_resume_is_bit_identical(tmp_path, sig, steps_per_call):
    """A signal at step 10 saves and stops; resuming from disk ends where an uninterrupted run ends
    (with 4 steps per call: calls of 4, 1, 4 and 1 steps before the signal)."""
    x = _moons(600)
    flow = train.standardize(FLOW, x)
    config = dataclasses.replace(CONFIG, steps_per_call=steps_per_call)
    step = train.make_train_step(flow, config)
    straight = train.fit(flow, x[100:], x[:100], config, progress=False, train_step=step).state

    def save_and_signal(state):
        checkpoint.save(str(tmp_path), flow, config, state, {})
        if state.step == 10:
            os.kill(os.getpid(), sig)

    handler = signal.getsignal(sig)
    first = train.fit(flow, x[100:], x[:100], config, progress=False, train_step=step, checkpoint=save_and_signal)
    assert (first.status, first.signal, first.state.step) == ("interrupted", sig, 10)
    assert signal.getsignal(sig) is handler  # restored
    loaded = checkpoint.load(str(tmp_path))
    assert loaded.flow == flow
    resumed = train.fit(loaded.flow, x[100:], x[:100], loaded.config, state=loaded.state,
                        progress=False, train_step=step).state
    assert resumed.step == straight.step == 30
    assert _leaves_equal(resumed, straight)
