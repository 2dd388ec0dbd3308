"""The ``jaxflow`` command: the happy path, every bad input, interruption and exact resumption, the demo."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxflow import checkpoint, data, train
from jaxflow.cli import main

TINY = ["--num-flows", "2", "--hidden-dim", "8", "--num-hidden", "1", "--batch-size", "32", "--quiet"]


def _run(capsys, *argv):
    """``(exit status, stdout, stderr)`` of ``jaxflow argv`` in this process."""
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _snapshot(*paths):
    """Hash of every file under ``paths`` (but run directories' lock files, which hold the pid of
    the last process that took them): to show that nothing existing was changed."""
    digest = hashlib.sha256()
    for root in paths:
        for directory, _, files in sorted(os.walk(root)):
            for name in sorted(set(files) - {".lock"}):
                digest.update(name.encode() + open(os.path.join(directory, name), "rb").read())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny model fitted by ``jaxflow fit`` on a headed CSV file of 600 moons points."""
    root = tmp_path_factory.mktemp("cli")
    csv = root / "moons.csv"
    np.savetxt(csv, data.toy("moons").sample(600, seed=0), delimiter=",", header="x,y", comments="")
    run_dir = root / "run"
    assert main(["fit", str(csv), "--out", str(run_dir), "--steps", "20", "--eval-every", "10", *TINY]) == 0
    return root, csv, run_dir


def test_fit_then_eval_json_matches_the_library(run, capsys):
    root, csv, run_dir = run
    ckpt = checkpoint.load(str(run_dir))
    status, out, err = _run(capsys, "eval", run_dir, csv, "--json", "--split", "all")
    assert status == 0 and err == ""
    result = json.loads(out)
    x = data.load_array(str(csv))
    expected = train.mean_nll(ckpt.flow, ckpt.state.best_params, x)
    assert result["nll_nats"] == pytest.approx(expected, rel=1e-6)
    assert result["bits_per_dim"] == pytest.approx(expected / (2 * np.log(2)), rel=1e-6)
    assert result["num_examples"] == 600 and result["step"] == 20 and result["status"] == "ok"
    # by default, a file's held-out rows: the 10 % validation split that fit did not train on
    status, out, _ = _run(capsys, "eval", run_dir, csv, "--json")
    held_out = data.load_dataset(str(csv)).val
    result = json.loads(out)
    assert (result["split"], result["num_examples"], result["training_data"]) == ("val", 60, True)
    assert result["nll_nats"] == pytest.approx(train.mean_nll(ckpt.flow, ckpt.state.best_params, held_out), rel=1e-6)


def test_fit_flow_nsf_fits_a_neural_spline_flow_that_evals_and_samples(run, capsys, tmp_path):
    from jaxflow.core.serialize import spec_to_json

    root, csv, _ = run
    run_dir = tmp_path / "nsf"
    status, _, err = _run(capsys, "fit", csv, "--out", run_dir, "--flow", "nsf", "--bins", "4", "--tail-bound", "2.5",
                          "--steps", "4", "--eval-every", "2", *TINY)
    assert status == 0, err
    ckpt = checkpoint.load(str(run_dir))
    spec = json.dumps(spec_to_json(ckpt.flow))
    assert '"type": "Coupling"' in spec and '"transform": {"type": "RQSpline", "bins": 4, "bound": 2.5}' in spec
    status, out, _ = _run(capsys, "eval", run_dir, csv, "--json")
    assert status == 0 and json.loads(out)["status"] == "ok"
    assert _run(capsys, "sample", run_dir, "-n", "5", "--out", tmp_path / "s.npy")[0] == 0
    assert np.load(tmp_path / "s.npy").shape == (5, 2)


