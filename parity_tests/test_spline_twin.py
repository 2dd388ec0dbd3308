"""torchref's rational-quadratic spline against nflows' (the NSF authors' reference code), its
gradients, and jaxflow's spline coupling against torchref's on the knots.

nflows (``pip install --no-deps nflows``) evaluates the spline on the inside points only, by
boolean indexing; torchref's port evaluates every point at once (outside ones at 0, discarded).
Both run the same operations, so they agree to float64 round-off: inside ``[-B, B]``, in the
tails, at the knots and at ``±B``, in both directions, for ``K = 1..16`` bins.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch

import jaxflow
import torchref
from parity_tests.compositions import make_composed_pair
from parity_tests.pairs import to_numpy
from parity_tests.test_composed import _jax_results, _torch_results
from parity_tests.tolerances import assert_close
from torchref.spline import RQSpline, _knots, unconstrained_rational_quadratic_spline

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


# --- jaxflow against torchref where the spline changes pieces: at the knots and at ±B ---------------

KNOT_FLOW = jaxflow.Flow((4,), jaxflow.Coupling("half", jaxflow.MLP(8, 1), jaxflow.RQSpline(4, BOUND), identity_init=False),
                         context_dim=1)


def _at_knots(model: torchref.NormalizingFlow, x: np.ndarray, context: np.ndarray, inverse: bool,
              bounds_only: bool) -> np.ndarray:
    """``x`` with its transformed coordinates (``x[:, :2]``, mask ``"half"``) moved onto knots of their
    own spline (of the widths, or of the heights for the inverse): row ``i`` onto knot ``i mod (K + 1)``;
    with ``bounds_only`` only ``x[:, 0]``, onto ``-B`` and ``B`` (the first and last knots) in turn."""
    coupling = model.flows[0]
    k = coupling.transform.bins
    phi = coupling._numbers(torch.from_numpy(x[:, 2:]), torch.from_numpy(context)).detach()
    knots = _knots(phi[..., k:2 * k] if inverse else phi[..., :k], -BOUND, BOUND, 1e-3)[0].numpy()  # (N, 2, K + 1)
    rows = np.arange(len(x))
    x = x.copy()
    if bounds_only:  # the other coordinate stays put, so that the gradients are not all zero
        x[:, 0] = knots[rows, 0, (rows % 2) * k]
    else:
        x[:, :2] = knots[rows, :, rows % (k + 1)]
    return x


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bounds_only", [False, True], ids=["knots", "bounds"])
def test_spline_coupling_parity_at_the_knots_and_at_the_bounds(bounds_only, dtype):
    """Values, inverse, log-dets, steps and samples of a spline coupling whose inputs sit on the knots
    (forward: of the widths; inverse: of the heights), and at ``±B`` gradients too.

    At an inner knot the spline is C1 but its log-slope only C0: the gradient of the log-det jumps
    there, and which one-sided gradient a side returns depends on the last bit of the knot it
    computed (measured: 0.17 apart). So gradients are compared at ``±B`` and off the knots
    (:mod:`parity_tests.test_composed`), and only required finite on them.
    """
    params, model = make_composed_pair(KNOT_FLOW, 0, dtype)
    rng = np.random.default_rng(0)
    context = rng.standard_normal((12, 1)).astype(dtype)
    x = _at_knots(model, rng.standard_normal((12, 4)).astype(dtype), context, False, bounds_only)
    z = _at_knots(model, rng.standard_normal((12, 4)).astype(dtype), context, True, bounds_only)
    assert (np.abs(x[:, :2]) == BOUND).any() and (np.abs(z[:, :2]) == BOUND).any()
    results = _jax_results(KNOT_FLOW, params, x, z, context, jax.random.key(0))
    expected = _torch_results(model, x, z, context, results.pop("latent_draws"), "cpu")
    for quantity, value in results.items():
        if quantity.startswith("grad") and not bounds_only:
            assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(value))
            continue
        jax.tree_util.tree_map(lambda a, b: assert_close(a, to_numpy(b), quantity, dtype), value, expected[quantity])
