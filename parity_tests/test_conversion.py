"""The conversion: exact both ways, dtype preserved, layout as documented, and wrong ones caught."""

from __future__ import annotations

import dataclasses

import flax.linen
import jax
import numpy as np
import pytest
import torch

import jaxflow
import torchref
from parity_tests.compositions import COMPOSED_EDGE_CASES, make_composed_pair, perturb
from parity_tests.devices import DEVICES, on
from parity_tests.pairs import to_numpy, to_torch
from parity_tests.tolerances import TOLERANCES, rel_err

SPECS = [
    jaxflow.RealNVP(2, 1, hidden_dim=1, num_hidden=0),
    jaxflow.RealNVP(5, 3, hidden_dim=8, num_hidden=2, scale="tanh", clamp=2.5),
    jaxflow.RealNVP(65, 2, hidden_dim=16, num_hidden=1, scale="sigmoid", negative_slope=0.2),
]


def random_params(flow: jaxflow.FlowSpec, dtype, seed: int = 0):
    """Gaussian values in every leaf of ``flow``'s parameter pytree (shapes from jaxflow.init)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: jaxflow.init(flow, jax.random.key(0)))
    return jax.tree_util.tree_map(lambda s: jax.numpy.asarray(rng.standard_normal(s.shape).astype(dtype)), shapes)


def assert_identical(a: dict, b: dict) -> None:
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("flow", SPECS, ids=str)
def test_jax_torch_jax_round_trip_is_exact(flow, dtype, device):
    with on(device):
        params = random_params(flow, dtype)
        model = torchref.from_jax(flow, params, device=device)
        assert all(p.dtype == getattr(torch, np.dtype(dtype).name) and p.device.type == device for p in model.parameters())
        back_flow, back = torchref.to_jax(model)
    assert back_flow == flow
    assert_identical(back, params)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_jax_torch_round_trip_is_exact(dtype):
    torch.manual_seed(0)
    model = torchref.build_flow(7, 4, hidden_dim=12, num_hidden=2, scale="sigmoid", dtype=dtype)
    back = torchref.from_jax(*torchref.to_jax(model))
    assert model.state_dict().keys() == back.state_dict().keys()
    for key, value in model.state_dict().items():
        assert back.state_dict()[key].dtype == dtype and torch.equal(back.state_dict()[key], value), key


def test_identity_init_round_trips_from_jaxflow_init():
    flow = jaxflow.RealNVP(5, 2, hidden_dim=8, num_hidden=1, identity_init=True)
    params = jaxflow.init(flow, jax.random.key(0), dtype=np.float64)
    model = torchref.from_jax(flow, params)
    assert not model.flows[1].theta.dims.weight.any() and model.flows[1].theta.input.weight.any()
    back_flow, back = torchref.to_jax(model, identity_init=True)
    assert back_flow == flow
    assert_identical(back, params)


def test_layout_is_as_documented():
    """torch ``dims`` row 2j is jax column j (t_j), row 2j + 1 is column d + j (s_j); kernels transposed."""
    flow = SPECS[1]
    params = random_params(flow, np.float64)
    model = torchref.from_jax(flow, params)
    layer, d = 2, flow.split_dim
    jax_dims = np.asarray(params["conditioner"]["dims"]["kernel"][layer])  # (H, 2d)
    torch_dims = to_numpy(model.flows[layer].theta.dims.weight)  # (2d, H)
    for j in range(d):
        np.testing.assert_array_equal(torch_dims[2 * j], jax_dims[:, j])
        np.testing.assert_array_equal(torch_dims[2 * j + 1], jax_dims[:, d + j])
    np.testing.assert_array_equal(to_numpy(model.flows[layer].theta.hidden[1].weight),
                                  np.asarray(params["conditioner"]["hidden_1"]["kernel"][layer]).T)


def _blocked_dims(model):  # rows copied in jaxflow's blocked order, un-permuted
    for layer in model.flows:
        rows = layer.theta.dims.weight.shape[0]
        order = torch.as_tensor(np.argsort(torchref.convert.interleaved_order(rows // 2)))
        layer.theta.dims.weight.copy_(layer.theta.dims.weight[order])
        layer.theta.dims.bias.copy_(layer.theta.dims.bias[order])


def _swapped_t_and_s(model):
    for layer in model.flows:
        rows = layer.theta.dims.weight.shape[0]
        swap = torch.arange(rows).reshape(-1, 2).flip(-1).ravel()
        layer.theta.dims.weight.copy_(layer.theta.dims.weight[swap])
        layer.theta.dims.bias.copy_(layer.theta.dims.bias[swap])


def _reversed_layers(model):
    model.flows = torch.nn.ModuleList(reversed(model.flows))


def _untransposed_hidden(model):
    for layer in model.flows:
        layer.theta.hidden[0].weight.copy_(layer.theta.hidden[0].weight.T.clone())


@pytest.mark.parametrize("corrupt", [_blocked_dims, _swapped_t_and_s, _reversed_layers, _untransposed_hidden])
def test_a_wrong_conversion_is_caught(corrupt):
    """Each plausible conversion bug breaks parity by far more than the float32 tolerance."""
    flow = SPECS[1]
    params = random_params(flow, np.float64)
    model = torchref.from_jax(flow, params)
    x = np.random.default_rng(1).standard_normal((32, flow.dim))
    expected = jaxflow.log_prob(flow, params, x)
    assert rel_err(to_numpy(model.log_prob(to_torch(x))), expected) <= TOLERANCES["float64"]["log_prob"]
    with torch.no_grad():
        corrupt(model)
    assert rel_err(to_numpy(model.log_prob(to_torch(x))), expected) > 100 * TOLERANCES["float32"]["log_prob"]


def _wider_layer(model):
    model.flows[1] = torchref.build_flow(4, 1, hidden_dim=16, num_hidden=1).flows[0]


@pytest.mark.parametrize("mutate", [
    lambda model: setattr(model.flows[1], "scale", "tanh"),
    lambda model: setattr(model.flows[2].theta, "negative_slope", 0.2),
    _wider_layer,
], ids=["scale", "negative_slope", "width"])
def test_to_jax_rejects_a_non_uniform_stack(mutate):
    torch.manual_seed(0)
    model = torchref.build_flow(4, 3, hidden_dim=8, num_hidden=1)
    mutate(model)
    with pytest.raises(ValueError, match="uniform stack"):
        torchref.to_jax(model)


def test_build_flow_validates_like_realnvp():
    for bad in [dict(dim=1), dict(scale="softplus"), dict(num_flows=0)]:
        args = dict(dim=4, num_flows=2) | bad
        with pytest.raises(ValueError) as torch_error:
            torchref.build_flow(**args)
        with pytest.raises(ValueError) as jax_error:
            jaxflow.RealNVP(**args)
        assert str(torch_error.value) == str(jax_error.value)


# --- compositions of every layer kind -----------------------------------------------------------

_MLP = jaxflow.MLP(8, 1)
COMPOSED_SPECS = [
    *COMPOSED_EDGE_CASES,
    jaxflow.Flow((4,), jaxflow.AffineCoupling("half", _MLP)),  # a single layer as the root, not a RealNVP
    jaxflow.Flow((3,), jaxflow.LULinear(), context_dim=2),  # conditional, yet nothing reads the context
    jaxflow.Flow((6,), jaxflow.Chain(
        jaxflow.Repeat(jaxflow.AffineCoupling("alternate", _MLP, identity_init=True), 3, unroll=2),
        jaxflow.Affine(0.1, (0.3, 0.7, 1.1, 1.3, 1.7, 1.9)),  # not exact in float32
        jaxflow.Repeat(jaxflow.Permute("random", 7), 2)), context_dim=1, context_affine=jaxflow.Affine(0.1, 0.3)),
    jaxflow.RealNVP(4, 2, hidden_dim=8, num_hidden=1, context_dim=3),  # the preset, conditional
    jaxflow.Flow((5,), jaxflow.NeuralSplineFlow(5, num_layers=2, bins=3, hidden_dim=8, num_hidden=1).layers,
                 context_dim=2),  # the NSF preset's layers (to_jax gives the Flow), conditional
    jaxflow.Flow((4,), jaxflow.MAF(4, num_layers=2, hidden_dim=8, transform=jaxflow.RQSpline(3)).layers,
                 context_dim=2),  # MAF, spline transform, conditional
    jaxflow.Flow((3,), jaxflow.Repeat(jaxflow.Invert(jaxflow.Chain(jaxflow.MaskedAutoregressive(
        conditioner=jaxflow.MADE(8, 1, order=(1, 2, 0))), jaxflow.Permute("random", 2))), 2)),  # an IAF
]
_IDS = ["every-kind", "repeat-of-chain", "single-layer", "context-unread", "identity-unroll-affine", "realnvp-context",
        "nsf-layers", "maf-spline-context", "iaf-order"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("flow", COMPOSED_SPECS, ids=_IDS)
def test_composed_jax_torch_jax_round_trip_is_exact(flow, dtype):
    back_flow = jax_torch_jax_exactly(flow, dtype)
    assert back_flow == flow and hash(back_flow) == hash(flow)


def jax_torch_jax_exactly(flow: jaxflow.FlowSpec, dtype) -> jaxflow.FlowSpec:
    """Random params of ``flow`` to torch (in their dtype) and back, bit for bit; the spec that comes back."""
    params = random_params(flow, dtype)
    model = torchref.from_jax(flow, params)
    assert all(p.dtype == getattr(torch, np.dtype(dtype).name) for p in model.parameters())
    back_flow, back = torchref.to_jax(model)
    assert_identical(back, params)
    return back_flow


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("flow", COMPOSED_SPECS, ids=_IDS)
def test_composed_torch_jax_torch_round_trip_is_exact(flow, dtype):
    torch.manual_seed(0)
    model = torchref.from_spec(flow, dtype=dtype)
    perturb(model, seed=1)
    back = torchref.from_jax(*torchref.to_jax(model))
    assert model.state_dict().keys() == back.state_dict().keys()
    for key, value in model.state_dict().items():
        assert back.state_dict()[key].dtype == dtype and torch.equal(back.state_dict()[key], value), key


def test_state_dict_round_trips_every_layer_kind():
    """ActNorm and LULinear hold their state as parameters, Affine as buffers: all in the state_dict."""
    flow = COMPOSED_EDGE_CASES[0]
    torch.manual_seed(0)
    model = torchref.from_spec(flow, dtype=torch.float64)
    perturb(model, seed=1)
    keys = model.state_dict().keys()
    assert {"flows.1.shift", "flows.1.log_scale", "flows.2.0.1.lower", "flows.2.0.1.upper", "flows.2.0.1.log_diag",
            "flows.0.shift", "flows.0.scale", "context_affine.scale"} <= keys
    fresh = torchref.from_spec(flow, dtype=torch.float64)
    fresh.load_state_dict(model.state_dict())
    x, c = torch.randn(16, 5, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    assert torch.equal(fresh.log_prob(x, c), model.log_prob(x, c))
    assert_identical(torchref.to_jax(fresh)[1], torchref.to_jax(model)[1])


def _lu_lower_and_upper_transposed(model):
    for layer in model.modules():
        if isinstance(layer, torchref.LULinear):
            lower, upper = layer.lower.clone(), layer.upper.clone()
            layer.lower.copy_(upper.T)
            layer.upper.copy_(lower.T)


def _permutation_inverted(model):
    for layer in model.modules():
        if isinstance(layer, torchref.Permutation):
            layer.perm, layer.inverse_perm = layer.inverse_perm, layer.perm


def _context_concatenated_first(model):
    """The conditioner's input columns read as ``concat(c, x_C)`` instead of ``concat(x_C, c)``."""
    for layer in model.modules():
        if isinstance(layer, torchref.AffineCouplingLayer):
            weight, n = layer.theta.input.weight, model.context_dim
            layer.theta.input.weight.copy_(torch.cat([weight[:, -n:], weight[:, :-n]], dim=1))


