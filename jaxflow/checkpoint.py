"""Checkpoints: a versioned JSON file beside a msgpack payload, written atomically, loaded without pickle.

A run directory holds::

    checkpoint.json              {"format": "jaxflow-checkpoint", "version": 1, "spec": {...},
                                  "dtype": "float32", "train": {...}, "run": {...}, "step": k,
                                  "payload": {"file": "state-<step>-<sha12>.msgpack",
                                              "sha256": "<hex>", "bytes": n}}
    state-<step>-<sha12>.msgpack flax.serialization.msgpack_serialize({"state": TrainState,
                                  "standardization": {"mean", "scale"}})

The payload is plain msgpack (numbers, strings, maps and raw array buffers, restored by
``flax.serialization.msgpack_restore``), so loading never executes code. It is written under a
new name first (temp file, fsync, ``os.replace``); then ``checkpoint.json`` is replaced
atomically to point at it, and only then are older payloads deleted. A crash at any moment thus
leaves a ``checkpoint.json`` naming a complete payload: the last good checkpoint.

Loading checks, and rejects with a one-line :class:`CheckpointError`: that the JSON is a jaxflow
checkpoint of a known version, that the spec builds a :class:`~jaxflow.RealNVP`, that the
payload has the recorded size and SHA-256 (truncated or tampered files), and that every array
has the shape and dtype the spec and optimiser imply.

flax serialisation was chosen over orbax-checkpoint: one small file, no background threads or
directory protocol, and the same no-pickle guarantee.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import math
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxflow.spec import RealNVP
from jaxflow.train import Standardization, TrainConfig, TrainState, init_state

__all__ = ["CheckpointError", "Checkpoint", "FORMAT", "VERSION", "METADATA", "exists", "save", "read_metadata", "load"]

FORMAT = "jaxflow-checkpoint"
VERSION = 1
METADATA = "checkpoint.json"


class CheckpointError(ValueError):
    """A checkpoint that is missing, foreign, corrupt or inconsistent with its spec."""


class Checkpoint(NamedTuple):
    """A loaded run: the spec, its training settings, the standardisation, the state and ``run`` metadata."""

    flow: RealNVP
    config: TrainConfig
    standardization: Standardization
    state: TrainState
    run: dict


def exists(run_dir: str) -> bool:
    """Whether ``run_dir`` holds a checkpoint's metadata file (valid or not)."""
    return os.path.isfile(os.path.join(run_dir, METADATA))


def _atomic_write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def save(run_dir: str, flow: RealNVP, config: TrainConfig, std: Standardization, state: TrainState,
         run: dict[str, Any]) -> str:
    """Write ``state`` as the latest checkpoint of ``run_dir`` (created if needed); returns the payload path.

    ``run`` is JSON metadata of the caller's choosing (e.g. the data source), stored verbatim.
    """
    from flax import serialization

    os.makedirs(run_dir, exist_ok=True)
    payload = serialization.msgpack_serialize(jax.device_get({
        "state": serialization.to_state_dict(state),
        "standardization": {"mean": std.mean, "scale": std.scale},
    }))
    digest = hashlib.sha256(payload).hexdigest()
    name = f"state-{state.step:09d}-{digest[:12]}.msgpack"
    _atomic_write(os.path.join(run_dir, name), payload)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "spec": dataclasses.asdict(flow),
        "dtype": str(jnp.dtype(std.mean.dtype)),
        "train": dataclasses.asdict(config),
        "run": run,
        "step": state.step,
        "best_val_nll": state.best_val_nll if math.isfinite(state.best_val_nll) else None,  # strict JSON
        "payload": {"file": name, "sha256": digest, "bytes": len(payload)},
    }
    _atomic_write(os.path.join(run_dir, METADATA), json.dumps(meta, indent=2).encode())
    for stale in glob.glob(os.path.join(run_dir, "state-*.msgpack")):
        if os.path.basename(stale) != name:
            os.remove(stale)
    return os.path.join(run_dir, name)


