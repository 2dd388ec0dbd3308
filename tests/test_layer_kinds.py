"""Every registered layer kind is covered three times: a torch twin, a layer test and a parity composition.

A kind registers itself in :data:`jaxflow.core.layer.LAYERS` when its class is defined, so every
module of :mod:`jaxflow.layers` is imported first. A new kind fails here, naming itself, until it has

* a row in ``torchref.convert.TWINS`` (its torch twin: build, spec, params out, params in);
* a row in the layer tests: a flow holding it in ``FLOWS`` (``tests/test_layers.py``) or
  ``IMAGE_FLOWS`` (``tests/test_image_layers.py``), which check log-dets against the autodiff
  Jacobian and the inverse;
* a row in the parity compositions: a random leaf of :data:`parity_tests.compositions.LEAVES`,
  or a layer of a flow that every parity run compares (:data:`PARITY_FLOWS`).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil

import pytest

import jaxflow
import jaxflow.layers
import test_image_layers
import test_layers
from jaxflow.core.layer import LAYERS, Layer
from parity_tests import compositions, test_composed, test_image_parity
from torchref.convert import TWINS

PARITY_FLOWS = [*compositions.COMPOSED_EDGE_CASES, *test_composed._LOGIT_FLOWS, *test_image_parity.ROUND_TRIP]
"""The fixed flows of the parity suite (vector edge cases, Logit on unit-interval data, image round trips)."""


def registered_kinds() -> set[type]:
    for module in pkgutil.iter_modules(jaxflow.layers.__path__):
        importlib.import_module(f"{jaxflow.layers.__name__}.{module.name}")
    return set(LAYERS.values())


def kinds_in(*values) -> set[type]:
    """The layer kinds in specs, flows and containers of them, nested at any depth (dataclass fields)."""
    found = set()

    def walk(value):
        if isinstance(value, jaxflow.FlowSpec):
            walk(value.layers)
            walk(value.context_affine)
        elif isinstance(value, (tuple, list)):
            for one in value:
                walk(one)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            if isinstance(value, Layer):
                found.add(type(value))
            for field in dataclasses.fields(value):
                walk(getattr(value, field.name))

    walk(list(values))
    return found


def _missing(covered: set[type]) -> list[str]:
    return sorted(kind.__name__ for kind in registered_kinds() - covered)


def test_the_walk_finds_nested_kinds():
    flow = jaxflow.Flow((4, 4, 2), jaxflow.Chain(jaxflow.Squeeze(), jaxflow.FactorOut(jaxflow.Repeat(jaxflow.ActNorm(), 2)),
                                                 jaxflow.Unsqueeze()), context_dim=1, context_affine=jaxflow.Affine())
    assert kinds_in(flow) == {jaxflow.Chain, jaxflow.Squeeze, jaxflow.FactorOut, jaxflow.Repeat, jaxflow.ActNorm,
                              jaxflow.Unsqueeze, jaxflow.Affine}


def test_every_layer_kind_has_a_torch_twin():
    assert not _missing(set(TWINS)), f"layer kinds without a row in torchref.convert.TWINS: {_missing(set(TWINS))}"


def test_every_layer_kind_has_a_row_in_the_layer_tests():
    covered = kinds_in([layers for _, layers, _ in test_layers.FLOWS.values()], list(test_image_layers.IMAGE_FLOWS.values()))
    assert not _missing(covered), (f"layer kinds in no flow of tests/test_layers.py FLOWS or tests/test_image_layers.py "
                                   f"IMAGE_FLOWS: {_missing(covered)}")


def test_every_layer_kind_has_a_row_in_the_parity_compositions():
    covered = set(compositions.LEAVES) | kinds_in(PARITY_FLOWS)
    assert not _missing(covered), (f"layer kinds in no parity composition (parity_tests/compositions.py LEAVES or a "
                                   f"fixed parity flow): {_missing(covered)}")


@pytest.mark.parametrize("kind", sorted(TWINS, key=lambda kind: kind.__name__), ids=lambda kind: kind.__name__)
def test_every_twin_row_converts_its_own_kind(kind):
    """A row is keyed by its jaxflow class and names the torch classes that only it converts."""
    assert LAYERS[kind.__name__] is kind
    others = {module for other, twin in TWINS.items() if other is not kind for module in twin.modules}
    assert not set(TWINS[kind].modules) & others
