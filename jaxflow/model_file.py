"""A flow and its parameters in one file, for hand-written training loops: :func:`save` and :func:`load`.

``jaxflow.save("model.jaxflow", flow, params)`` writes one msgpack map (atomically:
:func:`jaxflow.io.atomic_write`)::

    {"format": "jaxflow-model", "version": 1,
     "spec": "<the spec's JSON text>", "dtype": "float32",
     "params": <msgpack of the parameter pytree>,
     "sha256": "<hex SHA-256 of the spec text, the dtype and the params bytes>"}

``flow, params = jaxflow.load("model.jaxflow")`` reads it back with the run directory's guarantees
(:mod:`jaxflow.checkpoint`): plain msgpack, never pickle; the spec rebuilt only from registered
kinds, with their validation; the hash checked; every array's shape and dtype checked against the
spec. What it cannot hold is refused at save time in one line: parameters other than float32 or
float64, or a spec with an unregistered class.
"""

from __future__ import annotations

import hashlib
import json

import jax
import jax.numpy as jnp

from jaxflow.checkpoint import DTYPES, CheckpointError, _check_like, flow_from_json, params_dtype_name
from jaxflow.core.init import check_params, init
from jaxflow.core.serialize import spec_to_json
from jaxflow.core.spec import FlowSpec
from jaxflow.core.validation import check_flow
from jaxflow.io import atomic_write, read_regular

__all__ = ["save", "load", "FORMAT", "VERSION"]

FORMAT = "jaxflow-model"
VERSION = 1
#: the largest model file read
MAX_BYTES = 2**36


def _digest(spec_text: str, dtype: str, payload: bytes) -> str:
    return hashlib.sha256(b"\0".join([spec_text.encode(), dtype.encode(), payload])).hexdigest()


def save(path: str, flow: FlowSpec, params) -> None:
    """Write ``flow`` and ``params`` to the file ``path``, atomically (format in the module docstring)."""
    from flax import serialization

    check_flow(flow, "jaxflow.save")
    check_params(flow, params)
    dtype = params_dtype_name(params, "jaxflow.save")
    try:
        spec_text = json.dumps(spec_to_json(flow))
    except TypeError as err:
        raise CheckpointError(f"jaxflow.save: {err}") from None
    payload = serialization.msgpack_serialize(jax.device_get(serialization.to_state_dict(params)))
    atomic_write(path, serialization.msgpack_serialize({
        "format": FORMAT, "version": VERSION, "spec": spec_text, "dtype": dtype, "params": payload,
        "sha256": _digest(spec_text, dtype, payload)}))


def load(path: str) -> tuple[FlowSpec, dict]:
    """``(flow, params)`` from a file written by :func:`save`; a one-line :class:`CheckpointError` otherwise."""
    from flax import serialization

    raw = read_regular(path, MAX_BYTES, "model file", CheckpointError)
    try:
        record = serialization.msgpack_restore(raw)
    except Exception as err:  # msgpack raises many types on malformed input
        raise CheckpointError(f"{path}: not a jaxflow model file ({type(err).__name__})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a jaxflow model file (format is not {FORMAT!r})")
    if record.get("version") != VERSION:
        raise CheckpointError(f"{path}: model file version {record.get('version')!r}, this jaxflow reads {VERSION}")
    spec_text, dtype, payload = record.get("spec"), record.get("dtype"), record.get("params")
    if not (isinstance(spec_text, str) and dtype in DTYPES and isinstance(payload, bytes)):
        raise CheckpointError(f"{path}: corrupt model file (spec, dtype or params missing or of the wrong type)")
    if record.get("sha256") != _digest(spec_text, dtype, payload):
        raise CheckpointError(f"{path}: model file fails its SHA-256 check (tampered or corrupt)")
    try:
        spec = json.loads(spec_text)
    except (ValueError, RecursionError) as err:
        raise CheckpointError(f"{path}: invalid spec in model file: {str(err).splitlines()[0]}") from None
    flow = flow_from_json(spec, path, "model file")
    template = jax.eval_shape(lambda: init(flow, jax.random.key(0), jnp.dtype(dtype)))
    try:
        params = serialization.from_state_dict(template, serialization.msgpack_restore(payload))
    except Exception as err:
        raise CheckpointError(f"{path}: corrupt model file parameters ({type(err).__name__}: {err})") from None
    _check_like(template, params, path)
    return flow, jax.tree.map(jnp.asarray, params)
