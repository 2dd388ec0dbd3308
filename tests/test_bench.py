"""Smoke test of ``python -m bench --quick``: it runs, agrees across libraries, and writes its results;
and the peer implementations (:mod:`bench.peers`) compute jaxflow's function.

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
import numpy as np
import pytest

import jaxflow
from bench.__main__ import BASELINE, FLOWS, make_problem, warm_up_and_check_parity
from bench.contenders import OPS, Contender, Problem, jaxflow_contender, torch_contender
from bench.harness import interleaved_rounds, ratios_per_round, spread
from bench.peak import conditioner_flops
from bench import peers

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
    runnable_peers = peers.PEERS.keys() - peers.skipped("float32").keys()  # flowjax may be absent
    names = {"jaxflow scan", "jaxflow unrolled", "torch eager"} | runnable_peers
    assert cells == {(op, name) for op in OPS for name in names}
    assert record["skipped_contenders"] == peers.skipped("float32")
    for row in record["results"]:
        assert 0 < row["seconds"]["min"] <= row["seconds"]["median"] <= row["seconds"]["max"]
        assert row["gflops"] > 0 and row["warmup_seconds"] > 0
        assert row["peer"] == (row["implementation"] in peers.PEERS)
        if row["implementation"] == "flowjax":  # its own weights: timed, not compared
            assert not row["value_matched"] and row["parity_max_abs_diff"] is None
        else:
            assert row["value_matched"] and row["parity_max_abs_diff"] < 1e-3
    assert "jaxflow scan" in stdout and "vs eager" in stdout and "fastest peer" in stdout


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


@pytest.mark.parametrize("flow", [jaxflow.RealNVP(dim=5, num_flows=3, hidden_dim=16, num_hidden=2),
                                  jaxflow.NeuralSplineFlow(dim=5, num_layers=3, bins=4, hidden_dim=16, num_hidden=2),
                                  jaxflow.MAF(dim=5, num_layers=3, hidden_dim=16, num_hidden=2)])
def test_conditioner_flops_counts_every_kernel_once_per_event(flow):
    params = jaxflow.init(flow, jax.random.key(0), jnp.float32)
    macs = sum(leaf.size for path, leaf in jax.tree_util.tree_leaves_with_path(params)
               if path[-1].key == "kernel")  # all conditioner layers' in*out, all layers
    assert conditioner_flops(flow, 7, "log_prob") == 2 * 7 * macs
    assert conditioner_flops(flow, 7, "train_step") == 3 * 2 * 7 * macs
    sample_passes = flow.dim if isinstance(flow, jaxflow.MAF) else 1  # a MAF samples in D passes per layer
    assert conditioner_flops(flow, 7, "sample") == sample_passes * 2 * 7 * macs


def test_interleaved_rounds_shuffle_the_order_and_ratios_pair_rounds():
    order = []
    calls = {name: (lambda name=name: order.append(name)) for name in "abc"}
    samples = interleaved_rounds(calls, rounds=20, min_seconds=0.0, seed=3)
    timed = order[-60:]  # after calls_per_sample's one probe call per contender
    rounds = [timed[i:i + 3] for i in range(0, 60, 3)]
    assert all(sorted(r) == list("abc") for r in rounds)  # every round times each contender once
    predecessors = {(a, b) for r in rounds for a, b in zip(r, r[1:])}
    assert len(predecessors) == 6  # every contender ran right after every other one
    assert all(len(v) == 20 for v in samples.values())
    order.clear()
    interleaved_rounds(calls, rounds=20, min_seconds=0.0, seed=3)
    assert order[-60:] == timed  # seeded: the same order again
    assert ratios_per_round([2.0, 4.0], [1.0, 1.0]) == [2.0, 4.0]
    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}


def _tiny_problem(dim: int = 3) -> Problem:
    """An odd ``dim``, so that the halves differ in size and a wrong split shows."""
    flow = jaxflow.RealNVP(dim=dim, num_flows=3, hidden_dim=8, num_hidden=1)
    rng = np.random.default_rng(0)
    x, z = (rng.standard_normal((5, dim), dtype=np.float32) for _ in range(2))
    return Problem(flow, jaxflow.init(flow, jax.random.key(0), jnp.float32), x, z, device="cpu", dtype="float32")


def _outputs(contender: Contender) -> dict:
    """Each op's output, twice (the second train-step loss checks the update)."""
    # optax's Adam mixes Python scalars and int32 counts: not allowed under this session's strict promotion
    with jax.numpy_dtype_promotion("standard"):
        return {op: np.stack([contender.calls[op]() for _ in range(2)]) for op in OPS}


