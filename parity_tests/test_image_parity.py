"""Parity of image flows ``(..., H, W, C)``: jaxflow (NHWC) against the torchref twins (NCHW).

Random compositions of image couplings (checkerboard and channel masks, flipped or not, ResNet
conditioners with 0-2 blocks and 1x1 or 3x3 kernels), ActNorm, LULinear and Permute per channel,
Squeeze .. Unsqueeze blocks and FactorOut, with and without a context, and the
``MultiScaleRealNVP`` preset. Every parameter is perturbed away from its start (ActNorm and
LULinear from the identity, the couplings' zero-initialised output convolutions too), so a wrong
layout cannot pass. Data move between the layouts only through ``torchref.to_torch_layout`` /
``torchref.to_jax_layout``.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

import jaxflow
import torchref
from parity_tests.compositions import perturb
from parity_tests.pairs import to_numpy, to_torch
from parity_tests.test_composed import _jax_results, _torch_results
from parity_tests.test_conversion import jax_torch_jax_exactly, random_params
from parity_tests.test_parity import _well_conditioned
from parity_tests.tolerances import TOLERANCES, assert_close, rel_err

EXAMPLES = max(3, settings.default.max_examples // 4)  # each example compiles its own programs
IMAGE_OUTPUTS = ("f", "g", "g_steps", "sample", "grad_x")  # results with an event axis, in torch's layout


def _resnets():
    return st.builds(jaxflow.ResNet, channels=st.integers(4, 8), num_blocks=st.integers(0, 2),
                     kernel_size=st.sampled_from([1, 3]), negative_slope=st.sampled_from([0.01, 0.2]))


def _leaf(shape):
    """One layer on events of ``shape = (H, W, C)``."""
    masks = ["checkerboard"] + (["channel"] if shape[-1] >= 2 else [])
    leaves = [st.builds(jaxflow.AffineCoupling, mask=st.sampled_from(masks), conditioner=_resnets(),
                        scale=st.sampled_from(jaxflow.SCALES), flip=st.booleans()),
              st.just(jaxflow.ActNorm()), st.just(jaxflow.LULinear())]
    if shape[-1] >= 2:
        leaves.append(st.builds(jaxflow.Permute, kind=st.just("random"), seed=st.integers(0, 100)))
    return st.one_of(*leaves)


def _chain(layers):
    return layers[0] if len(layers) == 1 else jaxflow.Chain(*layers)


@st.composite
def _block(draw, shape, depth=0):
    """A shape-keeping block: a leaf, a Repeat, Squeeze .. Unsqueeze or FactorOut of a smaller block."""
    kinds = ["leaf", "repeat"] + (["squeeze", "factor_out"] if depth == 0 else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "repeat":
        return jaxflow.Repeat(_chain(draw(st.lists(_leaf(shape), min_size=1, max_size=2))), 2)
    if kind == "squeeze" and shape[0] % 2 == 0 and shape[1] % 2 == 0:
        inner = (shape[0] // 2, shape[1] // 2, 4 * shape[2])
        return jaxflow.Chain(jaxflow.Squeeze(), draw(_block(inner, depth + 1)), jaxflow.Unsqueeze())
    if kind == "factor_out" and shape[-1] >= 2:
        return jaxflow.FactorOut(draw(_block(jaxflow.FactorOut.inner_shape(shape), depth + 1)))
    return draw(_leaf(shape))


@st.composite
def image_flows(draw) -> jaxflow.Flow:
    shape = (draw(st.sampled_from([2, 4, 6])), draw(st.sampled_from([2, 4, 6])), draw(st.integers(1, 3)))
    blocks = draw(st.lists(_block(shape), min_size=1, max_size=3))
    return jaxflow.Flow(shape, jaxflow.Chain(*blocks), context_dim=draw(st.sampled_from([0, 2])))


def perturb_outputs(model: torch.nn.Module, seed: int, size: float = 0.1) -> None:
    """ActNorm and LULinear off the identity (:func:`perturb`), and every ResNet ``output`` conv off zero."""
    perturb(model, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torchref.ResNet):
                for p in module.output.parameters():
                    p.copy_(size * torch.randn(p.shape, generator=generator, dtype=torch.float64))


def make_image_pair(flow: jaxflow.FlowSpec, seed: int, dtype):
    """``(params, model)``: torch's init, perturbed, converted to jaxflow."""
    torch.manual_seed(seed)
    model = torchref.from_spec(flow, dtype=getattr(torch, np.dtype(dtype).name))
    perturb_outputs(model, seed)
    converted, params = torchref.to_jax(model)
    assert converted == jaxflow.Flow(flow.event_shape, flow.layers, flow.context_dim)
    return params, model


MULTISCALE = [jaxflow.MultiScaleRealNVP((8, 8, 1), num_scales=2),
              jaxflow.MultiScaleRealNVP((4, 4, 2), context_dim=2, channels=8, num_blocks=1)]


def _one_step(preset: jaxflow.FlowSpec) -> jaxflow.Flow:
    """The preset's layers as one top-level step (its Squeeze changes the shape between top-level
    steps, which ``g_steps`` cannot stack): the same map."""
    return jaxflow.Flow(preset.event_shape, jaxflow.Chain(preset.layers), preset.context_dim)


