"""Specs as JSON: nested specs with type tags, rebuilt only from the registered spec types.

``spec_to_json(Repeat(AffineCoupling(mask="alternate"), 4))`` gives::

    {"type": "Repeat", "layer": {"type": "AffineCoupling", "mask": "alternate",
     "conditioner": {"type": "MLP", "hidden_dim": 64, ...}, ...}, "n": 4, "unroll": 1}

Every dataclass field is written; tuples become lists and come back as tuples. Loading looks
each ``"type"`` up in :data:`SPEC_TYPES` (layers, flow specs, conditioners register
themselves), so a checkpoint can name only jaxflow's own classes, and every rebuilt spec runs
its own validation. :data:`COMPUTATION_FIELDS` change how a flow is computed, not what it
computes (:func:`model_json` leaves them out, for comparing two runs' models).
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["SPEC_TYPES", "COMPUTATION_FIELDS", "register", "spec_to_json", "spec_from_json", "model_json"]

SPEC_TYPES: dict[str, type] = {}
"""Every spec class a JSON spec may name, by class name."""

COMPUTATION_FIELDS = frozenset({"compute_dtype", "scan_unroll", "unroll"})


def register(cls: type) -> type:
    """Make ``cls`` (a frozen dataclass spec, e.g. your own conditioner) loadable by :func:`spec_from_json`;
    a decorator, or one call ``jaxflow.register(MyConditioner)``. Checkpoints name it by its class
    name, so the name may belong to one class only."""
    if not isinstance(cls, type):
        raise TypeError(f"register: expected a spec class, got {cls!r}")
    existing = SPEC_TYPES.get(cls.__name__)
    if existing is not None and (existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"register: the spec name {cls.__name__!r} is taken by "
                         f"{existing.__module__}.{existing.__qualname__}")
    SPEC_TYPES[cls.__name__] = cls
    return cls


def spec_to_json(value: Any) -> Any:
    """A JSON-ready form of a spec (or of a field's value)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = type(value).__name__
        if SPEC_TYPES.get(name) is not type(value):
            raise TypeError(f"cannot serialise {name}: not a registered jaxflow spec (register its class with "
                            f"jaxflow.register({name}) to save it)")
        return {"type": name,
                **{field.name: spec_to_json(getattr(value, field.name)) for field in dataclasses.fields(value)}}
    if isinstance(value, (tuple, list)):
        return [spec_to_json(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot serialise a spec field of type {type(value).__name__}")


def spec_from_json(value: Any) -> Any:
    """Inverse of :func:`spec_to_json`; ``ValueError``/``TypeError`` in one line for anything else."""
    if isinstance(value, dict):
        fields = dict(value)
        name = fields.pop("type", None)
        if name not in SPEC_TYPES:
            raise ValueError(f"unknown spec type {name!r}; known: {', '.join(sorted(SPEC_TYPES))}")
        cls = SPEC_TYPES[name]
        known = {field.name for field in dataclasses.fields(cls)}
        if fields.keys() - known:
            raise ValueError(f"{name}: unknown field(s) {sorted(fields.keys() - known)}")
        build = getattr(cls, "from_fields", cls)
        return build(**{key: spec_from_json(item) for key, item in fields.items()})
    if isinstance(value, list):
        return tuple(spec_from_json(item) for item in value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"a JSON spec holds objects, lists, numbers, strings and null, got {type(value).__name__}")


def model_json(value: Any) -> Any:
    """:func:`spec_to_json` without :data:`COMPUTATION_FIELDS`: equal for two specs of one model."""
    if isinstance(value, dict):
        return {key: model_json(item) for key, item in value.items() if key not in COMPUTATION_FIELDS}
    if isinstance(value, list):
        return [model_json(item) for item in value]
    return value