def test_fit_flow_maf_fits_a_masked_autoregressive_flow_that_evals_and_samples(run, capsys, tmp_path):
    from jaxflow.core.serialize import spec_to_json

    root, csv, _ = run
    run_dir = tmp_path / "maf"
    status, _, err = _run(capsys, "fit", csv, "--out", run_dir, "--flow", "maf", "--scale", "exp", "--steps", "4",
                          "--eval-every", "2", *TINY)
    assert status == 0, err
    spec = json.dumps(spec_to_json(checkpoint.load(str(run_dir)).flow))
    assert '"type": "MaskedAutoregressive", "transform": {"type": "AffineTransform", "scale": "exp"' in spec
    status, out, _ = _run(capsys, "eval", run_dir, csv, "--json")
    assert status == 0 and json.loads(out)["status"] == "ok"
    assert _run(capsys, "sample", run_dir, "-n", "5", "--out", tmp_path / "s.npy")[0] == 0
    assert np.load(tmp_path / "s.npy").shape == (5, 2)


def test_eval_builtin_reports_entropy(run, capsys):
    status, out, _ = _run(capsys, "eval", run[2], "moons")
    assert status == 0
    assert "on 50000 test examples (not the run's training data); true entropy 0.2901 nats" in out


def test_eval_scores_every_row_of_another_file_and_the_held_out_rows_of_the_training_file(run, capsys):
    """The run records its data's fingerprint: a file it was not fitted on is scored whole (it used to
    be cut 90/10 and only its 10 % "validation" rows scored), the training file by its held-out rows."""
    root, csv, run_dir = run
    ckpt = checkpoint.load(str(run_dir))
    other = data.toy("moons").sample(500, seed=5)
    np.save(root / "other.npy", other)
    status, out, _ = _run(capsys, "eval", run_dir, root / "other.npy", "--json")
    result = json.loads(out)
    assert status == 0 and (result["split"], result["num_examples"], result["training_data"]) == ("all", 500, False)
    assert result["nll_nats"] == pytest.approx(train.mean_nll(ckpt.flow, ckpt.state.best_params, other), rel=1e-6)
    status, out, _ = _run(capsys, "eval", run_dir, root / "other.npy")
    assert "on 500 examples, every row (not the run's training data)" in out
    status, out, _ = _run(capsys, "eval", run_dir, csv)
    assert "on 60 held-out val examples of the run's training data" in out
    np.save(root / "tiny.npy", other[:2])  # too few rows to split: not the training data, scored whole
    status, out, _ = _run(capsys, "eval", run_dir, root / "tiny.npy", "--json")
    assert status == 0 and json.loads(out)["num_examples"] == 2


def test_rerun_of_a_finished_fit_resumes_without_change(run, capsys):
    root, csv, run_dir = run
    before = _snapshot(run_dir)
    status, out, err = _run(capsys, "fit", csv, "--out", run_dir, "--steps", "20", "--eval-every", "10", *TINY)
    assert status == 0 and "resuming" in err and "completed at step 20" in out
    assert _snapshot(run_dir) == before


@pytest.mark.parametrize("name", ["s.npy", "s.csv"])
def test_sample(run, capsys, name):
    out_file = run[0] / name
    status, out, _ = _run(capsys, "sample", run[2], "-n", 7, "--out", out_file, "--seed", 3)
    assert status == 0 and f"wrote 7 samples to {out_file}" in out
    x = data.load_array(str(out_file))
    assert x.shape == (7, 2) and np.isfinite(x).all()


def test_plot_writes_a_png(run, capsys):
    png = run[0] / "plot.png"
    status, _, _ = _run(capsys, "plot", run[2], "--data", run[1], "--out", png)
    assert status == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def conditional(tmp_path_factory):
    """A tiny conditional model fitted on a CSV whose last column is the context (rotated moons)."""
    root = tmp_path_factory.mktemp("cond")
    x, c = data.CONDITIONAL_TOYS["rotated-moons"].sample(600, seed=0)
    csv = root / "rotated.csv"
    np.savetxt(csv, np.concatenate([x, c], 1), delimiter=",")
    run_dir = root / "run"
    argv = ["fit", csv, "--out", run_dir, "--context-columns", "2", "--steps", "20", "--eval-every", "10", *TINY]
    assert main([str(a) for a in argv]) == 0
    return root, csv, run_dir, x, c


