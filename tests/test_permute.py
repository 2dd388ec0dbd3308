"""A random ``Permute`` inside ``Repeat``: each copy its own permutation, fixed by the spec, in one scan.

The truth each test compares with is written out by hand: the same couplings applied one copy
at a time in Python, with copy ``k``'s permutation drawn by ``numpy.random.default_rng([seed, k])``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflow as jf
from jaxflow.core.serialize import spec_from_json, spec_to_json

D, SEED = 5, 3


def _coupling():
    return jf.AffineCoupling(mask="alternate", conditioner=jf.MLP(8, 1), scale="tanh")


def _by_hand(params, x, copies: list[np.ndarray]):
    """``x`` through coupling then ``x[..., perm_k]`` for each copy ``k``, in Python."""
    for k, perm in enumerate(copies):
        x = _coupling().forward(jax.tree.map(lambda a: a[k], params)[0], x, None, (D,))[0]
        x = x[..., perm]
    return x


def _perturbed(flow, seed=0):
    params = jf.init(flow, jax.random.key(seed), jnp.float64)
    return jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(7), a.shape, a.dtype), params)


def test_each_copy_of_a_repeat_draws_its_own_permutation():
    flow = jf.Flow(event_shape=(D,), layers=jf.Repeat(jf.Chain(_coupling(), jf.Permute("random", SEED)), 4))
    params = _perturbed(flow)
    x = jax.random.normal(jax.random.key(1), (6, D), jnp.float64)
    perms = [np.random.default_rng([SEED, k]).permutation(D) for k in range(4)]
    assert len({tuple(p) for p in perms}) == 4
    np.testing.assert_allclose(jf.f(flow, params, x)[0], _by_hand(params, x, perms), rtol=0, atol=1e-14)
    np.testing.assert_allclose(jf.g(flow, params, jf.f(flow, params, x)[0]), x, rtol=0, atol=1e-13)
    assert [list(flow.layers.copy(k).layers[1].permutation((D,))) for k in range(4)] == [list(p) for p in perms]


def test_nested_repeats_number_their_copies_in_order():
    inner = jf.Repeat(jf.Chain(_coupling(), jf.Permute("random", SEED)), 2)
    flow = jf.Flow(event_shape=(D,), layers=jf.Repeat(inner, 3))
    params = _perturbed(flow)
    flat = jax.tree.map(lambda a: a.reshape((6,) + a.shape[2:]), params)  # copy k = outer * 2 + inner
    x = jax.random.normal(jax.random.key(2), (6, D), jnp.float64)
    perms = [np.random.default_rng([SEED, k]).permutation(D) for k in range(6)]
    np.testing.assert_allclose(jf.f(flow, params, x)[0], _by_hand(flat, x, perms), rtol=0, atol=1e-14)


@pytest.mark.parametrize("fields, per_copy", [({"kind": "random", "seed": SEED}, False),
                                              ({"kind": "random", "seed": SEED, "per_copy": True}, True)])
def test_a_checkpoint_written_before_per_copy_permutations_keeps_its_meaning(fields, per_copy):
    """Old specs (no ``per_copy`` field) repeated one permutation: they load as ``per_copy=False``."""
    layer = spec_from_json({"type": "Permute", **fields})
    assert layer.per_copy is per_copy and spec_from_json(spec_to_json(layer)) == layer
    flow = jf.Flow(event_shape=(D,), layers=jf.Repeat(jf.Chain(_coupling(), layer), 3))
    params = _perturbed(flow)
    x = jax.random.normal(jax.random.key(3), (6, D), jnp.float64)
    perms = [np.random.default_rng([SEED, k] if per_copy else SEED).permutation(D) for k in range(3)]
    np.testing.assert_allclose(jf.f(flow, params, x)[0], _by_hand(params, x, perms), rtol=0, atol=1e-14)


def test_layers_that_do_not_vary_leave_the_scan_as_it_was():
    """Only a varying layer adds the copy index to the scan: other programs are unchanged."""
    for layer in (jf.Chain(_coupling(), jf.Permute("reverse")), jf.Chain(_coupling(), jf.Permute("random", 1, False))):
        repeat = jf.Repeat(layer, 3)
        assert repeat.copy(2) is layer and repeat.at_copy(1, 2) is repeat
    varying = jf.Repeat(jf.Chain(_coupling(), jf.Permute("random", 1)), 3)
    assert varying.copy(2) != varying.layer
