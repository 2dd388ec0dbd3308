"""Convolution gradients inside XLA control flow: the measurement behind unrolled conv flows.

    python -m bench.conv_scan [--rounds 5]

On XLA:CPU a convolution's gradient computed in the body of a ``while`` loop (``lax.scan``) or of
a conditional (``lax.cond``) runs many times slower than the same gradient in straight-line code.
This times, side by side in interleaved rounds (``bench.harness``), the gradient of
``sum_i sum(conv(x, k_i) ** 2)`` over two 3x3 kernels (batch 256, 8x8, 32 channels, NHWC, float32):

* ``straight``: the two convolutions written out;
* ``scan``:     ``lax.scan`` over the stacked kernels (a while loop);
* ``cond``:     each convolution inside a ``lax.cond`` on a traced predicate (always true);

and the gradient of a ``MultiScaleRealNVP((8, 8, 1), channels=32, num_blocks=2,
couplings_per_scale=4)`` NLL (batch 256) with its ``Repeat`` scans as loops (``scan_unroll=1``)
and unrolled (``scan_unroll=True``, the default). Hence the preset's default, ``Repeat``'s
``unroll >= n`` leaving no loop at all, and the train step's select instead of ``lax.cond``.
"""

from __future__ import annotations

import argparse
import platform

import jax
import jax.numpy as jnp
import numpy as np

import jaxflow
from bench.harness import interleaved_rounds, ratios_per_round, spread


def _conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _conv_calls() -> dict:
    x = jax.random.normal(jax.random.key(0), (256, 8, 8, 32))
    kernels = 0.05 * jax.random.normal(jax.random.key(1), (2, 3, 3, 32, 32))
    energy = lambda x, k: jnp.square(_conv(x, k)).sum()
    losses = {
        "straight": lambda ks, x: sum(energy(x, ks[i]) for i in range(2)),
        "scan": lambda ks, x: jax.lax.scan(lambda total, k: (total + energy(x, k), None), 0.0, ks)[0],
        "cond": lambda ks, x: sum(jax.lax.cond(x[0, 0, 0, 0] < jnp.inf, energy, lambda x, k: 0.0, x, ks[i])
                                  for i in range(2)),
    }
    grads = {name: jax.jit(jax.grad(loss)) for name, loss in losses.items()}
    return {f"conv grad, {name}": (lambda g=g: jax.block_until_ready(g(kernels, x))) for name, g in grads.items()}



def _flow_calls() -> dict:
    x = jax.random.uniform(jax.random.key(2), (256, 8, 8, 1), minval=0.05, maxval=0.95)
    calls = {}
    for name, unroll in (("loops", 1), ("unrolled", True)):
        flow = jaxflow.MultiScaleRealNVP((8, 8, 1), couplings_per_scale=4, channels=32, num_blocks=2,
                                         scan_unroll=unroll)
        params = jaxflow.init(flow, jax.random.key(0), data=x)
        grad = jax.jit(jax.grad(lambda p, flow=flow: -jaxflow.log_prob(flow, p, x).mean()))
        calls[f"MultiScaleRealNVP grad, {name}"] = lambda g=grad, p=params: jax.block_until_ready(g(p))
    return calls


#: each group of contenders and the one its slowdowns are relative to
GROUPS = {"conv grad, straight": _conv_calls, "MultiScaleRealNVP grad, unrolled": _flow_calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    groups = {baseline: make() for baseline, make in GROUPS.items()}
    calls = {name: call for group in groups.values() for name, call in group.items()}
    for call in calls.values():  # warm-up: compile
        call()
    samples = interleaved_rounds(calls, args.rounds, min_seconds=0.2)
    print(f"{jax.default_backend()} ({platform.processor() or platform.machine()}), jax {jax.__version__}, "
          f"{args.rounds} interleaved rounds; median ms [min, max], slowdown vs straight-line in the same round")
    for baseline, group in groups.items():
        for name in group:
            s = spread(samples[name])
            slowdown = np.median(ratios_per_round(samples[name], samples[baseline]))
            print(f"  {name:34s} {1e3 * s['median']:9.1f} [{1e3 * s['min']:.1f}, {1e3 * s['max']:.1f}]  x{slowdown:.1f}")


if __name__ == "__main__":
    main()
