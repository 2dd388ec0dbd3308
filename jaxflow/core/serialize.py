"""Specs as JSON: nested specs with type tags, rebuilt only from the registered spec types.

``spec_to_json(Repeat(AffineCoupling(mask="alternate"), 4))`` gives::

    {"type": "Repeat", "layer": {"type": "AffineCoupling", "mask": "alternate",
     "conditioner": {"type": "MLP", "hidden_dim": 64, ...}, ...}, "n": 4, "unroll": 1}

Every dataclass field is written; tuples become lists and come back as tuples. Loading looks
each ``"type"`` up in :data:`SPEC_TYPES` (layers, flow specs, conditioners register
themselves), so a checkpoint can name only jaxflow's own classes, and every rebuilt spec runs
its own validation; a spec nested deeper than :data:`MAX_DEPTH` objects and lists is refused
(a crafted file would otherwise exhaust the interpreter's recursion). :data:`COMPUTATION_FIELDS`
change how a flow is computed, not what it computes (:func:`model_json` leaves them out, for
comparing two runs' models, and :func:`model_differences` names what differs); ``compute_dtype``
is not one of them: a bf16 conditioner computes other numbers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["SPEC_TYPES", "COMPUTATION_FIELDS", "MAX_DEPTH", "register", "spec_to_json", "spec_from_json", "model_json",
           "model_differences"]

SPEC_TYPES: dict[str, type] = {}
"""Every spec class a JSON spec may name, by class name."""

COMPUTATION_FIELDS = frozenset({"scan_unroll", "unroll"})

#: the deepest nesting of objects and lists a JSON spec may have (a 5-scale image flow built by
#: hand nests about 30; every recursion over a spec stays far from Python's limit)
MAX_DEPTH = 64


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


def spec_from_json(value: Any, depth: int = 0) -> Any:
    """Inverse of :func:`spec_to_json`; ``ValueError``/``TypeError`` in one line for anything else
    (``depth``: the nesting of ``value`` in the whole spec)."""
    if isinstance(value, (dict, list)) and depth >= MAX_DEPTH:
        raise ValueError(f"a JSON spec may nest at most {MAX_DEPTH} objects and lists")
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
        return build(**{key: spec_from_json(item, depth + 1) for key, item in fields.items()})
    if isinstance(value, list):
        return tuple(spec_from_json(item, depth + 1) for item in value)
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


def model_differences(old: Any, new: Any) -> list[str]:
    """``"path: old -> new"`` for every value in which two JSON specs' :func:`model_json` differ."""

    def walk(old, new, where):
        if isinstance(old, dict) and isinstance(new, dict) and old.get("type") == new.get("type"):
            return [line for key in sorted(old.keys() | new.keys(), key=str)
                    for line in walk(old.get(key), new.get(key), f"{where}.{key}" if where else key)]
        if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
            return [line for k, (a, b) in enumerate(zip(old, new)) for line in walk(a, b, f"{where}[{k}]")]
        show = lambda value: value.get("type", "object") if isinstance(value, dict) else repr(value)
        return [] if old == new else [f"{where or 'spec'}: {show(old)} -> {show(new)}"]

    return walk(model_json(old), model_json(new), "")