@pytest.mark.parametrize("make", [peers.minimal_contender, peers.distrax_contender])
def test_value_matched_peers_compute_jaxflows_function(make):
    problem = _tiny_problem()
    expected = _outputs(jaxflow_contender(problem, "jaxflow scan", scan_unroll=1))
    peer = make(problem)
    assert peer.value_matched
    for op, value in _outputs(peer).items():
        np.testing.assert_allclose(value, expected[op], rtol=1e-5, atol=1e-6, err_msg=f"{peer.name} {op}")


def test_parity_check_fails_a_wrong_value_matched_contender_and_skips_unmatched_ones():
    def constant(value):
        return {"log_prob": lambda: np.full(3, value, np.float32)}

    eager = Contender("torch eager", "torch", constant(0.0))
    report = warm_up_and_check_parity([eager, Contender("own", "jax", constant(1.0), value_matched=False)],
                                      ["log_prob"], "float32")
    assert report["log_prob"]["own"]["max_abs_diff"] is None
    with pytest.raises(AssertionError, match="parity failed for log_prob of wrong"):
        warm_up_and_check_parity([eager, Contender("wrong", "jax", constant(1.0))], ["log_prob"], "float32")


def test_spline_flow_problem_is_not_the_identity_and_its_twin_agrees():
    """``--flow nsf``: the perturbed spline flow differs from its latent and its torch twin agrees on
    ``log_prob`` (the bench's own parity check)."""
    problem = make_problem(FLOWS["nsf"](jaxflow.RealNVP(dim=4, num_flows=2, hidden_dim=8, num_hidden=1)),
                           batch=5, device="cpu", dtype="float32", seed=0)
    jaxflow_scan = jaxflow_contender(problem, "jaxflow scan", 1)
    report = warm_up_and_check_parity([jaxflow_scan, torch_contender(problem, BASELINE, compile=False)],
                                      ["log_prob"], "float32")
    assert report["log_prob"]["jaxflow scan"]["max_abs_diff"] < 1e-4
    latent = -0.5 * np.sum(problem.x**2, -1) - 2 * np.log(2 * np.pi)
    assert np.max(np.abs(jaxflow_scan.calls["log_prob"]() - latent)) > 1e-2


def test_peers_skip_flowjax_when_it_cannot_be_imported_or_run_in_bfloat16(monkeypatch):
    problem = _tiny_problem()
    monkeypatch.setattr(peers, "_flowjax_import_error", lambda: "No module named 'flowjax'")
    assert set(peers.skipped("float32")) == {"flowjax"}
    assert [c.name for c in peers.peer_contenders(problem)] == ["flax+scan (minimal)", "distrax+flax"]
    monkeypatch.setattr(peers, "_flowjax_import_error", lambda: None)
    assert peers.skipped("float32") == {} and set(peers.skipped("bfloat16")) == {"flowjax"}


def test_fit_run_times_the_loop_the_bare_step_and_torch(tmp_path):
    """``python -m bench --fit --quick``: every contender timed, ratios for each K (no timing asserted)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "bench", "--fit", "--quick", "--out", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = tmp_path.glob("*_fit.json")
    rows = json.loads(path.read_text())["fit"]
    assert {r["implementation"] for r in rows} == {"fit K=1", "bare step K=1", "fit K=10", "bare step K=10", "torch loop"}
    for row in rows:
        assert 0 < row["steps_per_second"]["min"] <= row["steps_per_second"]["median"] <= row["steps_per_second"]["max"]
        assert ("fit_over_bare" in row) == row["implementation"].startswith("fit")
    assert "fit/bare" in proc.stdout


def test_accelerator_suite_runs_on_the_cpu(tmp_path):
    """``python -m bench --suite accelerator --device cpu``: both dtypes, every op, one JSON, and the
    (smoke-sized) image model."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "bench", "--suite", "accelerator", "--device", "cpu", "--out",
                           str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = tmp_path.glob("*_accelerator.json")
    record = json.loads(path.read_text())
    for dtype, part in record["dtypes"].items():
        assert part["environment"]["dtype"] == dtype
        assert {(r["op"], r["implementation"]) for r in part["results"]} == {
            (op, name) for op in OPS for name in ("jaxflow scan", "jaxflow unrolled", "torch eager")}
    assert {r["op"] for r in record["images"]} == set(OPS)
    assert {r["config"] for r in record["images"]} == {"MultiScaleRealNVP 8x8x1"}
