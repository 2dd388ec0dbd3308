"""Class-conditional image flow on scikit-learn's 8x8 digits: the label, one-hot, as the context.

    nice python examples/class_conditional_digits.py --out digits_by_class.png          # a few minutes on 2 CPU cores
    nice python examples/class_conditional_digits.py --out glow.png --flow glow --embedding-dim 8

Trains the same image flow twice on the digits' training split (dequantised pixels behind a
fixed logit, as ``jaxflow fit digits-images``): once as ``p(x | y)`` with the one-hot label ``y``
as its context (broadcast to every pixel as channels of every conditioner's input; with
``--embedding-dim E`` a learned MLP maps it to ``E`` numbers first), once unconditional, ``p(x)``, of
the same size. Prints both test bits/dim on the pixel lattice. Exact models differ by the label's
information: ``-log p(x | y) = -log p(x) - log p(y | x) + log p(y)``, so with (nearly) uniform
classes ``p(x | y)`` beats ``p(x)`` by at most ``log2(10) / 64 = 0.052`` bits/dim, reached where the
image determines its label. Flows are not exact: a larger gap says that the mixture of the
conditional flows, ``sum_y p(y) q(x | y)``, is a better model of ``x`` than the unconditional flow
(its NLL is at most the conditional one plus ``log2(10) / 64``). Writes a figure of samples, one row per class, to ``--out``
only (its folder must exist); runs from any directory.
"""

import argparse
import os
import time

import jax
import numpy as np

import jaxflow as jf
from jaxflow import data, train
from jaxflow.units import bits_per_dim

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", required=True, metavar="FILE.png", help="the figure to write (its folder must exist)")
parser.add_argument("--flow", choices=("realnvp", "glow"), default="realnvp",
                    help="MultiScaleRealNVP (default) or Glow, the command line's digits-images model size")
parser.add_argument("--embedding-dim", type=int, default=0,
                    help="E > 0: a learned MLP(32, 1) maps the one-hot label to E numbers; 0: the label itself")
parser.add_argument("--steps", type=int, default=4000, help="most Adam steps of each fit (early stopping; default 4000)")
parser.add_argument("--samples", type=int, default=10, help="samples per class in the figure (default 10)")
args = parser.parse_args()
if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):  # refuse before training, not after
    parser.error(f"{args.out}: folder {os.path.dirname(os.path.abspath(args.out))} does not exist")

splits = data.load_digits(images=True, labels=True)  # x (N, 8, 8, 1) in the unit cube, context (N, 10) one-hot
size = (2, 3, 32, 2)  # jaxflow fit digits-images' model: scales, couplings (Glow: steps) per scale, channels, blocks
preset = jf.Glow if args.flow == "glow" else jf.MultiScaleRealNVP
embedding = dict(embedding=jf.MLP(32, 1), embedding_dim=args.embedding_dim) if args.embedding_dim else {}
config = train.TrainConfig(steps=args.steps, lr=1e-3, warmup_fraction=0.0, eval_every=50, patience=10)


def fit(model, context: bool):
    """``model`` behind the logit, trained with early stopping; ``(flow, best params, test bits/dim, seconds)``."""
    c = {split: splits.context(split) if context else None for split in ("train", "val", "test")}
    flow = train.preprocess(model, splits.train, c["train"], kind="logit", alpha=0.01)
    start = time.perf_counter()
    result = train.fit(flow, splits.train, splits.val, config, context_train=c["train"], context_val=c["val"],
                       progress=False)
    params = result.state.best_params
    nll = train.mean_nll(flow, params, splits.test, c["test"], levels=splits.levels)
    return flow, params, bits_per_dim(nll, 64), time.perf_counter() - start


flow, params, conditional, seconds = fit(preset((8, 8, 1), *size, scale="tanh", context_dim=10, **embedding), True)
print(f"p(x | y), {preset.__name__} with the label as context: test {conditional:.4f} bits/dim ({seconds:.0f} s)")
_, _, unconditional, seconds = fit(preset((8, 8, 1), *size, scale="tanh"), False)
print(f"p(x), the same {preset.__name__} without it:            test {unconditional:.4f} bits/dim ({seconds:.0f} s)")
print(f"difference {unconditional - conditional:+.4f} bits/dim; exact models: at most log2(10) / 64 = "
      f"{np.log2(10) / 64:.4f} (more: the mixture of the conditional flows beats the unconditional one)")

import matplotlib  # noqa: E402  (only once the numbers are printed)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

labels = np.eye(10, dtype=np.float32)  # one row of samples per class: the context (10, 10) batches the classes
images = np.asarray(jf.sample(flow, params, jax.random.key(0), args.samples, context=labels))  # (samples, 10, 8, 8, 1)
grid = np.clip(images[..., 0], 0, 1).transpose(1, 2, 0, 3).reshape(10 * 8, args.samples * 8)
fig, ax = plt.subplots(figsize=(max(args.samples * 0.6 + 1, 5), 7.5))
ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
ax.set(yticks=np.arange(10) * 8 + 3.5, yticklabels=range(10), xticks=[], ylabel="class y",
       title=f"samples of p(x | y), {preset.__name__}\ntest {conditional:.3f} bits/dim (p(x): {unconditional:.3f})")
fig.tight_layout()
fig.savefig(args.out, dpi=100)
print(f"wrote {args.out}")
