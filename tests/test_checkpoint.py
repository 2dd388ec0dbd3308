"""Checkpoints: exact round trip, atomic replacement, no pickle, and clear errors for damaged files."""

import glob
import json
import os
import pickle

import jax
import numpy as np
import pytest

import jaxflow
from jaxflow import checkpoint, data, train
from jaxflow.checkpoint import CheckpointError

MODEL = jaxflow.RealNVP(dim=2, num_flows=2, hidden_dim=8, num_hidden=1, scale="tanh", identity_init=True)
CONFIG = train.TrainConfig(steps=30, batch_size=32, eval_every=5)
X = data.toy("moons").sample(600, seed=0)


@pytest.fixture(scope="module")
def trained():
    """A short run: its standardised flow and final state (non-trivial optimiser state and best params)."""
    flow = train.standardize(MODEL, X)
    return flow, train.fit(flow, X[100:], X[:100], CONFIG, progress=False).state


def _save(run_dir, trained, state=None):
    flow, final = trained
    return checkpoint.save(str(run_dir), flow, CONFIG, state or final, {"data": "moons"})


def _meta(run_dir):
    return json.loads((run_dir / checkpoint.METADATA).read_text())


def test_round_trip_is_exact(tmp_path, trained):
    _save(tmp_path, trained)
    loaded = checkpoint.load(str(tmp_path))
    flow, state = trained
    assert (loaded.flow, loaded.config, loaded.run) == (flow, CONFIG, {"data": "moons"})
    assert (loaded.state.step, loaded.state.best_val_nll, loaded.state.evals_since_best) == (
        state.step, state.best_val_nll, state.evals_since_best)
    for a, b in zip(jax.tree_util.tree_leaves(loaded.state), jax.tree_util.tree_leaves(state), strict=True):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(a, b)
    meta = _meta(tmp_path)
    assert meta["format"] == "jaxflow-checkpoint" and meta["version"] == 2 and meta["step"] == 30
    assert [layer["type"] for layer in meta["spec"]["layers"]["layers"]] == ["Affine", "Repeat"]


def test_a_checkpoint_from_before_steps_per_call_and_devices_loads_with_the_defaults(tmp_path, trained):
    """Checkpoints written before ``TrainConfig.steps_per_call`` and the ``devices`` record existed."""
    _save(tmp_path, trained)
    assert _meta(tmp_path)["devices"] == {"count": 1, "processes": 1, "platform": "cpu", "mesh": {"data": 1}}
    meta = _meta(tmp_path)
    del meta["devices"], meta["train"]["steps_per_call"]
    meta["metadata_sha256"] = checkpoint._metadata_digest(meta)
    (tmp_path / checkpoint.METADATA).write_text(json.dumps(meta))
    assert checkpoint.load(str(tmp_path)).config == CONFIG and CONFIG.steps_per_call == 1


def test_a_composed_conditional_flow_round_trips_its_spec(tmp_path):
    coupling = jaxflow.AffineCoupling(mask=(True, False, True), conditioner=jaxflow.MLP(8, 1), scale="sigmoid")
    model = jaxflow.Flow((3,), jaxflow.Repeat(jaxflow.Chain(jaxflow.ActNorm(), coupling, jaxflow.LULinear(),
                                                             jaxflow.Permute("random", seed=3)), 2), context_dim=2)
    x, c = np.random.default_rng(0).normal(size=(200, 3)), np.random.default_rng(1).normal(size=(200, 2))
    flow = train.standardize(model, x, c)
    config = train.TrainConfig(steps=4, batch_size=16, eval_every=2)
    state = train.fit(flow, x, x, config, context_train=c, context_val=c, progress=False).state
    checkpoint.save(str(tmp_path), flow, config, state, {})
    loaded = checkpoint.load(str(tmp_path))
    assert loaded.flow == flow and loaded.flow.context_affine == flow.context_affine
    np.testing.assert_array_equal(jaxflow.log_prob(loaded.flow, loaded.state.params, x, context=c),
                                  jaxflow.log_prob(flow, state.params, x, context=c))


