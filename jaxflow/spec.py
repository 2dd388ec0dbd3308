"""The model specification: an immutable, hashable description of a flow's architecture."""

from __future__ import annotations

import dataclasses
import numbers
from typing import Optional

from jaxflow.scales import SCALES

__all__ = ["RealNVP"]


def _require_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"RealNVP: {name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"RealNVP: {name} must be >= {minimum}, got {value}")


@dataclasses.dataclass(frozen=True)
class RealNVP:
    """Spec of the article's normalizing flow: ``num_flows`` affine coupling layers on ``R^dim``.

    Each layer splits ``x`` into ``x2 = x[..., :d]`` (transformed, ``d = dim // 2``) and
    ``x1 = x[..., d:]`` (conditioning, ``dim - d`` coordinates), and maps

    .. math::

        (t, s) = \\theta(x_1), \\qquad z = \\operatorname{concat}(x_1,\\; x_2 \\odot e^{h(s)} + t),
        \\qquad \\log|\\det \\partial z / \\partial x| = \\textstyle\\sum_j h(s_j),

    so the conditioning half moves to the front and consecutive layers take turns. ``h`` is the
    scale map (:mod:`jaxflow.scales`). The conditioner :math:`\\theta` is an MLP
    ``Linear(dim - d -> hidden_dim)``, leaky_relu, ``num_hidden`` x [``Linear(hidden_dim ->
    hidden_dim)``, leaky_relu], ``Linear(hidden_dim -> 2 d)`` (:mod:`jaxflow.conditioner`).

    The spec holds no arrays: it is hashable, so it can be a static argument of ``jax.jit``.
    Parameters live in a separate pytree made by :func:`jaxflow.init`.

    Args:
      dim: data dimension ``D >= 2``.
      num_flows: number of coupling layers ``L >= 1``.
      hidden_dim: conditioner width ``H``.
      num_hidden: number of hidden ``H -> H`` layers in each conditioner.
      scale: scale map, one of ``"exp"`` (the article), ``"tanh"``, ``"sigmoid"``.
      clamp: ``c`` of the ``"tanh"`` soft clamp, the largest ``|log-scale|``; ignored otherwise.
      identity_init: zero the conditioner's last layer, so that ``t = s = 0`` at initialisation.
        For ``"exp"`` and ``"tanh"`` every coupling is then the identity on values and only the
        article's swap of halves remains: ``f(x) = roll(x, -d L)`` with log-det 0, so the
        density starts as exactly the latent's (for the default isotropic ``N(0, I)``).
      negative_slope: slope of leaky_relu for negative inputs (0.01, as torch and flax).
      compute_dtype: dtype of the conditioner's matmuls (e.g. ``"bfloat16"``); ``None`` computes in
        the dtype of the parameters. The coupling and log-det always stay in the parameter dtype.
      scan_unroll: ``unroll`` of the ``jax.lax.scan`` over layers; ``1`` keeps compile time flat in
        ``num_flows``, ``True`` (stored as ``num_flows``) unrolls every layer, for comparison.
    """

    dim: int
    num_flows: int
    hidden_dim: int = 64
    num_hidden: int = 2
    scale: str = "exp"
    clamp: float = 5.0
    identity_init: bool = False
    negative_slope: float = 0.01
    compute_dtype: Optional[str] = None
    scan_unroll: int | bool = 1

    def __post_init__(self):
        _require_int("dim", self.dim, 2)
        _require_int("num_flows", self.num_flows, 1)
        _require_int("hidden_dim", self.hidden_dim, 1)
        _require_int("num_hidden", self.num_hidden, 0)
        if self.scale not in SCALES:
            raise ValueError(f"RealNVP: scale must be one of {SCALES}, got {self.scale!r}")
        if not (isinstance(self.clamp, numbers.Real) and self.clamp > 0):
            raise ValueError(f"RealNVP: clamp must be a positive number, got {self.clamp!r}")
        if isinstance(self.scan_unroll, bool):
            # normalised to an int: 1 == True in Python, so a bool would collide in jit's cache
            object.__setattr__(self, "scan_unroll", self.num_flows if self.scan_unroll else 1)
        _require_int("scan_unroll", self.scan_unroll, 1)

    @property
    def split_dim(self) -> int:
        """``d``: the number of transformed coordinates, ``x2 = x[..., :d]``."""
        return self.dim // 2

    @property
    def condition_dim(self) -> int:
        """``D - d``: the number of conditioning coordinates, ``x1 = x[..., d:]``."""
        return self.dim - self.split_dim
