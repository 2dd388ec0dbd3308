"""The article's PyTorch classes, with its defects fixed (see :mod:`torchref` for the list).

Names, constructor signatures, methods and attribute names are the article's, so a
``state_dict`` reads ``flows.0.theta.input.weight``, ``flows.0.theta.hidden.1.bias``,
``flows.0.theta.dims.weight``, ... One coupling layer with ``d = split.d`` maps

.. math::

    x_2, x_1 = x_{[:d]}, x_{[d:]}, \\quad (t, s) = \\theta(x_1), \\quad
    z = \\operatorname{concat}(x_1,\\; x_2 \\odot e^{h(s)} + t), \\quad
    \\log|\\det \\partial z / \\partial x| = \\textstyle\\sum_j h(s_j),

and back, splitting at ``D - d`` where the forward put the conditioning half:

.. math::

    z_1, z_2 = z_{[:D-d]}, z_{[D-d:]}, \\quad (t, s) = \\theta(z_1), \\quad
    x = \\operatorname{concat}((z_2 - t) \\odot e^{-h(s)},\\; z_1).

``h`` is the scale map (:data:`LOG_SCALES`); the article's is ``h(s) = s``. The conditioner's
last layer is read *interleaved*, as in the article: output row ``2j`` is ``t_j`` and row
``2j + 1`` is ``s_j``. This module does not import jaxflow: it is the independent reference.
"""

from __future__ import annotations

from typing import Callable, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Independent, Normal

__all__ = ["LOG_SCALES", "Split", "StandardNormal", "Conditioner", "AffineCouplingLayer", "NormalizingFlow"]

LOG_SCALES: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "exp": lambda s, clamp: s,  # the article: scale e^s
    "tanh": lambda s, clamp: clamp * torch.tanh(s / clamp),  # soft clamp, |log-scale| < clamp
    "sigmoid": lambda s, clamp: F.logsigmoid(s + 2),  # Glow: scale sigmoid(s + 2)
}
"""Log-scale maps ``h(s)``: the coupling multiplies by ``e^{h(s)}`` and adds ``sum h(s)`` to the log-det."""