def test_version_1_checkpoints_load_as_the_equivalent_flow(tmp_path):
    """A file in the previous format (RealNVP spec, standardisation beside the state) loads as the
    flow with the standardisation in front, computing the same log-density as the old code did."""
    import dataclasses
    import hashlib

    from flax import serialization

    mean, scale = X.mean(0), X.std(0)
    u = (X - mean) / scale
    state = train.fit(MODEL, u[100:], u[:100], CONFIG, progress=False).state  # the old layout: RealNVP params
    payload = serialization.msgpack_serialize(jax.device_get({
        "state": serialization.to_state_dict(state),
        "standardization": {"mean": np.float32(mean), "scale": np.float32(scale)}}))
    name = f"state-000000030-{hashlib.sha256(payload).hexdigest()[:12]}.msgpack"
    (tmp_path / name).write_bytes(payload)
    meta = {"format": "jaxflow-checkpoint", "version": 1, "spec": dataclasses.asdict(MODEL), "dtype": "float32",
            "train": dataclasses.asdict(CONFIG), "run": {}, "step": 30, "best_val_nll": state.best_val_nll,
            "payload": {"file": name, "sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}}
    (tmp_path / checkpoint.METADATA).write_text(json.dumps(meta))
    loaded = checkpoint.load(str(tmp_path))
    old = jaxflow.log_prob(MODEL, state.best_params, (X - np.float32(mean)) / np.float32(scale)) \
        - np.log(np.float32(scale)).sum()
    np.testing.assert_allclose(jaxflow.log_prob(loaded.flow, loaded.state.best_params, X), old, rtol=1e-5, atol=1e-5)
    assert loaded.state.step == 30 and loaded.flow.layers.layers[1] == MODEL.layers


def test_loading_never_unpickles(tmp_path, trained, monkeypatch):
    _save(tmp_path, trained)

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(np, "load", refuse)
    checkpoint.load(str(tmp_path))


def test_old_payloads_are_removed_after_commit(tmp_path, trained):
    _, state = trained
    _save(tmp_path, trained, state._replace(step=5))
    _save(tmp_path, trained)
    assert [os.path.basename(p) for p in glob.glob(str(tmp_path / "state-*"))] == [_meta(tmp_path)["payload"]["file"]]


def test_crash_before_commit_keeps_last_good_checkpoint(tmp_path, trained, monkeypatch):
    """If the process dies after writing the new payload but before replacing the JSON, the old one loads."""
    _, state = trained
    _save(tmp_path, trained, state._replace(step=5))
    real_replace = os.replace

    def crash_on_metadata(src, dst):
        if os.path.basename(dst) == checkpoint.METADATA:
            raise OSError("simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_metadata)
    with pytest.raises(OSError, match="simulated crash"):
        _save(tmp_path, trained)
    monkeypatch.undo()
    assert checkpoint.load(str(tmp_path)).state.step == 5


def _payload(run_dir):
    return run_dir / _meta(run_dir)["payload"]["file"]


def _truncate(run_dir):
    payload = _payload(run_dir)
    payload.write_bytes(payload.read_bytes()[:-10])


def _flip_byte(run_dir):
    payload = _payload(run_dir)
    raw = bytearray(payload.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    payload.write_bytes(bytes(raw))


def _edit_meta(resign=True, **changes):
    """Edit checkpoint.json; with ``resign`` also recompute its SHA-256 (as an attacker who read the
    code could), so that the field validation behind the hash is what gets tested."""
    def edit(run_dir):
        meta = _meta(run_dir)
        for key, value in changes.items():
            meta[key] = value(meta) if callable(value) else value
        if resign:
            meta["metadata_sha256"] = checkpoint._metadata_digest(meta)
        (run_dir / checkpoint.METADATA).write_text(json.dumps(meta))
    return edit


def _edit_repeat(spec, **changes):
    repeat = spec["layers"]["layers"][1]
    spec["layers"]["layers"][1] = {**repeat, **changes}
    return spec


def _edit_coupling(spec, **changes):
    repeat = spec["layers"]["layers"][1]
    repeat["layer"] = {**repeat["layer"], **changes}
    return spec


DAMAGE = [
    (_truncate, "truncated or altered checkpoint"),
    (_flip_byte, "fails its SHA-256 check"),
    (lambda d: os.remove(_payload(d)), "cannot read checkpoint payload"),
    (lambda d: (d / checkpoint.METADATA).write_text("{not json"), "corrupt checkpoint metadata"),
    (lambda d: (d / checkpoint.METADATA).write_text('{"format": "orbax"}'), "not a jaxflow checkpoint"),
    (_edit_meta(version=99), "checkpoint version 99"),
    (_edit_meta(spec=lambda m: _edit_repeat(m["spec"], n=3)), r"\['dims'\]\['bias'\] is float32\[2, 2\], the spec needs float32\[3, 2\]"),
    (_edit_meta(spec=lambda m: _edit_coupling(m["spec"], scale="cube")), "invalid spec in checkpoint: AffineCoupling: scale"),
    (_edit_meta(spec=lambda m: {**m["spec"], "type": "os.system"}), "invalid spec in checkpoint: unknown spec type 'os.system'"),
    (_edit_meta(spec=lambda m: _edit_repeat(m["spec"], type="Affine")), "invalid spec in checkpoint: Affine: unknown field"),
    (_edit_meta(train=lambda m: {**m["train"], "momentum": 0.9}), "invalid training config"),
    (_edit_meta(payload=lambda m: {**m["payload"], "file": "../elsewhere.msgpack"}), "bad payload name"),
    (_edit_meta(resign=False, spec=lambda m: _edit_coupling(m["spec"], negative_slope=0.2)),
     "metadata fails its SHA-256 check"),
]


@pytest.mark.parametrize("damage, message", DAMAGE)
def test_damaged_checkpoints_are_rejected_clearly(tmp_path, trained, damage, message):
    _save(tmp_path, trained)
    damage(tmp_path)
    with pytest.raises(CheckpointError, match=message) as info:
        checkpoint.load(str(tmp_path))
    assert "\n" not in str(info.value)


def test_payload_with_valid_hash_but_foreign_content(tmp_path, trained):
    """A msgpack payload that passes the hash (metadata rewritten to match) but is not a state."""
    import hashlib

    from flax import serialization

    _save(tmp_path, trained)
    foreign = serialization.msgpack_serialize({"weights": np.zeros(3)})
    _payload(tmp_path).write_bytes(foreign)
    _edit_meta(payload=lambda m: {**m["payload"], "bytes": len(foreign),
                                  "sha256": hashlib.sha256(foreign).hexdigest()})(tmp_path)
    with pytest.raises(CheckpointError, match="corrupt checkpoint payload"):
        checkpoint.load(str(tmp_path))


def test_missing_run(tmp_path):
    with pytest.raises(CheckpointError, match="no such run directory"):
        checkpoint.load(str(tmp_path / "nothing"))
    with pytest.raises(CheckpointError, match="not a jaxflow run"):
        checkpoint.load(str(tmp_path))
