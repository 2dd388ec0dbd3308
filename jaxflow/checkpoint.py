"""Checkpoints: a versioned JSON file beside a msgpack payload, written atomically, loaded without pickle.

A run directory holds::

    checkpoint.json              {"format": "jaxflow-checkpoint", "version": 2,
                                  "spec": {"type": "Flow", ...}, "dtype": "float32",
                                  "train": {...}, "run": {...}, "step": k,
                                  "devices": {"count": n, "mesh": {"data": n}, ...},
                                  "payload": {"file": "state-<step>-<sha12>.msgpack",
                                              "sha256": "<hex>", "bytes": n}}
    state-<step>-<sha12>.msgpack flax.serialization.msgpack_serialize({"state": TrainState})

The spec is the flow's nested spec with type tags (:mod:`jaxflow.core.serialize`): any
composition round-trips, and the data's standardisation is part of it (a fixed ``Affine`` layer).
Version 1 files (a ``RealNVP`` spec and a separate standardisation) are still read, as the
equivalent version 2 flow. The payload is plain msgpack (numbers, strings, maps and raw array
buffers, restored by ``flax.serialization.msgpack_restore``), so loading never executes code. It
is written under a new name first (:func:`jaxflow.io.atomic_write`); then ``checkpoint.json`` is
replaced atomically to point at it, and only then are older payloads deleted. A crash at any
moment thus leaves a ``checkpoint.json`` naming a complete payload: the last good checkpoint.

Loading checks, and rejects with a one-line :class:`CheckpointError`: that the JSON is a jaxflow
checkpoint of a known version, that the spec builds a flow, that the payload has the recorded
size and SHA-256 (truncated or tampered files), and that every array has the shape and dtype the
spec and optimiser imply.

flax serialisation was chosen over orbax-checkpoint: one small file, no background threads or
directory protocol, and the same no-pickle guarantee.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import json
import math
import os
import re
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxflow import layers
from jaxflow.core.layer import Chain
from jaxflow.core.serialize import spec_from_json, spec_to_json
from jaxflow.core.spec import Flow, FlowSpec
from jaxflow.io import atomic_write, read_regular
from jaxflow.layers.elementwise import Affine
from jaxflow.presets import RealNVP
from jaxflow.train import TrainConfig, TrainState, data_mesh, init_state

__all__ = ["CheckpointError", "Checkpoint", "FORMAT", "VERSION", "METADATA", "exists", "is_payload", "save",
           "flow_from_json", "read_metadata", "load"]

FORMAT = "jaxflow-checkpoint"
VERSION = 2
READS = (1, 2)
METADATA = "checkpoint.json"
#: the largest ``checkpoint.json`` read (a spec with standardisation of a few thousand columns is ~100 kB)
MAX_METADATA_BYTES = 16 * 2**20
_PAYLOAD_NAME = re.compile(r"^state-\d{9,10}-[0-9a-f]{12}\.msgpack$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, foreign, corrupt or inconsistent with its spec."""


class Checkpoint(NamedTuple):
    """A loaded run: the flow spec, its training settings, the state and ``run`` metadata."""

    flow: FlowSpec
    config: TrainConfig
    state: TrainState
    run: dict


def exists(run_dir: str) -> bool:
    """Whether ``run_dir`` holds a checkpoint's metadata file (valid or not)."""
    return os.path.isfile(os.path.join(run_dir, METADATA))


def is_payload(name: str) -> bool:
    """Whether the file ``name`` is named like a payload :func:`save` writes (the state of one step)."""
    return _PAYLOAD_NAME.match(name) is not None


def save(run_dir: str, flow: FlowSpec, config: TrainConfig, state: TrainState, run: dict[str, Any],
         mesh: Optional[Mesh] = None) -> str:
    """Write ``state`` as the latest checkpoint of ``run_dir`` (created if needed); returns the payload path.

    ``run`` is JSON metadata of the caller's choosing (e.g. the data source), stored verbatim;
    ``"devices"`` records the processes, device count, platform and mesh shape of ``mesh`` (the
    training's, default one device): information, not a constraint, since a run resumes on any
    number of devices.
    """
    from flax import serialization

    spec = spec_to_json(flow)  # first: a spec that cannot be saved leaves nothing behind
    dtype = _check_savable(flow, config, state)
    os.makedirs(run_dir, exist_ok=True)
    payload = serialization.msgpack_serialize(jax.device_get({"state": serialization.to_state_dict(state)}))
    digest = hashlib.sha256(payload).hexdigest()
    name = f"state-{state.step:09d}-{digest[:12]}.msgpack"
    atomic_write(os.path.join(run_dir, name), payload)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "spec": spec,
        "dtype": dtype,
        "train": dataclasses.asdict(config),
        "run": run,
        "step": state.step,
        "best_val_nll": state.best_val_nll if math.isfinite(state.best_val_nll) else None,  # strict JSON
        "devices": _devices(mesh),
        "payload": {"file": name, "sha256": digest, "bytes": len(payload)},
    }
    meta["metadata_sha256"] = _metadata_digest(meta)
    atomic_write(os.path.join(run_dir, METADATA), json.dumps(meta, indent=2).encode())
    for stale in glob.glob(os.path.join(run_dir, "state-*.msgpack")):
        if os.path.basename(stale) != name:
            os.remove(stale)
    return os.path.join(run_dir, name)


