"""The baseline every fit is reported beside: a full-covariance Gaussian, fitted in closed form.

For a fixed, parameter-free preprocessing ``y = T(x)`` (the :class:`~jaxflow.Logit` of pixels, a
standardisation, or none) the baseline is ``y ~ N(mu, Sigma)`` with the training split's mean
and (maximum-likelihood) covariance, so by the change of variables

.. math:: -\\log p(x) = \\tfrac12 (y - \\mu)^\\top \\Sigma^{-1} (y - \\mu) + \\tfrac12 \\log\\det(2\\pi\\Sigma)
          - \\log\\left|\\det \\frac{\\partial T(x)}{\\partial x}\\right|,

in the units of ``x``, the same as a flow's NLL on the same rows (:mod:`jaxflow.units` then puts
both on the pixel lattice). Computed in float64 with NumPy. ``ridge`` (added to the diagonal)
keeps ``Sigma`` invertible when pixels are constant in the training set (MNIST's corners).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["gaussian_nll"]


def gaussian_nll(preprocess, train: np.ndarray, test: np.ndarray, ridge: float = 1e-6) -> float:
    """Mean NLL in nats over ``test`` of the full-covariance Gaussian fitted to ``preprocess(train)``;
    NaN where it does not exist (non-finite preprocessed data, a singular covariance).

    ``preprocess`` is ``None`` or a parameter-free layer (its ``forward({}, x, None, event_shape)``
    gives ``(y, log-det)``); ``train``, ``test`` are ``(N, *event_shape)``, flattened per example.
    """
    def transformed(x):
        x = np.asarray(x, np.float64)
        if preprocess is None:
            return x.reshape(len(x), -1), np.zeros(len(x))
        import jax
        import jax.numpy as jnp

        with jax.enable_x64(True):
            y, log_det = preprocess.forward({}, jnp.asarray(x), None, x.shape[1:])
            return np.asarray(y).reshape(len(x), -1), np.asarray(log_det)

    y_train, _ = transformed(train)
    y_test, log_det = transformed(test)
    if not (np.isfinite(y_train).all() and np.isfinite(y_test).all() and np.isfinite(log_det).all()):
        return math.nan  # data outside the preprocessing's domain: no Gaussian to compare with
    mean = y_train.mean(0)
    cov = np.cov(y_train, rowvar=False, bias=True) + ridge * np.eye(y_train.shape[1])
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        return math.nan
    white = np.linalg.solve(chol, (y_test - mean).T)
    half_log_det = np.log(np.diag(chol)).sum()
    nll = 0.5 * (white**2).sum(0) + half_log_det + 0.5 * y_train.shape[1] * np.log(2 * np.pi) - log_det
    return float(nll.mean())
