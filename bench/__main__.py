"""``python -m bench``: jaxflow against torchref and peer JAX implementations, interleaved in one process.

Times ``log_prob``, ``sample`` and an Adam training step of ``RealNVP`` (``--flow nsf``: of
``NeuralSplineFlow``, ``--flow maf``: of ``MAF``, of the same sizes) for jaxflow (``jax.jit``; the layer
stack as ``lax.scan`` and unrolled), torchref (eager; ``torch.compile`` with ``--torch-compile``)
and the peers of :mod:`bench.peers` (hand-written Flax + ``lax.scan``, distrax + Flax, flowjax;
``--no-peers`` skips them) on the same weights, dtype and batches, after asserting once that
they agree (flowjax, with its own weights, is shape-matched and not compared).
Reports medians with min-max spread over interleaved rounds, speed-ups over torch eager taken
within each round, conditioner GFLOP/s against the measured matmul peak of the same library,
warm-up (compile) times, a batch-size sweep and compile time against depth. Writes a table to
stdout and ``<out>/<start time>_<device>_<dtype>.json`` and ``.png``.

Examples::

    python -m bench                                   # everything, on the default device
    python -m bench --configs small --no-sweep        # one configuration
    python -m bench --flow nsf --configs medium --no-sweep --no-compile-times   # spline flows
    python -m bench --flow maf --configs medium --no-sweep --no-compile-times   # masked autoregressive flows
    python -m bench --device gpu --dtype bfloat16 --torch-compile
    python -m bench --quick --out /tmp/bench          # seconds-long smoke run
    python -m bench --fit --configs small             # the train.fit loop vs its bare step vs torch (bench.fit)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch

import jaxflow
from bench.compile_times import compile_seconds
from bench.contenders import OPS, Contender, Problem, jaxflow_contender, torch_contender
from bench import accelerator
from bench.fit import EVAL_EVERY, VALIDATION_ROWS, fit_rows, format_fit
from bench.fit import steps_for as fit_steps_for
from bench.harness import first_call_seconds, interleaved_rounds, ratios_per_round, spread
from bench.peak import conditioner_flops, matmul_calls, matmul_peak
from bench.peers import PEERS, peer_contenders, skipped
from bench.report import (environment, format_compile_times, format_results, format_summary, format_vs_best_peer,
                          plot_sweep, result_stem, write_json)

CONFIGS = {
    "small": (jaxflow.RealNVP(dim=2, num_flows=8, hidden_dim=64, num_hidden=2), 256),
    "medium": (jaxflow.RealNVP(dim=16, num_flows=8, hidden_dim=256, num_hidden=2), 4096),
    "large": (jaxflow.RealNVP(dim=64, num_flows=16, hidden_dim=512, num_hidden=2), 4096),
}
"""The issue's configurations: spec and batch size."""

FLOWS = {
    "realnvp": lambda spec: spec,
    "nsf": lambda spec: jaxflow.NeuralSplineFlow(spec.dim, num_layers=spec.num_flows, hidden_dim=spec.hidden_dim,
                                                 num_hidden=spec.num_hidden, negative_slope=spec.negative_slope),
    "maf": lambda spec: jaxflow.MAF(spec.dim, num_layers=spec.num_flows, hidden_dim=spec.hidden_dim,
                                    num_hidden=spec.num_hidden, negative_slope=spec.negative_slope),
}
"""Flow families (``--flow``): a :data:`CONFIGS` spec -> the family's flow with the same ``D``,
layers, ``H`` and ``num_hidden`` (a ``NeuralSplineFlow`` keeps its default ``K = 8`` bins on
``[-3, 3]``, a ``MAF`` its default affine transform; its ``sample`` takes ``D`` passes per layer)."""

PERTURBATION = 0.02
"""Standard deviation of the noise added to every initial parameter, so that identity-initialised
layers (a spline flow's couplings and ``LULinear`` maps) are not the identity and the parity check
sees more than the latent's density."""

BASELINE = "torch eager"

JAXFLOW = {"jaxflow scan": 1, "jaxflow unrolled": True}
"""jaxflow's contenders: name and ``scan_unroll``."""

TOLERANCES = {"float32": {"rtol": 1e-3, "atol": 1e-3}, "bfloat16": {"rtol": 5e-2, "atol": 0.5}}
"""Parity tolerances per matmul dtype: loose, since two libraries round differently across layers."""

PARITY = {True: f"asserted against {BASELINE}", False: "shape-matched, own weights: not compared"}
"""A result row's ``parity``, by the contender's ``value_matched``."""


