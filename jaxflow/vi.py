"""Flows as variational posteriors: fit :math:`q_\\theta` to an unnormalised density by maximising the ELBO.

Given an unnormalised log-density :math:`\\log \\tilde p(x)` with normaliser :math:`Z = \\int \\tilde p(x)\\,dx`,

.. math::

    \\mathrm{ELBO}(\\theta) = \\mathbb{E}_{x \\sim q_\\theta}\\left[\\log \\tilde p(x) - \\log q_\\theta(x)\\right]
    = \\log Z - \\mathrm{KL}(q_\\theta \\,\\|\\, p) \\le \\log Z,

estimated with reparameterised draws :math:`x = g(z; \\theta)`, :math:`z \\sim \\mathcal N(0, I)`, and
their exact :math:`\\log q_\\theta(x)` from one pass (:func:`jaxflow.sample_and_log_prob`), so the
gradient flows through the samples.

:func:`fit_vi` reuses :mod:`jaxflow.train` whole: a :class:`~jaxflow.train.TrainConfig` (a step's
batch is ``batch_size`` draws from :math:`q_\\theta`; step ``k`` draws with ``fold_in(rng, k)``),
the optimiser (:func:`~jaxflow.train.optimizer`: clipping, Adam, cosine decay after a warm-up), the
:class:`~jaxflow.train.TrainState` and its checkpoints (:mod:`jaxflow.checkpoint`), the loop with
its progress bar, signals, divergence check and early stopping. Its "validation" is the negative
ELBO on ``num_samples`` draws with one fixed key (common random numbers, so evaluations compare
parameters, not draws), kept in the state's ``best_val_nll``. A run is a pure function of
``(flow, config, log_density, num_samples, context)``: resumed from its checkpoint it ends at
exactly the parameters of an uninterrupted one.

The evidence (:func:`log_evidence`) is the importance-weighted estimate with weights
:math:`w_i = \\tilde p(x_i) / q_\\theta(x_i)`, :math:`x_i \\sim q_\\theta`, :math:`i = 1..N`:

.. math::

    \\log \\hat Z = \\log \\frac{1}{N} \\sum_i w_i, \\qquad
    \\operatorname{se}(\\log \\hat Z) = \\frac{\\operatorname{sd}(w)}{\\sqrt N \\, \\bar w}
    = \\sqrt{\\frac{N / \\mathrm{ESS} - 1}{N - 1}}, \\qquad
    \\mathrm{ESS} = \\frac{(\\sum_i w_i)^2}{\\sum_i w_i^2}.

:math:`\\hat Z` is unbiased, :math:`\\log \\hat Z` biased low (Jensen) by about
:math:`\\operatorname{se}^2 / 2`; on the same draws the ELBO estimate :math:`\\overline{\\log w}` is
never above :math:`\\log \\hat Z`. The standard error is the delta method's: it is trustworthy only
when the ESS is a fair fraction of ``N`` (a heavy-tailed :math:`w` makes both look better than they are).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxflow.core.flow import sample_and_log_prob
from jaxflow.core.init import check_params
from jaxflow.core.spec import FlowSpec
from jaxflow.core.validation import as_context, check_key
from jaxflow.train import FitResult, TrainConfig, TrainState, descent_step, init_state, keep_best, optimizer, \
    run_steps, scanned_steps

__all__ = ["LogEvidence", "VIResult", "evidence", "log_evidence", "fit_vi"]

LogDensity = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class LogEvidence:
    """The importance-weighted evidence of ``num_samples`` draws (equations in the module docstring).

    Every value is a float, or an array of the context's batch shape for a batch of contexts:
    ``log_z`` (:math:`\\log \\hat Z`) and ``log_z_stderr``; ``elbo`` (the mean log weight) and
    ``elbo_stderr`` (its Monte Carlo standard error); ``ess``, the effective sample size in ``(0, N]``.
    """

    log_z: Union[float, np.ndarray]
    log_z_stderr: Union[float, np.ndarray]
    elbo: Union[float, np.ndarray]
    elbo_stderr: Union[float, np.ndarray]
    ess: Union[float, np.ndarray]
    num_samples: int


class VIResult(NamedTuple):
    """What :func:`fit_vi` returns.

    ``state`` is the run's :class:`~jaxflow.train.TrainState` (``best_val_nll``: the lowest
    evaluation negative ELBO), ``status`` and ``signal`` as :class:`~jaxflow.train.FitResult`'s;
    ``elbo[i]`` the batch ELBO estimate of the ``i``-th step this call ran (steps ``start + 1``
    on, ``start`` the step it resumed from); ``evidence`` the :func:`log_evidence` of
    :attr:`params` on ``num_samples`` fresh draws.
    """

    state: TrainState
    status: str
    signal: Optional[int]
    elbo: np.ndarray
    evidence: LogEvidence

    @property
    def params(self):
        """The parameters with the highest evaluation ELBO (``state.best_params``)."""
        return self.state.best_params


@functools.partial(jax.jit, static_argnames=("flow", "log_density", "count"))
def _log_weights(flow: FlowSpec, params, log_density: LogDensity, key, count: int, context):
    """``log p~(x) - log q(x)`` of ``count`` draws ``x ~ q``, shape ``(count, *batch)``."""
    x, log_q = sample_and_log_prob(flow, params, key, count, context=context)
    return log_density(x).astype(log_q.dtype) - log_q


def _check_log_density(flow: FlowSpec, params, log_density, key, count: int, context, owner: str) -> jax.Array:
    """The log weights of :func:`_log_weights`; first a one-line ``TypeError``/``ValueError`` if
    ``log_density`` cannot be traced, returns another shape than ``(count, *batch)`` or a non-float,
    or is not finite at every draw."""
    if not callable(log_density):
        raise TypeError(f"{owner}: log_density must be a function x -> log p~(x), got {type(log_density).__name__}")
    x, log_q = jax.eval_shape(lambda: sample_and_log_prob(flow, params, key, count, context=context))
    try:
        out = jax.eval_shape(log_density, x)
    except Exception as err:  # whatever the user's function raises while traced
        raise TypeError(f"{owner}: log_density must be a jittable function of x {x.dtype}{list(x.shape)}; it raised "
                        f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != log_q.shape or \
            not jnp.issubdtype(out.dtype, jnp.floating):
        got = f"{out.dtype}{list(out.shape)}" if isinstance(out, jax.ShapeDtypeStruct) else type(out).__name__
        raise ValueError(f"{owner}: log_density must map x of shape {tuple(x.shape)} to one float per event, shape "
                         f"{tuple(log_q.shape)}; got {got}")
    log_w = _log_weights(flow, params, log_density, key, count, context)
    bad = ~np.isfinite(np.asarray(log_w))
    if bad.any():
        draws = np.asarray(sample_and_log_prob(flow, params, key, count, context=context)[0])
        example = draws[np.unravel_index(int(np.flatnonzero(bad)[0]), bad.shape)].ravel()
        example = np.array2string(example, precision=4, threshold=8, max_line_width=10**6)
        raise ValueError(f"{owner}: log_density (or log q) is not finite at {int(bad.sum())} of {bad.size} draws "
                         f"from the flow, e.g. x = {example}; the ELBO needs a finite log-density wherever q puts "
                         "mass (map constrained variables to R^D)")
    return log_w


def _require_samples(num_samples, owner: str) -> None:
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"{owner}: num_samples must be an int >= 2 (a standard error needs two draws), "
                         f"got {num_samples!r}")


def evidence(log_weights) -> LogEvidence:
    """The :class:`LogEvidence` of the log weights ``log p~(x_i) - log q(x_i)`` of ``N >= 2`` draws
    ``x_i ~ q``, shape ``(N, *batch)``, for any ``q`` (e.g. another library's guide): the estimators
    of the module docstring."""
    log_w = np.asarray(log_weights, np.float64)
    n = len(log_w)
    _require_samples(n, "evidence")
    relative = np.exp(log_w - log_w.max(0))
    ess = relative.sum(0) ** 2 / (relative**2).sum(0)
    host = lambda a: float(a) if np.ndim(a) == 0 else np.asarray(a)
    return LogEvidence(
        log_z=host(np.log(relative.mean(0)) + log_w.max(0)),
        log_z_stderr=host(np.sqrt(np.maximum(n / ess - 1, 0) / (n - 1))),
        elbo=host(log_w.mean(0)),
        elbo_stderr=host(log_w.std(0, ddof=1) / math.sqrt(n)),
        ess=host(ess),
        num_samples=n,
    )


def log_evidence(flow: FlowSpec, params, log_density: LogDensity, num_samples: int, key, *,
                 context=None) -> LogEvidence:
    """The importance-weighted estimate of :math:`\\log Z = \\log \\int \\tilde p(x)\\,dx` with ``q``
    the flow: ``num_samples`` draws with ``key``, weights ``log_density(x) - log q(x)`` (see the
    module docstring for the estimators and the standard error).

    ``log_density`` maps ``x (num_samples, *batch, *event)`` to ``(num_samples, *batch)`` and must
    be jittable; ``batch`` is the context's batch shape (``()`` without one). A bad ``log_density``
    (wrong shape, non-finite at a draw) is a one-line ``ValueError``.
    """
    dtype = check_params(flow, params)
    check_key(key, "log_evidence")
    _require_samples(num_samples, "log_evidence")
    context = as_context(flow, context, dtype)
    return evidence(_check_log_density(flow, params, log_density, key, num_samples, context, "log_evidence"))


@functools.lru_cache(maxsize=8)
def _vi_step(flow: FlowSpec, config: TrainConfig, log_density: LogDensity,
             tx: Optional[optax.GradientTransformation]) -> Callable:
    """The jitted chunk of ``steps_per_call`` steps on the negative ELBO of ``batch_size`` draws,
    ``(params, opt_state, rng, k, n, context) -> (params, opt_state, losses)`` (the contract of
    :func:`jaxflow.train.make_train_step`; buffers are not donated)."""

    def negative_elbo(params, key, context):
        x, log_q = sample_and_log_prob(flow, params, key, config.batch_size, context=context)
        return jnp.mean(log_q - log_density(x).astype(log_q.dtype))

    return jax.jit(scanned_steps(descent_step(tx or optimizer(config), negative_elbo), config.steps_per_call))


def fit_vi(flow: FlowSpec, log_density: LogDensity, config: TrainConfig, context=None, *, num_samples: int = 4096,
           optimizer: Optional[optax.GradientTransformation] = None, state: Optional[TrainState] = None,
           checkpoint: Optional[Callable[[TrainState], None]] = None, progress: bool = True, dtype=jnp.float32,
           log: Optional[Callable[[int, float, float], None]] = None) -> VIResult:
    """Fit the flow ``q`` to the unnormalised ``log_density`` by maximising the ELBO; returns a :class:`VIResult`.

    Args:
      flow: the variational family; with ``context`` (``(context_dim,)`` or a batch ``(..., context_dim)``)
        a conditional flow is fitted at those contexts (the loss is the mean over the batch).
      log_density: :math:`\\log \\tilde p`, jittable, ``x (n, *batch, *event) -> (n, *batch)``, finite
        wherever ``q`` puts mass (constrained variables belong in an unconstrained parameterisation).
      config: the :class:`~jaxflow.train.TrainConfig`; ``batch_size`` draws per step.
      num_samples: draws of every evaluation (the negative ELBO with one fixed key, every
        ``eval_every`` steps: it picks the best parameters and stops early after ``patience``
        evaluations without progress) and of the final :func:`log_evidence`.
      optimizer: an optax transformation instead of :func:`jaxflow.train.optimizer` ``(config)``
        (such a run cannot be checkpointed: :func:`jaxflow.checkpoint.save` refuses its state).
      state: resume from this state (e.g. :func:`jaxflow.checkpoint.load`'s), else
        :func:`~jaxflow.train.init_state` in ``dtype``.
      checkpoint, progress: as :func:`jaxflow.train.fit`'s (``checkpoint(state)`` after every
        evaluation and on SIGINT/SIGTERM, which stop the run with status ``"interrupted"``).
      log: ``log(step, mean batch ELBO since the last evaluation, evaluation ELBO)`` after each evaluation.

    ``log_density`` is checked once at the start, on the evaluation draws: a wrong output shape or
    a non-finite value is a one-line ``ValueError``. A non-finite loss later raises
    :class:`~jaxflow.train.TrainingDiverged` with the last good state.
    """
    _require_samples(num_samples, "fit_vi")
    root = jax.random.key(config.seed)
    eval_key, evidence_key = jax.random.fold_in(root, 2), jax.random.fold_in(root, 3)  # 0, 1: init_state's
    if state is None:
        state = init_state(flow, config, dtype)
        if optimizer is not None:
            state = state._replace(opt_state=optimizer.init(state.params))
    context = as_context(flow, context, check_params(flow, state.params))
    _check_log_density(flow, state.params, log_density, eval_key, num_samples, context, "fit_vi")
    step = _vi_step(flow, dataclasses.replace(config, seed=0, eval_every=1, patience=0), log_density, optimizer)
    losses = []

    def run_chunk(params, opt_state, rng, k, n):
        params, opt_state, chunk_losses = step(params, opt_state, rng, k, n, context)
        losses.append(np.asarray(chunk_losses)[:n])
        return params, opt_state, chunk_losses

    def validate(state):
        return keep_best(state, -float(np.mean(_log_weights(flow, state.params, log_density, eval_key, num_samples,
                                                            context))))

    log_elbo = None if log is None else lambda step, chunk_losses, value: log(step, -float(chunk_losses.mean()), -value)
    result: FitResult = run_steps(state, config, run_chunk, validate, checkpoint, progress, log_elbo, metric="neg_elbo")
    estimate = evidence(_log_weights(flow, result.state.best_params, log_density, evidence_key, num_samples, context))
    elbo = -np.concatenate(losses) if losses else np.zeros(0)
    return VIResult(result.state, result.status, result.signal, elbo, estimate)