def _with_edge_cases(test):
    for flow, dtype in [(_one_step(MULTISCALE[0]), np.float64), (_one_step(MULTISCALE[1]), np.float32)]:
        test = example(flow=flow, dtype=dtype, seed=0)(test)
    return test


def compare(flow, params, model, x, z, context, seed, dtype):
    """Every public jaxflow function against the torch model, data moved through the layout helpers."""
    key = jax.random.key(seed)
    results = _jax_results(flow, params, x, z, context, key)
    draws = torchref.to_torch_layout(results.pop("latent_draws"))
    expected = _torch_results(model, torchref.to_torch_layout(x), torchref.to_torch_layout(z), context, draws, "cpu")
    for quantity in IMAGE_OUTPUTS:
        expected[quantity] = torchref.to_jax_layout(expected[quantity])
    for quantity, value in results.items():
        jax.tree_util.tree_map(lambda a, b: assert_close(a, to_numpy(b), quantity, dtype), value, expected[quantity])


@settings(max_examples=EXAMPLES)
@_with_edge_cases
@given(flow=image_flows(), dtype=st.sampled_from([np.float64, np.float32]), seed=st.integers(0, 2**16))
def test_image_values_steps_sample_and_gradients(flow, dtype, seed):
    params, model = make_image_pair(flow, seed, dtype)
    rng = np.random.default_rng(seed)
    x, z = rng.standard_normal((2, 3, *flow.event_shape)).astype(dtype)
    context = rng.standard_normal((3, flow.context_dim)).astype(dtype) if flow.context_dim else None
    tc = None if context is None else to_torch(context)
    with torch.no_grad():
        assume(_well_conditioned([*model.f(to_torch(torchref.to_torch_layout(x)), tc),
                                  *model.g_steps(to_torch(torchref.to_torch_layout(z)), tc)]))
    compare(flow, params, model, x, z, context, seed, dtype)


