"""Hostile input, one table: every case is one line of (name, what to do, the one-line error expected).

A case's action is either a ``jaxflow`` command line (run in-process; it must exit 1 with exactly one
line ``jaxflow: error: ...`` on stderr and no traceback) or a library call (it must raise the named
exception with a one-line message). Setup helpers plant the hostile files. The README's reliability
section quotes the count of cases.
"""

from __future__ import annotations

import json
import os
import re

import jax
import numpy as np
import pytest

import jaxflow
from jaxflow import checkpoint, data, train
from jaxflow.cli import main
from jaxflow.layers.spline import unconstrained_rational_quadratic_spline

TINY = ["--num-flows", "2", "--hidden-dim", "8", "--num-hidden", "1", "--batch-size", "32", "--quiet"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A directory with a tiny fitted run (``run``) and its data (``moons.csv``)."""
    root = tmp_path_factory.mktemp("hostile")
    np.savetxt(root / "moons.csv", data.toy("moons").sample(300, seed=0), delimiter=",")
    assert main(["fit", str(root / "moons.csv"), "--out", str(root / "run"), "--steps", "4", "--eval-every", "2", *TINY]) == 0
    return root


def _copy_run(root, name):
    """A fresh copy of the fitted run, to damage."""
    target = root / name
    target.mkdir()
    for entry in os.listdir(root / "run"):
        (target / entry).write_bytes((root / "run" / entry).read_bytes())
    return target


def _meta_edit(edit, resign=True):
    """Setup: a copy of the run whose checkpoint.json text is ``edit(text)`` (re-signed if it stays JSON)."""
    def setup(root, name):
        run = _copy_run(root, name)
        text = edit((run / checkpoint.METADATA).read_text())
        if resign:
            try:
                meta = json.loads(text)
                meta["metadata_sha256"] = checkpoint._metadata_digest(meta)
                text = json.dumps(meta)
            except (ValueError, RecursionError):
                pass
        (run / checkpoint.METADATA).write_text(text)
        return ["eval", run, "moons"]
    return setup


def _json_edit(change):
    return _meta_edit(lambda text: json.dumps(change(json.loads(text))))


def _coupling(meta):
    return meta["spec"]["layers"]["layers"][1]["layer"]


def _set(path_fn, key, value):
    def change(meta):
        path_fn(meta)[key] = value
        return meta
    return change


def _payload_replaced_by(make):
    """Setup: the run's payload file replaced by ``make(path)`` (a symlink, a FIFO, ...)."""
    def setup(root, name):
        run = _copy_run(root, name)
        payload = run / json.loads((run / checkpoint.METADATA).read_text())["payload"]["file"]
        payload.unlink()
        make(payload)
        return ["eval", run, "moons"]
    return setup


def _locked_run(root, name):
    """Setup: another process holds the run directory's lock (simulated with a child process)."""
    import subprocess
    import sys

    run = _copy_run(root, name)
    holder = subprocess.Popen([sys.executable, "-c", f"import time; from jaxflow.io import locked\n"
                               f"with locked({str(run)!r}):\n    print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    _locked_run.holders.append(holder)
    return ["fit", root / "moons.csv", "--out", run, "--steps", "4", "--eval-every", "2", *TINY]


_locked_run.holders = []


def _cli(*argv):
    return lambda root, name: [a.format(root=root) if isinstance(a, str) else a for a in argv]


def _existing_output(root, name):
    return ["sample", root / "run", "-n", "3", "--out", root / "moons.csv"]


def _lib(fn):
    return lambda root, name: fn


FLOW = jaxflow.RealNVP(dim=2, num_flows=2, hidden_dim=8)
PARAMS = jaxflow.init(FLOW, jax.random.key(0))

# (name, setup(root, name) -> argv or a callable, expected exception for a callable, message regex)
CASES = [
    # checkpoints trusted too much
    ("edited spec without re-signing", _meta_edit(lambda t: t.replace('"negative_slope": 0.01', '"negative_slope": 0.2'), resign=False), None, "metadata fails its SHA-256 check"),
    ("clamp 1e400", _meta_edit(lambda t: t.replace('"clamp": 5.0', '"clamp": 1e400')), None, "clamp must be a positive number"),
    ("standardisation scale 0", _json_edit(lambda m: (m["spec"]["layers"]["layers"][0].update(scale=[0.0, 1.0]), m)[1]), None, "Affine: scale must be > 0"),
    ("standardisation scale -1", _json_edit(lambda m: (m["spec"]["layers"]["layers"][0].update(scale=[-1.0, 1.0]), m)[1]), None, "Affine: scale must be > 0"),
    ("standardisation scale NaN", _meta_edit(lambda t: re.sub(r'"scale": \[\s*[-0-9.e]+', '"scale": [NaN', t, count=1)), None, "Affine: scale must hold finite numbers"),
    ("unknown scale map", _json_edit(_set(_coupling, "scale", "cube")), None, "AffineCoupling: scale must be one of"),
    ("compute_dtype int8", _json_edit(lambda m: (_coupling(m)["conditioner"].update(compute_dtype="int8"), m)[1]), None, "MLP: compute_dtype must be one of"),
    ("a class that is not a spec", _json_edit(_set(lambda m: m, "spec", {"type": "os.system", "command": "true"})), None, "unknown spec type 'os.system'"),
    ("bool for an int", _json_edit(_set(lambda m: m["spec"]["layers"]["layers"][1], "n", True)), None, "Repeat: n must be an int"),
    ("payload symlink to /dev/zero", _payload_replaced_by(lambda p: p.symlink_to("/dev/zero")), None, "cannot read checkpoint payload \\(a symbolic link\\)"),
    ("payload is a FIFO", _payload_replaced_by(lambda p: os.mkfifo(p)), None, "checkpoint payload is not a regular file"),
    ("metadata is a FIFO", lambda root, name: (os.unlink(_copy_run(root, name) / checkpoint.METADATA), os.mkfifo(root / name / checkpoint.METADATA), ["eval", root / name, "moons"])[2], None, "checkpoint metadata is not a regular file"),
    ("JSON nested 100k deep", _meta_edit(lambda t: "[" * 100_000 + "]" * 100_000), None, "nested too deeply"),
    ("5000-digit int", _meta_edit(lambda t: re.sub(r'"step": \d+', '"step": ' + "9" * 5000, t)), None, "corrupt checkpoint metadata"),
    ("NUL in the payload name", _json_edit(lambda m: (m["payload"].update(file="state-\x00.msgpack"), m)[1]), None, "bad payload name"),
    ("step 10**18", _json_edit(_set(lambda m: m, "step", 10**18)), None, "step 1000000000000000000 is not in"),
    ("negative step", _json_edit(_set(lambda m: m, "step", -1)), None, "step -1 is not in"),
    ("version true", _json_edit(_set(lambda m: m, "version", True)), None, "checkpoint version True"),
    # run directories and outputs
    ("sample over the user's data file", _existing_output, None, "exists; pass --force to overwrite it"),
    ("a second fit into a locked run", _locked_run, None, r"another jaxflow process \(pid \d+\) is using this run directory"),
    # sizes that would abort or exhaust memory
    ("seed 2**64", _cli("fit", "{root}/moons.csv", "--out", "{root}/new", "--seed", str(2**64), *TINY), None, "seed must be in \\[0, 4294967295\\]"),
    ("batch size 1e11", _cli("fit", "{root}/moons.csv", "--out", "{root}/new", *TINY, "--batch-size", "100000000000"), None, "batch_size must be in"),
    ("hidden dim 1e10", _cli("fit", "{root}/moons.csv", "--out", "{root}/new", *TINY, "--hidden-dim", "10000000000"), None, "hidden_dim must be <= 65536"),
    ("sample -n 1e11", _cli("sample", "{root}/run", "-n", "100000000000", "--out", "{root}/many.npy"), None, "-n must be in \\[1, 2147483647\\]"),
    # library calls at the line that is wrong
    ("num_samples -1", _lib(lambda: jaxflow.sample(FLOW, PARAMS, jax.random.key(0), -1)), ValueError, "num_samples must be >= 0"),
    ("num_samples 2.5", _lib(lambda: jaxflow.sample(FLOW, PARAMS, jax.random.key(0), 2.5)), TypeError, "num_samples must be an int"),
    ("compute_dtype int8 spec", _lib(lambda: jaxflow.RealNVP(dim=2, num_flows=2, compute_dtype="int8")), ValueError, "compute_dtype must be one of"),
    ("mean_nll of no rows", _lib(lambda: train.mean_nll(FLOW, PARAMS, np.zeros((0, 2), np.float32))), ValueError, "mean_nll: no examples"),
    ("standardize data with inf", _lib(lambda: train.standardize(FLOW, np.array([[0.0, 1.0], [np.inf, 2.0], [1.0, 0.0]]))), ValueError, "holds NaN or inf \\(row 1\\)"),
    ("timedelta data", _lib(lambda: data._checked(np.array([[1, 2]], "m8[s]"), "t.npy", "data", 2)), data.DataError, "expected real numbers, got dtype timedelta64"),
    ("context for an unconditional flow", _lib(lambda: jaxflow.log_prob(FLOW, PARAMS, np.zeros((3, 2)), context=np.zeros((3, 1)))), ValueError, "this flow is unconditional"),
    # couplings, transforms, conditioners, the spline flow
    ("spline with 0 bins", _lib(lambda: jaxflow.RQSpline(bins=0)), ValueError, "RQSpline: bins must be >= 1"),
    ("spline bound inf", _lib(lambda: jaxflow.RQSpline(bound=float("inf"))), ValueError, "RQSpline: bound must be a positive number"),
    ("a string for a transform", _lib(lambda: jaxflow.Coupling(transform="spline")), TypeError, "Coupling: transform must be a jaxflow.RQSpline or jaxflow.AffineTransform"),
    ("a function for a conditioner", _lib(lambda: jaxflow.Coupling(conditioner=len)), TypeError, "Coupling: conditioner must be a conditioner spec"),
    ("spline coupling on images", _lib(lambda: jaxflow.Flow((4, 4, 1), jaxflow.Coupling())), ValueError, r"Coupling: acts on vector events \(D,\)"),
    ("unknown MLP activation", _lib(lambda: jaxflow.MLP(activation="swish")), ValueError, "MLP: activation must be one of"),
    ("spline numbers of mismatched bins", _lib(lambda: unconstrained_rational_quadratic_spline(np.zeros(3), np.zeros((3, 4)), np.zeros((3, 4)), np.zeros((3, 4)))), ValueError, "widths and heights need K entries and derivatives K - 1"),
    ("--mask with --flow nsf", _cli("fit", "{root}/moons.csv", "--out", "{root}/new", "--flow", "nsf", "--mask", "alternate", *TINY), None, "--mask: not an option of --flow nsf"),
    ("--bins with --flow realnvp", _cli("fit", "{root}/moons.csv", "--out", "{root}/new", "--bins", "4", *TINY), None, "--bins: not an option of --flow realnvp"),
    ("--tail-bound -1", _cli("fit", "{root}/moons.csv", "--out", "{root}/new", "--flow", "nsf", "--tail-bound", "-1", *TINY), None, "NeuralSplineFlow: bound must be a positive number"),
]


@pytest.mark.parametrize("name, setup, error, message", CASES, ids=[case[0] for case in CASES])
def test_hostile_input_gets_one_line(root, capsys, name, setup, error, message):
    action = setup(root, re.sub(r"\W+", "_", name))
    try:
        if callable(action):
            with pytest.raises(error, match=message) as info:
                action()
            assert "\n" not in str(info.value)
            return
        status = main([str(a) for a in action])
        out, err = capsys.readouterr()
        assert status == 1 and err.startswith("jaxflow: error: ") and err.count("\n") == 1, err
        assert re.search(message, err), err
        assert "Traceback" not in err and out == ""
    finally:
        for holder in _locked_run.holders:
            holder.kill()
        _locked_run.holders.clear()


def test_eval_json_is_strict_json_when_the_nll_is_not_finite(root, capsys, tmp_path):
    far = tmp_path / "far.csv"
    np.savetxt(far, np.full((20, 2), 1e30), delimiter=",")
    status = main(["eval", str(root / "run"), str(far), "--split", "all", "--json"])
    out, _ = capsys.readouterr()
    result = json.loads(out)  # strict: json.loads would accept NaN, so check the text too
    assert status == 0 and "NaN" not in out and "Infinity" not in out
    assert result["status"] == "non-finite" and result["nll_nats"] is None


def test_planted_symlinks_at_temporary_names_are_never_followed(root, tmp_path):
    """The old temporary names (``<file>.tmp-<pid>``) are not used; a write goes through a fresh mkstemp name."""
    run = _copy_run(root, "planted")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for name in (f"checkpoint.json.tmp-{os.getpid()}", f"s.tmp-{os.getpid()}.npy"):
        (run / name).symlink_to(victim)
    ckpt = checkpoint.load(str(run))
    checkpoint.save(str(run), ckpt.flow, ckpt.config, ckpt.state, ckpt.run)
    assert main(["sample", str(run), "-n", "2", "--out", str(run / "s.npy")]) == 0
    assert victim.read_text() == "precious"


def test_a_crash_during_the_first_save_leaves_a_usable_directory(root, tmp_path):
    """A temporary left by a dead process does not make the directory 'foreign'; it is removed."""
    run = tmp_path / "crashed"
    run.mkdir()
    (run / ".checkpoint.tmp-999999999-abc.json").write_text("half")  # pid 999999999 does not exist
    assert main(["fit", str(root / "moons.csv"), "--out", str(run), "--steps", "2", "--eval-every", "2", *TINY]) == 0
    assert not (run / ".checkpoint.tmp-999999999-abc.json").exists() and checkpoint.exists(str(run))


def test_count_of_cases():
    """The README quotes this count."""
    assert len(CASES) == 41


def test_a_full_disk_is_named_and_keeps_the_last_good_checkpoint(root, tmp_path, monkeypatch, capsys):
    import errno

    real_save = checkpoint.save
    calls = []

    def fill_up(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:  # the first validation's checkpoint is written, the second finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save", fill_up)
    run = tmp_path / "full"
    status = main(["fit", str(root / "moons.csv"), "--out", str(run), "--steps", "4", "--eval-every", "2", *TINY])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1 and "no space left on the device while writing a checkpoint" in err
    assert checkpoint.load(str(run)).state.step == 2


def test_too_little_free_space_is_refused_before_training(root, tmp_path, monkeypatch, capsys):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 100, 100))
    status = main(["fit", str(root / "moons.csv"), "--out", str(tmp_path / "tight"), "--steps", "4", *TINY])
    err = capsys.readouterr().err
    assert status == 1 and re.search(r"100 bytes free on its device, a checkpoint needs about \d+", err), err
    assert not checkpoint.exists(str(tmp_path / "tight"))