def test_conditional_fit_from_context_columns_or_npz_keys(conditional, capsys):
    root, csv, run_dir, x, c = conditional
    ckpt = checkpoint.load(str(run_dir))
    assert ckpt.flow.context_dim == 1 and ckpt.flow.context_affine is not None
    np.savez(root / "xc.npz", x=x, context=c)
    status, out, err = _run(capsys, "eval", run_dir, root / "xc.npz", "--json", "--split", "all")
    assert status == 0, err
    expected = train.mean_nll(ckpt.flow, ckpt.state.best_params, x.astype(np.float32), c.astype(np.float32))
    assert json.loads(out)["nll_nats"] == pytest.approx(expected, rel=1e-6)
    status, _, err = _run(capsys, "fit", root / "xc.npz", "--out", root / "npz-run", "--steps", "10",
                          "--eval-every", "10", *TINY)
    assert status == 0, err
    assert checkpoint.load(str(root / "npz-run")).flow.context_dim == 1


def test_eval_of_a_conditional_run_on_a_file_without_its_context_suggests_the_flag(conditional, capsys):
    root, csv, run_dir, _, _ = conditional
    status, out, err = _run(capsys, "eval", run_dir, csv)
    assert status == 1 and out == "" and err.count("\n") == 1
    assert "the model is conditional (a context of 1 numbers) and the data carry none; pass --context-columns" in err
    status, out, err = _run(capsys, "eval", run_dir, csv, "--context-columns", "2")
    assert status == 0 and "held-out val examples of the run's training data" in out, err


def test_conditional_sample_and_plot_take_the_context(conditional, capsys):
    root, _, run_dir, _, _ = conditional
    status, out, err = _run(capsys, "sample", run_dir, "-n", 5, "--out", root / "s.npy", "--context", "0.5")
    assert status == 0, err
    ckpt = checkpoint.load(str(run_dir))
    expected = jax.numpy.asarray(np.load(root / "s.npy"))
    from jaxflow import sample
    np.testing.assert_array_equal(expected, sample(ckpt.flow, ckpt.state.best_params, jax.random.key(0), 5,
                                                   context=np.float32([0.5])))
    status, _, err = _run(capsys, "plot", run_dir, "--context", "0", "--context", "1.5", "--out", root / "c.png")
    assert status == 0, err


def _bad_inputs(root, csv, run_dir):
    """``(argv, expected message)`` for every kind of bad input."""
    files = {"ragged.csv": "1,2\n3,4,5\n", "words.csv": "1,2\nfoo,3\n", "nan.csv": "1,2\nnan,2\n",
             "inf.csv": "1,2\n-inf,2\n", "empty.csv": "x,y\n", "three.csv": "1,2,3\n4,5,6\n", "data.txt": "1,2\n"}
    for name, text in files.items():
        (root / name).write_text(text)
    corrupt, foreign, other = root / "corrupt", root / "foreign", root / "other"
    if not corrupt.exists():
        corrupt.mkdir()
        for name in os.listdir(run_dir):
            (corrupt / name).write_bytes((run_dir / name).read_bytes()[: -5 if name.endswith(".msgpack") else None])
        foreign.mkdir()
        (foreign / checkpoint.METADATA).write_text('{"format": "something-else"}')
        other.mkdir()
        (other / "notes.txt").write_text("mine")
    fit = ["--out", root / "new", *TINY]
    return [
        (["fit", root / "missing.csv", *fit], "no such file"),
        (["fit", root / "data.txt", *fit], "unknown format '.txt'"),
        (["fit", "mooons", *fit], "unknown dataset 'mooons'"),
        (["fit", root / "ragged.csv", *fit], "ragged CSV: line 2 has 3 fields, expected 2"),
        (["fit", root / "words.csv", *fit], "line 2, column 1: 'foo' is not a number"),
        (["fit", root / "nan.csv", *fit], "1 rows hold NaN or inf"),
        (["fit", root / "inf.csv", *fit], "1 rows hold NaN or inf"),
        (["fit", root / "empty.csv", *fit], "no data rows"),
        (["fit", csv, "--out", root / "new", "--num-flows", "0"], "num_flows must be >= 1"),
        (["fit", csv, "--out", run_dir, "--steps", "20", "--eval-every", "10", *TINY[:-3], "--batch-size", "64"],
         "holds a run of a different configuration (batch_size: 32 -> 64)"),
        (["fit", csv, "--out", other, *TINY], "is not empty and holds no jaxflow run"),
        (["eval", run_dir, root / "three.csv", "--split", "all"], "examples of shape (3,), the model expects (2,)"),
        (["eval", run_dir, root / "three.csv"], "examples of shape (3,), the model expects (2,)"),
        (["eval", run_dir, root / "three.csv", "--split", "val"], "2 rows are too few to split off validation data"),
        (["eval", corrupt, csv], "truncated or altered checkpoint"),
        (["eval", foreign, csv], "not a jaxflow checkpoint"),
        (["eval", other, csv], "not a jaxflow run"),
        (["eval", root / "nowhere", csv], "no such run directory"),
        (["sample", corrupt, "-n", "5", "--out", root / "keep.npy", "--force"], "truncated or altered checkpoint"),
        (["sample", run_dir, "-n", "5", "--out", root / "s.txt"], "unknown output format '.txt'"),
        (["sample", run_dir, "-n", "0", "--out", root / "keep.npy", "--force"], "-n must be in [1, 2147483647]"),
        (["plot", foreign, "--out", root / "keep.png", "--force"], "not a jaxflow checkpoint"),
        (["plot", run_dir, "--data", root / "three.csv", "--out", root / "keep.png", "--force"], "examples of shape (3,)"),
        (["sample", run_dir, "-n", "3", "--out", csv], "exists; pass --force to overwrite it"),
        (["plot", run_dir, "--out", root / "keep.png"], "exists; pass --force to overwrite it"),
        (["fit", csv, "--context-columns", "5", *fit], "context columns [5] must be distinct, in 0..1"),
        (["fit", csv, "--context-columns", "1", *fit], "a flow needs D >= 2 columns"),
        (["sample", run_dir, "-n", "5", "--out", root / "keep2.npy", "--context", "1"],
         "--context: this model is unconditional, got a context of 1 numbers"),
    ]


