"""Maximum-likelihood training on standardised data, with validation, early stopping and resumption.

The model is fitted to standardised data :math:`u = (x - \\mu) / \\sigma` (per-coordinate mean
and standard deviation of the training split), and every reported likelihood is in the units
of the user's data:

.. math::

    \\log p_X(x) = \\log p_{\\text{flow}}\\!\\left(\\frac{x - \\mu}{\\sigma}\\right) - \\sum_{j=1}^{D} \\log \\sigma_j,
    \\qquad \\text{NLL} = -\\frac{1}{N} \\sum_{n=1}^{N} \\log p_X(x_n) \\text{ nats}, \\qquad
    \\text{bits/dim} = \\frac{\\text{NLL}}{D \\ln 2}.

Training minimises the minibatch NLL with optax (gradient clipping, then Adam with a cosine
learning-rate decay). Step ``k`` (0-based) draws its batch with replacement from the key
``fold_in(rng, k)``, so the whole run is a pure function of ``(flow, config, data)``: a run
interrupted and resumed from its checkpoint ends at exactly the parameters of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import signal
import threading
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxflow.flow import log_prob, sample
from jaxflow.params import init
from jaxflow.spec import RealNVP

__all__ = [
    "Standardization",
    "standardization",
    "data_log_prob",
    "data_sample",
    "mean_nll",
    "TrainConfig",
    "TrainState",
    "optimizer",
    "init_state",
    "make_train_step",
    "is_finished",
    "FitResult",
    "TrainingDiverged",
    "fit",
]


class Standardization(NamedTuple):
    """Affine map to the model's space, ``u = (x - mean) / scale``; both ``(D,)``."""

    mean: jax.Array
    scale: jax.Array


def standardization(x, enabled: bool = True, dtype=jnp.float32) -> Standardization:
    """Per-coordinate mean and standard deviation of ``x (N, D)``; the identity map if not ``enabled``.

    Raises ``ValueError`` for a constant coordinate, whose density would be degenerate.
    """
    x = np.asarray(x, np.float64)
    if not enabled:
        return Standardization(jnp.zeros(x.shape[-1], dtype), jnp.ones(x.shape[-1], dtype))
    scale = x.std(0)
    if np.any(scale == 0):
        raise ValueError(f"column(s) {np.flatnonzero(scale == 0).tolist()} of the data are constant: "
                         "a continuous density cannot fit them")
    return Standardization(jnp.asarray(x.mean(0), dtype), jnp.asarray(scale, dtype))


def data_log_prob(flow: RealNVP, params, std: Standardization, x) -> jax.Array:
    """``log p_X(x) = log p_flow((x - mean) / scale) - sum(log scale)``, shape ``(...)`` for ``x (..., D)``."""
    return log_prob(flow, params, (x - std.mean) / std.scale) - jnp.log(std.scale).sum()


def data_sample(flow: RealNVP, params, std: Standardization, key: jax.Array, num_samples: int) -> jax.Array:
    """``x = mean + scale * g(z)``, ``z ~ N(0, I)``: ``(num_samples, D)`` in the data's units."""
    return std.mean + std.scale * sample(flow, params, key, num_samples)


@functools.partial(jax.jit, static_argnames="flow")
def _chunk_nll_sum(flow: RealNVP, params, std: Standardization, x: jax.Array, mask: jax.Array) -> jax.Array:
    return -jnp.sum(jnp.where(mask, data_log_prob(flow, params, std, x), 0))


