"""Smoke test of ``python -m bench --quick``: it runs, agrees across libraries, and writes its results.

Timings are reported by the harness, never asserted here. The run is a subprocess, as users run
it (and outside this session's x64 setting); ``OMP_NUM_THREADS=1`` keeps eager torch from stalling
on a busy machine, which matters for the test's duration only.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import jaxflow
from bench.harness import interleaved_rounds, ratios_per_round, spread
from bench.peak import conditioner_flops

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (record_path,) = out.glob("*.json")
    return proc.stdout, json.loads(record_path.read_text()), out


def test_quick_run_reports_every_operation_and_implementation(quick_run):
    stdout, record, _ = quick_run
    cells = {(r["op"], r["implementation"]) for r in record["results"]}
    ops = ("log_prob", "sample", "train_step")
    names = ("jaxflow scan", "jaxflow unrolled", "torch eager")
    assert cells == {(op, name) for op in ops for name in names}
    for row in record["results"]:
        assert 0 < row["seconds"]["min"] <= row["seconds"]["median"] <= row["seconds"]["max"]
        assert row["gflops"] > 0 and row["warmup_seconds"] > 0
        assert row["parity_max_abs_diff"] < 1e-3
    assert "jaxflow scan" in stdout and "vs eager" in stdout


def test_quick_run_records_method_environment_and_extras(quick_run):
    _, record, out = quick_run
    assert record["environment"]["dtype"] == "float32"
    assert record["environment"]["versions"]["torch"].startswith("2.13.0")
    assert record["environment"]["threads"]["torch_num_threads"] >= 1
    assert {"jax", "torch"} <= record["peak"].keys()
    assert {r["batch"] for r in record["sweep"]} == {16, 64}
    assert {(r["num_flows"], r["scan_unroll"], r["op"]) for r in record["compile_times"]} == {
        (n, form, "log_prob") for n in (2, 4) for form in ("scan", "unrolled")}
    assert list(out.glob("*.png"))


def test_conditioner_flops_counts_every_kernel_once_per_event():
    flow = jaxflow.RealNVP(dim=5, num_flows=3, hidden_dim=16, num_hidden=2)
    params = jaxflow.init(flow, jax.random.key(0), jnp.float32)
    macs = sum(p["kernel"].size for p in params["conditioner"].values())  # all layers' in*out
    assert conditioner_flops(flow, 7, "log_prob") == 2 * 7 * macs
    assert conditioner_flops(flow, 7, "train_step") == 3 * 2 * 7 * macs


def test_interleaved_rounds_rotate_the_order_and_ratios_pair_rounds():
    order = []
    calls = {name: (lambda name=name: order.append(name)) for name in "abc"}
    samples = interleaved_rounds(calls, rounds=3, min_seconds=0.0)
    assert order[-9:] == list("abcbcacab")
    assert all(len(v) == 3 for v in samples.values())
    assert ratios_per_round([2.0, 4.0], [1.0, 1.0]) == [2.0, 4.0]
    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}
