"""Presets: named flows built from the layers. :class:`RealNVP` is the article's model."""

from __future__ import annotations

import dataclasses
from typing import Optional

from jaxflow.core.layer import Repeat, require_int
from jaxflow.core.spec import FlowSpec
from jaxflow.layers.coupling import AffineCoupling
from jaxflow.layers.scales import SCALES
from jaxflow.nets.mlp import MLP

__all__ = ["RealNVP"]


@dataclasses.dataclass(frozen=True)
class RealNVP(FlowSpec):
    """The article's normalizing flow: ``num_flows`` affine coupling layers on ``R^dim``.

    Each layer splits ``x`` into ``x2 = x[..., :d]`` (transformed, ``d = dim // 2``) and
    ``x1 = x[..., d:]`` (conditioning, ``dim - d`` coordinates), and maps

    .. math::

        (t, s) = \\theta(x_1, c), \\qquad z = \\operatorname{concat}(x_1,\\; x_2 \\odot e^{h(s)} + t),
        \\qquad \\log|\\det \\partial z / \\partial x| = \\textstyle\\sum_j h(s_j),

    so the conditioning half moves to the front and consecutive layers take turns. ``h`` is the
    scale map (:mod:`jaxflow.layers.scales`). The conditioner :math:`\\theta` is an MLP
    ``Linear(dim - d + context_dim -> hidden_dim)``, leaky_relu, ``num_hidden`` x
    [``Linear(hidden_dim -> hidden_dim)``, leaky_relu], ``Linear(hidden_dim -> 2 d)``
    (:class:`~jaxflow.nets.MLP`); with ``context_dim > 0`` it also sees the context ``c``.

    As layers: ``Repeat(AffineCoupling(mask="half", conditioner=MLP(hidden_dim, num_hidden,
    negative_slope, compute_dtype), scale, clamp, identity_init), num_flows, unroll=scan_unroll)``
    (:attr:`layers`), so its parameters are ``{"conditioner": ...}`` stacked on a layer axis.

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
      context_dim: size of the context of a conditional density ``p(x | c)``; ``0``: unconditional.
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
    context_dim: int = 0

    context_affine = None

    def __post_init__(self):
        require_int("RealNVP", "dim", self.dim, 2)
        require_int("RealNVP", "num_flows", self.num_flows, 1, 2**16)
        require_int("RealNVP", "hidden_dim", self.hidden_dim, 1, 2**16)
        require_int("RealNVP", "num_hidden", self.num_hidden, 0, 1024)
        if self.scale not in SCALES:
            raise ValueError(f"RealNVP: scale must be one of {SCALES}, got {self.scale!r}")
        if isinstance(self.scan_unroll, bool):
            # normalised to an int: 1 == True in Python, so a bool would collide in jit's cache
            object.__setattr__(self, "scan_unroll", self.num_flows if self.scan_unroll else 1)
        require_int("RealNVP", "scan_unroll", self.scan_unroll, 1)
        try:
            self._check()
        except (TypeError, ValueError) as err:
            raise type(err)(f"RealNVP: {str(err).split(': ', 1)[-1]}") from None

    @property
    def event_shape(self) -> tuple[int]:
        return (self.dim,)

    @property
    def coupling(self) -> AffineCoupling:
        """One of the ``num_flows`` identical coupling specs."""
        conditioner = MLP(self.hidden_dim, self.num_hidden, self.negative_slope, self.compute_dtype)
        return AffineCoupling("half", conditioner, self.scale, self.clamp, self.identity_init)

    @property
    def layers(self) -> Repeat:
        return Repeat(self.coupling, self.num_flows, unroll=self.scan_unroll)

    @property
    def split_dim(self) -> int:
        """``d``: the number of transformed coordinates, ``x2 = x[..., :d]``."""
        return self.dim // 2

    @property
    def condition_dim(self) -> int:
        """``D - d``: the number of conditioning coordinates, ``x1 = x[..., d:]``."""
        return self.dim - self.split_dim