def mean_nll(flow: RealNVP, params, std: Standardization, x, chunk: int = 8192) -> float:
    """``-(1/N) sum_n log p_X(x_n)`` in nats over ``x (N, D)``, evaluated in fixed-size jitted chunks."""
    x = np.asarray(x)
    size = min(chunk, len(x))
    total = 0.0
    for start in range(0, len(x), size):
        rows = x[start : start + size]
        mask = np.arange(size) < len(rows)
        padded = np.concatenate([rows, np.zeros((size - len(rows), x.shape[1]), x.dtype)])
        total += float(_chunk_nll_sum(flow, params, std, jnp.asarray(padded, std.mean.dtype), mask))
    return total / len(x)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; with the flow and the data they determine a run completely.

    Args:
      steps: number of optimiser steps.
      batch_size: examples per step, drawn with replacement.
      lr: peak learning rate of Adam.
      lr_schedule: ``"cosine"`` (decay from ``lr`` to ``lr * final_lr_fraction``) or ``"constant"``.
      final_lr_fraction: the cosine schedule's last learning rate as a fraction of ``lr``.
      max_grad_norm: gradients are clipped to this global norm before Adam.
      eval_every: validation NLL (and a checkpoint) every this many steps, and at the last step.
      patience: stop after this many evaluations without a better validation NLL; ``0``: never.
      seed: seeds parameter initialisation and batch order.
    """

    steps: int = 5000
    batch_size: int = 256
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    final_lr_fraction: float = 0.01
    max_grad_norm: float = 10.0
    eval_every: int = 250
    patience: int = 20
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig: {name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig: lr must be > 0, got {self.lr}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"TrainConfig: lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if self.patience < 0:
            raise ValueError(f"TrainConfig: patience must be >= 0, got {self.patience}")


def optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """``clip_by_global_norm(max_grad_norm)`` then Adam at the configured learning-rate schedule."""
    if config.lr_schedule == "cosine":
        schedule = optax.cosine_decay_schedule(config.lr, config.steps, alpha=config.final_lr_fraction)
    else:
        schedule = optax.constant_schedule(config.lr)
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(schedule))


class TrainState(NamedTuple):
    """Everything a run needs to continue: the checkpoint's payload besides the standardisation.

    ``step`` counts completed steps; ``rng`` is the raw ``uint32`` data of the batch key;
    ``best_params`` are the parameters with the lowest validation NLL ``best_val_nll`` (``inf``
    before the first evaluation), ``evals_since_best`` counts evaluations since then.
    """

    step: int
    params: dict
    opt_state: optax.OptState
    rng: jax.Array
    best_params: dict
    best_val_nll: float
    evals_since_best: int


def init_state(flow: RealNVP, config: TrainConfig, dtype=jnp.float32) -> TrainState:
    """Step 0: ``init(flow, fold_in(key(seed), 0))``, fresh optimiser, batch key ``fold_in(key(seed), 1)``."""
    root = jax.random.key(config.seed)
    params = init(flow, jax.random.fold_in(root, 0), dtype)
    rng = jax.random.key_data(jax.random.fold_in(root, 1))
    return TrainState(0, params, optimizer(config).init(params), rng, params, math.inf, 0)


def make_train_step(flow: RealNVP, config: TrainConfig) -> Callable:
    """The jitted step ``(params, opt_state, rng, k, u) -> (params, opt_state, loss)``.

    ``u (N, D)`` is the standardised training data; the batch is ``u[i]``,
    ``i ~ randint(fold_in(rng, k), (batch_size,), 0, N)``; ``loss`` is the batch's mean NLL of ``u``.
    It compiles once (``k`` is traced, not static), and is shared by all configs that differ only
    in ``seed``, ``eval_every`` or ``patience``, which do not enter the step.
    """
    return _train_step(flow, dataclasses.replace(config, seed=0, eval_every=1, patience=0))


@functools.lru_cache(maxsize=16)
def _train_step(flow: RealNVP, config: TrainConfig) -> Callable:
    tx = optimizer(config)

    def loss_fn(params, batch):
        return -log_prob(flow, params, batch).mean()

    @jax.jit
    def train_step(params, opt_state, rng, k, u):
        key = jax.random.fold_in(jax.random.wrap_key_data(rng), k)
        batch = u[jax.random.randint(key, (config.batch_size,), 0, u.shape[0], dtype=jnp.int32)]
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes int32 counts with floats
            updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step


def is_finished(state: TrainState, config: TrainConfig) -> bool:
    """All steps done, or early stopping triggered."""
    return state.step >= config.steps or 0 < config.patience <= state.evals_since_best


class FitResult(NamedTuple):
    """``status``: ``"completed"``, ``"early_stopped"`` or ``"interrupted"`` (then ``signal`` is its number)."""

    state: TrainState
    status: str
    signal: Optional[int] = None


class TrainingDiverged(RuntimeError):
    """The training loss became non-finite; ``step`` is the 1-based step that produced it."""

    def __init__(self, step: int, loss: float, last_checkpoint_step: Optional[int]):
        self.step, self.loss, self.last_checkpoint_step = step, loss, last_checkpoint_step
        kept = ("no checkpoint was written yet" if last_checkpoint_step is None
                else f"the last good checkpoint (step {last_checkpoint_step}) is kept")
        super().__init__(f"training diverged: the loss is {loss} at step {step}; {kept}; "
                         "try the stable scale 'tanh' (--scale tanh) or a smaller learning rate (--lr)")


@contextlib.contextmanager
def _signals_caught():
    """Collect SIGINT/SIGTERM in a list instead of raising, so the loop can save and stop cleanly."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _progress_bar(config: TrainConfig, state: TrainState, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=config.steps, initial=state.step, disable=not enabled, unit="step",
                dynamic_ncols=True, mininterval=0.25)


