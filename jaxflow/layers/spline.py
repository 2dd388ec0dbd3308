"""The rational-quadratic spline of neural spline flows (Durkan et al. 2019), as one plain function.

:func:`unconstrained_rational_quadratic_spline` computes what nflows' function of the same name
(``nflows/transforms/splines/rational_quadratic.py``, the paper's reference code) computes, with
its ``tails="linear"``, operation for operation, so the two agree to float64 round-off.

**Knots.** On ``[-B, B]`` (``B = tail_bound``) with ``K`` bins, the unnormalised widths ``u^w``,
heights ``u^h`` (``(..., K)``) and inner derivatives ``u^d`` (``(..., K - 1)``) become

.. math::

    w = w_{\\min} + (1 - K w_{\\min})\\, \\operatorname{softmax}(u^w), \\qquad
    x^{(k)} = -B + 2B \\textstyle\\sum_{i \\le k} w_i \\quad (x^{(0)} = -B,\\ x^{(K)} = B),

the same for the heights (``y^{(k)}``, ``h_{\\min}``), and the derivatives at the knots
:math:`\\delta^{(k)} = d_{\\min} + \\operatorname{softplus}(u^d_k)` for ``k = 1..K-1``, with
:math:`\\delta^{(0)} = \\delta^{(K)} = d_{\\min} + \\operatorname{softplus}(\\log(e^{1 - d_{\\min}} - 1)) = 1`:
slope 1 at ``±B``, so the identity tails join smoothly.

**Forward** (eq. 4 of the paper): in bin ``k`` (``x^{(k)} <= x < x^{(k+1)}``, the last bin
closed at ``B``), with :math:`w_k = x^{(k+1)} - x^{(k)}`, :math:`h_k = y^{(k+1)} - y^{(k)}`,
:math:`s_k = h_k / w_k`, :math:`\\xi = (x - x^{(k)}) / w_k`,

.. math::

    y = y^{(k)} + \\frac{h_k\\,[s_k \\xi^2 + \\delta^{(k)} \\xi (1 - \\xi)]}
                        {s_k + [\\delta^{(k+1)} + \\delta^{(k)} - 2 s_k]\\, \\xi (1 - \\xi)},
    \\qquad
    \\frac{dy}{dx} = \\frac{s_k^2\\,[\\delta^{(k+1)} \\xi^2 + 2 s_k \\xi (1 - \\xi) + \\delta^{(k)} (1 - \\xi)^2]}
                          {\\left(s_k + [\\delta^{(k+1)} + \\delta^{(k)} - 2 s_k]\\, \\xi (1 - \\xi)\\right)^2}
    \\quad \\text{(eq. 5)}.

**Inverse** (eqs. 6-8): in bin ``k`` of the heights, :math:`\\xi` is the root in ``[0, 1]`` of
:math:`a \\xi^2 + b \\xi + c = 0`, taken as :math:`\\xi = 2c / (-b - \\sqrt{b^2 - 4ac})` (no
cancellation), and :math:`x = x^{(k)} + \\xi w_k`.

Outside ``[-B, B]`` the map is the identity, log-det 0. Shapes: ``x (...)`` broadcast against the
parameters' batch axes; returns ``y`` and ``logabsdet = log|dy/dx|`` (forward) or
``log|dx/dy|`` (inverse) elementwise, of the broadcast shape.

Gradients are finite everywhere, at the knots and at ``±B`` too: the spline is evaluated at
``where(inside, x, 0)`` (the double-where trick), so the branch that ``where`` drops never sees a
point outside its domain.

References:
  Durkan, Bekasov, Murray, Papamakarios. Neural Spline Flows. NeurIPS 2019. arXiv:1906.04032.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["unconstrained_rational_quadratic_spline", "rational_quadratic_spline", "identity_derivative"]


def identity_derivative(min_derivative: float = 1e-3) -> float:
    """``log(e^{1 - d_min} - 1)``: the unnormalised derivative that gives slope 1
    (:math:`d_{\\min} + \\operatorname{softplus}(\\cdot) = 1`), nflows' boundary constant."""
    return float(np.log(np.exp(1 - min_derivative) - 1))


def _knots(unnormalized: jax.Array, low: float, high: float, minimum: float) -> tuple[jax.Array, jax.Array]:
    """Bin edges ``(..., K + 1)`` from ``low`` to ``high`` and bin sizes ``(..., K)``."""
    num_bins = unnormalized.shape[-1]
    sizes = minimum + (1 - minimum * num_bins) * jax.nn.softmax(unnormalized, axis=-1)
    cumulative = jnp.cumsum(sizes, axis=-1)
    cumulative = jnp.pad(cumulative, [(0, 0)] * (cumulative.ndim - 1) + [(1, 0)])
    cumulative = (high - low) * cumulative + low
    cumulative = cumulative.at[..., 0].set(low).at[..., -1].set(high)
    return cumulative, cumulative[..., 1:] - cumulative[..., :-1]


def _bin(edges: jax.Array, x: jax.Array) -> jax.Array:
    """The bin ``k`` with ``edges[k] <= x < edges[k + 1]`` (``x = edges[-1]`` in the last bin)."""
    edges = edges.at[..., -1].add(1e-6)  # nflows' searchsorted
    return jnp.clip(jnp.sum(x[..., None] >= edges, axis=-1) - 1, 0, edges.shape[-1] - 2)