_LOGIT = jaxflow.Flow((4, 4, 2), jaxflow.Chain(
    jaxflow.Logit(0.05), jaxflow.ActNorm(), jaxflow.AffineCoupling("checkerboard", jaxflow.ResNet(4, 1)),
    jaxflow.Affine((0.1, -0.2), (1.5, 0.5)), jaxflow.AffineCoupling("channel", jaxflow.ResNet(4, 0, 1), flip=True)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_logit_first_on_unit_interval_images(dtype):
    params, model = make_image_pair(_LOGIT, 3, dtype)
    rng = np.random.default_rng(3)
    x = rng.uniform(0.01, 0.99, (4, 4, 4, 2)).astype(dtype)
    z = rng.standard_normal((4, 4, 4, 2)).astype(dtype)
    compare(_LOGIT, params, model, x, z, None, 3, dtype)


GLOW = jaxflow.Glow((4, 4, 2), num_scales=2, steps_per_scale=3, channels=4, num_blocks=0, context_dim=2)


@pytest.mark.parametrize("dtype", [np.float64])  # float32: the same layers' twins in the hypothesis test above
def test_glow_values_steps_sample_and_gradients(dtype):
    """Glow's twin is the composition of its layers' twins: every function agrees."""
    flow = _one_step(GLOW)
    params, model = make_image_pair(flow, 5, dtype)
    rng = np.random.default_rng(5)
    x, z = rng.standard_normal((2, 3, *flow.event_shape)).astype(dtype)
    compare(flow, params, model, x, z, rng.standard_normal((3, 2)).astype(dtype), 5, dtype)


# --- conversion ---------------------------------------------------------------------------------

ROUND_TRIP = [*MULTISCALE, _LOGIT, GLOW,
              jaxflow.Flow((2, 6, 3), jaxflow.Repeat(jaxflow.Chain(
                  jaxflow.Squeeze(), jaxflow.LULinear(), jaxflow.Permute("random", 2), jaxflow.Unsqueeze(),
                  jaxflow.FactorOut(jaxflow.AffineCoupling("checkerboard", jaxflow.ResNet(5, 2, 3), "sigmoid"))), 2),
                  context_dim=2)]
_IDS = ["multiscale-8x8x1", "multiscale-4x4x2-context", "logit-affine", "glow-4x4x2-context", "repeat-squeeze-factor-out"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("flow", ROUND_TRIP, ids=_IDS)
def test_image_round_trips_are_exact(flow, dtype):
    back_flow = jax_torch_jax_exactly(flow, dtype)
    assert back_flow == jaxflow.Flow(flow.event_shape, flow.layers, flow.context_dim)  # a preset comes back as a Flow
    torch.manual_seed(1)
    fresh = torchref.from_spec(flow, dtype=getattr(torch, np.dtype(dtype).name))
    perturb_outputs(fresh, 1)
    again = torchref.from_jax(*torchref.to_jax(fresh))
    for key, value in fresh.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_conv_layout_is_as_documented():
    flow = ROUND_TRIP[4]
    params = random_params(flow, np.float64)
    model = torchref.from_jax(flow, params)
    kernel = np.asarray(params[4]["conditioner"]["block_1_a"]["kernel"][1])  # (kh, kw, in, out), copy 1
    weight = to_numpy(model.flows[1][4].module.theta.block_1_a.weight)  # (out, in, kh, kw)
    np.testing.assert_array_equal(weight, kernel.transpose(3, 2, 0, 1))
    x = np.arange(2 * 4 * 4 * 3.0).reshape(2, 4, 4, 3)
    np.testing.assert_array_equal(torchref.to_torch_layout(x)[1, 2, 3, 0], x[1, 3, 0, 2])
    np.testing.assert_array_equal(torchref.to_jax_layout(torchref.to_torch_layout(x)), x)


def _spatially_transposed_kernels(model):
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.weight.copy_(module.weight.transpose(-1, -2).clone())


def _swapped_t_and_s(model):
    for module in model.modules():
        if isinstance(module, torchref.ResNet):
            half = module.output.out_channels // 2
            for p in module.output.parameters():
                p.copy_(torch.cat([p[half:], p[:half]]))


def _pixel_unshuffle_order(model):  # torch's own space-to-depth, channel 4c + 2a + b
    for i, module in enumerate(model.flows):
        if isinstance(module, torchref.Chain) and isinstance(module[0], torchref.Squeeze):
            shuffle, unshuffle = torch.nn.PixelUnshuffle(2), torch.nn.PixelShuffle(2)
            module[0].f = lambda x, c=None: (unshuffle_all(shuffle, x), x.new_zeros(x.shape[:-3]))
            module[-1].g = lambda z, c=None: unshuffle_all(shuffle, z)
            module[-1].f = lambda x, c=None: (unshuffle_all(unshuffle, x), x.new_zeros(x.shape[:-3]))


def unshuffle_all(op, x):
    return op(x.reshape(-1, *x.shape[-3:])).reshape(*x.shape[:-3], *op(x.reshape(-1, *x.shape[-3:])).shape[-3:])


def _context_channels_first(model):
    for module in model.modules():
        if isinstance(module, torchref.ImageAffineCouplingLayer):
            weight, n = module.theta.input.weight, model.context_dim
            module.theta.input.weight.copy_(torch.cat([weight[:, -n:], weight[:, :-n]], dim=1))


@pytest.mark.parametrize("corrupt", [_spatially_transposed_kernels, _swapped_t_and_s, _pixel_unshuffle_order,
                                     _context_channels_first])
def test_a_wrong_image_layout_is_caught(corrupt):
    flow = jaxflow.Flow((4, 4, 2), jaxflow.Chain(
        jaxflow.AffineCoupling("checkerboard", jaxflow.ResNet(6, 1, 3)),
        jaxflow.Chain(jaxflow.Squeeze(), jaxflow.AffineCoupling("channel", jaxflow.ResNet(6, 0, 3), flip=True),
                      jaxflow.Unsqueeze())), context_dim=2)
    params, model = make_image_pair(flow, 0, np.float64)
    rng = np.random.default_rng(1)
    x, c = rng.standard_normal((8, 4, 4, 2)), rng.standard_normal((8, 2))
    expected = jaxflow.log_prob(flow, params, x, context=c)
    actual = lambda: to_numpy(model.log_prob(to_torch(torchref.to_torch_layout(x)), to_torch(c)))
    assert rel_err(actual(), expected) <= TOLERANCES["float64"]["log_prob"]
    with torch.no_grad():
        corrupt(model)
        assert rel_err(actual(), expected) > 100 * TOLERANCES["float32"]["log_prob"]


# --- training -----------------------------------------------------------------------------------

_TRAINED = jaxflow.Flow((4, 4, 2), jaxflow.Chain(
    jaxflow.ActNorm(), jaxflow.AffineCoupling("checkerboard", jaxflow.ResNet(4, 1), "tanh"), jaxflow.LULinear(),
    jaxflow.Chain(jaxflow.Squeeze(), jaxflow.AffineCoupling("channel", jaxflow.ResNet(4, 0), "tanh", flip=True),
                  jaxflow.Unsqueeze())))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_image_training_trajectories_match(dtype):
    """30 Adam steps from the same weights on the same batches (test_training's optimizers) end equal."""
    from parity_tests.test_training import batches, train_jax, train_torch

    params, model = make_image_pair(_TRAINED, 0, dtype)
    data = batches(32, dtype)[:30].reshape(30, -1, *_TRAINED.event_shape)  # (steps, batch, 4, 4, 2)
    trained, losses = train_jax(_TRAINED, "adam", params, data)
    torch_losses = train_torch(model, "adam", torchref.to_torch_layout(data), "cpu")
    assert torch_losses[-5:].mean() < torch_losses[:5].mean() - 0.1  # it learns
    assert_close(losses, torch_losses, "train_adam", dtype)
    moved = max(jax.tree_util.tree_leaves(jax.tree_util.tree_map(rel_err, trained, params)))
    assert moved > 0.01
    jax.tree_util.tree_map(lambda a, b: assert_close(a, to_numpy(b), "train_adam", dtype), trained,
                           torchref.to_jax_params(model))
