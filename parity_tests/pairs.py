"""The same flow on both sides: a jaxflow ``(flow, params)`` and the equal torchref model."""

from __future__ import annotations

import jax
import numpy as np
import torch

import jaxflow
import torchref

__all__ = ["make_pair", "to_numpy", "to_torch"]


def make_pair(flow: jaxflow.RealNVP, seed: int, dtype, device: str = "cpu", init_in: str = "jax"):
    """``(params, model)`` holding the same weights, initialised by ``init_in`` (``"jax"`` or ``"torch"``)."""
    if init_in == "jax":
        params = jaxflow.init(flow, jax.random.key(seed), dtype=dtype)
        return params, torchref.from_jax(flow, params, device=device)
    torch.manual_seed(seed)
    model = torchref.from_spec(flow, dtype=getattr(torch, np.dtype(dtype).name), device=device)
    converted, params = torchref.to_jax(model, identity_init=flow.identity_init)
    assert converted == flow
    return params, model


def to_torch(array, device: str = "cpu", requires_grad: bool = False) -> torch.Tensor:
    """A torch copy of a NumPy or JAX array, same dtype."""
    return torch.tensor(np.asarray(array), device=device, requires_grad=requires_grad)


def to_numpy(value) -> np.ndarray:
    """NumPy copy of a torch tensor (any device) or a JAX array."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)
