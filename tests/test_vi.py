"""Variational inference (jaxflow.vi): the ELBO bound and its limit, the importance-weighted evidence and
its standard error, resumption, and one-line errors for a bad log-density."""

import dataclasses
import math
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflow
from jaxflow import checkpoint, train

# a correlated Gaussian target N(MEAN, COV), unnormalised: log Z = log((2 pi)^{D/2} |COV|^{1/2})
MEAN = np.array([1.0, -2.0])
CHOL = np.array([[1.5, 0.0], [0.8, 0.5]])
PRECISION = np.linalg.inv(CHOL @ CHOL.T)
LOG_Z = math.log(2 * math.pi) + float(np.log(np.diag(CHOL)).sum())

# x = shift + exp(log_scale) * W^{-1} z: every Gaussian, so the ELBO can reach log Z exactly
GAUSSIAN_FLOW = jaxflow.Flow(event_shape=(2,), layers=jaxflow.Chain(jaxflow.ActNorm(), jaxflow.LULinear()))
CONFIG = train.TrainConfig(steps=400, batch_size=128, lr=0.05, eval_every=100)


def gaussian(x):
    d = x - MEAN
    return -0.5 * jnp.einsum("...i,ij,...j->...", d, PRECISION, d)


def _leaves_equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True))


def test_elbo_reaches_log_z_on_a_gaussian_the_flow_represents():
    """Measured: ELBO 1.5466 (KL 0.0036 nats) and IW log Z 1.5504 (se 0.0019) against log Z 1.5502
    after 400 steps; the last 20 batch ELBOs average 1.5482, the first 20 -5.9."""
    result = train.fit_vi(GAUSSIAN_FLOW, gaussian, CONFIG, num_samples=2000, dtype=jnp.float64, progress=False)
    evidence = result.evidence
    assert result.status == "completed" and result.elbo.shape == (400,)
    assert result.elbo[:20].mean() < -5 < LOG_Z - 0.01 < result.elbo[-20:].mean() < LOG_Z + 0.01
    assert evidence.elbo <= evidence.log_z  # Jensen on the same draws: exact
    assert evidence.elbo <= LOG_Z + 3 * evidence.elbo_stderr
    assert LOG_Z - evidence.elbo < 0.01  # KL(q || p) < 0.01 nats
    assert abs(evidence.log_z - LOG_Z) < 4 * evidence.log_z_stderr + 1e-4
    assert evidence.ess > 0.98 * evidence.num_samples
    assert -result.state.best_val_nll == pytest.approx(evidence.elbo, abs=0.01)  # the evaluation's ELBO


def test_log_evidence_is_within_its_stated_standard_error_and_above_the_elbo():
    """q = N(0, I) (the identity flow) against the Gaussian target: 40 estimates of N = 500 draws
    each scatter around log Z as their stated standard error says, and each one's ELBO (the mean
    log weight) is below its log Z-hat, and on average far below log Z (KL(q || p) = 3.3 nats)."""
    params = jaxflow.init(GAUSSIAN_FLOW, jax.random.key(0), jnp.float64)
    estimates = [train.log_evidence(GAUSSIAN_FLOW, params, gaussian, 500, jax.random.key(seed)) for seed in range(40)]
    log_z = np.array([e.log_z for e in estimates])
    stated = np.array([e.log_z_stderr for e in estimates])
    assert all(e.elbo <= e.log_z for e in estimates)
    assert np.mean([e.elbo for e in estimates]) < LOG_Z - 3
    assert abs(log_z.mean() - LOG_Z) < 4 * log_z.std(ddof=1) / math.sqrt(len(log_z)) + np.mean(stated**2)  # bias se^2/2
    assert 0.6 < log_z.std(ddof=1) / np.median(stated) < 1.6
    assert all(0 < e.ess < 500 for e in estimates)


def test_log_evidence_of_a_batch_of_contexts():
    """A conditional flow at the identity with 3 contexts: one estimate per context, of shape (3,)."""
    flow = jaxflow.RealNVP(dim=2, num_flows=2, hidden_dim=4, context_dim=1, identity_init=True)
    params = jaxflow.init(flow, jax.random.key(0), jnp.float64)
    context = jnp.array([[0.0], [1.0], [2.0]])
    shift = context  # the target at context c is N(c, I) unnormalised: log Z = log(2 pi) for every c
    evidence = train.log_evidence(flow, params, lambda x: -0.5 * jnp.sum((x - shift) ** 2, -1), 4000,
                                  jax.random.key(1), context=context)
    assert evidence.log_z.shape == evidence.ess.shape == (3,)
    assert np.all(np.abs(evidence.log_z - math.log(2 * math.pi)) < 4 * evidence.log_z_stderr)
    assert evidence.log_z[0] - evidence.elbo[0] < 1e-12 < evidence.log_z[2] - evidence.elbo[2]  # q exact at c = 0


