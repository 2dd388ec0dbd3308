"""The ``jaxflow`` command: fit, eval, sample, plot and the demo.

::

    jaxflow fit DATA --out RUN_DIR [--steps N] [--batch-size B] [--num-flows L] [--hidden-dim H]
                     [--num-hidden K] [--lr LR] [--scale exp|tanh|sigmoid] [--seed S]
    jaxflow eval RUN_DIR DATA [--json]
    jaxflow sample RUN_DIR -n N --out FILE          # .npy or .csv
    jaxflow plot RUN_DIR [--data DATA] --out FILE.png
    jaxflow demo [--out DIR]

``DATA`` is a built-in name (:data:`jaxflow.data.BUILTIN`) or a ``.npy``/``.npz``/``.csv`` file.
Every bad input ends in one line ``jaxflow: error: ...`` on stderr and exit status 1, before
anything existing is touched; an interrupted ``fit`` (SIGINT/SIGTERM) saves its checkpoint and
exits with ``128 + signal``; rerunning the same command resumes it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from typing import Optional, Sequence

import jax
import numpy as np

from jaxflow import checkpoint
from jaxflow.data import BUILTIN, DataError, Splits, load_array, load_dataset
from jaxflow.scales import SCALES
from jaxflow.spec import RealNVP
from jaxflow.train import TrainConfig, TrainingDiverged, data_sample, fit, mean_nll, standardization

__all__ = ["main", "CLIError", "DEFAULTS"]


class CLIError(Exception):
    """A bad command line or input; its message is printed as one line."""


class _Interrupted(Exception):
    """``fit`` stopped by a signal after saving; the exit status is ``128 + signal``."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