#: the parameter dtypes a checkpoint holds
DTYPES = ("float32", "float64")


def params_dtype_name(params, where: str) -> str:
    """The name of the one dtype of ``params``, if a checkpoint can hold it; else a one-line :class:`CheckpointError`."""
    dtypes = sorted({str(jnp.result_type(leaf)) for leaf in jax.tree_util.tree_leaves(params)}) or ["float32"]
    if len(dtypes) != 1 or dtypes[0] not in DTYPES:
        raise CheckpointError(f"{where}: parameters of dtype {' and '.join(dtypes)}; a checkpoint holds one of "
                              f"{' or '.join(DTYPES)} (cast them first, e.g. jax.tree.map(lambda a: a.astype('float32'), params))")
    return dtypes[0]


@functools.lru_cache(maxsize=64)
def _template(flow: FlowSpec, config: TrainConfig, dtype: str) -> TrainState:
    """The shapes and dtypes (``ShapeDtypeStruct``) of a state of ``flow`` under ``config``: what :func:`load` restores into."""
    return jax.eval_shape(lambda: init_state(flow, config, jnp.dtype(dtype)))  # shapes only, nothing compiled


def _check_savable(flow: FlowSpec, config: TrainConfig, state: TrainState) -> str:
    """The parameters' dtype name; or refuse, in one line, a state that :func:`load` could not read
    back: parameters of another dtype, or an optimiser state not made by
    :func:`jaxflow.train.optimizer` of ``config``."""
    dtype = params_dtype_name(state.params, "checkpoint.save")
    template = _template(flow, config, dtype)
    for name in ("params", "opt_state", "best_params"):
        want, have = getattr(template, name), getattr(state, name)
        if jax.tree_util.tree_structure(want) != jax.tree_util.tree_structure(have):
            hint = ("the optimiser is train.optimizer(config); a state from another optimiser cannot resume here: "
                    "save the parameters alone with jaxflow.save(path, flow, params)") if name == "opt_state" \
                else "it does not match the flow's parameter layout"
            raise CheckpointError(f"checkpoint.save: the state's {name} has another structure than load expects ({hint})")
    _check_like(tuple(getattr(template, name) for name in ("params", "opt_state", "best_params")),
                (state.params, state.opt_state, state.best_params), "checkpoint.save")
    return dtype


def _devices(mesh: Optional[Mesh]) -> dict:
    mesh = mesh or data_mesh(1)
    devices = list(mesh.devices.flat)
    return {"count": len(devices), "processes": len({d.process_index for d in devices}),
            "platform": devices[0].platform, "mesh": dict(mesh.shape)}