def test_signal_saves_and_resume_is_bit_identical(tmp_path):
    """As train.fit's: a SIGINT at step 10 saves and stops; resuming from disk ends at the parameters
    (and with the ELBO history) of the uninterrupted run."""
    config = dataclasses.replace(CONFIG, steps=30, eval_every=5, steps_per_call=4)
    straight = train.fit_vi(GAUSSIAN_FLOW, gaussian, config, num_samples=256, progress=False, dtype=jnp.float64)

    def save_and_signal(state):
        checkpoint.save(str(tmp_path), GAUSSIAN_FLOW, config, state, {})
        if state.step == 10:
            os.kill(os.getpid(), signal.SIGINT)

    first = train.fit_vi(GAUSSIAN_FLOW, gaussian, config, num_samples=256, progress=False, dtype=jnp.float64,
                          checkpoint=save_and_signal)
    assert (first.status, first.signal, first.state.step) == ("interrupted", signal.SIGINT, 10)
    loaded = checkpoint.load(str(tmp_path))
    resumed = train.fit_vi(loaded.flow, gaussian, loaded.config, num_samples=256, progress=False, state=loaded.state)
    assert resumed.state.step == straight.state.step == 30
    assert _leaves_equal(resumed.state, straight.state)
    np.testing.assert_array_equal(np.concatenate([first.elbo, resumed.elbo]), straight.elbo)
    assert resumed.evidence == straight.evidence


def test_a_custom_optimizer_is_used_and_its_state_refused_by_checkpoints(tmp_path):
    import optax

    config = dataclasses.replace(CONFIG, steps=20, eval_every=10)
    sgd = train.fit_vi(GAUSSIAN_FLOW, gaussian, config, num_samples=64, progress=False, dtype=jnp.float64,
                         optimizer=optax.sgd(1e-3))
    adam = train.fit_vi(GAUSSIAN_FLOW, gaussian, config, num_samples=64, progress=False, dtype=jnp.float64)
    assert not _leaves_equal(sgd.state.params, adam.state.params)
    with pytest.raises(checkpoint.CheckpointError, match="opt_state has another structure"):
        checkpoint.save(str(tmp_path), GAUSSIAN_FLOW, config, sgd.state, {})


@pytest.mark.parametrize("log_density, error, message", [
    (lambda x: gaussian(x)[:, None], ValueError, r"fit_vi: log_density must map x of shape \(64, 2\) to one float "
                                                  r"per event, shape \(64,\); got float64\[64, 1\]"),
    (lambda x: jnp.sum(x, -1) > 0, ValueError, r"got bool\[64\]"),
    (lambda x: float(x.sum()), TypeError, r"fit_vi: log_density must be a jittable function of x float64\[64, 2\]; "
                                          r"it raised ConcretizationTypeError"),
    (lambda x: jnp.log(x[..., 0]), ValueError, r"fit_vi: log_density \(or log q\) is not finite at \d+ of 64 draws "
                                               r"from the flow, e\.g\. x = \[-"),
    ("gaussian", TypeError, "fit_vi: log_density must be a function"),
])
def test_a_bad_log_density_is_a_one_line_error(log_density, error, message):
    with pytest.raises(error, match=message) as err:
        train.fit_vi(GAUSSIAN_FLOW, log_density, CONFIG, num_samples=64, dtype=jnp.float64, progress=False)
    assert "\n" not in str(err.value)


def test_num_samples_must_allow_a_standard_error():
    with pytest.raises(ValueError, match=r"fit_vi: num_samples must be an int >= 2.*got 1"):
        train.fit_vi(GAUSSIAN_FLOW, gaussian, CONFIG, num_samples=1, progress=False)


def test_divergence_stops_at_the_step_keeping_the_last_good_parameters():
    """A target that is -inf outside a box passes the check at the start (q = N(0, I) stays inside),
    then a huge constant learning rate throws draws out of it: the run stops at that step (2 here)
    with the parameters of a run of the steps before it."""
    boxed = lambda x: jnp.where(jnp.abs(x).max(-1) < 20, gaussian(x), -jnp.inf)
    config = dataclasses.replace(CONFIG, steps=50, lr=50.0, lr_schedule="constant", eval_every=10)
    with pytest.raises(train.TrainingDiverged, match=r"the loss is inf at step 2; no checkpoint was written") as err:
        train.fit_vi(GAUSSIAN_FLOW, boxed, config, num_samples=64, dtype=jnp.float64, progress=False)
    before = train.fit_vi(GAUSSIAN_FLOW, boxed, dataclasses.replace(config, steps=1), num_samples=64,
                          dtype=jnp.float64, progress=False)
    assert err.value.state.step == 1
    assert _leaves_equal(err.value.state.params, before.state.params)


def test_a_conditional_flow_fits_a_batch_of_contexts_at_once():
    """Amortised VI: q(x | c) fitted to N(c 1, I) at c = 0, 1, 2 together (the loss averages over
    the contexts); each context's ELBO and IW log Z reach log Z = log(2 pi) (measured: within 0.003)."""
    flow = jaxflow.RealNVP(dim=2, num_flows=2, hidden_dim=16, num_hidden=1, context_dim=1, identity_init=True)
    context = jnp.array([[0.0], [1.0], [2.0]])
    config = train.TrainConfig(steps=300, batch_size=32, lr=1e-2, eval_every=100)
    result = train.fit_vi(flow, lambda x: -0.5 * jnp.sum((x - context) ** 2, -1), config, context, num_samples=1000,
                          dtype=jnp.float64, progress=False)
    evidence, log_z = result.evidence, math.log(2 * math.pi)
    assert evidence.elbo.shape == evidence.log_z.shape == (3,)
    assert np.all(log_z - evidence.elbo < 0.02) and np.all(evidence.elbo <= evidence.log_z)
    assert np.all(np.abs(evidence.log_z - log_z) < 4 * evidence.log_z_stderr + 1e-3)