#: Defaults of ``fit`` and the settings of ``demo`` (tuned on moons, noise 0.05, for about a minute of CPU).
DEFAULTS = {"steps": 5000, "batch_size": 256, "num_flows": 10, "hidden_dim": 64, "num_hidden": 2, "lr": 3e-3,
            "scale": "tanh", "seed": 0, "eval_every": 250, "patience": 20}


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, help="optimiser steps")
    p.add_argument("--batch-size", type=int, help="examples per step")
    p.add_argument("--num-flows", type=int, help="coupling layers L")
    p.add_argument("--hidden-dim", type=int, help="conditioner width H")
    p.add_argument("--num-hidden", type=int, help="hidden layers per conditioner K")
    p.add_argument("--lr", type=float, help="peak Adam learning rate, cosine decay")
    p.add_argument("--scale", choices=SCALES, help="scale map: exp (the article), tanh (soft clamp), sigmoid (Glow)")
    p.add_argument("--seed", type=int, help="seed of initialisation and batch order")
    p.add_argument("--eval-every", type=int, help="validate and checkpoint every N steps")
    p.add_argument("--patience", type=int, help="stop after this many validations without improvement; 0: never")
    p.set_defaults(**DEFAULTS)
    p.add_argument("--no-standardize", action="store_true", help="fit the raw data, not (x - mean) / std")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxflow", description="Fit, evaluate and sample RealNVP flows.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fit", help="train a flow on DATA (resumes an interrupted run in RUN_DIR)")
    p.add_argument("data", metavar="DATA", help=f"built-in ({', '.join(BUILTIN)}) or .npy/.npz/.csv file")
    p.add_argument("--out", required=True, metavar="RUN_DIR")
    _add_model_options(p)
    p = sub.add_parser("eval", help="NLL of DATA under the model in RUN_DIR (a built-in's test split)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = sub.add_parser("sample", help="draw samples from the model in RUN_DIR")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("-n", type=int, required=True, dest="num_samples")
    p.add_argument("--out", required=True, metavar="FILE", help=".npy or .csv")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("plot", help="PNG of data, samples and learned density (2-D models)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--data", metavar="DATA")
    p.add_argument("--out", required=True, metavar="FILE.png")
    p = sub.add_parser("demo", help="the main job: fit moons, compare with the true entropy, plot")
    p.add_argument("--out", default=os.path.join("runs", "demo"), metavar="DIR", help="default runs/demo")
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"], help=f"default {DEFAULTS['steps']}")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


@contextlib.contextmanager
def _atomic_output(path: str):
    """Yield a temporary path beside ``path`` (same extension); move it onto ``path`` only on success."""
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp-{os.getpid()}{ext}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _check_output(path: str, extensions: Sequence[str]) -> None:
    ext = os.path.splitext(path)[1].lower()
    if ext not in extensions:
        raise CLIError(f"{path}: unknown output format {ext or '(no extension)'!r}; use {' or '.join(extensions)}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise CLIError(f"{path}: directory {parent} does not exist")


def _fingerprint(splits: Splits) -> str:
    """SHA-256 of the training and validation arrays: a resumed run must see the same data."""
    digest = hashlib.sha256()
    for part in (splits.train, splits.val):
        digest.update(np.ascontiguousarray(part).tobytes())
    return digest.hexdigest()


def _differences(old: dict, new: dict) -> list[str]:
    """``"key: old -> new"`` for every key whose value differs."""
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _prepare_run_dir(run_dir: str, flow: RealNVP, config: TrainConfig, run: dict) -> Optional[checkpoint.Checkpoint]:
    """The checkpoint to resume from, ``None`` for a fresh run; refuses a foreign or different run."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise CLIError(f"{run_dir}: exists and is not a directory")
    if not checkpoint.exists(run_dir):
        if os.path.isdir(run_dir) and os.listdir(run_dir):
            raise CLIError(f"{run_dir}: directory is not empty and holds no jaxflow run; choose another --out")
        return None
    meta = checkpoint.read_metadata(run_dir)
    changed = (_differences(meta["spec"], dataclasses.asdict(flow)) + _differences(meta["train"], dataclasses.asdict(config))
               + _differences(meta["run"], run))
    if changed:
        raise CLIError(f"{run_dir}: holds a run of a different configuration ({'; '.join(changed)}); "
                       "choose another --out")
    return checkpoint.load(run_dir)


def _fit(data: str, run_dir: str, options: dict, standardize: bool, quiet: bool):
    """Fit (``options``: :data:`DEFAULTS`' keys) or resume; returns ``(checkpoint, splits)`` of the finished run."""
    splits = load_dataset(data)
    flow, config = _spec_and_config(splits.train.shape[1], options)
    run = {"data": splits.name, "data_sha256": _fingerprint(splits), "standardize": standardize}
    previous = _prepare_run_dir(run_dir, flow, config, run)
    try:
        std = standardization(splits.train, standardize) if previous is None else previous.standardization
    except ValueError as err:
        raise CLIError(f"{data}: {err}") from None
    if previous is not None:
        print(f"resuming {run_dir} from step {previous.state.step} of {config.steps}", file=sys.stderr)
    save = lambda state: checkpoint.save(run_dir, flow, config, std, state, run)
    start = time.perf_counter()
    try:
        result = fit(flow, std, splits.train, splits.val, config, state=previous and previous.state,
                     checkpoint=save, progress=not quiet)
    except TrainingDiverged as err:
        raise CLIError(f"{err} (in {run_dir})") from None
    state = result.state
    if result.status == "interrupted":
        print(f"jaxflow: interrupted at step {state.step}; checkpoint saved in {run_dir}; "
              "run the same command to resume", file=sys.stderr)
        raise _Interrupted(result.signal)
    print(f"{result.status.replace('_', ' ')} at step {state.step} in {time.perf_counter() - start:.1f} s; "
          f"best validation NLL {state.best_val_nll:.4f} nats; saved in {run_dir}")
    return checkpoint.Checkpoint(flow, config, std, state, run), splits


def _check_dim(ckpt: checkpoint.Checkpoint, x: np.ndarray, name: str) -> None:
    if x.shape[1] != ckpt.flow.dim:
        raise CLIError(f"{name}: data have {x.shape[1]} columns, the model expects dim {ckpt.flow.dim}")


def _evaluate(ckpt: checkpoint.Checkpoint, x: np.ndarray, name: str) -> dict:
    """``nll_nats``, ``bits_per_dim = nll / (D ln 2)`` and ``num_examples`` of ``x`` under the best parameters."""
    _check_dim(ckpt, x, name)
    nll = mean_nll(ckpt.flow, ckpt.state.best_params, ckpt.standardization, x)
    return {"nll_nats": nll, "bits_per_dim": nll / (x.shape[1] * math.log(2)), "num_examples": len(x)}


def _eval_data(source: str) -> tuple[np.ndarray, Optional[float]]:
    """A built-in's test split (and its entropy), or all rows of a file."""
    if source in BUILTIN:
        splits = load_dataset(source)
        return splits.test, splits.entropy
    return load_array(source), None


def _cmd_fit(args) -> None:
    _fit(args.data, args.out, {key: getattr(args, key) for key in DEFAULTS}, not args.no_standardize, args.quiet)


def _spec_and_config(dim: int, options: dict) -> tuple[RealNVP, TrainConfig]:
    """The spec (identity-initialised) and training config of the command-line ``options``."""
    try:
        flow = RealNVP(dim=dim, num_flows=options["num_flows"], hidden_dim=options["hidden_dim"],
                       num_hidden=options["num_hidden"], scale=options["scale"], identity_init=True)
        config = TrainConfig(**{key: options[key] for key in
                                ("steps", "batch_size", "lr", "eval_every", "patience", "seed")})
    except (TypeError, ValueError) as err:
        raise CLIError(str(err)) from None
    return flow, config


def _cmd_eval(args) -> None:
    ckpt = checkpoint.load(args.run_dir)
    x, entropy = _eval_data(args.data)
    result = {"dataset": args.data, **_evaluate(ckpt, x, args.data), "step": ckpt.state.step}
    if entropy is not None:
        result["entropy_nats"] = entropy
    if args.json:
        print(json.dumps(result))
        return
    line = (f"{args.data}: NLL {result['nll_nats']:.4f} nats ({result['bits_per_dim']:.4f} bits/dim) "
            f"on {result['num_examples']} examples")
    print(line + (f"; true entropy {entropy:.4f} nats" if entropy is not None else ""))


def _cmd_sample(args) -> None:
    _check_output(args.out, (".npy", ".csv"))
    if args.num_samples < 1:
        raise CLIError(f"-n must be >= 1, got {args.num_samples}")
    ckpt = checkpoint.load(args.run_dir)
    x = np.asarray(data_sample(ckpt.flow, ckpt.state.best_params, ckpt.standardization,
                               jax.random.key(args.seed), args.num_samples))
    with _atomic_output(args.out) as tmp:
        if tmp.endswith(".npy"):
            np.save(tmp, x)
        else:
            np.savetxt(tmp, x, delimiter=",", header=",".join(f"x{j}" for j in range(x.shape[1])), comments="")
    print(f"wrote {args.num_samples} samples to {args.out}")


def _plot(ckpt: checkpoint.Checkpoint, data: Optional[np.ndarray], out: str, title: str = "") -> None:
    from jaxflow.plotting import plot_2d

    if ckpt.flow.dim != 2:
        raise CLIError(f"plot draws 2-D models only; this model has dim {ckpt.flow.dim}")
    with _atomic_output(out) as tmp:
        plot_2d(tmp, ckpt.flow, ckpt.state.best_params, ckpt.standardization, data, title=title)


def _cmd_plot(args) -> None:
    _check_output(args.out, (".png",))
    ckpt = checkpoint.load(args.run_dir)
    data = None
    if args.data is not None:
        data = _eval_data(args.data)[0]
        _check_dim(ckpt, data, args.data)
    _plot(ckpt, data, args.out)
    print(f"wrote {args.out}")


def _torchref_difference(ckpt: checkpoint.Checkpoint, x: np.ndarray) -> Optional[float]:
    """Largest ``|log p_jax(u) - log p_torch(u)|`` over standardised ``x``; ``None`` without torch/torchref."""
    try:
        import torch
        import torchref
    except ImportError:
        return None
    from jaxflow.flow import log_prob

    u = (x - np.asarray(ckpt.standardization.mean)) / np.asarray(ckpt.standardization.scale)
    model = torchref.from_jax(ckpt.flow, ckpt.state.best_params)
    with torch.no_grad():
        torch_lp = model.log_prob(torch.from_numpy(u)).numpy()
    return float(np.max(np.abs(np.asarray(log_prob(ckpt.flow, ckpt.state.best_params, u)) - torch_lp)))


def _cmd_demo(args) -> None:
    options = {**DEFAULTS, "steps": args.steps, "patience": 0}
    print(f"jaxflow demo: RealNVP with {options['num_flows']} coupling layers ({options['scale']} scale), "
          f"{options['steps']} Adam steps on moons (noise 0.05), run directory {args.out}")
    start = time.perf_counter()
    ckpt, splits = _fit("moons", args.out, options, True, args.quiet)
    result = _evaluate(ckpt, splits.test, "moons")
    print(f"test NLL {result['nll_nats']:.4f} nats on {result['num_examples']} fresh samples; "
          f"true entropy {splits.entropy:.4f} nats; gap {result['nll_nats'] - splits.entropy:+.4f} nats")
    difference = _torchref_difference(ckpt, splits.test)
    if difference is None:
        print("torchref: skipped (needs torch and torchref: pip install -e '.[torch]')")
    else:
        print(f"torchref: converted; max |log_prob difference| {difference:.2e} over the test set")
    png = os.path.join(args.out, "demo.png")
    _plot(ckpt, splits.test, png, title=f"moons: test NLL {result['nll_nats']:.3f} vs entropy {splits.entropy:.3f}")
    print(f"wrote {png} (data, samples, learned density) in {time.perf_counter() - start:.0f} s total")


_COMMANDS = {"fit": _cmd_fit, "eval": _cmd_eval, "sample": _cmd_sample, "plot": _cmd_plot, "demo": _cmd_demo}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``jaxflow`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
