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
learning-rate decay, after an optional linear warm-up). Step ``k`` (0-based) draws its batch
with replacement from the key ``fold_in(rng, k)``, so the whole run is a pure function of
``(flow, config, data)``: a run interrupted and resumed from its checkpoint ends at exactly the
parameters of an uninterrupted one.

One dispatch runs ``steps_per_call`` steps (a ``lax.scan`` inside the jitted step), so the host
reads the losses back once per call, not once per step. On a :class:`jax.sharding.Mesh` with a
``"data"`` axis (:func:`data_mesh`) the parameters, optimiser state and data are replicated and
each batch is sharded over the axis: one ``jax.jit`` program that XLA's SPMD partitioner splits
(each device draws and differentiates its rows; the gradient's mean becomes an all-reduce), so
``N`` devices compute the function one device computes, up to float32 summation order.

Variational inference (:func:`fit_vi`, :func:`log_evidence`: a flow fitted to an unnormalised
density by the ELBO) lives in :mod:`jaxflow.vi` and runs on this module's config, optimiser, loop
(:func:`run_steps`) and checkpoints; its names load from here on first use.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import signal
import threading
from typing import Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxflow._lazy import lazy_names
from jaxflow.core.flow import log_prob
from jaxflow.core.init import init, params_dtype
from jaxflow.core.layer import Chain
from jaxflow.core.spec import Flow, FlowSpec
from jaxflow.layers.elementwise import Affine
from jaxflow.layers.logit import Logit
from jaxflow.layers.names import PREPROCESSING
from jaxflow.units import lattice_nll

# variational inference lives in jaxflow.vi (which builds on this module), loaded on first use
__getattr__, __dir__ = lazy_names(globals(), dict.fromkeys(("fit_vi", "log_evidence", "LogEvidence", "VIResult"),
                                                           "jaxflow.vi"))

__all__ = [
    "standardize",
    "preprocess",
    "PREPROCESSING",
    "mean_nll",
    "data_mesh",
    "TrainConfig",
    "EXECUTION_FIELDS",
    "TrainState",
    "learning_rate",
    "optimizer",
    "init_state",
    "make_train_step",
    "is_finished",
    "FitResult",
    "TrainingDiverged",
    "fit",
    "descent_step",
    "scanned_steps",
    "run_steps",
    "keep_best",
    "fit_vi",
    "log_evidence",
    "LogEvidence",
    "VIResult",
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

    The result is a :class:`~jaxflow.Flow` whose params are ``[{}, <flow's params>]`` (with the
    flow's context ``embedding``, if any: ``{"embedding": ..., "layers": [{}, ...]}``). With
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
    return Flow(flow.event_shape, Chain(first, flow.layers), flow.context_dim, context_affine, flow.embedding,
                flow.embedding_dim)


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


def mean_nll(flow: FlowSpec, params, x, context=None, chunk: int = 8192, levels: Optional[int] = None,
             mesh: Optional[Mesh] = None) -> float:
    """``-(1/N) sum_n log p_X(x_n | c_n)`` in nats over ``x (N, *event_shape)``, in fixed-size jitted
    chunks; with ``levels`` (pixels dequantised into the unit cube, :attr:`jaxflow.data.Splits.levels`)
    on the pixel lattice, :func:`jaxflow.units.lattice_nll`. With ``mesh`` (``params`` replicated
    on it, as :func:`fit` holds them) each chunk is sharded over its ``"data"`` axis, its size
    rounded up to a multiple of the device count."""
    x = np.asarray(x)
    if len(x) == 0:
        raise ValueError("mean_nll: no examples (x is empty)")
    context = None if context is None else np.asarray(context)
    devices = 1 if mesh is None else mesh.size
    size = -(-min(chunk, len(x)) // devices) * devices
    dtype = params_dtype(params)
    put = (lambda a: jnp.asarray(a, dtype)) if mesh is None else (lambda a: _on_mesh(a.astype(dtype), mesh, BATCH))
    pad = lambda rows: np.concatenate([rows, np.zeros((size - len(rows),) + rows.shape[1:], rows.dtype)])
    total = 0.0
    for start in range(0, len(x), size):
        rows = x[start : start + size]
        mask = np.arange(size) < len(rows)
        c = None if context is None else put(pad(context[start : start + size]))
        mask = mask if mesh is None else _on_mesh(mask, mesh, BATCH)
        total += float(_chunk_nll_sum(flow, params, put(pad(rows)), c, mask))
    return lattice_nll(total / len(x), flow.event_size, levels)


#: the mesh axis that batches are sharded over
DATA_AXIS = "data"
#: how a batch lies on the mesh (rows split over ``"data"``); parameters and data are replicated, ``PartitionSpec()``
BATCH = PartitionSpec(DATA_AXIS)


def data_mesh(devices: Union[int, str, None] = None, batch_size: Optional[int] = None) -> Mesh:
    """A 1-D :class:`~jax.sharding.Mesh` over axis ``"data"``: the first ``devices`` of
    ``jax.devices()`` (every process's, after ``jax.distributed.initialize``), ``"all"`` or ``None``
    for all of them. ``ValueError`` if more are asked for than there are, or if ``batch_size``
    (when given) does not divide by their number."""
    available = jax.devices()
    count = len(available) if devices in (None, "all") else devices
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"devices must be a positive int or 'all', got {devices!r}")
    if count > len(available):
        raise ValueError(f"{count} devices asked for, {len(available)} available "
                         f"({available[0].platform}; XLA_FLAGS=--xla_force_host_platform_device_count=N "
                         "splits a CPU into N)")
    mesh = Mesh(np.array(available[:count]), (DATA_AXIS,))
    if batch_size is not None:
        _check_divides(batch_size, mesh)
    return mesh


def _check_divides(batch_size: int, mesh: Mesh) -> None:
    if batch_size % mesh.size:
        raise ValueError(f"batch size {batch_size} does not divide evenly over {mesh.size} devices")


def _on_mesh(a, mesh: Mesh, spec: PartitionSpec = PartitionSpec()) -> jax.Array:
    """The host array ``a`` (the same on every process) as a global array laid out as ``spec``
    on ``mesh``: each process feeds the rows of its own devices
    (``jax.make_array_from_process_local_data``); a fresh buffer, so it may be donated."""
    a = np.asarray(a)
    sharding = NamedSharding(mesh, spec)
    if spec == PartitionSpec():
        return jax.make_array_from_process_local_data(sharding, a)
    rows = [index[0] for index in sharding.addressable_devices_indices_map(a.shape).values()]
    start, stop = min(r.start or 0 for r in rows), max(len(a) if r.stop is None else r.stop for r in rows)
    return jax.make_array_from_process_local_data(sharding, a[start:stop], a.shape)


INT32_MAX = 2**31 - 1
#: the largest batch a step may draw (its indices are int32, and 16M rows is far past any use)
MAX_BATCH = 2**24
#: the most steps one dispatch runs (the scan's losses are a vector of this length)
MAX_STEPS_PER_CALL = 10_000
#: TrainConfig fields that change how a run is computed, not what: a run may resume with others
EXECUTION_FIELDS = ("steps_per_call",)


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
      warmup_fraction: the cosine schedule first rises linearly from 0 to ``lr`` over this
        fraction of ``steps``, then decays over the rest (:func:`learning_rate`).
      max_grad_norm: gradients are clipped to this global norm before Adam.
      eval_every: validation NLL (and a checkpoint) every this many steps, and at the last step.
      patience: stop after this many evaluations without a better validation NLL; ``0``: never.
      seed: seeds parameter initialisation and batch order.
      steps_per_call: optimiser steps per dispatch of the jitted step (a ``lax.scan``); the loop
        reads the losses, checks divergence and signals between calls, and calls end at every
        validation step and at ``steps``. It changes how the run is computed, not what
        (:data:`EXECUTION_FIELDS`): the same batches, the same steps, the same validations.
    """

    steps: int = 5000
    batch_size: int = 256
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    final_lr_fraction: float = 0.01
    warmup_fraction: float = 0.0
    max_grad_norm: float = 10.0
    eval_every: int = 250
    patience: int = 20
    seed: int = 0
    steps_per_call: int = 1

    def __post_init__(self):
        for name, low, high in (("steps", 1, INT32_MAX), ("batch_size", 1, MAX_BATCH), ("eval_every", 1, INT32_MAX),
                                ("patience", 0, INT32_MAX), ("seed", 0, 2**32 - 1),
                                ("steps_per_call", 1, MAX_STEPS_PER_CALL)):
            _require_int_in(name, getattr(self, name), low, high)
        for name in ("lr", "final_lr_fraction", "max_grad_norm"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"TrainConfig: {name} must be a finite number > 0, got {value!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"TrainConfig: lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        fraction = self.warmup_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
            raise ValueError(f"TrainConfig: warmup_fraction must be a number in [0, 1), got {fraction!r}")


def learning_rate(config: TrainConfig) -> optax.Schedule:
    """The learning rate of step ``k`` (0-based): ``lr`` for ``"constant"``; for ``"cosine"``, with
    ``W = min(round(warmup_fraction * steps), steps - 1)`` warm-up steps and ``a = final_lr_fraction``,

    .. math::

        \\eta_k = \\text{lr} \\cdot \\frac{k}{W} \\quad (k < W), \\qquad
        \\eta_k = \\text{lr} \\left(a + (1 - a) \\, \\frac{1 + \\cos(\\pi (k - W) / (\\text{steps} - W))}{2}\\right)
        \\quad (k \\ge W).

    A warm-up keeps Adam's first steps small: its first updates move every parameter by about
    ``lr`` whatever the size of its gradient. Measured on moons (``jaxflow fit``'s model, 4000
    steps, 12 seeds): a 5 % warm-up took the seeds' test NLL from 0.3054 +- 0.0073 nats (worst
    0.327) to 0.3042 +- 0.0014 (worst 0.306), but the median from 0.3025 to 0.3044 and ``jaxflow
    demo`` from 0.3029 to 0.3054, and a 2 % one left the worst seed at 0.331; so it is off by default.
    """
    if config.lr_schedule == "constant":
        return optax.constant_schedule(config.lr)
    warmup = min(round(config.warmup_fraction * config.steps), config.steps - 1)
    decay = optax.cosine_decay_schedule(config.lr, config.steps - warmup, alpha=config.final_lr_fraction)
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, config.lr, warmup), decay], [warmup])


def optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """``clip_by_global_norm(max_grad_norm)`` then Adam at the :func:`learning_rate` schedule."""
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(learning_rate(config)))


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


def make_train_step(flow: FlowSpec, config: TrainConfig, mesh: Optional[Mesh] = None) -> Callable:
    """The jitted chunk of ``K = steps_per_call`` steps,
    ``(params, opt_state, rng, k, n, x, c) -> (params, opt_state, losses)``.

    ``x (N, D)`` is the training data (``c (N, C)`` its context, or ``None``); step ``j`` draws the
    batch ``x[i]``, ``i ~ randint(fold_in(rng, j), (batch_size,), 0, N)``. The chunk runs steps
    ``k, ..., k + n - 1`` (``1 <= n <= K``) and returns ``losses (K,)``, ``losses[i]`` the batch
    mean NLL of step ``k + i``; an update is applied only while every loss so far is finite, so
    after a non-finite ``losses[i]`` the returned parameters are those after step ``k + i - 1``
    and later entries are NaN, as are those past ``n``. All ``K`` steps are computed and the
    discarded ones dropped by a select (see ``bench/conv_scan.py`` for why not ``lax.cond``), so
    a chunk cut short at ``eval_every`` or ``steps`` costs a full one. The parameter and optimiser
    buffers are donated. With ``mesh`` (default: one device) the batch is sharded over its
    ``"data"`` axis and every input and output is replicated. It compiles once (``k`` and ``n`` are traced), and is
    shared by all configs that differ only in ``seed``, ``eval_every`` or ``patience``.
    """
    return _train_step(flow, dataclasses.replace(config, seed=0, eval_every=1, patience=0), mesh or data_mesh(1))


@functools.lru_cache(maxsize=16)
def _train_step(flow: FlowSpec, config: TrainConfig, mesh: Mesh) -> Callable:
    batch_sharding = NamedSharding(mesh, BATCH)

    def loss_fn(params, key, x, context):
        rows = jax.random.randint(key, (config.batch_size,), 0, x.shape[0], dtype=jnp.int32)
        shard = lambda a: None if a is None else jax.lax.with_sharding_constraint(a[rows], batch_sharding)
        return -log_prob(flow, params, shard(x), context=shard(context)).mean()

    chunk = scanned_steps(descent_step(optimizer(config), loss_fn), config.steps_per_call)
    return jax.jit(chunk, donate_argnums=(0, 1), out_shardings=NamedSharding(mesh, PartitionSpec()))


def descent_step(tx: optax.GradientTransformation, loss_fn: Callable) -> Callable:
    """One optimiser step on ``loss_fn(params, key, *args)``:
    ``(params, opt_state, key, *args) -> (params, opt_state, loss)``."""

    def step(params, opt_state, key, *args):
        loss, grads = jax.value_and_grad(loss_fn)(params, key, *args)
        with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes int32 counts with floats
            updates, new_opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_opt_state, loss

    return step


def scanned_steps(step: Callable, steps_per_call: int) -> Callable:
    """``K = steps_per_call`` calls of ``step`` (:func:`descent_step`) in one ``lax.scan``,
    ``(params, opt_state, rng, k, n, *args) -> (params, opt_state, losses (K,))``: step ``k + i``
    gets the key ``fold_in(rng, k + i)``, and only the first ``n`` steps, up to the first
    non-finite loss, are applied (:func:`make_train_step` states the contract)."""

    def chunk(params, opt_state, rng, k, n, *args):
        dtype = params_dtype(params)

        def body(carry, i):
            params, opt_state, finite_so_far = carry
            active = finite_so_far & (i < n)
            key = jax.random.fold_in(jax.random.wrap_key_data(rng), k + i)
            new_params, new_opt_state, loss = step(params, opt_state, key, *args)
            # a select, not lax.cond: XLA:CPU runs convolution gradients inside a conditional's
            # (or a loop's) body ~40x slower (bench/conv_scan.py); an inactive step is discarded
            keep = active & jnp.isfinite(loss)
            select = lambda new, old: jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, old)
            loss = jnp.where(active, loss, jnp.array(jnp.nan, dtype))
            return (select(new_params, params), select(new_opt_state, opt_state), keep), loss

        # unroll=0 for K == 1: straight-line code, no while loop around the step (see above)
        (params, opt_state, _), losses = jax.lax.scan(body, (params, opt_state, jnp.array(True)),
                                                      jnp.arange(steps_per_call, dtype=jnp.int32),
                                                      unroll=0 if steps_per_call == 1 else 1)
        return params, opt_state, losses

    return chunk


def is_finished(state: TrainState, config: TrainConfig) -> bool:
    """All steps done, or early stopping triggered."""
    return state.step >= config.steps or 0 < config.patience <= state.evals_since_best


class FitResult(NamedTuple):
    """``status``: ``"completed"``, ``"early_stopped"`` or ``"interrupted"`` (then ``signal`` is its number)."""

    state: TrainState
    status: str
    signal: Optional[int] = None


class TrainingDiverged(RuntimeError):
    """The training loss became non-finite; ``step`` is the 1-based step that produced it and
    ``state`` the run just before it (the last good parameters, not checkpointed)."""

    def __init__(self, step: int, loss: float, last_checkpoint_step: Optional[int], state: Optional[TrainState] = None):
        self.step, self.loss, self.last_checkpoint_step, self.state = step, loss, last_checkpoint_step, state
        kept = ("no checkpoint was written yet" if last_checkpoint_step is None
                else f"the last good checkpoint (step {last_checkpoint_step}) is kept")
        super().__init__(f"training diverged: the loss is {loss} at step {step}; {kept}; "
                         "try a smaller learning rate, or couplings with the stable scale 'tanh'")


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
        progress: bool = True, train_step: Optional[Callable] = None, dtype=jnp.float32,
        mesh: Optional[Mesh] = None, log: Optional[Callable[[int, float, float], None]] = None) -> FitResult:
    """Train ``flow`` on ``x_train (N, D)`` (with ``context_train (N, C)`` for a conditional flow),
    validating on ``x_val``; resumes from ``state`` if given, else starts from :func:`init_state`
    in ``dtype`` with the first :data:`INIT_ROWS` training rows as ``data``.

    Pass :func:`standardize`'s flow to fit standardised data. Every ``eval_every`` steps (and at
    the end) the validation NLL is computed, the best parameters kept, and ``checkpoint(state)``
    called, then ``log(step, train_nll, val_nll)`` with the mean training batch NLL of the steps
    since the previous validation (the learning curve); SIGINT/SIGTERM make the loop call
    ``checkpoint`` (after the current call of ``steps_per_call`` steps) and return with status ``"interrupted"``. A non-finite training
    loss raises :class:`TrainingDiverged` naming its step, with the parameters before its update
    and without another checkpoint; a non-finite row in the data is a ``ValueError`` naming it.
    ``train_step`` (from :func:`make_train_step`, for the same ``mesh``) may be passed to reuse
    its compilation. ``mesh`` (:func:`data_mesh`; default one device) shards every batch over its
    ``"data"`` axis; ``batch_size`` must divide by its size. ``state`` is copied onto the mesh,
    never donated.
    """
    if x_val is None:
        raise ValueError("fit: x_val is required (validation picks the best parameters and stops early); "
                         "hold out some rows, e.g. x_train[:-n], x_train[-n:]")
    for part, what in ((x_train, "training data"), (x_val, "validation data"), (context_train, "training context"),
                       (context_val, "validation context")):
        if part is not None:
            _finite_rows(part, what)
    mesh = mesh or data_mesh(1)
    _check_divides(config.batch_size, mesh)
    if state is None:
        head = lambda a: None if a is None else np.asarray(a)[:INIT_ROWS]
        state = init_state(flow, config, dtype, head(x_train), head(context_train))
    train_step = make_train_step(flow, config, mesh) if train_step is None else train_step
    dtype = params_dtype(state.params)
    replicate = lambda tree: jax.tree.map(lambda a: _on_mesh(a, mesh), tree)
    state = state._replace(**replicate({"params": state.params, "opt_state": state.opt_state, "rng": state.rng,
                                        "best_params": state.best_params}))
    x, c = (None if a is None else replicate(np.asarray(a, dtype)) for a in (x_train, context_train))
    log_means = None if log is None else lambda step, losses, val_nll: log(step, float(losses.mean()), val_nll)
    return run_steps(state, config, lambda *state_args: train_step(*state_args, x, c),
                     lambda state: _validate(flow, x_val, context_val, state, mesh), checkpoint, progress, log_means)


def run_steps(state: TrainState, config: TrainConfig, run_chunk: Callable, validate: Callable,
              checkpoint: Optional[Callable[[TrainState], None]] = None, progress: bool = True,
              log: Optional[Callable[[int, np.ndarray, float], None]] = None, metric: str = "val_nll") -> FitResult:
    """The training loop of :func:`fit` (and :func:`jaxflow.vi.fit_vi`) from ``state`` until :func:`is_finished`.

    ``run_chunk(params, opt_state, rng, k, n) -> (params, opt_state, losses)`` runs steps ``k, ...,
    k + n - 1`` (:func:`make_train_step`'s contract); every ``eval_every`` steps and at the end
    ``validate(state) -> (state, value)`` scores and keeps the best parameters, then
    ``checkpoint(state)`` and ``log(step, losses since the last validation, value)``. A non-finite
    loss raises :class:`TrainingDiverged`; SIGINT/SIGTERM save and return ``"interrupted"``. The
    progress bar shows the last loss and the last ``metric``.
    """
    save = checkpoint or (lambda state: None)
    last_saved = state.step if state.step > 0 else None
    value = state.best_val_nll
    train_losses = []  # the batch losses since the last validation
    with _signals_caught() as received, _progress_bar(config, state, progress) as bar:
        while not is_finished(state, config):
            count = min(config.steps_per_call, config.steps - state.step, config.eval_every - state.step % config.eval_every)
            params, opt_state, losses = run_chunk(state.params, state.opt_state, state.rng, np.int32(state.step),
                                                  np.int32(count))
            losses = np.asarray(losses)[:count]  # waits for the call: one host sync per call
            done = int(np.argmin(np.isfinite(losses))) if not np.isfinite(losses).all() else count
            state = state._replace(step=state.step + done, params=params, opt_state=opt_state)
            if done < count:
                raise TrainingDiverged(state.step + 1, float(losses[done]), last_saved, state)
            train_losses.append(losses)
            if state.step % config.eval_every == 0 or state.step == config.steps:
                state, value = validate(state)
                save(state)
                last_saved = state.step
                if log is not None:
                    log(state.step, np.concatenate(train_losses), value)
                train_losses = []
            if progress:
                bar.set_postfix({"loss": f"{losses[-1]:.4f}", metric: f"{value:.4f}"}, refresh=False)
                bar.update(count)
            if received:
                if last_saved != state.step:
                    save(state)
                return FitResult(state, "interrupted", received[0])
    return FitResult(state, "completed" if state.step >= config.steps else "early_stopped")


def _validate(flow: FlowSpec, x_val, context_val, state: TrainState,
              mesh: Optional[Mesh] = None) -> tuple[TrainState, float]:
    """Validation NLL of the current parameters; a copy of them becomes the best if they improve
    on it (the training step donates the parameters' buffers)."""
    return keep_best(state, mean_nll(flow, state.params, x_val, context_val, mesh=mesh))


def keep_best(state: TrainState, value: float) -> tuple[TrainState, float]:
    """``(state, value)`` after an evaluation scoring the current parameters ``value`` (lower is
    better): a copy of them becomes the best if they improve on ``best_val_nll`` (the training step
    donates the parameters' buffers), else ``evals_since_best`` counts one more."""
    if value < state.best_val_nll:
        best = jax.tree.map(jnp.copy, state.params)
        return state._replace(best_params=best, best_val_nll=value, evals_since_best=0), value
    return state._replace(evals_since_best=state.evals_since_best + 1), value