class Split(nn.Module):
    """The ``split`` callable of a coupling layer on ``R^dim``, correct for odd ``dim`` too.

    ``split(x) = (x[..., :d], x[..., d:])`` with ``d = dim // 2``: the transformed part ``x2``
    and the conditioning part ``x1`` of ``f``. ``split.inverse(z) = (z[..., :dim - d],
    z[..., dim - d:])``: the conditioning part ``z1`` and the transformed part ``z2`` of ``g``,
    which ``f`` wrote in that order. The article's ``g`` reused ``split`` itself, which is the
    inverse only when ``dim`` is even.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim, self.d = dim, dim // 2

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return x[..., : self.d], x[..., self.d :]

    def inverse(self, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return z[..., : self.dim - self.d], z[..., self.dim - self.d :]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, d={self.d}"


class StandardNormal(nn.Module):
    """The latent ``N(0, I_dim)`` as a module, so that it follows ``.to(device)`` and ``.double()``.

    ``loc`` and ``scale`` are non-persistent buffers (they move and cast with the model but stay
    out of ``state_dict``, which holds the flow's parameters only); the
    ``torch.distributions`` object is built on demand from them.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("loc", torch.zeros(dim), persistent=False)
        self.register_buffer("scale", torch.ones(dim), persistent=False)

    def distribution(self) -> Distribution:
        return Independent(Normal(self.loc, self.scale), 1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.distribution().log_prob(z)

    def sample(self, sample_shape: Sequence[int] = ()) -> torch.Tensor:
        return self.distribution().sample(torch.Size(sample_shape))


class Conditioner(nn.Module):
    """``theta``: ``x (..., in_dim) -> [p_1, ..., p_num_params]``, each ``(..., out_dim)``.

    ``input = Linear(in_dim, hidden_dim)``, ``num_hidden`` x ``Linear(hidden_dim, hidden_dim)``
    in ``hidden``, each followed by leaky_relu, then ``dims = Linear(hidden_dim, out_dim *
    num_params)`` whose row ``num_params * j + k`` is ``p_{k+1}`` of coordinate ``j``
    (interleaved, as the article's ``reshape(..., out_dim, num_params)``).
    """

    def __init__(
        self, in_dim: int, out_dim: int,
        num_hidden: int, hidden_dim: int,
        num_params: int, negative_slope: float = 0.01,
    ):
        super().__init__()
        self.input = nn.Linear(in_dim, hidden_dim)
        self.hidden = nn.ModuleList([nn.Linear(hidden_dim, hidden_dim) for _ in range(num_hidden)])
        self.num_params = num_params
        self.out_dim = out_dim
        self.negative_slope = negative_slope
        self.dims = nn.Linear(hidden_dim, out_dim * num_params)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = F.leaky_relu(self.input(x), self.negative_slope)
        for h in self.hidden:
            x = F.leaky_relu(h(x), self.negative_slope)
        batch_params = self.dims(x).reshape(*x.shape[:-1], self.out_dim, self.num_params)
        return list(batch_params.unbind(-1))


class AffineCouplingLayer(nn.Module):
    """One affine coupling ``f_i`` and its inverse ``g_i`` (equations in the module docstring).

    ``split`` must also offer ``split.inverse`` (see :class:`Split`); ``scale`` names the
    log-scale map ``h`` in :data:`LOG_SCALES` (``"exp"``: the article's ``h(s) = s``), ``clamp``
    is the bound of ``"tanh"``.
    """

    def __init__(self, theta: nn.Module, split: Split, scale: str = "exp", clamp: float = 5.0):
        super().__init__()
        if scale not in LOG_SCALES:
            raise ValueError(f"AffineCouplingLayer: scale must be one of {tuple(LOG_SCALES)}, got {scale!r}")
        self.theta = theta
        self.split = split
        self.scale = scale
        self.clamp = clamp

    def _shift_and_log_scale(self, h: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        t, s = self.theta(h)
        return t, LOG_SCALES[self.scale](s, self.clamp)

    def f(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """f : x -> (z, log|det dz/dx|). The inverse of g."""
        x2, x1 = self.split(x)
        t, ls = self._shift_and_log_scale(x1)
        z1, z2 = x1, x2 * torch.exp(ls) + t
        return torch.cat((z1, z2), dim=-1), ls.sum(-1)

    def g(self, z: torch.Tensor) -> torch.Tensor:
        """g : z -> x. The inverse of f."""
        z1, z2 = self.split.inverse(z)
        t, ls = self._shift_and_log_scale(z1)
        x1, x2 = z1, (z2 - t) * torch.exp(-ls)
        return torch.cat((x2, x1), dim=-1)

    def extra_repr(self) -> str:
        return f"scale={self.scale!r}, clamp={self.clamp}"


class NormalizingFlow(nn.Module):
    """``f = f_L o ... o f_1`` (``flows[0]`` applied first), ``g = f^{-1}``, and the density

    .. math::

        \\log p_X(x) = \\log p_Z(f(x)) + \\sum_{i=1}^{L} \\log|\\det \\partial f_i / \\partial x_{i-1}|.

    ``latent`` needs ``log_prob(z)`` and ``sample(shape)``; pass a module such as
    :class:`StandardNormal` so that it moves and casts with the flow.
    """

    def __init__(self, latent: Distribution | nn.Module, flows: Sequence[nn.Module]):
        super().__init__()
        self.latent = latent
        self.flows = nn.ModuleList(flows)

    def latent_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.latent.log_prob(z)

    def latent_sample(self, num_samples: int = 1) -> torch.Tensor:
        return self.latent.sample((num_samples,))

    def sample(self, num_samples: int = 1) -> torch.Tensor:
        """Sample x = g(z), z ~ latent; differentiable in the parameters."""
        return self.g(self.latent_sample(num_samples))

    def f(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """x (..., D) -> (z = f(x) (..., D), log|det df/dx| (...)). Inverse of g."""
        z, sum_log_abs_det = x, x.new_zeros(x.shape[:-1])
        for flow in self.flows:
            z, log_abs_det = flow.f(z)
            sum_log_abs_det = sum_log_abs_det + log_abs_det
        return z, sum_log_abs_det

    def g(self, z: torch.Tensor) -> torch.Tensor:
        """z (..., D) -> x = g(z) (..., D). Inverse of f."""
        return self.g_steps(z)[-1]

    def g_steps(self, z: torch.Tensor) -> List[torch.Tensor]:
        """[z, g_L(z), g_{L-1}(g_L(z)), ..., g(z)]: z and the output of every inverse layer."""
        xs = [z]
        for flow in reversed(self.flows):
            xs.append(flow.g(xs[-1]))
        return xs

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = log p_Z(f(x)) + log|det df/dx|, shape (...)."""
        z, log_abs_det = self.f(x)
        return self.latent_log_prob(z) + log_abs_det

    def __len__(self) -> int:
        return len(self.flows)