def read_metadata(run_dir: str) -> dict:
    """The validated ``checkpoint.json`` of ``run_dir``."""
    path = os.path.join(run_dir, METADATA)
    if not os.path.isdir(run_dir):
        raise CheckpointError(f"{run_dir}: no such run directory")
    if not os.path.isfile(path):
        raise CheckpointError(f"{run_dir}: not a jaxflow run (no {METADATA})")
    try:
        with open(path, "rb") as handle:
            meta = json.loads(handle.read())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a jaxflow checkpoint (format is not {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {meta.get('version')!r}, this jaxflow reads {VERSION}")
    missing = {"spec", "dtype", "train", "run", "step", "payload"} - meta.keys()
    if missing:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata, missing {sorted(missing)}")
    if not all(isinstance(meta[key], dict) for key in ("spec", "train", "run", "payload")):
        raise CheckpointError(f"{path}: corrupt checkpoint metadata (spec, train, run and payload must be objects)")
    return meta


def _build(cls, fields: Any, what: str, path: str):
    try:
        return cls(**fields)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: invalid {what} in checkpoint: {err}") from None


def _read_payload(run_dir: str, meta: dict) -> bytes:
    info = meta["payload"]
    name = str(info.get("file", ""))
    if not name or os.path.basename(name) != name:
        raise CheckpointError(f"{run_dir}: corrupt checkpoint metadata (bad payload name {name!r})")
    path = os.path.join(run_dir, name)
    try:
        with open(path, "rb") as handle:
            payload = handle.read()
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read checkpoint payload ({err.strerror})") from None
    if len(payload) != info.get("bytes"):
        raise CheckpointError(f"{path}: truncated or altered checkpoint ({len(payload)} bytes, "
                              f"expected {info.get('bytes')})")
    if hashlib.sha256(payload).hexdigest() != info.get("sha256"):
        raise CheckpointError(f"{path}: checkpoint fails its SHA-256 check (tampered or corrupt)")
    return payload


def _check_like(template, restored, path: str) -> None:
    """Every array of ``restored`` has the shape and dtype of ``template``'s (arrays or ShapeDtypeStructs)."""
    expected = jax.tree_util.tree_leaves_with_path(template)
    got = jax.tree_util.tree_leaves(restored)
    if len(got) != len(expected):
        raise CheckpointError(f"{path}: checkpoint state has {len(got)} arrays, the spec needs {len(expected)}")
    for (key, want), have in zip(expected, got):
        have_shape, have_dtype = np.shape(have), np.asarray(have).dtype
        if have_shape != tuple(want.shape) or have_dtype != want.dtype:
            raise CheckpointError(f"{path}: state{jax.tree_util.keystr(key)} is {have_dtype}{list(have_shape)}, "
                                  f"the spec needs {want.dtype}{list(want.shape)}")


def load(run_dir: str) -> Checkpoint:
    """Load and validate the latest checkpoint of ``run_dir``; raises :class:`CheckpointError`."""
    from flax import serialization

    meta = read_metadata(run_dir)
    meta_path = os.path.join(run_dir, METADATA)
    flow = _build(RealNVP, meta["spec"], "spec", meta_path)
    config = _build(TrainConfig, meta["train"], "training config", meta_path)
    payload = _read_payload(run_dir, meta)
    try:
        tree = serialization.msgpack_restore(payload)
        std = Standardization(*(jnp.asarray(tree["standardization"][key]) for key in ("mean", "scale")))
        dtype = jnp.dtype(meta["dtype"])
        template = jax.eval_shape(lambda: init_state(flow, config, dtype))  # shapes only, nothing compiled
        state = serialization.from_state_dict(template, tree["state"])
        scalars = {"step": int(state.step), "best_val_nll": float(state.best_val_nll),
                   "evals_since_best": int(state.evals_since_best)}
    except Exception as err:  # msgpack and flax raise many types on malformed input
        raise CheckpointError(f"{run_dir}: corrupt checkpoint payload ({type(err).__name__}: {err})") from None
    arrays = lambda s: (s.params, s.opt_state, s.rng, s.best_params)
    _check_like(arrays(template), arrays(state), run_dir)
    vector = jax.ShapeDtypeStruct((flow.dim,), dtype)
    _check_like(Standardization(vector, vector), std, run_dir)
    state = jax.tree_util.tree_map(jnp.asarray, state._replace(**scalars))._replace(**scalars)
    return Checkpoint(flow, config, std, state, meta["run"])
