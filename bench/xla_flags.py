"""XLA:CPU library paths and flags for the training step, A/B in fresh processes (flags are read at start).

    python -m bench.xla_flags [--rounds 3]

Each round runs every variant once, in a seeded shuffled order, each in its own process with its
``XLA_FLAGS``: the medium configuration (D=16, L=8, H=256, batch 4096, float32), a jitted Adam
step and log_prob; the best of 3 x 5 calls. Prints per variant the median over rounds and its
ratio to the baseline measured in the same round.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys

VARIANTS = {
    "baseline": "",
    "onednn": "--xla_cpu_use_onednn=true",
    "onednn-dot": "--xla_cpu_experimental_onednn_fusion_type=dot",
    "xnn-dot": "--xla_cpu_experimental_xnn_fusion_type=dot",
    "ynn-dot": "--xla_cpu_experimental_ynn_fusion_type=dot",
    "xnn-graph": "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
    "fast-math": "--xla_cpu_enable_fast_math=true",
}

_CHILD = r'''
import timeit, jax, optax, jaxflow
flow = jaxflow.RealNVP(dim=16, num_flows=8, hidden_dim=256, num_hidden=2)
params = jaxflow.init(flow, jax.random.key(0))
x = jax.random.normal(jax.random.key(1), (4096, 16))
tx = optax.adam(1e-3); state = tx.init(params)
@jax.jit
def step(p, s, x):
    g = jax.grad(lambda p: -jaxflow.log_prob(flow, p, x).mean())(p)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s
log_prob = jax.jit(lambda p, x: jaxflow.log_prob(flow, p, x))
jax.block_until_ready(step(params, state, x)); log_prob(params, x).block_until_ready()
train = min(timeit.repeat(lambda: jax.block_until_ready(step(params, state, x)), number=5, repeat=3)) / 5
lp = min(timeit.repeat(lambda: log_prob(params, x).block_until_ready(), number=5, repeat=3)) / 5
print(train * 1e3, lp * 1e3)
'''


def _measure(flags: str) -> tuple[float, float]:
    env = {**os.environ, "XLA_FLAGS": flags}
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1])
    train, lp = map(float, out.stdout.split())
    return train, lp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    ratios = {name: {"train": [], "log_prob": []} for name in VARIANTS}
    times = {name: {"train": [], "log_prob": []} for name in VARIANTS}
    for round_ in range(args.rounds):
        order = list(VARIANTS)
        rng.shuffle(order)
        measured = {}
        for name in order:
            try:
                measured[name] = _measure(VARIANTS[name])
            except RuntimeError as err:
                print(f"{name}: failed ({err})", flush=True)
        for name, (train, lp) in measured.items():
            times[name]["train"].append(train)
            times[name]["log_prob"].append(lp)
            if "baseline" in measured:
                ratios[name]["train"].append(measured["baseline"][0] / train)
                ratios[name]["log_prob"].append(measured["baseline"][1] / lp)
        print(f"round {round_ + 1}: " + ", ".join(f"{n} {t:.0f}/{l:.1f} ms" for n, (t, l) in measured.items()), flush=True)
    print("\nvariant      train ms (speed-up vs baseline, per-round median)   log_prob ms (speed-up)")
    for name in VARIANTS:
        if times[name]["train"]:
            med = statistics.median
            print(f"{name:12s} {med(times[name]['train']):8.1f} ({med(ratios[name]['train']):.2f}x)"
                  f"{'':30s}{med(times[name]['log_prob']):8.1f} ({med(ratios[name]['log_prob']):.2f}x)")


if __name__ == "__main__":
    main()