def _actnorm_log_scale_negated(model):  # Glow's exp(+log_scale) convention for jaxflow's exp(-log_scale)
    for layer in model.modules():
        if isinstance(layer, torchref.ActNorm):
            layer.log_scale.neg_()


def _affine_scale_inverted(model):  # z = x * scale + shift read for z = (x - shift) / scale
    for layer in model.modules():
        if isinstance(layer, torchref.Affine):
            layer.scale.reciprocal_()


def _repeat_copies_reversed(model):  # the stacking axis of a Repeat read backwards
    for layer in model.modules():
        if isinstance(layer, torchref.Repeat):
            copies = list(layer)
            for i, copy in enumerate(reversed(copies)):
                layer[i] = copy


def _spline_numbers_read_blocked(model):  # jaxflow's blocked [widths | heights | derivatives] rows, not interleaved
    for layer in model.modules():
        if isinstance(layer, torchref.Coupling) and isinstance(layer.transform, torchref.RQSpline):
            dims, theta = layer.theta.dims, layer.theta
            order = torch.as_tensor(np.argsort(torchref.convert.interleaved_order(theta.out_dim, theta.num_params)))
            dims.weight.copy_(dims.weight[order])
            dims.bias.copy_(dims.bias[order])


def _spline_widths_and_heights_swapped(model):
    for layer in model.modules():
        if isinstance(layer, torchref.Coupling) and isinstance(layer.transform, torchref.RQSpline):
            k, p = layer.transform.bins, layer.theta.num_params
            rows = torch.arange(layer.theta.dims.out_features).reshape(-1, p)
            swap = torch.cat([rows[:, k:2 * k], rows[:, :k], rows[:, 2 * k:]], 1).ravel()
            layer.theta.dims.weight.copy_(layer.theta.dims.weight[swap])
            layer.theta.dims.bias.copy_(layer.theta.dims.bias[swap])


