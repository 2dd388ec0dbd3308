"""The one home of jaxflow's likelihood units: dequantisation, the pixel lattice, bits/dim, logit space.

Pixel data with ``levels`` values per coordinate (``levels = 256`` for 8-bit images, 17 for
scikit-learn's digits) are dequantised uniformly and scaled into the unit cube,

.. math:: x = \\frac{k + u}{\\text{levels}}, \\qquad k \\in \\{0, \\dots, \\text{levels} - 1\\}^D,
          \\quad u \\sim U[0, 1)^D,

and flows are fitted to ``x``. Every reported NLL is of the dequantised pixels ``k + u`` on
their original lattice, whatever preprocessing the flow applies (the ``Logit`` layer, a
standardisation):

.. math:: \\text{NLL}_{\\text{lattice}} = -\\log p_X(x) + D \\log(\\text{levels}), \\qquad
          \\text{bits/dim} = \\frac{\\text{NLL}_{\\text{lattice}}}{D \\ln 2}.

It is an upper bound on the discrete NLL of the pixels ``k`` (Theis et al. 2016), and a model
uniform on the unit cube scores exactly ``log2(levels)`` bits/dim. Data without a lattice
(``levels = None``) are reported in their own units, ``NLL = -log p_X(x)``.

The MAF paper (Papamakarios et al. 2017, Table 2) instead reports the log-likelihood of
``y = logit(alpha + (1 - 2 alpha) x)`` with ``alpha = 1e-6``, the density in "logit space":
:math:`\\log p_Y(y) = \\log p_X(x) - \\log|\\det \\partial y / \\partial x|` (:func:`logit_space_ll`).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

__all__ = ["dequantize", "lattice_nll", "bits_per_dim", "logit_space_ll", "MAF_ALPHA"]

#: the ``alpha`` of the MAF paper's logit transform of MNIST and CIFAR-10
MAF_ALPHA = 1e-6


def dequantize(pixels: np.ndarray, levels: int, seed: int) -> np.ndarray:
    """``(pixels + u) / levels`` in float32, ``u ~ U[0, 1)`` drawn from ``seed``; ``pixels`` are
    integers in ``[0, levels)`` (checked by the caller).

    Rounding to float32 can carry ``k + u`` (``u`` near 1) onto the next cell's edge, and the top
    pixel onto exactly 1, where a logit is infinite; such values step down one float32 ulp, so
    every ``x`` stays in its own cell ``[k / levels, (k + 1) / levels)``.
    """
    pixels = pixels.astype(np.float64)
    noise = np.random.default_rng(seed).random(pixels.shape, dtype=np.float64)
    x = ((pixels + noise) / levels).astype(np.float32)
    over = x.astype(np.float64) * levels >= pixels + 1
    return np.where(over, np.nextafter(x, np.float32(0)), x)


def lattice_nll(nll: float, event_size: int, levels: Optional[int]) -> float:
    """The NLL in nats of ``k + u`` from the NLL ``-log p_X(x)`` of ``x = (k + u) / levels``."""
    return nll if levels is None else nll + event_size * math.log(levels)


def bits_per_dim(nll: float, event_size: int) -> float:
    """``nll / (D ln 2)``; pass the lattice NLL (:func:`lattice_nll`)."""
    return nll / (event_size * math.log(2))


def logit_space_ll(nll: float, mean_logit_log_det: float) -> float:
    """The MAF paper's test log-likelihood in logit space, ``-nll - mean log|dy/dx|``, from the NLL
    of ``x`` in the unit cube and the mean log-det of the logit map ``x -> y`` on the same rows."""
    return -nll - mean_logit_log_det
