"""Image layers against independent truths: the autodiff Jacobian, the inverse, the permutation
that Squeeze is, and the masks' definitions; the MultiScaleRealNVP preset; bad input.

The torch twins and parity of these layers are in ``parity_tests/test_image_parity.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflow as jf
from core_helpers import event_jacobian_log_det, perturb
from core_tolerances import assert_close

RESNET = jf.ResNet(channels=4, num_blocks=1)

IMAGE_FLOWS = {
    "checkerboard": jf.Flow((4, 4, 2), jf.AffineCoupling("checkerboard", RESNET, "tanh")),
    "checkerboard_flip_context": jf.Flow((4, 4, 2), jf.AffineCoupling("checkerboard", RESNET, "exp", flip=True),
                                         context_dim=3),
    "channel": jf.Flow((2, 4, 3), jf.AffineCoupling("channel", jf.ResNet(4, 0, 1), "sigmoid")),
    "squeeze_channel_factor_out": jf.Flow((4, 4, 1), jf.Chain(
        jf.ActNorm(), jf.Squeeze(), jf.LULinear(), jf.AffineCoupling("channel", RESNET),
        jf.FactorOut(jf.Chain(jf.ActNorm(), jf.AffineCoupling("checkerboard", RESNET, flip=True))), jf.Unsqueeze())),
    "multiscale": jf.MultiScaleRealNVP((4, 4, 1), num_scales=2, couplings_per_scale=2, channels=4, num_blocks=1),
    "multiscale_context": jf.MultiScaleRealNVP((4, 4, 2), num_scales=2, couplings_per_scale=1, channels=4,
                                               num_blocks=1, scale="exp", context_dim=2),
    "glow": jf.Glow((4, 4, 1), num_scales=2, steps_per_scale=3, channels=4, num_blocks=0),
    "glow_context": jf.Glow((4, 4, 2), num_scales=1, steps_per_scale=2, channels=4, num_blocks=0, context_dim=2),
}


def _setup(flow, dtype, seed=0):
    params = perturb(jf.init(flow, jax.random.key(seed), dtype), seed + 1, 0.2)
    x = jax.random.uniform(jax.random.key(seed + 2), (3, *flow.event_shape), dtype, -1.0, 1.0)
    context = None if not flow.context_dim else jax.random.normal(jax.random.key(seed + 3), (3, flow.context_dim), dtype)
    return params, x, context


@pytest.mark.parametrize("name", sorted(IMAGE_FLOWS))
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_image_flow_log_det_is_the_autodiff_jacobian_and_g_inverts_f(name, dtype):
    flow = IMAGE_FLOWS[name]
    params, x, context = _setup(flow, dtype)
    z, log_det = jf.f(flow, params, x, context=context)
    assert z.shape == x.shape
    forward = lambda v, *c: jf.f(flow, params, v, context=c[0] if c else None)[0]
    truth = event_jacobian_log_det(forward, x, flow.event_shape, *([] if context is None else [context]))
    assert_close(log_det, truth, "layer_stack_log_det_vs_jacobian", dtype)
    x_back, inverse_log_det = jf.g_and_log_det(flow, params, z, context=context)
    assert_close(x_back, x, "layer_stack_round_trip", dtype)
    assert_close(log_det + inverse_log_det, np.zeros(3), "layer_stack_log_det_cancel", dtype)


def test_log_prob_is_the_standard_normal_over_every_coordinate():
    flow = IMAGE_FLOWS["multiscale"]
    params, x, _ = _setup(flow, jnp.float64)
    z, log_det = jf.f(flow, params, x)
    expected = -0.5 * (z**2).sum((1, 2, 3)) - 0.5 * 16 * np.log(2 * np.pi) + log_det
    assert_close(jf.log_prob(flow, params, x), expected, "same_math")


def test_squeeze_is_the_documented_permutation():
    x = jnp.arange(2 * 4 * 6 * 3.0).reshape(2, 4, 6, 3)
    z, log_det = jf.Squeeze().forward({}, x, None, (4, 6, 3))
    assert z.shape == (2, 2, 3, 12) and np.all(np.asarray(log_det) == 0)
    for i, j, a, b, c in np.ndindex(2, 3, 2, 2, 3):
        assert z[1, i, j, (2 * a + b) * 3 + c] == x[1, 2 * i + a, 2 * j + b, c]
    assert np.array_equal(jf.Unsqueeze().forward({}, z, None, (2, 3, 12))[0], x)


def test_masks_are_the_checkerboard_and_channel_halves():
    from jaxflow.layers.masks import image_mask
    board = image_mask("checkerboard", False, (3, 4, 2))
    assert board[0, 0, 1] == 1 and board[0, 1, 0] == 0 and board[1, 1, 0] == 1 and board.sum() == 12
    assert np.array_equal(image_mask("checkerboard", True, (3, 4, 2)), 1 - board)
    channel = image_mask("channel", False, (2, 2, 5))
    assert channel[..., :2].all() and not channel[..., 2:].any()


def test_a_coupling_leaves_the_conditioning_pixels_alone_and_the_factored_channels_pass():
    flow = IMAGE_FLOWS["squeeze_channel_factor_out"]
    params, x, _ = _setup(flow, jnp.float64)
    coupling = jf.AffineCoupling("checkerboard", RESNET, flip=True)
    p = perturb(coupling.init(jax.random.key(0), (4, 4, 2), 0, jnp.float64), 3)
    z, _ = coupling.forward(p, x[..., :1].repeat(2, -1), None, (4, 4, 2))
    kept = jf.layers.masks.image_mask("checkerboard", True, (4, 4, 2)) == 0
    assert np.array_equal(np.asarray(z)[:, kept], np.asarray(x[..., :1].repeat(2, -1))[:, kept])
    factor = jf.FactorOut(jf.ActNorm())
    q = perturb(factor.init(jax.random.key(0), (2, 2, 4), 0, jnp.float64), 4)
    y = jnp.ones((2, 2, 4))
    out, _ = factor.forward(q, y, None, (2, 2, 4))
    assert np.array_equal(out[..., :2], y[..., :2]) and not np.allclose(out[..., 2:], y[..., 2:])


def test_the_preset_starts_as_the_identity_and_repeats_pairs_as_one_scan():
    flow = jf.MultiScaleRealNVP((8, 8, 1), num_scales=2, couplings_per_scale=3, channels=4, num_blocks=1)
    params = jf.init(flow, jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
    z, log_det = jf.f(flow, params, x)
    assert_close(z, x, "same_math", jnp.float32)  # last-bit noise of XLA's float32 convolutions
    assert_close(log_det, np.zeros(2), "same_math", jnp.float32)
    first = flow.layers.layers[0]
    assert isinstance(first, jf.Repeat) and first.n == 1 and first.layer.layers[1].layers[1].flip
    assert jf.core.serialize.spec_from_json(jf.core.serialize.spec_to_json(flow)) == flow


def test_glow_is_squeeze_steps_of_actnorm_lu_and_channel_coupling_then_factor_out():
    flow = jf.Glow((8, 8, 1), num_scales=2, steps_per_scale=3, channels=4)
    params = jf.init(flow, jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
    # at the start W = I and every coupling scales its half by sigmoid(0 + 2): 3 steps of 32 coordinates
    # on (4, 4, 4), 3 of 16 on the kept (2, 2, 8)
    assert_close(jf.log_det(flow, params, x), np.full(2, 144 * np.log(jax.nn.sigmoid(2.0))), "same_math", jnp.float32)
    squeeze, pairs, last, factor_out, unsqueeze = flow.layers.layers
    assert (squeeze, unsqueeze) == (jf.Squeeze(), jf.Unsqueeze()) and isinstance(factor_out, jf.FactorOut)
    assert isinstance(pairs, jf.Repeat) and pairs.n == 1 and [step.layers[2].flip for step in pairs.layer.layers] == [False, True]
    actnorm, lu, coupling = last.layers
    assert (actnorm, lu) == (jf.ActNorm(), jf.LULinear())
    assert (coupling.mask, coupling.scale, coupling.identity_init, coupling.conditioner) == (
        "channel", "sigmoid", True, jf.ResNet(4, 1))
    inner = factor_out.layer.layers
    assert inner[0] == jf.Squeeze() and inner[-1] == jf.Unsqueeze() and len(inner) == 4  # the last scale: no factor-out
    assert jf.core.serialize.spec_from_json(jf.core.serialize.spec_to_json(flow)) == flow


def test_resnet_init_is_torch_conv2d_default_and_zero_last():
    net = jf.ResNet(channels=8, num_blocks=1, kernel_size=3)
    params = net.init(jax.random.key(0), 3, 6, jnp.float64, zero_last=True)
    bound = 1 / np.sqrt(3 * 9)
    kernel = np.asarray(params["input"]["kernel"])
    assert kernel.shape == (3, 3, 3, 8) and np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.9 * bound
    assert not np.any(params["output"]["kernel"]) and not np.any(params["output"]["bias"])
    assert net.layer_names() == ("input", "block_0_a", "block_0_b", "output")


@pytest.mark.parametrize("build, message", [
    (lambda: jf.Flow((4, 4, 1), jf.AffineCoupling("checkerboard")), "need conditioner=jaxflow.ResNet"),
    (lambda: jf.Flow((4,), jf.AffineCoupling("checkerboard")), "an image mask"),
    (lambda: jf.Flow((4, 4, 1), jf.AffineCoupling("half", RESNET)), "on image events (H, W, C) mask must be one of"),
    (lambda: jf.Flow((4, 4, 1), jf.AffineCoupling("channel", RESNET)), "a channel mask needs >= 2 channels"),
    (lambda: jf.Flow((4,), jf.AffineCoupling("alternate", flip=True)), "flip applies to image masks"),
    (lambda: jf.Flow((3, 4, 1), jf.Squeeze()), "height and width must be even"),
    (lambda: jf.Flow((4, 4, 1), jf.Squeeze()), "the latent must have the data's shape"),
    (lambda: jf.Flow((4, 4, 1), jf.FactorOut(jf.ActNorm())), "needs >= 2 channels"),
    (lambda: jf.ResNet(kernel_size=2), "kernel_size must be odd"),
    (lambda: jf.MultiScaleRealNVP((28, 28, 1), num_scales=4), "divisible by 8"),
    (lambda: jf.MultiScaleRealNVP((28, 28)), "event_shape must be (H, W, C)"),
    (lambda: jf.Glow((28, 28, 1), num_scales=3), "Glow: 3 scales need height and width divisible by 8"),
    (lambda: jf.Glow((8, 8, 1), steps_per_scale=0), "Glow: steps_per_scale must be >= 1"),
    (lambda: jf.Glow((8, 8, 1), scale="relu"), "Glow: scale must be one of"),
])
def test_bad_image_specs_fail_in_one_line(build, message):
    with pytest.raises((ValueError, TypeError)) as info:
        build()
    assert message in str(info.value) and "\n" not in str(info.value)


def test_jaxflow_fit_on_image_files_trains_a_multiscale_flow_and_refuses_vector_options(tmp_path, capsys):
    import json

    from jaxflow import checkpoint
    from jaxflow.cli import main

    pixels = np.random.default_rng(0).integers(0, 4, (120, 4, 4, 1))
    np.savez(tmp_path / "img.npz", train=pixels[:80], val=pixels[80:100], test=pixels[100:])
    run = str(tmp_path / "run")
    small = ["--num-scales", "2", "--couplings-per-scale", "1", "--channels", "4", "--num-blocks", "1",
             "--batch-size", "16", "--quiet", "--levels", "4"]
    assert main(["fit", str(tmp_path / "img.npz"), "--out", run, "--steps", "10", "--eval-every", "5", *small]) == 0
    flow = checkpoint.load(run).flow
    preset = jf.MultiScaleRealNVP((4, 4, 1), num_scales=2, couplings_per_scale=1, channels=4, num_blocks=1)
    assert flow.layers.layers == (jf.Logit(0.01), preset.layers)  # the logit of [0, 1] pixels, then the preset
    capsys.readouterr()
    assert main(["eval", run, str(tmp_path / "img.npz"), "--levels", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0 < result["bits_per_dim"] < 4 and result["gaussian_bits_per_dim"] > 0  # uniform: log2(4) = 2
    # the learning curve is in eval's units: its best validation row is eval's NLL of the best parameters
    curve = np.genfromtxt(tmp_path / "run" / "history.csv", delimiter=",", names=True)
    assert list(curve["step"]) == [5, 10]
    np.testing.assert_allclose(curve["val_bits_per_dim"], curve["val_nll"] / (16 * np.log(2)), rtol=1e-5)
    assert main(["eval", run, str(tmp_path / "img.npz"), "--levels", "4", "--json", "--split", "val"]) == 0
    assert curve["val_nll"].min() == pytest.approx(json.loads(capsys.readouterr().out)["nll_nats"], rel=1e-5)
    assert main(["fit", str(tmp_path / "img.npz"), "--out", str(tmp_path / "r2"), "--hidden-dim", "8", *small]) == 1
    assert "--hidden-dim: not an option of the image model for data of shape (4, 4, 1)" in capsys.readouterr().err


def test_jaxflow_fit_flow_glow_trains_a_glow_and_each_layout_refuses_the_others_flows(tmp_path, capsys):
    from jaxflow import checkpoint
    from jaxflow.cli import main

    pixels = np.random.default_rng(0).integers(0, 4, (60, 4, 4, 1))
    np.savez(tmp_path / "img.npz", train=pixels[:40], val=pixels[40:50], test=pixels[50:])
    small = ["--num-scales", "2", "--couplings-per-scale", "1", "--channels", "4", "--num-blocks", "0",
             "--batch-size", "8", "--quiet", "--levels", "4", "--steps", "2", "--eval-every", "2"]
    assert main(["fit", str(tmp_path / "img.npz"), "--out", str(tmp_path / "run"), "--flow", "glow", *small]) == 0
    preset = jf.Glow((4, 4, 1), num_scales=2, steps_per_scale=1, channels=4, num_blocks=0, scale="tanh")
    assert checkpoint.load(str(tmp_path / "run")).flow.layers.layers == (jf.Logit(0.01), preset.layers)
    capsys.readouterr()
    assert main(["fit", str(tmp_path / "img.npz"), "--out", str(tmp_path / "r2"), "--flow", "nsf", *small]) == 1
    assert "--flow nsf: not a flow of image data (shape (4, 4, 1)); choose one of realnvp, glow" in capsys.readouterr().err
    np.savetxt(tmp_path / "v.csv", np.random.default_rng(0).standard_normal((60, 2)), delimiter=",")
    assert main(["fit", str(tmp_path / "v.csv"), "--out", str(tmp_path / "r3"), "--flow", "glow", "--quiet"]) == 1
    assert "--flow glow: not a flow of vector data (shape (2,)); choose one of realnvp, nsf" in capsys.readouterr().err