def _metadata_digest(meta: dict) -> str:
    """SHA-256 of the canonical JSON of everything but the digest itself: spec, settings, run, manifest."""
    body = {key: value for key, value in meta.items() if key != "metadata_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_metadata(run_dir: str) -> dict:
    """The validated ``checkpoint.json`` of ``run_dir``."""
    path = os.path.join(run_dir, METADATA)
    if not os.path.isdir(run_dir):
        raise CheckpointError(f"{run_dir}: no such run directory")
    if not os.path.lexists(path):
        raise CheckpointError(f"{run_dir}: not a jaxflow run (no {METADATA})")
    raw = read_regular(path, MAX_METADATA_BYTES, "checkpoint metadata", CheckpointError)
    try:
        meta = json.loads(raw)
    except RecursionError:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata (nested too deeply)") from None
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError, and ints past Python's digit limit
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({str(err).splitlines()[0]})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a jaxflow checkpoint (format is not {FORMAT!r})")
    if type(meta.get("version")) is not int or meta["version"] not in READS:
        raise CheckpointError(f"{path}: checkpoint version {meta.get('version')!r}, this jaxflow reads "
                              f"{' and '.join(map(str, READS))}")
    missing = {"spec", "dtype", "train", "run", "step", "payload"} - meta.keys()
    if missing:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata, missing {sorted(missing)}")
    if not all(isinstance(meta[key], dict) for key in ("spec", "train", "run", "payload")):
        raise CheckpointError(f"{path}: corrupt checkpoint metadata (spec, train, run and payload must be objects)")
    if type(meta["step"]) is not int or not 0 <= meta["step"] <= 2**31 - 1:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata (step {meta['step']!r} is not in [0, 2^31 - 1])")
    if meta["dtype"] not in DTYPES:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata (dtype {meta['dtype']!r})")
    best = meta.get("best_val_nll")
    if best is not None and (isinstance(best, bool) or not isinstance(best, (int, float)) or not math.isfinite(best)):
        raise CheckpointError(f"{path}: corrupt checkpoint metadata (best_val_nll {best!r} is not a finite number)")
    if not isinstance(meta.get("devices", {}), dict):
        raise CheckpointError(f"{path}: corrupt checkpoint metadata (devices must be an object)")
    if meta["version"] >= 2 and meta.get("metadata_sha256") != _metadata_digest(meta):
        raise CheckpointError(f"{path}: checkpoint metadata fails its SHA-256 check (edited or corrupt)")
    return meta


def flow_from_json(value, path: str, what: str = "checkpoint") -> FlowSpec:
    """The flow spec of a JSON spec read from ``path`` (every layer kind imported first, so a fresh
    process knows them all); a one-line :class:`CheckpointError` naming ``what`` otherwise."""
    layers.import_all()
    try:
        flow = spec_from_json(value)
    except (TypeError, ValueError, RecursionError) as err:
        raise CheckpointError(f"{path}: invalid spec in {what}: {str(err).splitlines()[0]}") from None
    if not isinstance(flow, FlowSpec):
        raise CheckpointError(f"{path}: invalid spec in {what}: a {type(flow).__name__}, not a flow")
    return flow


def _spec(meta: dict, path: str) -> FlowSpec:
    if meta["version"] != 1:
        return flow_from_json(meta["spec"], path)
    try:
        return RealNVP(**meta["spec"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: invalid spec in checkpoint: {err}") from None


def _config(meta: dict, path: str) -> TrainConfig:
    try:
        return TrainConfig(**meta["train"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: invalid training config in checkpoint: {err}") from None


def _read_payload(run_dir: str, meta: dict) -> bytes:
    info = meta["payload"]
    name, size = info.get("file"), info.get("bytes")
    if not isinstance(name, str) or not is_payload(name):
        raise CheckpointError(f"{run_dir}: corrupt checkpoint metadata (bad payload name {name!r})")
    if type(size) is not int or not 0 <= size <= 2**40:
        raise CheckpointError(f"{run_dir}: corrupt checkpoint metadata (bad payload size {size!r})")
    path = os.path.join(run_dir, name)
    payload = read_regular(path, size, "checkpoint payload", CheckpointError)
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
    flow, config = _spec(meta, meta_path), _config(meta, meta_path)
    payload = _read_payload(run_dir, meta)
    try:
        tree = serialization.msgpack_restore(payload)
        template = _template(flow, config, meta["dtype"])
        state = serialization.from_state_dict(template, tree["state"])
        scalars = {"step": int(state.step), "best_val_nll": float(state.best_val_nll),
                   "evals_since_best": int(state.evals_since_best)}
        standardization = [np.asarray(tree["standardization"][key]) for key in ("mean", "scale")] \
            if meta["version"] == 1 else None
    except Exception as err:  # msgpack and flax raise many types on malformed input
        raise CheckpointError(f"{run_dir}: corrupt checkpoint payload ({type(err).__name__}: {err})") from None
    arrays = lambda s: (s.params, s.opt_state, s.rng, s.best_params)
    _check_like(arrays(template), arrays(state), run_dir)
    state = jax.tree_util.tree_map(jnp.asarray, state._replace(**scalars))._replace(**scalars)
    if standardization is not None:
        flow, state = _from_version_1(flow, config, state, standardization, run_dir)
    return Checkpoint(flow, config, state, meta["run"])


def _from_version_1(flow: RealNVP, config: TrainConfig, state: TrainState, standardization, run_dir: str):
    """A version 1 run as the version 2 flow it is: the standardisation as an ``Affine`` layer in
    front, params ``[{}, params]`` (the same leaves in the same order, so they carry over)."""
    mean, scale = standardization
    vector = jax.ShapeDtypeStruct((flow.dim,), state.params["conditioner"]["input"]["bias"].dtype)
    _check_like((vector, vector), (mean, scale), run_dir)
    try:
        flow = Flow(flow.event_shape, Chain(Affine(tuple(mean.tolist()), tuple(scale.tolist())), flow.layers))
    except ValueError as err:
        raise CheckpointError(f"{run_dir}: invalid standardisation in checkpoint: {err}") from None
    template = jax.eval_shape(lambda: init_state(flow, config, vector.dtype))
    carry = lambda new, old: jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(new),
                                                          jax.tree_util.tree_leaves(old))
    state = state._replace(params=carry(template.params, state.params), best_params=carry(template.best_params, state.best_params),
                           opt_state=carry(template.opt_state, state.opt_state))
    return flow, state