def fit(flow: RealNVP, std: Standardization, x_train, x_val, config: TrainConfig, *,
        state: Optional[TrainState] = None, checkpoint: Optional[Callable[[TrainState], None]] = None,
        progress: bool = True, train_step: Optional[Callable] = None) -> FitResult:
    """Train ``flow`` on ``x_train (N, D)``, validating on ``x_val``; resumes from ``state`` if given.

    Every ``eval_every`` steps (and at the end) the validation NLL is computed, the best parameters
    kept, and ``checkpoint(state)`` called; SIGINT/SIGTERM make the loop call ``checkpoint`` and
    return with status ``"interrupted"``. A non-finite training loss raises
    :class:`TrainingDiverged` before its update is applied, without another checkpoint.
    ``train_step`` (from :func:`make_train_step`) may be passed to reuse its compilation.
    """
    state = init_state(flow, config, std.mean.dtype) if state is None else state
    train_step = make_train_step(flow, config) if train_step is None else train_step
    u = jnp.asarray((np.asarray(x_train) - np.asarray(std.mean)) / np.asarray(std.scale), std.mean.dtype)
    log_scale_sum = float(jnp.log(std.scale).sum())
    save = checkpoint or (lambda state: None)
    last_saved = state.step if state.step > 0 else None
    val_nll = state.best_val_nll
    with _signals_caught() as received, _progress_bar(config, state, progress) as bar:
        while not is_finished(state, config):
            params, opt_state, loss = train_step(state.params, state.opt_state, state.rng, np.int32(state.step), u)
            loss = float(loss) + log_scale_sum
            if not math.isfinite(loss):
                raise TrainingDiverged(state.step + 1, loss, last_saved)
            state = state._replace(step=state.step + 1, params=params, opt_state=opt_state)
            if state.step % config.eval_every == 0 or state.step == config.steps:
                state, val_nll = _validate(flow, std, x_val, state)
                save(state)
                last_saved = state.step
            if progress:
                bar.set_postfix(loss=f"{loss:.4f}", val_nll=f"{val_nll:.4f}", refresh=False)
                bar.update()
            if received:
                if last_saved != state.step:
                    save(state)
                return FitResult(state, "interrupted", received[0])
    return FitResult(state, "completed" if state.step >= config.steps else "early_stopped")


def _validate(flow: RealNVP, std: Standardization, x_val, state: TrainState) -> tuple[TrainState, float]:
    """Validation NLL of the current parameters; they become the best if they improve on it."""
    val_nll = mean_nll(flow, state.params, std, x_val)
    if val_nll < state.best_val_nll:
        return state._replace(best_params=state.params, best_val_nll=val_nll, evals_since_best=0), val_nll
    return state._replace(evals_since_best=state.evals_since_best + 1), val_nll
