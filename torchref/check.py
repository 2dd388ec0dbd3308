"""Check a trained jaxflow run against its torch twin: ``python -m torchref.check RUN_DIR [DATA]``.

Loads the run's best parameters, converts them with :func:`torchref.from_jax`, and prints the
largest ``|log p_jax(x | c) - log p_torch(x | c)|`` over ``DATA``'s test split (a built-in name;
default: the dataset the run was fitted on) or all rows of a file. This is the demo's former
torchref line, kept out of the product: ``jaxflow`` does not import its own test oracle.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

import numpy as np
import torch

import jaxflow
from jaxflow import checkpoint
from jaxflow.data import BUILTIN, load_arrays, load_dataset
from torchref.convert import from_jax, to_torch_layout

__all__ = ["max_log_prob_difference", "main"]


def max_log_prob_difference(flow: jaxflow.FlowSpec, params, x: np.ndarray, context: Optional[np.ndarray] = None) -> float:
    """``max |jaxflow.log_prob - torchref log_prob|`` over the rows of ``x`` (and ``context``).

    ``x`` is in jaxflow's layout: images ``(N, H, W, C)`` reach the torch model as ``(N, C, H, W)``.
    """
    model = from_jax(flow, params)
    with torch.no_grad():
        c = None if context is None else torch.from_numpy(np.asarray(context))
        events = np.ascontiguousarray(to_torch_layout(x, tuple(flow.event_shape)))
        torch_lp = model.log_prob(torch.from_numpy(events), c).numpy()
    jax_lp = np.asarray(jaxflow.log_prob(flow, params, x, context=context))
    return float(np.max(np.abs(jax_lp - torch_lp)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torchref.check", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("data", metavar="DATA", nargs="?", help="built-in name or file; default: the run's data")
    args = parser.parse_args(argv)
    try:
        ckpt = checkpoint.load(args.run_dir)
        source = args.data or ckpt.run.get("data")
        if source in BUILTIN:
            splits = load_dataset(source)
            x, context = splits.test, splits.test_context
        else:
            x, context = load_arrays(source)
    except (ValueError, OSError) as err:
        print(f"torchref.check: error: {err}", file=sys.stderr)
        return 1
    difference = max_log_prob_difference(ckpt.flow, ckpt.state.best_params, x, context)
    print(f"torchref: converted; max |log_prob difference| {difference:.2e} over {len(x)} rows of {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