@pytest.mark.parametrize("corrupt", [_lu_lower_and_upper_transposed, _permutation_inverted, _context_concatenated_first,
                                     _actnorm_log_scale_negated, _affine_scale_inverted, _repeat_copies_reversed,
                                     _spline_numbers_read_blocked, _spline_widths_and_heights_swapped])
def test_a_wrong_conversion_of_a_composition_is_caught(corrupt):
    """Each plausible conversion bug of a new layer kind breaks parity by far more than the float32 tolerance."""
    flow = COMPOSED_EDGE_CASES[0]
    params, model = make_composed_pair(flow, 0, np.float64)
    rng = np.random.default_rng(1)
    x, c = rng.standard_normal((32, 5)), rng.standard_normal((32, 2))
    expected = jaxflow.log_prob(flow, params, x, context=c)
    assert rel_err(to_numpy(model.log_prob(to_torch(x), to_torch(c))), expected) <= TOLERANCES["float64"]["log_prob"]
    with torch.no_grad():
        corrupt(model)
    assert rel_err(to_numpy(model.log_prob(to_torch(x), to_torch(c))), expected) > 100 * TOLERANCES["float32"]["log_prob"]


def test_converting_a_non_flow_is_a_one_line_type_error():
    with pytest.raises(TypeError, match=r"^from_jax: expected a jaxflow flow spec .*got int$"):
        torchref.from_jax(42, {})
    with pytest.raises(TypeError, match=r"^to_jax: expected a torchref.NormalizingFlow, got Linear$"):
        torchref.to_jax(torch.nn.Linear(2, 2))