def _at(values: jax.Array, index: jax.Array) -> jax.Array:
    return jnp.take_along_axis(values, index[..., None], axis=-1)[..., 0]


def rational_quadratic_spline(x, unnormalized_widths, unnormalized_heights, unnormalized_derivatives,
                              inverse=False, left=0.0, right=1.0, bottom=0.0, top=1.0,
                              min_bin_width=1e-3, min_bin_height=1e-3, min_derivative=1e-3):
    """The spline on ``[left, right] -> [bottom, top]`` for ``x`` inside it; derivatives ``(..., K + 1)``
    include the boundary knots. ``(y, log|dy/dx|)`` forward, ``(x, log|dx/dy|)`` inverse."""
    cumwidths, widths = _knots(unnormalized_widths, left, right, min_bin_width)
    cumheights, heights = _knots(unnormalized_heights, bottom, top, min_bin_height)
    derivatives = min_derivative + jax.nn.softplus(unnormalized_derivatives)

    k = _bin(cumheights if inverse else cumwidths, x)
    input_cumwidths, input_bin_widths = _at(cumwidths, k), _at(widths, k)
    input_cumheights, input_heights = _at(cumheights, k), _at(heights, k)
    input_delta = _at(heights / widths, k)
    input_derivatives, input_derivatives_plus_one = _at(derivatives, k), _at(derivatives[..., 1:], k)
    slope_sum = input_derivatives + input_derivatives_plus_one - 2 * input_delta

    if inverse:
        a = (x - input_cumheights) * slope_sum + input_heights * (input_delta - input_derivatives)
        b = input_heights * input_derivatives - (x - input_cumheights) * slope_sum
        c = -input_delta * (x - input_cumheights)
        discriminant = b**2 - 4 * a * c
        theta = (2 * c) / (-b - jnp.sqrt(discriminant))
        outputs = theta * input_bin_widths + input_cumwidths
    else:
        theta = (x - input_cumwidths) / input_bin_widths
    theta_one_minus_theta = theta * (1 - theta)
    denominator = input_delta + slope_sum * theta_one_minus_theta
    if not inverse:
        numerator = input_heights * (input_delta * theta**2 + input_derivatives * theta_one_minus_theta)
        outputs = input_cumheights + numerator / denominator
    derivative_numerator = input_delta**2 * (input_derivatives_plus_one * theta**2
                                             + 2 * input_delta * theta_one_minus_theta
                                             + input_derivatives * (1 - theta) ** 2)
    logabsdet = jnp.log(derivative_numerator) - 2 * jnp.log(denominator)
    return outputs, -logabsdet if inverse else logabsdet


def unconstrained_rational_quadratic_spline(x, unnormalized_widths, unnormalized_heights, unnormalized_derivatives,
                                            inverse=False, tail_bound=1.0, min_bin_width=1e-3,
                                            min_bin_height=1e-3, min_derivative=1e-3):
    """The rational-quadratic spline on ``[-tail_bound, tail_bound]`` with identity tails (module docstring).

    Args:
      x: points ``(...)``.
      unnormalized_widths, unnormalized_heights: ``(..., K)``, any real numbers.
      unnormalized_derivatives: ``(..., K - 1)``, the inner knots' derivatives before
        ``d_min + softplus``.
      inverse: evaluate the inverse map.
      tail_bound: ``B``; the identity outside ``[-B, B]``.
      min_bin_width, min_bin_height, min_derivative: the floors ``w_min``, ``h_min``, ``d_min``.

    Returns:
      ``(y, logabsdet)``, both of the broadcast batch shape; ``logabsdet = log|dy/dx|`` forward and
      ``log|dx/dy|`` inverse, 0 in the tails.
    """
    num_bins = unnormalized_widths.shape[-1]
    if unnormalized_heights.shape[-1] != num_bins or unnormalized_derivatives.shape[-1] != num_bins - 1:
        raise ValueError(f"rational quadratic spline: widths and heights need K entries and derivatives K - 1, got "
                         f"{unnormalized_widths.shape[-1]}, {unnormalized_heights.shape[-1]} and "
                         f"{unnormalized_derivatives.shape[-1]}")
    if min_bin_width * num_bins > 1.0 or min_bin_height * num_bins > 1.0:
        raise ValueError(f"rational quadratic spline: {num_bins} bins of minimal width {min_bin_width} and height "
                         f"{min_bin_height} do not fit in the interval")
    batch = jnp.broadcast_shapes(jnp.shape(x), unnormalized_widths.shape[:-1], unnormalized_heights.shape[:-1],
                                 unnormalized_derivatives.shape[:-1])
    x = jnp.broadcast_to(x, batch)
    params = [jnp.broadcast_to(u, batch + u.shape[-1:])
              for u in (unnormalized_widths, unnormalized_heights, unnormalized_derivatives)]
    boundary = jnp.full(batch + (1,), identity_derivative(min_derivative), params[2].dtype)
    params[2] = jnp.concatenate([boundary, params[2], boundary], axis=-1)

    inside = (x >= -tail_bound) & (x <= tail_bound)
    y, logabsdet = rational_quadratic_spline(
        jnp.where(inside, x, jnp.zeros_like(x)), *params, inverse=inverse, left=-tail_bound, right=tail_bound,
        bottom=-tail_bound, top=tail_bound, min_bin_width=min_bin_width, min_bin_height=min_bin_height,
        min_derivative=min_derivative)
    return jnp.where(inside, y, x), jnp.where(inside, logabsdet, jnp.zeros_like(logabsdet))
