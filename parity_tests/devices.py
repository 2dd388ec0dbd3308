"""Where the parity tests run: the CPU always, a CUDA GPU when both torch and JAX can reach one.

On the GPU both sides multiply at full float32 precision (JAX ``"highest"``, torch without
TF32): TF32's 10-bit mantissa would break float32 parity by orders of magnitude.
"""

from __future__ import annotations

import contextlib

import jax
import pytest
import torch

__all__ = ["DEVICES", "on"]


def _jax_has_gpu() -> bool:
    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


_HAS_GPU = torch.cuda.is_available() and _jax_has_gpu()

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not _HAS_GPU, reason="needs a CUDA GPU visible to torch and JAX")),
]
"""``pytest.mark.parametrize("device", DEVICES)``: the torch device name of each run."""


@contextlib.contextmanager
def on(device: str):
    """Run JAX on the matching device, both frameworks at full matmul precision."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with jax.default_device(jax.devices("gpu" if device == "cuda" else "cpu")[0]), \
            jax.default_matmul_precision("highest"):
        yield
