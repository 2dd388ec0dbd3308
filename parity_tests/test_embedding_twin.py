"""Parity of flows with a learned context embedding: jaxflow against the torchref twin, whose
``NormalizingFlow.embedding`` is a ``Conditioner(context_dim, embedding_dim, ..., num_params=1)``.

Every public function, and the gradients of the parameters (the embedding's included), the data
and the context; conversion both ways is exact.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch

import jaxflow
import torchref
from parity_tests.pairs import to_numpy
from parity_tests.test_composed import _jax_results, _torch_results
from parity_tests.test_conversion import jax_torch_jax_exactly
from parity_tests.test_image_parity import IMAGE_OUTPUTS, perturb_outputs
from parity_tests.tolerances import assert_close

EMBEDDED = dict(context_dim=2, embedding=jaxflow.MLP(6, 1, activation="tanh"), embedding_dim=3)
FLOWS = {
    "flow": jaxflow.Flow((3,), jaxflow.Repeat(jaxflow.Chain(jaxflow.AffineCoupling("alternate"), jaxflow.LULinear()), 2),
                         context_affine=jaxflow.Affine((0.5, -1.0), (2.0, 0.5)), **EMBEDDED),
    "realnvp": jaxflow.RealNVP(4, 2, hidden_dim=8, num_hidden=1, scale="tanh", **EMBEDDED),
    "glow": jaxflow.Glow((4, 4, 1), 2, 2, 4, 0, **EMBEDDED),
}


@pytest.mark.parametrize("name, dtype", [("flow", np.float64), ("realnvp", np.float32), ("glow", np.float64)])
def test_values_steps_sample_and_gradients_with_an_embedding(name, dtype):
    flow = FLOWS[name]
    if name == "glow":  # one top-level step (its Squeeze changes the shape between steps, which g_steps cannot stack)
        flow = jaxflow.Flow(flow.event_shape, jaxflow.Chain(flow.layers), **EMBEDDED)
    torch.manual_seed(0)
    model = torchref.from_spec(flow, dtype=getattr(torch, np.dtype(dtype).name))
    perturb_outputs(model, 0)
    converted, params = torchref.to_jax(model)
    assert converted == flow and set(params) == {"embedding", "layers"}
    rng = np.random.default_rng(0)
    x, z = rng.standard_normal((2, 3, *flow.event_shape)).astype(dtype)
    context = rng.standard_normal((3, 2)).astype(dtype)
    layout = lambda a: torchref.to_torch_layout(a, flow.event_shape)
    results = _jax_results(flow, params, x, z, context, jax.random.key(0))
    expected = _torch_results(model, layout(x), layout(z), context, layout(results.pop("latent_draws")), "cpu")
    for quantity in IMAGE_OUTPUTS:
        expected[quantity] = torchref.to_jax_layout(expected[quantity], flow.event_shape)
    assert np.abs(to_numpy(expected["grad_context"])).max() > 0
    for quantity, value in results.items():
        jax.tree_util.tree_map(lambda a, b: assert_close(a, to_numpy(b), quantity, dtype), value, expected[quantity])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(FLOWS))
def test_conversion_with_an_embedding_is_exact_both_ways(name, dtype):
    flow = FLOWS[name]
    back_flow = jax_torch_jax_exactly(flow, dtype)
    assert back_flow == (flow if name != "glow" else jaxflow.Flow(flow.event_shape, flow.layers, **EMBEDDED))
    torch.manual_seed(1)
    fresh = torchref.from_spec(flow, dtype=getattr(torch, np.dtype(dtype).name))
    again = torchref.from_jax(*torchref.to_jax(fresh))
    assert "embedding.input.weight" in fresh.state_dict()
    for key, value in fresh.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_an_embedding_without_a_twin_fails_in_one_line():
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Custom(jaxflow.FlaxConditioner):
        def module(self, out_dim):
            import flax.linen as nn
            return nn.Dense(out_dim)

    flow = jaxflow.Flow((3,), jaxflow.AffineCoupling("alternate"), 2, embedding=Custom(), embedding_dim=2)
    with pytest.raises(ValueError, match="^from_jax: torchref has a twin of jaxflow.MLP embeddings only, got Custom$"):
        torchref.from_spec(flow)