def test_every_bad_input_is_one_line_nonzero_and_changes_nothing(run, capsys):
    root, csv, run_dir = run
    cases = _bad_inputs(root, csv, run_dir)
    (root / "keep.npy").write_bytes(b"precious")
    (root / "keep.png").write_bytes(b"precious")
    before = _snapshot(root)
    for argv, message in cases:
        status, out, err = _run(capsys, *argv)
        assert status == 1, argv
        assert err.count("\n") == 1 and err.startswith("jaxflow: error: ") and message in err, (argv, err)
        assert "Traceback" not in err and out == ""
    assert _snapshot(root) == before
    assert not (root / "new").exists()


def _fit_process(run_dir, steps):
    argv = [sys.executable, "-m", "jaxflow", "fit", "moons", "--out", str(run_dir), "--steps", str(steps),
            "--eval-every", "20", *TINY]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigint_saves_exits_130_and_resumed_run_is_bit_identical(tmp_path):
    """Real processes: one interrupted by SIGINT then resumed, one uninterrupted; same final state."""
    steps = 800
    interrupted, straight = _fit_process(tmp_path / "a", steps), _fit_process(tmp_path / "b", steps)
    deadline = time.time() + 120
    while not checkpoint.exists(str(tmp_path / "a")) and interrupted.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    interrupted.send_signal(signal.SIGINT)
    _, err = interrupted.communicate(timeout=120)
    assert interrupted.returncode == 128 + signal.SIGINT, err
    assert "interrupted at step" in err and "Traceback" not in err
    stopped_at = checkpoint.load(str(tmp_path / "a")).state.step
    assert 0 < stopped_at < steps
    resumed = _fit_process(tmp_path / "a", steps)
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0 and f"resuming {tmp_path / 'a'} from step {stopped_at}" in err
    assert straight.wait(timeout=120) == 0
    a, b = checkpoint.load(str(tmp_path / "a")), checkpoint.load(str(tmp_path / "b"))
    assert a.state.step == b.state.step == steps
    for x, y in zip(jax.tree_util.tree_leaves(a.state), jax.tree_util.tree_leaves(b.state), strict=True):
        np.testing.assert_array_equal(x, y)
    curves = [np.genfromtxt(tmp_path / name / "history.csv", delimiter=",", names=True) for name in "ab"]
    assert list(curves[0]["step"]) == list(range(20, steps + 1, 20))  # each validation once, across the resume
    np.testing.assert_array_equal(curves[0]["val_nll"], curves[1]["val_nll"])
    resumed_row = curves[0]["step"] == 20 * (stopped_at // 20 + 1)  # averages the steps since the resume only
    first_after_resume = 20 * (stopped_at // 20 + 1) - stopped_at
    assert list(curves[0]["train_steps"]) == [first_after_resume if r else 20 for r in resumed_row]
    np.testing.assert_array_equal(curves[0]["train_nll"][~resumed_row], curves[1]["train_nll"][~resumed_row])


def test_demo_short_mode(tmp_path, capsys):
    status, out, err = _run(capsys, "demo", "--out", tmp_path / "demo", "--steps", "50", "--quiet")
    assert status == 0, err
    assert "test NLL" in out and "true entropy 0.2901 nats" in out
    assert (tmp_path / "demo" / "demo.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_ignores_how_a_flow_is_computed_but_not_its_compute_dtype(run):
    """scan_unroll changes how, not what: a run resumes across it; compute_dtype changes the numbers,
    and a real change of the model is refused too, each naming the old and new value.
    (The module's fitted run, read only: ``_prepare_run_dir`` writes nothing.)"""
    import dataclasses

    from jaxflow import cli, commands

    run_dir, ckpt, splits = str(run[2]), checkpoint.load(str(run[2])), data.load_dataset(str(run[1]))
    model = commands._model_and_config(splits, {**cli.DEFAULTS, "num_flows": 2, "hidden_dim": 8, "num_hidden": 1})[0]
    assert train.standardize(model, splits.train) == ckpt.flow
    unrolled = train.standardize(dataclasses.replace(model, scan_unroll=True), splits.train)
    assert commands._prepare_run_dir(run_dir, unrolled, ckpt.config, ckpt.run).state.step == 20
    bf16 = train.standardize(dataclasses.replace(model, compute_dtype="bfloat16"), splits.train)
    with pytest.raises(cli.CLIError, match=r"different configuration \(layers\.layers\[1\]\.layer\.conditioner\.compute_dtype: None -> 'bfloat16'\)"):
        commands._prepare_run_dir(run_dir, bf16, ckpt.config, ckpt.run)
    deeper = train.standardize(dataclasses.replace(model, num_flows=3), splits.train)
    with pytest.raises(cli.CLIError, match=r"different configuration \(layers\.layers\[1\]\.n: 2 -> 3\)"):
        commands._prepare_run_dir(run_dir, deeper, ckpt.config, ckpt.run)


def test_help_and_import_do_not_load_jax():
    """``import jaxflow`` and the parser behind ``jaxflow --help`` import no jax (it costs 1.2-2 s here);
    measured: ``jaxflow --help`` 0.5 s, ``import jaxflow`` 0.3 s."""
    code = ("import sys, jaxflow, jaxflow.cli; jaxflow.cli._parser().format_help(); "
            "print(sorted(m for m in ('jax', 'flax', 'distrax', 'optax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_damaged_learning_curve_stops_the_resume_in_one_line(run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["fit", run[1], "--out", run_dir, "--steps", "20", "--eval-every", "10", *TINY]  # the fixture's fit
    assert _run(capsys, *argv)[0] == 0
    ckpt = checkpoint.load(str(run_dir))
    checkpoint.save(str(run_dir), ckpt.flow, ckpt.config, ckpt.state._replace(step=10), ckpt.run)  # resumable
    (run_dir / "history.csv").write_text("step,seconds\nnot a number,1\n")
    status, _, err = _run(capsys, *argv)
    assert status == 1 and err.count("\n") == 1 and "history.csv: not a jaxflow learning curve" in err
    (run_dir / "history.csv").unlink()
    (run_dir / "history.csv").symlink_to("/dev/zero")
    status, _, err = _run(capsys, *argv)
    assert status == 1 and "cannot read the learning curve (a symbolic link)" in err


def _parsers(parser, name="jaxflow"):
    """``(name, parser)`` of the command and every subcommand, depth first."""
    import argparse

    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                yield from _parsers(child, f"{name} {sub}")


def test_help_of_every_command_names_each_option_and_no_empty_default():
    """Every positional and option has a help line, and no "(default: None)" (or False) stands beside them."""
    import argparse

    from jaxflow import cli

    parsers = list(_parsers(cli._parser()))
    assert [name for name, _ in parsers] == ["jaxflow", "jaxflow fit", "jaxflow eval", "jaxflow sample",
                                             "jaxflow plot", "jaxflow data", "jaxflow data fetch", "jaxflow demo"]
    for name, parser in parsers:
        text = parser.format_help()
        assert "default: None" not in text and "default: False" not in text, name
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help and action.help.strip(), (name, action.dest)


def test_short_version_flag(capsys):
    from jaxflow import __version__

    for flag in ("-V", "--version"):
        with pytest.raises(SystemExit) as stop:
            main([flag])
        assert stop.value.code == 0 and capsys.readouterr().out == f"jaxflow {__version__}\n"


def test_sample_of_an_image_run_to_csv_writes_one_row_per_image(tmp_path, capsys):
    """An image model's samples (N, H, W, C) go to CSV as N rows of H*W*C values, row-major."""
    import jaxflow

    model = jaxflow.MultiScaleRealNVP((4, 4, 1), num_scales=1, couplings_per_scale=1, channels=4, num_blocks=1)
    flow = train.preprocess(model, np.full((3, 4, 4, 1), 0.5, np.float32), kind="logit")
    config = train.TrainConfig(steps=1, batch_size=2)
    checkpoint.save(str(tmp_path / "run"), flow, config, train.init_state(flow, config), {"image_shape": [4, 4, 1]})
    status, _, err = _run(capsys, "sample", tmp_path / "run", "-n", 3, "--out", tmp_path / "s.csv", "--seed", 1)
    assert status == 0, err
    assert _run(capsys, "sample", tmp_path / "run", "-n", 3, "--out", tmp_path / "s.npy", "--seed", 1)[0] == 0
    images = np.load(tmp_path / "s.npy")
    assert images.shape == (3, 4, 4, 1)
    np.testing.assert_allclose(data.load_array(str(tmp_path / "s.csv")), images.reshape(3, 16), rtol=1e-6)


def test_sample_is_refused_when_it_does_not_fit_in_memory_or_is_not_finite(run, capsys, monkeypatch):
    """The compiled sampler's memory (XLA's analysis) is compared with what is available, before sampling;
    non-finite samples are refused, not written."""
    from jaxflow import commands

    root, _, run_dir = run
    monkeypatch.setattr(commands, "_available_memory", lambda: 10_000)
    status, _, err = _run(capsys, "sample", run_dir, "-n", 1000, "--out", root / "big.npy")
    assert status == 1 and re.search(r"-n 1000: sampling needs about [0-9.e-]+ GB, 1e-05 GB are available", err), err
    monkeypatch.setattr(commands, "_available_memory", lambda: 10**9)
    assert _run(capsys, "sample", run_dir, "-n", 1000, "--out", root / "big.npy")[0] == 0
    real = commands._sampler
    monkeypatch.setattr(commands, "_sampler", lambda *a: lambda key: np.where(np.arange(6)[:, None] == 4, np.nan,
                                                                               np.asarray(real(*a)(key))))
    status, _, err = _run(capsys, "sample", run_dir, "-n", 6, "--out", root / "nan.npy")
    assert status == 1 and "1 of 6 samples are NaN or inf" in err and not (root / "nan.npy").exists()


def test_the_conditional_example_writes_only_its_out_file(tmp_path):
    """Run from another directory with a tiny budget: the figure goes to --out and nothing else is written."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script, env = os.path.join(root, "examples", "conditional_moons.py"), dict(os.environ, PYTHONPATH=root)
    (tmp_path / "figures").mkdir()
    done = subprocess.run([sys.executable, script, "--out", "figures/c.png", "--steps", "2"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    assert [str(p.relative_to(tmp_path)) for p in sorted(tmp_path.rglob("*"))] == ["figures", "figures/c.png"]
    assert (tmp_path / "figures" / "c.png").read_bytes()[:4] == b"\x89PNG"
    done = subprocess.run([sys.executable, script, "--out", "nowhere/c.png", "--steps", "2"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 2 and "folder" in done.stderr and "does not exist" in done.stderr
