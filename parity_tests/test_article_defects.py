"""Each defect of the article's code, shown on the verbatim copy in ``article_code.py``, and its fix.

The numbering follows "Deviations from the article" in :mod:`torchref` and the README. Every
test runs the article's classes (with weights copied from a torchref model) and torchref on
the same inputs: the article's code shows the defect, torchref does not.
"""

from __future__ import annotations

import typing

import numpy as np
import pytest
import torch

import torchref
from parity_tests import article_code as article
from parity_tests.devices import DEVICES
from parity_tests.pairs import to_numpy
from parity_tests.tolerances import TOLERANCES, assert_close, rel_err


def article_twin(model: torchref.NormalizingFlow) -> article.NormalizingFlow:
    """The article's classes holding ``model``'s weights (scale "exp", the article's)."""
    split = model.flows[0].split
    layers = []
    for layer in model.flows:
        ref = layer.theta
        theta = article.Conditioner(ref.input.in_features, ref.out_dim, len(ref.hidden), ref.input.out_features, 2)
        theta.load_state_dict(ref.state_dict())
        layers.append(article.AffineCouplingLayer(theta, article.article_split(split.dim)))
    return article.NormalizingFlow(article.article_latent(split.dim), layers)


@pytest.fixture
def pair():
    """A torchref model on R^6 and the article's code with the same weights."""
    torch.manual_seed(0)
    model = torchref.build_flow(6, 3, hidden_dim=16, num_hidden=2)
    return model, article_twin(model)


def test_1_log_det_starts_at_one(pair):
    model, twin = pair
    x = torch.randn(32, 6)
    (z, ld), (z_article, ld_article) = model.f(x), twin.f(x)
    assert torch.equal(z_article, z)  # the same map: the twin is faithful
    assert_close(to_numpy(ld_article - 1), to_numpy(ld), "log_det", np.float32)  # off by exactly 1
    assert_close(to_numpy(twin.log_prob(x) - 1), to_numpy(model.log_prob(x)), "log_prob", np.float32)


def test_2_float64_log_det_rounded_to_float32(pair):
    model, twin = pair
    model.double()
    for layer in twin.flows:  # the article's model cannot cast its layers itself (defect 3)
        layer.double()
    x = torch.randn(32, 6, dtype=torch.float64)
    ld, ld_article = model.f(x)[1], twin.f(x)[1]
    assert ld.dtype == torch.float64 and ld_article.dtype == torch.float32
    error = rel_err(to_numpy(ld_article.double() - 1), to_numpy(ld))
    assert TOLERANCES["float64"]["log_det"] < error <= TOLERANCES["float32"]["log_det"]  # float32 rounding


def test_3_plain_list_hides_parameters(pair):
    model, twin = pair
    assert list(twin.parameters()) == [] and twin.state_dict() == {}
    twin.double()
    assert twin.flows[0].theta.input.weight.dtype == torch.float32  # not cast with the model

    per_layer = sum(p.numel() for p in model.flows[0].parameters())
    assert sum(p.numel() for p in model.parameters()) == 3 * per_layer
    assert {"flows.0.theta.input.weight", "flows.0.theta.hidden.1.bias", "flows.2.theta.dims.weight"} \
        <= model.state_dict().keys()
    model.double()
    assert all(p.dtype == torch.float64 for p in model.parameters())


@pytest.mark.parametrize("dim", [3, 5, 65])
def test_4_odd_dim_g_is_not_the_inverse(dim):
    torch.manual_seed(dim)
    model = torchref.build_flow(dim, 4, hidden_dim=16, num_hidden=1, dtype=torch.float64)
    twin = article_twin(model)
    x = torch.randn(8, dim, dtype=torch.float64)
    z = model.f(x)[0]
    with pytest.raises(RuntimeError):  # g feeds d, not dim - d, coordinates to the conditioner
        twin.g(z)
    assert_close(to_numpy(model.g(z)), to_numpy(x), "inverse", np.float64)
    assert_close(to_numpy(model.f(model.g(x))[0]), to_numpy(x), "inverse", np.float64)


def test_4_even_dim_g_was_already_the_inverse(pair):
    model, twin = pair
    x = torch.randn(8, 6)
    assert torch.equal(twin.g(model.f(x)[0]), model.g(model.f(x)[0]))


def test_5_g_and_sample_carry_no_gradient(pair):
    model, twin = pair
    z = torch.randn(16, 6)
    assert not twin.g(z).requires_grad and not twin.sample(4).requires_grad
    assert twin.g_steps(z)[-1].requires_grad  # the same computation, with gradient

    model.sample(16).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert torch.equal(model.g(z), model.g_steps(z)[-1])


def test_6_latent_does_not_move_or_cast(pair):
    model, twin = pair
    twin.double()
    assert twin.latent_sample(2).dtype == torch.float32
    model.double()
    assert model.latent_sample(2).dtype == torch.float64
    assert twin.to("meta").latent.loc.device.type == "cpu"
    assert model.to("meta").latent.loc.device.type == "meta"  # moves with the model


@pytest.mark.parametrize("device", DEVICES)
def test_6_samples_on_the_model_device(device):
    model = torchref.build_flow(4, 2, hidden_dim=8, num_hidden=1, device=device)
    assert model.sample(3).device.type == device


def test_6_latent_log_prob_is_the_standard_normal():
    latent = torchref.StandardNormal(4).double()
    z = torch.randn(5, 4, dtype=torch.float64)
    expected = -0.5 * z.square().sum(-1) - 2 * torch.log(torch.tensor(2 * torch.pi, dtype=torch.float64))
    assert_close(to_numpy(latent.log_prob(z)), to_numpy(expected), "log_prob_formula", np.float64)
    assert latent.state_dict() == {}  # buffers move and cast, but are not parameters


@pytest.mark.parametrize("shape", [(6,), (2, 3, 6)], ids=["single event", "two batch axes"])
def test_7_only_one_batch_axis(pair, shape):
    model, twin = pair
    x = torch.randn(shape)
    with pytest.raises(RuntimeError):
        twin.f(x)
    z, ld = model.f(x)
    z_flat, ld_flat = model.f(x.reshape(-1, 6))
    assert torch.equal(z, z_flat.reshape(shape)) and torch.equal(ld, ld_flat.reshape(shape[:-1]))
    assert_close(to_numpy(model.g(z)), to_numpy(x), "inverse", np.float32)


def test_8_coupling_f_annotation():
    assert typing.get_type_hints(article.AffineCouplingLayer.f)["return"] is torch.Tensor  # but returns a pair
    assert typing.get_type_hints(torchref.AffineCouplingLayer.f)["return"] == typing.Tuple[torch.Tensor, torch.Tensor]
