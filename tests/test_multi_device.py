"""Data parallelism: the same fit on 1 and 4 devices, resumed across device counts, and across two
processes. Each run is a fresh process whose CPU is split into devices by
``XLA_FLAGS=--xla_force_host_platform_device_count`` (read when jax is imported); the truth is the
1-device run, which the sharded runs must reproduce to float32 summation order.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import multi_device_runs
from core_tolerances import assert_close
from jaxflow import checkpoint, train

ROOT = Path(__file__).resolve().parents[1]


def _env(devices: int) -> dict:
    """The session's ``XLA_FLAGS`` (the root ``conftest.py``'s compile setting) plus the device split."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    return dict(os.environ, XLA_FLAGS=flags, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("devices")
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "multi_device_runs.py"), str(out)], cwd=ROOT,
                          env=_env(4), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(np.load(out / "runs.npz")), json.loads((out / "runs.json").read_text()), out / "single"


def test_four_devices_train_as_one(runs):
    arrays, record, _ = runs
    assert_close(arrays["straight_4"], arrays["straight_1"], "devices", np.float32)
    assert len(record["val_nll"]["1"]) == 4
    assert_close(record["val_nll"]["4"], record["val_nll"]["1"], "devices", np.float32)
    assert_close(record["mean_nll"]["four_devices"], record["mean_nll"]["one_device"], "devices", np.float32)


def test_a_run_resumes_on_another_number_of_devices_and_records_its_mesh(runs):
    arrays, record, _ = runs
    assert_close(arrays["resumed_4_on_1"], arrays["straight_1"], "devices", np.float32)
    assert_close(arrays["resumed_1_on_4"], arrays["straight_1"], "devices", np.float32)
    assert record["devices"]["4"] == {"count": 4, "processes": 1, "platform": "cpu", "mesh": {"data": 4}}
    assert record["devices"]["1"]["mesh"] == {"data": 1}


FIT = ["-m", "jaxflow", *multi_device_runs.FIT]


@pytest.mark.parametrize("devices, message", [
    ("3", "--devices: batch size 32 does not divide evenly over 3 devices"),
    ("5", "--devices: 5 devices asked for, 4 available (cpu; XLA_FLAGS=")])
def test_bad_device_counts_are_one_line_errors(tmp_path, devices, message):
    proc = subprocess.run([sys.executable, *FIT, "--out", str(tmp_path / "run"), "--devices", devices], cwd=ROOT,
                          env=_env(4), capture_output=True, text=True, timeout=120)
    (line,) = proc.stderr.splitlines()
    assert proc.returncode == 1 and line.startswith(f"jaxflow: error: {message}")
    assert not (tmp_path / "run").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_of_two_devices_train_as_one_process(tmp_path, runs):
    """``jaxflow fit --devices all`` in 2 processes (localhost coordinator, 2 CPU devices each):
    the batch is sharded over 4 devices of 2 processes, process 0 alone writes the checkpoint, and
    its parameters are those of a 1-device run (the same command, run by ``multi_device_runs.py``)."""
    coordinator = f"localhost:{_free_port()}"
    multi = [subprocess.Popen([sys.executable, *FIT, "--out", str(tmp_path / "multi"), "--devices", "all",
                               "--coordinator", coordinator, "--num-processes", "2", "--process-id", str(i)],
                              cwd=ROOT, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in (0, 1)]
    outputs = [p.communicate(timeout=300) for p in multi]
    assert [p.returncode for p in multi] == [0, 0], outputs
    assert "process 1: completed at step 20" in outputs[1][0] and "process 0 saves in" in outputs[1][0]
    assert checkpoint.read_metadata(str(tmp_path / "multi"))["devices"] == {
        "count": 4, "processes": 2, "platform": "cpu", "mesh": {"data": 4}}
    assert len(list((tmp_path / "multi").glob("state-*.msgpack"))) == 1
    got, want = checkpoint.load(str(tmp_path / "multi")).state, checkpoint.load(str(runs[2])).state
    assert got.step == want.step == 20
    for a, b in zip(jax.tree_util.tree_leaves(got.params), jax.tree_util.tree_leaves(want.params), strict=True):
        assert_close(a, b, "devices", np.float32)