def _csv(kind):
    return lambda text: [kind(v) for v in text.split(",") if v]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flow", choices=list(FLOWS), default="realnvp", help="flow family (nsf: float32)")
    p.add_argument("--configs", type=_csv(str), default=list(CONFIGS), help="comma list of small,medium,large")
    p.add_argument("--ops", type=_csv(str), default=list(OPS), help="comma list of " + ",".join(OPS))
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="matmul dtype")
    p.add_argument("--torch-compile", action="store_true", help="add torchref under torch.compile (slow to compile)")
    p.add_argument("--no-peers", action="store_true", help="skip the peer JAX implementations (bench.peers)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    p.add_argument("--min-seconds", type=float, default=0.1, help="shortest timed sample; short calls are grouped")
    p.add_argument("--sweep-config", choices=list(CONFIGS), default="small")
    p.add_argument("--sweep-batches", type=_csv(int), default=[64, 256, 1024, 4096, 16384])
    p.add_argument("--sweep-ops", type=_csv(str), default=["log_prob", "train_step"])
    p.add_argument("--no-sweep", action="store_true", help="skip the batch-size sweep")
    p.add_argument("--compile-config", choices=list(CONFIGS), default="medium")
    p.add_argument("--compile-depths", type=_csv(int), default=[4, 16, 64])
    p.add_argument("--compile-ops", type=_csv(str), default=["log_prob", "train_step"])
    p.add_argument("--no-compile-times", action="store_true", help="skip compile time against depth")
    p.add_argument("--peak-sizes", type=_csv(int), default=None,
                   help="matmul sizes n for the peak (default 1024,2048 on CPU, 4096,8192 on GPU)")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch.set_num_threads (default: torch's own choice, as for JAX; recorded)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results", help="results folder")
    p.add_argument("--suite", choices=("accelerator",), help="accelerator: the one-call GPU benchmark "
                   "(bench/accelerator.py; --device cpu for its smoke-sized CPU run)")
    p.add_argument("--fit", action="store_true", help="time the whole train.fit loop instead (bench/fit.py)")
    p.add_argument("--fit-steps", type=_csv(int), default=[1000, 250],
                   help="steps per timed run: small configuration, then the others")
    p.add_argument("--steps-per-call", type=_csv(int), default=[1, 10, 100], help="K values of --fit")
    p.add_argument("--fit-rows", type=int, default=50_000, help="training rows of --fit")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: small config at batch 64, 2 rounds, log_prob only in sweep and compile times")
    args = p.parse_args(argv)
    for name in args.configs:
        if name not in CONFIGS:
            p.error(f"--configs: unknown configuration {name!r}, choose from {list(CONFIGS)}")
    for op in args.ops + args.sweep_ops + args.compile_ops:
        if op not in OPS:
            p.error(f"--ops/--sweep-ops/--compile-ops: unknown operation {op!r}, choose from {list(OPS)}")
    if args.flow != "realnvp" and (args.dtype != "float32" or args.fit or args.suite):
        p.error(f"--flow {args.flow}: float32 only, and not with --fit or --suite (they time RealNVP)")
    if args.quick:
        args.configs, args.rounds, args.min_seconds = ["small"], 2, 0.0
        args.sweep_batches, args.sweep_ops, args.peak_sizes = [16, 64], ["log_prob"], [128]
        args.compile_config, args.compile_depths, args.compile_ops = "small", [2, 4], ["log_prob"]
        args.fit_steps, args.steps_per_call, args.fit_rows = [20, 20], [1, 10], 1000
    return args


def resolve_device(requested: str) -> str:
    """``"gpu"`` when both libraries see one (or when asked, failing clearly otherwise), else ``"cpu"``."""
    has_gpu = torch.cuda.is_available() and any(d.platform == "gpu" for d in jax.devices())
    if requested == "gpu" and not has_gpu:
        sys.exit("bench: --device gpu, but JAX and torch do not both see a GPU")
    return "gpu" if (requested == "gpu" or (requested == "auto" and has_gpu)) else "cpu"


def make_problem(flow: jaxflow.RealNVP | jaxflow.NeuralSplineFlow | jaxflow.MAF, batch: int, device: str, dtype: str,
                 seed: int) -> Problem:
    """Float32 weights from ``jaxflow.init`` plus ``N(0, PERTURBATION^2)`` noise, and
    standard-normal data and latent batches."""
    rng = np.random.default_rng(seed)
    x, z = (rng.standard_normal((batch, flow.dim), dtype=np.float32) for _ in range(2))
    leaves, tree = jax.tree.flatten(jaxflow.init(flow, jax.random.key(seed), jnp.float32))
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    params = tree.unflatten([p + PERTURBATION * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)])
    return Problem(flow=flow, params=params, x=x, z=z, device=device, dtype=dtype)


def make_contenders(problem: Problem, with_torch_compile: bool, with_peers: bool) -> list[Contender]:
    contenders = [jaxflow_contender(problem, name, unroll) for name, unroll in JAXFLOW.items()]
    contenders.append(torch_contender(problem, BASELINE, compile=False))
    if with_torch_compile:
        contenders.append(torch_contender(problem, "torch.compile", compile=True))
    if with_peers:
        contenders += peer_contenders(problem)
    return contenders


def shape_of(flow: jaxflow.RealNVP | jaxflow.NeuralSplineFlow | jaxflow.MAF) -> dict:
    """A row's ``shape``: the preset, ``D``, layers, ``H``, ``num_hidden`` (a spline's ``bins`` and ``bound``)."""
    spline = {"bins": flow.bins, "bound": flow.bound} if isinstance(flow, jaxflow.NeuralSplineFlow) else {}
    return {"flow": type(flow).__name__, "dim": flow.dim, "num_flows": flow.layers.n, "hidden_dim": flow.hidden_dim,
            "num_hidden": flow.num_hidden} | spline


def warm_up_and_check_parity(contenders: list[Contender], ops: list[str], dtype: str) -> dict:
    """Run every call once (twice for the train step, so the second loss checks the update) as its
    warm-up, timing the first call, and assert that the outputs of every value-matched contender
    agree with torch eager's.

    Returns ``{op: {implementation: {"warmup_seconds", "max_abs_diff"}}}``, ``max_abs_diff`` None
    for contenders that are not value-matched.
    """
    report: dict[str, dict] = {}
    for op in ops:
        outputs, report[op] = {}, {}
        for c in contenders:
            out = []
            warmup = first_call_seconds(lambda: out.append(c.calls[op]()))
            if op == "train_step":
                out.append(c.calls[op]())
            outputs[c.name] = np.stack(out)
            report[op][c.name] = {"warmup_seconds": warmup}
        reference = outputs[BASELINE]
        for c in contenders:
            report[op][c.name]["max_abs_diff"] = None
            if c.value_matched:
                value = outputs[c.name]
                np.testing.assert_allclose(value, reference, **TOLERANCES[dtype],
                                           err_msg=f"bench: parity failed for {op} of {c.name} vs {BASELINE}")
                report[op][c.name]["max_abs_diff"] = float(np.max(np.abs(value - reference)))
    return report


def measure(config: str, problem: Problem, args: argparse.Namespace, ops: list[str], peak: dict) -> list[dict]:
    """Rows of timings for ``ops`` on ``problem``, one per operation and implementation.

    Each library's peak matmul (size ``peak[library]["n"]``) runs in every round next to the
    contenders, so fractions of peak are taken per round, at the machine's speed of the moment.
    """
    contenders = make_contenders(problem, args.torch_compile, not args.no_peers)
    warm = warm_up_and_check_parity(contenders, ops, args.dtype)
    peak_calls = {f"{library} matmul": matmul_calls(p["n"], problem.device, args.dtype)[library]
                  for library, p in peak.items()}
    rows = []
    for op in ops:
        calls = {c.name: c.calls[op] for c in contenders} | peak_calls
        samples = interleaved_rounds(calls, args.rounds, args.min_seconds, args.seed)
        flops = conditioner_flops(problem.flow, problem.batch, op)
        for c in contenders:
            peak_n = peak[c.library]["n"]
            seconds = spread(samples[c.name])
            # fraction of peak in round r: (flops / t_c[r]) / (2 n^3 / t_peak[r])
            fractions = [flops / (2 * peak_n**3) * ratio
                         for ratio in ratios_per_round(samples[f"{c.library} matmul"], samples[c.name])]
            rows.append({
                "config": config, "op": op, "implementation": c.name, "batch": problem.batch,
                "shape": shape_of(problem.flow),
                "seconds": seconds, "samples_seconds": samples[c.name],
                "speedup_vs_eager": spread(ratios_per_round(samples[BASELINE], samples[c.name])),
                "conditioner_flops": flops, "gflops": flops / seconds["median"] / 1e9,
                "fraction_of_peak": spread(fractions)["median"], "fraction_of_peak_spread": spread(fractions),
                "peak_gflops_in_rounds": spread([2 * peak_n**3 / t / 1e9 for t in samples[f"{c.library} matmul"]]),
                "warmup_seconds": warm[op][c.name]["warmup_seconds"],
                "peer": c.name in PEERS, "value_matched": c.value_matched,
                "parity": PARITY[c.value_matched], "parity_max_abs_diff": warm[op][c.name]["max_abs_diff"],
            })
    return rows


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.suite == "accelerator":
        return accelerator.run(args, main, resolve_device(args.device))
    start = datetime.datetime.now(datetime.timezone.utc)
    device = resolve_device(args.device)
    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)
    if device == "gpu":  # float32 means float32: no TF32 anywhere on the torch side either
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    env = environment(device, args.dtype, args.torch_threads)
    print(f"bench: {env['device_name']} ({env['jax_device']}), {args.dtype}, jax {env['versions']['jax']}, "
          f"torch {env['versions']['torch']}, {env['threads']['torch_num_threads']} torch threads "
          f"({env['threads']['threading']}), load average {env['load_average_1_5_15_min'][0]:.1f} "
          f"on {env['cpu_count']} CPUs")
    if args.fit:
        return _fit_main(args, argv, start, env)
    skipped_peers = {} if args.no_peers else skipped(args.dtype)
    for name, reason in skipped_peers.items():
        print(f"bench: skipping {name}: {reason}")
    peak_sizes = args.peak_sizes or ([4096, 8192] if device == "gpu" else [1024, 2048])
    peak = matmul_peak(peak_sizes, device, args.dtype, args.rounds, args.min_seconds)
    print("matmul peak (GFLOP/s): " + ", ".join(f"{lib} {p['gflops']:.1f} (n={p['n']})" for lib, p in peak.items()))

    results = []
    for config in args.configs:
        spec, batch = CONFIGS[config]
        batch = 64 if args.quick else batch
        results += measure(config, make_problem(FLOWS[args.flow](spec), batch, device, args.dtype, args.seed), args, args.ops, peak)
        print(format_results([r for r in results if r["config"] == config]), flush=True)

    if results:
        print("\nspeed-up over torch eager (median of per-round ratios):\n" + format_summary(results), flush=True)
    if any(r["peer"] for r in results):
        print("\njaxflow against the fastest peer (median of per-round ratios, > 1: jaxflow faster):\n"
              + format_vs_best_peer(results, list(JAXFLOW)), flush=True)

    sweep = []
    if not args.no_sweep:
        flow = FLOWS[args.flow](CONFIGS[args.sweep_config][0])
        for batch in args.sweep_batches:
            problem = make_problem(flow, batch, device, args.dtype, args.seed)
            sweep += measure(f"sweep {args.sweep_config}", problem, args, args.sweep_ops, peak)
        print(format_results(sweep), flush=True)

    compile_times = []
    if not args.no_compile_times:
        flow = FLOWS[args.flow](CONFIGS[args.compile_config][0])
        compile_times = compile_seconds(flow, args.compile_depths, args.compile_ops, batch=256, device=device)
        print(f"\n{args.compile_config} (D={flow.dim} H={flow.hidden_dim}, batch 256), "
              + format_compile_times(compile_times))

    record = {
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "flow": args.flow, "started": start.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "environment": env,
        "method": {"rounds": args.rounds, "min_seconds_per_sample": args.min_seconds, "baseline": BASELINE,
                   "statistic": "median over interleaved rounds, [min-max]; speed-ups per round",
                   "order": "every round visits the contenders in a fresh random order (seeded by --seed)",
                   "warm_up": "first call timed apart (tracing, compilation), excluded from the rounds",
                   "parity_tolerance": TOLERANCES[args.dtype], "seed": args.seed},
        "skipped_contenders": skipped_peers, "peak": peak, "results": results, "sweep": sweep,
        "compile_times": compile_times,
        "compile_config": args.compile_config, "load_average_at_end": os.getloadavg(),
    }
    stem = args.out / (result_stem(env, start.strftime("%Y-%m-%dT%H%MZ"))
                       + ("" if args.flow == "realnvp" else f"_{args.flow}"))
    write_json(record, stem.with_suffix(".json"))
    if sweep:
        plot_sweep(sweep, f"{args.sweep_config} config: throughput vs batch size ({env['device_name']}, "
                          f"{args.dtype})", stem.with_suffix(".png"))
    print(f"\nwrote {stem}.json" + (f" and {stem}.png" if sweep else ""))
    return record


def _fit_main(args: argparse.Namespace, argv, start, env: dict) -> dict:
    """``--fit``: :mod:`bench.fit`'s rows as a table and ``<out>/<stem>_fit.json``."""
    configs = {name: (CONFIGS[name][0], 64 if args.quick else CONFIGS[name][1]) for name in args.configs}
    steps = fit_steps_for(configs, *args.fit_steps)
    rows = fit_rows(configs, steps, args.steps_per_call, args.rounds, args.fit_rows, args.seed)
    print(format_fit(rows), flush=True)
    record = {"command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
              "started": start.isoformat(timespec="seconds"), "environment": env,
              "method": {"rounds": args.rounds, "eval_every": EVAL_EVERY, "validation_rows": VALIDATION_ROWS,
                         "training_rows": args.fit_rows, "statistic": "median over interleaved rounds; ratios per round"},
              "fit": rows, "load_average_at_end": os.getloadavg()}
    path = (args.out / (result_stem(env, start.strftime("%Y-%m-%dT%H%MZ")) + "_fit")).with_suffix(".json")
    write_json(record, path)
    print(f"\nwrote {path}")
    return record


if __name__ == "__main__":
    main()
