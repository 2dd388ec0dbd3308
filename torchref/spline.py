"""Neural spline couplings in PyTorch, in the article's style: the twin of ``jaxflow.Coupling``.

A :class:`Coupling` is the article's coupling layer with its elementwise map taken out: a
``split`` (:class:`~torchref.model.Split` or :class:`~torchref.model.MaskSplit`), a conditioner
``theta`` (:class:`~torchref.model.Conditioner` with ``num_params = P``) and a ``transform``
with ``P`` numbers per transformed coordinate. With ``x2, x1 = split(x)``::

    phi = stack(theta(concat(x1, c)), -1)                 (..., d, P): number p of coordinate j
    z2, log|dz2/dx2| = transform.forward(x2, phi)         elementwise
    z = split.join(x1, z2),    log|det dz/dx| = sum_j log|dz2_j/dx2_j|

and back with ``transform.inverse``. ``theta``'s last layer is read interleaved, as the
article's (row ``P j + p`` is number ``p`` of coordinate ``j``). The transforms:

* :class:`AffineTransform` (``P = 2``): ``phi = (t, s)``, ``z = x e^{h(s)} + t``, ``h`` from
  :data:`~torchref.model.LOG_SCALES`: the article's coupling.
* :class:`RQSpline` (``P = 3K - 1``): ``phi = (K widths, K heights, K - 1 inner derivatives)``,
  unnormalised, into :func:`unconstrained_rational_quadratic_spline` on ``[-bound, bound]``
  with the derivatives shifted by :data:`IDENTITY_DERIVATIVE`, so ``phi = 0`` is the identity.

This module does not import jaxflow: it is the independent reference.

References:
  Durkan, Bekasov, Murray, Papamakarios. Neural Spline Flows. NeurIPS 2019. arXiv:1906.04032.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from torchref.model import LOG_SCALES

__all__ = ["unconstrained_rational_quadratic_spline", "identity_derivative", "IDENTITY_DERIVATIVE", "AffineTransform", "RQSpline", "Coupling"]

MIN_BIN_WIDTH = MIN_BIN_HEIGHT = MIN_DERIVATIVE = 1e-3



def identity_derivative(min_derivative: float = MIN_DERIVATIVE) -> float:
    """``log(e^{1 - d_min} - 1)``: the unnormalised derivative of slope 1, ``d_min + softplus(.) = 1`` (nflows' boundary constant)."""
    return float(np.log(np.exp(1 - min_derivative) - 1))


IDENTITY_DERIVATIVE = identity_derivative()


def _knots(unnormalized: torch.Tensor, low: float, high: float, minimum: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Knots ``(..., K + 1)`` from ``low`` to ``high``, bins ``minimum + (1 - K minimum) softmax(u)`` apart, and the bin sizes ``(..., K)``."""
    num_bins = unnormalized.shape[-1]
    sizes = minimum + (1 - minimum * num_bins) * F.softmax(unnormalized, dim=-1)
    knots = F.pad(torch.cumsum(sizes, dim=-1), pad=(1, 0), mode="constant", value=0.0)
    knots = (high - low) * knots + low
    knots = torch.cat((torch.full_like(knots[..., :1], low), knots[..., 1:-1], torch.full_like(knots[..., :1], high)), -1)
    return knots, knots[..., 1:] - knots[..., :-1]


def _bin(knots: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``k`` with ``knots[k] <= x < knots[k + 1]`` as an index ``(..., 1)``; the last knot is nudged by
    ``1e-6`` so ``x = B`` falls in the last bin (nflows' ``searchsorted``)."""
    knots = torch.cat((knots[..., :-1], knots[..., -1:] + 1e-6), -1)
    return (torch.sum(x[..., None] >= knots, dim=-1) - 1)[..., None]


def unconstrained_rational_quadratic_spline(
    inputs: torch.Tensor, unnormalized_widths: torch.Tensor, unnormalized_heights: torch.Tensor,
    unnormalized_derivatives: torch.Tensor, inverse: bool = False, tail_bound: float = 1.0,
    min_bin_width: float = MIN_BIN_WIDTH, min_bin_height: float = MIN_BIN_HEIGHT, min_derivative: float = MIN_DERIVATIVE,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The rational-quadratic spline on ``[-B, B]`` (``B = tail_bound``) with identity tails: ``(y, log|dy/dx|)``.

    ``inputs (...)``; widths and heights ``(..., K)``, derivatives ``(..., K - 1)`` (the inner
    knots; the boundary slopes are 1). Knots :math:`x^{(k)}, y^{(k)}` from :func:`_knots`,
    derivatives :math:`\\delta^{(k)} = d_{\\min} + \\operatorname{softplus}(u^d_k)`; in bin ``k``,
    with :math:`w, h` its width and height, :math:`s = h / w`, :math:`\\xi = (x - x^{(k)}) / w`:

    .. math::

        y = y^{(k)} + \\frac{h\\,[s \\xi^2 + \\delta^{(k)} \\xi (1 - \\xi)]}{s + [\\delta^{(k+1)} + \\delta^{(k)} - 2 s]\\, \\xi (1 - \\xi)},
        \\qquad
        \\frac{dy}{dx} = \\frac{s^2 [\\delta^{(k+1)} \\xi^2 + 2 s \\xi (1 - \\xi) + \\delta^{(k)} (1 - \\xi)^2]}
                              {(s + [\\delta^{(k+1)} + \\delta^{(k)} - 2 s]\\, \\xi (1 - \\xi))^2}.

    ``inverse=True``: ``(x, log|dx/dy|)``, :math:`\\xi = 2c / (-b - \\sqrt{b^2 - 4ac})` the root of
    the quadratic of the paper's eqs. 6-8. Outside ``[-B, B]``: ``y = x``, log-det 0. The operations
    are those of nflows' function of the same name (``tails="linear"``), on every element at
    once: outside points are evaluated at 0 and discarded, so gradients stay finite.
    """
    inside = (inputs >= -tail_bound) & (inputs <= tail_bound)
    x = torch.where(inside, inputs, torch.zeros_like(inputs))
    constant = unnormalized_derivatives.new_full((*unnormalized_derivatives.shape[:-1], 1), identity_derivative(min_derivative))
    derivatives = min_derivative + F.softplus(torch.cat((constant, unnormalized_derivatives, constant), -1))
    cumwidths, widths = _knots(unnormalized_widths, -tail_bound, tail_bound, min_bin_width)
    cumheights, heights = _knots(unnormalized_heights, -tail_bound, tail_bound, min_bin_height)
    batch = torch.broadcast_shapes(x.shape, widths.shape[:-1])
    x = x.expand(batch)
    index = _bin((cumheights if inverse else cumwidths).expand(*batch, -1), x)
    at = lambda values: values.expand(*batch, values.shape[-1]).gather(-1, index)[..., 0]  # the value in x's bin
    x_k, w, y_k, h = at(cumwidths), at(widths), at(cumheights), at(heights)
    s = at(heights / widths)
    d_k, d_k1 = at(derivatives[..., :-1]), at(derivatives[..., 1:])
    if inverse:
        a = (x - y_k) * (d_k + d_k1 - 2 * s) + h * (s - d_k)
        b = h * d_k - (x - y_k) * (d_k + d_k1 - 2 * s)
        c = -s * (x - y_k)
        xi = (2 * c) / (-b - torch.sqrt(b.pow(2) - 4 * a * c))
        outputs = xi * w + x_k
    else:
        xi = (x - x_k) / w
    xi_one_minus_xi = xi * (1 - xi)
    denominator = s + (d_k + d_k1 - 2 * s) * xi_one_minus_xi
    derivative_numerator = s.pow(2) * (d_k1 * xi.pow(2) + 2 * s * xi_one_minus_xi + d_k * (1 - xi).pow(2))
    logabsdet = torch.log(derivative_numerator) - 2 * torch.log(denominator)
    if inverse:
        logabsdet = -logabsdet
    else:
        outputs = y_k + h * (s * xi.pow(2) + d_k * xi_one_minus_xi) / denominator
    inside = inside.expand(batch)
    return torch.where(inside, outputs, inputs.expand(batch)), torch.where(inside, logabsdet, torch.zeros_like(logabsdet))


class AffineTransform(nn.Module):
    """``z = x e^{h(s)} + t``, ``log|dz/dx| = h(s)``, with ``phi = (t, s)`` and ``h = LOG_SCALES[scale]``."""

    num_params = 2

    def __init__(self, scale: str = "exp", clamp: float = 5.0):
        super().__init__()
        if scale not in LOG_SCALES:
            raise ValueError(f"AffineTransform: scale must be one of {tuple(LOG_SCALES)}, got {scale!r}")
        self.scale, self.clamp = scale, clamp

    def _shift_and_log_scale(self, phi: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return phi[..., 0], LOG_SCALES[self.scale](phi[..., 1], self.clamp)

    def forward(self, x: torch.Tensor, phi: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        t, log_scale = self._shift_and_log_scale(phi)
        return x * torch.exp(log_scale) + t, log_scale

    def inverse(self, z: torch.Tensor, phi: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        t, log_scale = self._shift_and_log_scale(phi)
        return (z - t) * torch.exp(-log_scale), -log_scale

    def extra_repr(self) -> str:
        return f"scale={self.scale!r}, clamp={self.clamp}"


class RQSpline(nn.Module):
    """The rational-quadratic spline on ``[-bound, bound]`` with ``K = bins``: ``phi = (u^w (K), u^h (K), u^d (K - 1))``,
    the derivatives shifted by :data:`IDENTITY_DERIVATIVE` (``phi = 0``: equal bins, slope 1, the identity)."""

    def __init__(self, bins: int = 8, bound: float = 3.0):
        super().__init__()
        self.bins, self.bound = bins, bound

    @property
    def num_params(self) -> int:
        return 3 * self.bins - 1

    def _spline(self, x: torch.Tensor, phi: torch.Tensor, inverse: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        k = self.bins
        return unconstrained_rational_quadratic_spline(x, phi[..., :k], phi[..., k:2 * k],
                                                       phi[..., 2 * k:] + IDENTITY_DERIVATIVE, inverse=inverse,
                                                       tail_bound=self.bound)

    def forward(self, x: torch.Tensor, phi: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self._spline(x, phi, inverse=False)

    def inverse(self, z: torch.Tensor, phi: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self._spline(z, phi, inverse=True)

    def extra_repr(self) -> str:
        return f"bins={self.bins}, bound={self.bound}"


class Coupling(nn.Module):
    """A coupling layer ``f`` and its inverse ``g``: ``split``, conditioner ``theta``, elementwise ``transform``
    (equations in the module docstring).

    ``split`` as :class:`~torchref.model.AffineCouplingLayer`'s; ``theta`` maps ``concat(x1, c)`` to
    ``transform.num_params`` tensors of shape ``(..., split.d)`` (a
    :class:`~torchref.model.Conditioner`). ``identity_init`` zeroes ``theta.dims`` now
    (``phi = 0``: the identity) and is remembered for conversion.
    """

    def __init__(self, theta: nn.Module, split: nn.Module, transform: nn.Module, identity_init: bool = False):
        super().__init__()
        self.theta, self.split, self.transform, self.identity_init = theta, split, transform, identity_init
        if identity_init:
            with torch.no_grad():
                for p in theta.dims.parameters():
                    p.zero_()

    def _numbers(self, h: torch.Tensor, context: Optional[torch.Tensor]) -> torch.Tensor:
        """``phi (..., d, P)`` from ``theta(concat(h, c))``."""
        return torch.stack(self.theta(h if context is None else torch.cat((h, context), dim=-1)), dim=-1)

    def f(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """f : x -> (z, log|det dz/dx|). The inverse of g."""
        x2, x1 = self.split(x)
        z2, log_det = self.transform.forward(x2, self._numbers(x1, context))
        return self.split.join(x1, z2), log_det.sum(-1)

    def g(self, z: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        """g : z -> x. The inverse of f."""
        z1, z2 = self.split.inverse(z)
        x2, _ = self.transform.inverse(z2, self._numbers(z1, context))
        return self.split.inverse_join(x2, z1)

    def extra_repr(self) -> str:
        return "identity_init=True" if self.identity_init else ""