def test_to_jax_rejects_a_repeat_of_different_layers():
    model = torchref.from_spec(jaxflow.Flow((3,), jaxflow.Repeat(jaxflow.ActNorm(), 2)))
    model.flows[1] = torchref.LULinear(3)
    with pytest.raises(ValueError, match="copies of a Repeat must be identical"):
        torchref.to_jax(model)


def test_a_user_conditioner_has_no_twin_in_one_line():
    @dataclasses.dataclass(frozen=True)
    class Gelu(jaxflow.FlaxConditioner):
        def module(self, out_dim):
            return flax.linen.Dense(out_dim)

    flow = jaxflow.Flow((3,), jaxflow.Coupling("alternate", Gelu()))
    with pytest.raises(ValueError, match=r"^from_jax: torchref has a twin of jaxflow.MLP conditioners only, got Gelu$"):
        torchref.from_spec(flow)


def test_every_conditioner_activation_has_a_twin():
    """Round trip exact and ``log_prob`` equal with an ``MLP(activation=...)`` of each kind, in both coupling kinds."""
    nets = [jaxflow.MLP(8, 1, 0.2, activation=activation) for activation in sorted(jaxflow.nets.mlp.ACTIVATIONS)]
    flow = jaxflow.Flow((3,), jaxflow.Chain(*[
        jaxflow.AffineCoupling("alternate", net, "tanh") if i % 2 else jaxflow.Coupling("half", net, jaxflow.RQSpline(3, 2.0))
        for i, net in enumerate(nets)]), context_dim=1)
    assert jax_torch_jax_exactly(flow, np.float64) == flow
    params = random_params(flow, np.float64)
    rng = np.random.default_rng(2)
    x, c = 1.5 * rng.standard_normal((16, 3)), rng.standard_normal((16, 1))
    expected = jaxflow.log_prob(flow, params, x, context=c)
    assert rel_err(to_numpy(torchref.from_jax(flow, params).log_prob(to_torch(x), to_torch(c))), expected) \
        <= TOLERANCES["float64"]["log_prob"]


