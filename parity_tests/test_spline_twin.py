"""torchref's rational-quadratic spline against nflows' (the NSF authors' reference code), and its gradients.

nflows (``pip install --no-deps nflows``) evaluates the spline on the inside points only, by
boolean indexing; torchref's port evaluates every point at once (outside ones at 0, discarded).
Both run the same operations, so they agree to float64 round-off: inside ``[-B, B]``, in the
tails, at the knots and at ``±B``, in both directions, for ``K = 1..16`` bins.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from parity_tests.tolerances import assert_close
from torchref.spline import RQSpline, unconstrained_rational_quadratic_spline

nflows_spline = pytest.importorskip("nflows.transforms.splines.rational_quadratic").unconstrained_rational_quadratic_spline

BOUND = 2.5


def _case(bins: int, n: int = 64, seed: int = 0):
    """Unnormalised parameters ``(n, K)``, ``(n, K)``, ``(n, K - 1)`` and inputs ``(n,)``: random points
    inside and outside ``[-B, B]``, the knots of each row's spline, and ``±B`` exactly."""
    g = torch.Generator().manual_seed(seed)
    widths = 1.5 * torch.randn(n, bins, generator=g, dtype=torch.float64)
    heights = 1.5 * torch.randn(n, bins, generator=g, dtype=torch.float64)
    derivatives = 1.5 * torch.randn(n, bins - 1, generator=g, dtype=torch.float64)
    x = 1.4 * BOUND * (2 * torch.rand(n, generator=g, dtype=torch.float64) - 1)
    # the knots x^(k) of each row: where the forward spline's bins start
    sizes = 1e-3 + (1 - 1e-3 * bins) * torch.softmax(widths, -1)
    edges = 2 * BOUND * torch.nn.functional.pad(torch.cumsum(sizes, -1), (1, 0)) - BOUND
    x[: n // 4] = edges[torch.arange(n // 4), torch.arange(n // 4) % (bins + 1)]
    x[n // 4] = BOUND
    x[n // 4 + 1] = -BOUND
    return x, widths, heights, derivatives


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
@pytest.mark.parametrize("bins", [1, 2, 3, 5, 8, 16])
def test_spline_matches_nflows_inside_in_the_tails_and_at_the_knots(bins, inverse):
    x, widths, heights, derivatives = _case(bins, seed=bins)
    if inverse:  # points of y: the forward images, so knots of the heights are hit too
        x = nflows_spline(x, widths, heights, derivatives, tail_bound=BOUND)[0]
    expected = nflows_spline(x, widths, heights, derivatives, inverse=inverse, tail_bound=BOUND)
    got = unconstrained_rational_quadratic_spline(x, widths, heights, derivatives, inverse=inverse, tail_bound=BOUND)
    outside = (x.abs() > BOUND).sum()
    assert 0 < outside < len(x)  # both regimes are exercised
    assert_close(got[0], expected[0], "spline_vs_nflows", np.float64)
    assert_close(got[1], expected[1], "spline_vs_nflows", np.float64)


def test_spline_broadcasts_one_point_against_a_batch_of_parameters():
    x, widths, heights, derivatives = _case(4)
    y, log_det = unconstrained_rational_quadratic_spline(x[:1], widths, heights, derivatives, tail_bound=BOUND)
    expected = nflows_spline(x[:1].expand(len(x)), widths, heights, derivatives, tail_bound=BOUND)
    assert torch.equal(y, expected[0]) and torch.equal(log_det, expected[1])


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_spline_gradients_are_finite_at_the_bounds_at_the_knots_and_in_the_tails(inverse):
    x, widths, heights, derivatives = _case(8)
    params = [p.clone().requires_grad_() for p in (widths, heights, derivatives)]
    x = x.clone().requires_grad_()
    y, log_det = unconstrained_rational_quadratic_spline(x, *params, inverse=inverse, tail_bound=BOUND)
    (y.sum() + log_det.sum()).backward()
    for tensor in (x, *params):
        assert torch.isfinite(tensor.grad).all()
    assert params[0].grad.abs().sum() > 0


def test_zero_numbers_are_the_identity():
    spline = RQSpline(bins=5, bound=BOUND)
    x = torch.linspace(-2 * BOUND, 2 * BOUND, 41, dtype=torch.float64)
    for direction in (spline.forward, spline.inverse):
        y, log_det = direction(x, torch.zeros(41, spline.num_params, dtype=torch.float64))
        assert_close(y, x, "spline_vs_nflows", np.float64)
        assert_close(log_det, torch.zeros(41, dtype=torch.float64), "spline_vs_nflows", np.float64)
