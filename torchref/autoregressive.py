"""Masked autoregressive layers in PyTorch, in the article's style: the twins of ``jaxflow.MADE``,
``jaxflow.MaskedAutoregressive`` and ``jaxflow.Invert``.

:class:`MADE` is the article's :class:`~torchref.model.Conditioner` (``input``, ``hidden``,
``dims``) with every weight multiplied by a fixed 0/1 mask built from degrees (Germain et al.
2015; nflows' deterministic degrees, a context input of degree 0 as flowjax's)::

    input x_i:      m(i) = order[i] + 1          context inputs: 0
    hidden unit k:  lo + k mod (D - lo)          lo = 1 without a context (D >= 2), else 0
    output p D + j: m(j)                         read blocked: p D + j is number p of coordinate j
    mask:           hidden >= below,  output > last hidden

so output ``j`` sees ``x_i`` only for ``order[i] < order[j]``, and every output the context.
:class:`MaskedAutoregressive` applies an elementwise ``transform`` (:mod:`torchref.spline`)::

    phi = stack(theta(concat(x, c)), -1)          (..., D, P)
    z, log|dz/dx| = transform.forward(x, phi),    log|det dz/dx| = sum_j log|dz_j/dx_j|

and ``g`` solves for ``x`` in ``D`` passes, ``x <- transform.inverse(z, phi(x))`` from ``x = 0``
(after pass ``k`` the first ``k`` coordinates of the order are exact). :class:`Invert` swaps
``f`` and ``g`` of any twin; its log-det is ``-module.f(g(x))``'s.

This module does not import jaxflow: it is the independent reference.

References:
  Germain, Gregor, Murray, Larochelle. MADE. ICML 2015.
  Papamakarios, Pavlakou, Murray. Masked Autoregressive Flow for Density Estimation. NeurIPS 2017.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from torchref.model import ACTIVATIONS

__all__ = ["MADE", "MaskedAutoregressive", "Invert"]


class MADE(nn.Module):
    """``theta``: ``concat(x, c) (..., dim + context_dim) -> [p_1, ..., p_num_params]``, each ``(..., dim)``,
    output ``j`` a function of the coordinates before ``j`` in ``order`` and of the context (module docstring).

    ``order``: ``order[i]`` is the position of coordinate ``i`` (``None``: ``0 .. dim-1``). The
    masks are non-persistent buffers in ``Linear``'s ``(out, in)`` layout.
    """

    def __init__(self, dim: int, context_dim: int, num_params: int, hidden_dim: int, num_hidden: int,
                 order: Optional[Sequence[int]] = None, negative_slope: float = 0.01, activation: str = "leaky_relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"MADE: activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
        self.input = nn.Linear(dim + context_dim, hidden_dim)
        self.hidden = nn.ModuleList([nn.Linear(hidden_dim, hidden_dim) for _ in range(num_hidden)])
        self.dims = nn.Linear(hidden_dim, dim * num_params)
        self.dim, self.num_params, self.order = dim, num_params, None if order is None else tuple(order)
        self.negative_slope, self.activation = negative_slope, activation
        positions = torch.arange(dim) if order is None else torch.as_tensor(self.order)
        inputs = torch.cat((positions + 1, torch.zeros(context_dim, dtype=torch.long)))
        low = 1 if context_dim == 0 and dim > 1 else 0
        hidden = low + torch.arange(hidden_dim) % (dim - low)
        outputs = inputs[:dim].repeat(num_params)
        self.register_buffer("input_mask", (hidden[:, None] >= inputs[None, :]).float(), persistent=False)
        self.register_buffer("hidden_mask", (hidden[:, None] >= hidden[None, :]).float(), persistent=False)
        self.register_buffer("dims_mask", (outputs[:, None] > hidden[None, :]).float(), persistent=False)

    def layers(self) -> List[Tuple[nn.Linear, torch.Tensor]]:
        """``(Linear, its mask)`` in order."""
        return [(self.input, self.input_mask), *((h, self.hidden_mask) for h in self.hidden),
                (self.dims, self.dims_mask)]

    def forward(self, h: torch.Tensor) -> List[torch.Tensor]:
        act = ACTIVATIONS[self.activation]
        layers = self.layers()
        for linear, mask in layers[:-1]:
            h = act(F.linear(h, linear.weight * mask.to(linear.weight), linear.bias), self.negative_slope)
        linear, mask = layers[-1]
        out = F.linear(h, linear.weight * mask.to(linear.weight), linear.bias)
        return list(out.reshape(*out.shape[:-1], self.num_params, self.dim).unbind(-2))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_params={self.num_params}, order={self.order}"


class MaskedAutoregressive(nn.Module):
    """A masked autoregressive layer ``f`` and its inverse ``g``: a :class:`MADE` ``theta`` and an
    elementwise ``transform`` (module docstring). ``identity_init`` zeroes ``theta.dims`` now
    (``phi = 0``: the identity) and is remembered for conversion."""

    def __init__(self, theta: MADE, transform: nn.Module, identity_init: bool = True):
        super().__init__()
        self.theta, self.transform, self.identity_init = theta, transform, identity_init
        if identity_init:
            with torch.no_grad():
                for p in theta.dims.parameters():
                    p.zero_()

    def _numbers(self, x: torch.Tensor, context: Optional[torch.Tensor]) -> torch.Tensor:
        """``phi (..., D, P)`` from ``theta(concat(x, c))``."""
        return torch.stack(self.theta(x if context is None else torch.cat((x, context), dim=-1)), dim=-1)

    def f(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """f : x -> (z, log|det dz/dx|), one pass. The inverse of g."""
        z, log_det = self.transform.forward(x, self._numbers(x, context))
        return z, log_det.sum(-1)

    def g(self, z: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        """g : z -> x, ``D`` passes. The inverse of f."""
        x = torch.zeros_like(z)
        for _ in range(z.shape[-1]):
            x, _ = self.transform.inverse(z, self._numbers(x, context))
        return x

    def extra_repr(self) -> str:
        return "identity_init=True" if self.identity_init else ""


class Invert(nn.Module):
    """``module`` with ``f`` and ``g`` swapped: ``f(x) = module.g(x)``, with
    ``log|det| = -module.f(module.g(x))[1]``, and ``g(z) = module.f(z)[0]``."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def f(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        z = self.module.g(x, context)
        return z, -self.module.f(z, context)[1]

    def g(self, z: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.module.f(z, context)[0]
