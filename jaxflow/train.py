"""Maximum-likelihood training, with validation, early stopping and resumption.

The flow is fitted to the user's data as they are: :func:`standardize` puts the standardisation
:math:`u = (x - \\mu) / \\sigma` (per-coordinate mean and standard deviation of the training
split) at the front of the flow as a fixed :class:`~jaxflow.Affine` layer, and the context's
standardisation into ``context_affine``, so every likelihood is in the units of the data by
construction:

.. math::

    \\log p_X(x \\mid c) = \\log p_{\\text{flow}}\\!\\left(\\frac{x - \\mu}{\\sigma} \\,\\middle|\\,
    \\frac{c - \\mu_c}{\\sigma_c}\\right) - \\sum_{j=1}^{D} \\log \\sigma_j, \\qquad
    \\text{NLL} = -\\frac{1}{N} \\sum_{n=1}^{N} \\log p_X(x_n \\mid c_n) \\text{ nats}, \\qquad
    \\text{bits/dim} = \\frac{\\text{NLL}}{D \\ln 2}.

Pixel data are instead dequantised into the unit cube and put behind a fixed
:class:`~jaxflow.Logit` layer (:func:`preprocess`); their NLLs are reported on the pixel lattice
(:mod:`jaxflow.units`, ``mean_nll(..., levels=)``).

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

from jaxflow.core.flow import log_prob
from jaxflow.core.init import init, params_dtype
from jaxflow.core.layer import Chain
from jaxflow.core.spec import Flow, FlowSpec
from jaxflow.layers.elementwise import Affine
from jaxflow.layers.logit import Logit
from jaxflow.layers.names import PREPROCESSING
from jaxflow.units import lattice_nll

__all__ = [
    "standardize",
    "preprocess",
    "PREPROCESSING",
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


def _mean_and_std(x, what: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"{what}: expected a non-empty (N, D) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: holds NaN or inf (row {int(np.flatnonzero(~np.isfinite(x).all(1))[0])}); "
                         "cannot standardise")
    scale = x.std(0)
    if np.any(scale == 0):
        raise ValueError(f"{what}: column(s) {np.flatnonzero(scale == 0).tolist()} are constant: "
                         "a continuous density cannot fit them")
    return tuple(x.mean(0).tolist()), tuple(scale.tolist())


def standardize(flow: FlowSpec, x, context=None, enabled: bool = True) -> Flow:
    """``flow`` fitted on standardised data: ``Affine(mean(x), std(x))`` first, and the context's
    ``Affine(mean(c), std(c))`` as ``context_affine`` (``x (N, D)``, ``c (N, context_dim)``).

    The result is a :class:`~jaxflow.Flow` whose params are ``[{}, <flow's params>]``. With
    ``enabled=False`` both maps are the identity (the same structure, so runs stay comparable).
    Raises ``ValueError`` for a constant coordinate, whose density would be degenerate, and for
    non-finite data.
    """
    if len(flow.event_shape) != 1:
        raise ValueError(f"standardize: expects vector events (D,), got event shape {flow.event_shape}; "
                         "images take the logit preprocessing")
    identity = (0.0,) * flow.event_shape[0], (1.0,) * flow.event_shape[0]
    first = Affine(*(_mean_and_std(x, "data") if enabled else identity))
    return _with_first_layer(flow, first, context, enabled)


def _with_first_layer(flow: FlowSpec, first, context, standardize_context: bool) -> Flow:
    """``Flow(Chain(first, flow.layers))`` with the context's standardisation (or identity) as ``context_affine``."""
    if flow.context_affine is not None:
        raise ValueError("preprocess: the flow already has a context_affine")
    if (context is None) != (flow.context_dim == 0):
        raise ValueError(f"preprocess: the flow has context_dim {flow.context_dim}, "
                         f"got {'no' if context is None else 'a'} context")
    context_affine = None
    if context is not None:
        identity = (0.0,) * flow.context_dim, (1.0,) * flow.context_dim
        context_affine = Affine(*(_mean_and_std(context, "context") if standardize_context else identity))
    return Flow(flow.event_shape, Chain(first, flow.layers), flow.context_dim, context_affine)


def preprocess(flow: FlowSpec, x, context=None, kind: str = "standardize", alpha: float = 0.05) -> Flow:
    """``flow`` behind a fixed, parameter-free first layer, so its likelihoods stay in ``x``'s units:

    * ``"standardize"``: :func:`standardize` (vector data);
    * ``"logit"``: :class:`~jaxflow.Logit` ``(alpha)``, for data in the unit cube (dequantised
      pixels, :mod:`jaxflow.units`), any event shape; ``ValueError`` naming the first row outside
      ``[0, 1]``;
    * ``"none"``: the identity (``standardize(..., enabled=False)``).

    The context, if any, is standardised except for ``"none"``.
    """
    if kind not in PREPROCESSING:
        raise ValueError(f"preprocess: kind must be one of {PREPROCESSING}, got {kind!r}")
    if kind != "logit":
        return standardize(flow, x, context, enabled=kind == "standardize")
    rows = np.asarray(x).reshape(len(x), -1)
    outside = ~((rows >= 0) & (rows <= 1)).all(1)
    if outside.any():
        raise ValueError(f"data: row {int(np.flatnonzero(outside)[0])} has values outside [0, 1] (min {rows.min():g}, "
                         f"max {rows.max():g}); the logit preprocessing needs data in the unit cube, such as "
                         "pixels dequantised with --levels")
    return _with_first_layer(flow, Logit(alpha), context, True)


@functools.partial(jax.jit, static_argnames="flow")
def _chunk_nll_sum(flow: FlowSpec, params, x: jax.Array, context, mask: jax.Array) -> jax.Array:
    return -jnp.sum(jnp.where(mask, log_prob(flow, params, x, context=context), 0))


def mean_nll(flow: FlowSpec, params, x, context=None, chunk: int = 8192, levels: Optional[int] = None) -> float:
    """``-(1/N) sum_n log p_X(x_n | c_n)`` in nats over ``x (N, *event_shape)``, in fixed-size jitted
    chunks; with ``levels`` (pixels dequantised into the unit cube, :attr:`jaxflow.data.Splits.levels`)
    on the pixel lattice, :func:`jaxflow.units.lattice_nll`."""
    x = np.asarray(x)
    if len(x) == 0:
        raise ValueError("mean_nll: no examples (x is empty)")
    context = None if context is None else np.asarray(context)
    size = min(chunk, len(x))
    dtype = params_dtype(params)
    pad = lambda rows: np.concatenate([rows, np.zeros((size - len(rows),) + rows.shape[1:], rows.dtype)])
    total = 0.0
    for start in range(0, len(x), size):
        rows = x[start : start + size]
        mask = np.arange(size) < len(rows)
        c = None if context is None else jnp.asarray(pad(context[start : start + size]), dtype)
        total += float(_chunk_nll_sum(flow, params, jnp.asarray(pad(rows), dtype), c, mask))
    return lattice_nll(total / len(x), flow.event_size, levels)


INT32_MAX = 2**31 - 1
#: the largest batch a step may draw (its indices are int32, and 16M rows is far past any use)
MAX_BATCH = 2**24


def _require_int_in(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"TrainConfig: {name} must be an int, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"TrainConfig: {name} must be in [{low}, {high}], got {value}")


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
        for name, low, high in (("steps", 1, INT32_MAX), ("batch_size", 1, MAX_BATCH), ("eval_every", 1, INT32_MAX),
                                ("patience", 0, INT32_MAX), ("seed", 0, 2**32 - 1)):
            _require_int_in(name, getattr(self, name), low, high)
        for name in ("lr", "final_lr_fraction", "max_grad_norm"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"TrainConfig: {name} must be a finite number > 0, got {value!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"TrainConfig: lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")


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


def init_state(flow: FlowSpec, config: TrainConfig, dtype=jnp.float32, data=None, context=None) -> TrainState:
    """Step 0: ``init(flow, fold_in(key(seed), 0), data=data, context=context)``, fresh optimiser,
    batch key ``fold_in(key(seed), 1)``. ``data`` (a batch of training events) starts ActNorm layers."""
    root = jax.random.key(config.seed)
    params = init(flow, jax.random.fold_in(root, 0), dtype, data=data, context=context)
    rng = jax.random.key_data(jax.random.fold_in(root, 1))
    return TrainState(0, params, optimizer(config).init(params), rng, params, math.inf, 0)


def make_train_step(flow: FlowSpec, config: TrainConfig) -> Callable:
    """The jitted step ``(params, opt_state, rng, k, x, c) -> (params, opt_state, loss)``.

    ``x (N, D)`` is the training data (``c (N, C)`` its context, or ``None``); the batch is
    ``x[i]``, ``i ~ randint(fold_in(rng, k), (batch_size,), 0, N)``; ``loss`` is the batch's mean
    NLL. It compiles once (``k`` is traced, not static), and is shared by all configs that differ
    only in ``seed``, ``eval_every`` or ``patience``, which do not enter the step.
    """
    return _train_step(flow, dataclasses.replace(config, seed=0, eval_every=1, patience=0))


@functools.lru_cache(maxsize=16)
def _train_step(flow: FlowSpec, config: TrainConfig) -> Callable:
    tx = optimizer(config)

    def loss_fn(params, batch, context):
        return -log_prob(flow, params, batch, context=context).mean()

    @jax.jit
    def train_step(params, opt_state, rng, k, x, context):
        key = jax.random.fold_in(jax.random.wrap_key_data(rng), k)
        rows = jax.random.randint(key, (config.batch_size,), 0, x.shape[0], dtype=jnp.int32)
        loss, grads = jax.value_and_grad(loss_fn)(params, x[rows], None if context is None else context[rows])
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


def _finite_rows(x, what: str) -> None:
    bad = ~np.isfinite(np.asarray(x, np.float64).reshape(len(x), -1)).all(1)
    if bad.any():
        raise ValueError(f"{what}: row {int(np.flatnonzero(bad)[0])} holds NaN or inf ({int(bad.sum())} such rows)")


#: rows of training data that a fresh run's data-dependent initialisation (ActNorm) sees
INIT_ROWS = 1024


def fit(flow: FlowSpec, x_train, x_val, config: TrainConfig, *, context_train=None, context_val=None,
        state: Optional[TrainState] = None, checkpoint: Optional[Callable[[TrainState], None]] = None,
        progress: bool = True, train_step: Optional[Callable] = None, dtype=jnp.float32) -> FitResult:
    """Train ``flow`` on ``x_train (N, D)`` (with ``context_train (N, C)`` for a conditional flow),
    validating on ``x_val``; resumes from ``state`` if given, else starts from :func:`init_state`
    in ``dtype`` with the first :data:`INIT_ROWS` training rows as ``data``.

    Pass :func:`standardize`'s flow to fit standardised data. Every ``eval_every`` steps (and at
    the end) the validation NLL is computed, the best parameters kept, and ``checkpoint(state)``
    called; SIGINT/SIGTERM make the loop call ``checkpoint`` and return with status
    ``"interrupted"``. A non-finite training loss raises :class:`TrainingDiverged` before its
    update is applied, without another checkpoint; a non-finite row in the data is a
    ``ValueError`` naming it. ``train_step`` (from :func:`make_train_step`) may be passed to reuse
    its compilation.
    """
    for part, what in ((x_train, "training data"), (x_val, "validation data"), (context_train, "training context"),
                       (context_val, "validation context")):
        if part is not None:
            _finite_rows(part, what)
    if state is None:
        head = lambda a: None if a is None else np.asarray(a)[:INIT_ROWS]
        state = init_state(flow, config, dtype, head(x_train), head(context_train))
    train_step = make_train_step(flow, config) if train_step is None else train_step
    dtype = params_dtype(state.params)
    x = jnp.asarray(x_train, dtype)
    c = None if context_train is None else jnp.asarray(context_train, dtype)
    validate = lambda state: _validate(flow, x_val, context_val, state)
    save = checkpoint or (lambda state: None)
    last_saved = state.step if state.step > 0 else None
    val_nll = state.best_val_nll
    with _signals_caught() as received, _progress_bar(config, state, progress) as bar:
        while not is_finished(state, config):
            params, opt_state, loss = train_step(state.params, state.opt_state, state.rng, np.int32(state.step), x, c)
            loss = float(loss)
            if not math.isfinite(loss):
                raise TrainingDiverged(state.step + 1, loss, last_saved)
            state = state._replace(step=state.step + 1, params=params, opt_state=opt_state)
            if state.step % config.eval_every == 0 or state.step == config.steps:
                state, val_nll = validate(state)
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


def _validate(flow: FlowSpec, x_val, context_val, state: TrainState) -> tuple[TrainState, float]:
    """Validation NLL of the current parameters; they become the best if they improve on it."""
    val_nll = mean_nll(flow, state.params, x_val, context_val)
    if val_nll < state.best_val_nll:
        return state._replace(best_params=state.params, best_val_nll=val_nll, evals_since_best=0), val_nll
    return state._replace(evals_since_best=state.evals_since_best + 1), val_nll