def test_to_jax_refuses_an_article_stack_that_a_realnvp_cannot_hold():
    model = torchref.from_spec(jaxflow.Flow((4,), jaxflow.Repeat(jaxflow.AffineCoupling(
        "half", jaxflow.MLP(8, 1, activation="gelu")), 2)))
    model.flows = torch.nn.ModuleList(model.flows)  # the article's plain list
    with pytest.raises(ValueError, match=r"^to_jax: a RealNVP cannot hold these couplings .*gelu"):
        torchref.to_jax(model)


def test_each_copy_of_a_repeat_has_its_permutation_in_the_twin():
    """Copy ``k`` of a random ``Permute`` in (nested) ``Repeat``s is ``Permutation(copy=k)`` in torch, which
    draws ``default_rng([seed, k])`` itself; both ways exact, and a twin with other copies is refused."""
    import warnings

    from torchref import model as tr
    from torchref.convert import from_jax, to_jax

    step = jaxflow.Chain(jaxflow.AffineCoupling(mask="alternate", conditioner=jaxflow.MLP(8, 1)), jaxflow.Permute("random", 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # this tiny flow leaves a coordinate untransformed; beside the point here
        flow = jaxflow.Flow(event_shape=(5,), layers=jaxflow.Repeat(jaxflow.Repeat(step, 2), 2))
    params = jax.tree.map(lambda a: a + 0.1, jaxflow.init(flow, jax.random.key(0), jax.numpy.float64))
    twin = from_jax(flow, params)
    copies = [m.copy for m in twin.modules() if isinstance(m, tr.Permutation)]
    assert copies == [0, 1, 2, 3]
    x = np.random.default_rng(0).normal(size=(4, 5))
    want = np.asarray(jaxflow.log_prob(flow, params, x))
    assert rel_err(to_numpy(twin.log_prob(to_torch(x))), want) <= TOLERANCES["float64"]["log_prob"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert to_jax(twin)[0] == flow
        last = [m for m in twin.modules() if isinstance(m, tr.Permutation)][-1]
        last.__init__(5, "random", 3, copy=0)  # copy 3 drawn as copy 0
        with pytest.raises(ValueError, match="permutations are not those of a jaxflow flow"):
            to_jax(twin)
