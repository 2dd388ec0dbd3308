"""torchref against the mathematics, independently of jaxflow.

Parity only shows that two implementations agree; these tests show that the reference is right:
its log-dets equal ``log|det J|`` of the autodiff Jacobian in both directions, ``g`` inverts
``f`` on whole stacks, and ``log_prob`` is the change-of-variables formula.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.autograd.functional import jacobian

import torchref
from parity_tests.compositions import perturb
from parity_tests.tolerances import assert_close

CASES = [(2, "exp"), (3, "tanh"), (7, "sigmoid"), (8, "exp")]


@pytest.fixture(params=CASES, ids=[f"dim{d}-{s}" for d, s in CASES])
def model(request):
    dim, scale = request.param
    torch.manual_seed(dim)
    return torchref.build_flow(dim, 5, hidden_dim=16, num_hidden=2, scale=scale, dtype=torch.float64)


def test_log_dets_are_log_abs_det_of_the_jacobian(model):
    dim = model.flows[0].split.dim
    for x in torch.randn(4, dim, dtype=torch.float64):
        z, log_det = model.f(x)
        jac_f = jacobian(lambda v: model.f(v)[0], x)
        jac_g = jacobian(model.g, z)
        assert_close(log_det.detach(), torch.linalg.slogdet(jac_f)[1], "log_det_vs_jacobian", np.float64)
        assert_close(-log_det.detach(), torch.linalg.slogdet(jac_g)[1], "log_det_vs_jacobian", np.float64)


def test_g_inverts_f_and_f_inverts_g(model):
    x = torch.randn(64, model.flows[0].split.dim, dtype=torch.float64)
    assert_close(model.g(model.f(x)[0]).detach(), x, "inverse", np.float64)
    assert_close(model.f(model.g(x))[0].detach(), x, "inverse", np.float64)


def test_log_prob_is_the_change_of_variables(model):
    x = torch.randn(16, model.flows[0].split.dim, dtype=torch.float64)
    z, log_det = model.f(x)
    dim = x.shape[-1]
    expected = -0.5 * z.square().sum(-1) - 0.5 * dim * math.log(2 * math.pi) + log_det
    assert_close(model.log_prob(x).detach(), expected.detach(), "log_prob_formula", np.float64)


def _composed(dim: int, context_dim: int) -> torchref.NormalizingFlow:
    """Every torchref layer kind, built from torchref alone, ActNorm and LULinear off the identity."""
    def coupling(split, scale):
        out_dim = split.d
        theta = torchref.Conditioner(dim - out_dim + context_dim, out_dim, 1, 16, num_params=2)
        return torchref.AffineCouplingLayer(theta, split, scale=scale, clamp=3.0)

    def open_coupling(split, transform):  # random conditioner: not the identity; data beyond ±bound: the tails
        theta = torchref.Conditioner(dim - split.d + context_dim, split.d, 1, 16, num_params=transform.num_params)
        return torchref.Coupling(theta, split, transform)

    block = lambda: torchref.Chain([
        torchref.ActNorm(dim), coupling(torchref.MaskSplit(dim, "alternate"), "tanh"), torchref.LULinear(dim),
        torchref.Permutation(dim, "random", seed=dim)])
    flows = torchref.Chain([
        torchref.Affine(0.5, 1.5), torchref.Repeat([block(), block()]),
        coupling(torchref.Split(dim), "exp"), coupling(torchref.MaskSplit(dim, [j % 3 == 1 for j in range(dim)]), "sigmoid"),
        torchref.Permutation(dim), open_coupling(torchref.MaskSplit(dim, "alternate"), torchref.RQSpline(5, 1.0)),
        open_coupling(torchref.Split(dim), torchref.AffineTransform("tanh", 2.0)),
        open_coupling(torchref.Split(dim), torchref.RQSpline(1, 2.0))])
    context_affine = torchref.Affine([0.1] * context_dim, [2.0] * context_dim) if context_dim else None
    model = torchref.NormalizingFlow(torchref.StandardNormal(dim), flows, context_affine, context_dim).double()
    perturb(model, seed=dim)
    return model


@pytest.mark.parametrize(("dim", "context_dim"), [(2, 0), (5, 2), (6, 1)])
def test_composed_log_dets_are_log_abs_det_of_the_jacobian(dim, context_dim):
    torch.manual_seed(dim)
    model = _composed(dim, context_dim)
    for x in torch.randn(3, dim, dtype=torch.float64):
        c = torch.randn(context_dim, dtype=torch.float64) if context_dim else None
        z, log_det = model.f(x, c)
        jac_f = jacobian(lambda v: model.f(v, c)[0], x)
        jac_g = jacobian(lambda v: model.g(v, c), z)
        assert_close(log_det.detach(), torch.linalg.slogdet(jac_f)[1], "log_det_vs_jacobian", np.float64)
        assert_close(-log_det.detach(), torch.linalg.slogdet(jac_g)[1], "log_det_vs_jacobian", np.float64)
        assert_close(model.g(z, c).detach(), x, "inverse", np.float64)
        expected = -0.5 * z.square().sum() - 0.5 * dim * math.log(2 * math.pi) + log_det
        assert_close(model.log_prob(x, c).detach(), expected.detach(), "log_prob_formula", np.float64)
