"""The ``jaxflow`` command: fit, eval, sample, plot and the demo.

::

    jaxflow fit DATA --out RUN_DIR [--steps N] [--batch-size B] [--num-flows L] [--hidden-dim H]
                     [--num-hidden K] [--lr LR] [--scale exp|tanh|sigmoid] [--mask half|alternate]
                     [--permute none|reverse|random] [--context-columns J,K] [--seed S]
    jaxflow eval RUN_DIR DATA [--json]
    jaxflow sample RUN_DIR -n N --out FILE [--context C1,C2]   # .npy or .csv
    jaxflow plot RUN_DIR [--data DATA] [--context C ...] --out FILE.png
    jaxflow demo [--out DIR]

``DATA`` is a built-in name (:data:`jaxflow.data.BUILTIN`) or a ``.npy``/``.npz``/``.csv`` file;
a conditional density ``p(x | c)`` is fitted when the data carry a context (an ``.npz`` with keys
``x`` and ``context``, ``--context-columns`` of a file, or a conditional built-in).
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
from jaxflow.layers.names import MASKS, PERMUTATIONS, SCALES

__all__ = ["main", "CLIError", "DEFAULTS"]


class CLIError(Exception):
    """A bad command line or input; its message is printed as one line."""


#: Defaults of ``fit`` and the settings of ``demo`` (tuned on moons, noise 0.05, for about a minute of CPU).
DEFAULTS = {"steps": 5000, "batch_size": 256, "num_flows": 10, "hidden_dim": 64, "num_hidden": 2, "lr": 3e-3,
            "scale": "tanh", "mask": "half", "permute": "none", "seed": 0, "eval_every": 250, "patience": 20}


#: the most samples one ``sample`` call draws (int32 shapes)
MAX_SAMPLES = 2**31 - 1


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
    p.add_argument("--steps", type=int, help="optimiser steps")
    p.add_argument("--batch-size", type=int, help="examples per step")
    p.add_argument("--num-flows", type=int, help="coupling layers L")
    p.add_argument("--hidden-dim", type=int, help="conditioner width H")
    p.add_argument("--num-hidden", type=int, help="hidden layers per conditioner K")
    p.add_argument("--lr", type=float, help="peak Adam learning rate, cosine decay")
    p.add_argument("--scale", choices=SCALES, help="scale map: exp (the article), tanh (soft clamp), sigmoid (Glow)")
    p.add_argument("--mask", choices=MASKS, help="coupling mask: half (the article's split and swap) or alternate")
    p.add_argument("--permute", choices=("none",) + PERMUTATIONS,
                   help="a fixed permutation after each coupling (random: one permutation, seed 0, repeated)")
    p.add_argument("--seed", type=int, help="seed of initialisation and batch order")
    p.add_argument("--eval-every", type=int, help="validate and checkpoint every N steps")
    p.add_argument("--patience", type=int, help="stop after this many validations without improvement; 0: never")
    p.set_defaults(**DEFAULTS)
    p.add_argument("--no-standardize", action="store_true", help="fit the raw data, not (x - mean) / std")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="jaxflow", formatter_class=formatter, description="Fit, evaluate, sample and plot normalizing flows (RealNVP and compositions; conditional densities p(x | c)).")
    parser.add_argument("--version", action="version", version=f"jaxflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fit", formatter_class=formatter, help="train a flow on DATA (resumes an interrupted run in RUN_DIR)")
    p.add_argument("data", metavar="DATA", help=f"built-in ({', '.join(BUILTIN)}) or .npy/.npz/.csv file")
    p.add_argument("--out", required=True, metavar="RUN_DIR")
    p.add_argument("--context-columns", type=_columns, metavar="J,K",
                   help="0-based columns of DATA that are the context c of a conditional density p(x | c)")
    _add_model_options(p)
    p = sub.add_parser("eval", formatter_class=formatter, help="NLL of DATA under the model in RUN_DIR (a built-in's test split, a file's held-out rows)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--split", choices=("train", "val", "test", "all"),
                   help="rows to score; default: a built-in's test split, a file's held-out validation rows "
                        "(the 10%% that fit did not train on)")
    p.add_argument("--context-columns", type=_columns, metavar="J,K", help="as for fit")
    p.add_argument("--json", action="store_true", help="print one JSON object (NLL null if not finite)")
    p = sub.add_parser("sample", formatter_class=formatter, help="draw samples from the model in RUN_DIR")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("-n", type=int, required=True, dest="num_samples")
    p.add_argument("--out", required=True, metavar="FILE", help=".npy or .csv")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--context", type=_floats, metavar="C1,C2", help="the context of a conditional model")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    p = sub.add_parser("plot", formatter_class=formatter, help="PNG of data, samples and learned density (2-D models)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--data", metavar="DATA")
    p.add_argument("--context", type=_floats, action="append", metavar="C1,C2",
                   help="a context of a conditional model; repeat for one density panel each")
    p.add_argument("--out", required=True, metavar="FILE.png")
    p.add_argument("--force", action="store_true", help="overwrite FILE.png if it exists")
    p = sub.add_parser("demo", formatter_class=formatter, help="the main job: fit moons, compare with the true entropy, plot")
    p.add_argument("--out", default=os.path.join("runs", "demo"), metavar="DIR", help="default runs/demo")
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"], help=f"default {DEFAULTS['steps']}")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``jaxflow`` console script; returns the exit status.

    The parser needs no jax, so ``--help`` and bad usage answer at once; the commands
    (:mod:`jaxflow.commands`) are imported after parsing.
    """
    args = _parser().parse_args(argv)
    from jaxflow import commands

    return commands.run(args)


if __name__ == "__main__":
    sys.exit(main())
