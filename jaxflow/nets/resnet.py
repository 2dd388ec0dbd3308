"""The convolutional conditioner of image couplings: a residual network over ``(H, W, C)`` events.

``h (..., H, W, in_channels) -> out (..., H, W, out_channels)``, every convolution ``k x k``
with ``"SAME"`` zero padding (Flax ``nn.Conv``, NHWC), ``a`` = leaky_relu::

    input       Conv(in_channels -> F)
    block_k     h <- h + Conv_b(a(Conv_a(a(h))))          k = 0 .. num_blocks - 1, each Conv F -> F
    output      Conv(F -> out_channels) applied to a(h)

with ``F = channels``. Parameters are Flax ``Conv`` leaves, kernels ``(k, k, in, out)``:
``{"input": {"kernel", "bias"}, "block_0_a": ..., "block_0_b": ..., ..., "output": ...}``
(:meth:`ResNet.layer_names`). :meth:`ResNet.init` draws them as ``torch.nn.Conv2d`` does,
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with ``fan_in = in * k * k``; ``zero_last`` zeroes
``output``, so that a coupling starts as the identity. The torch twin's ``Conv2d`` weights are
``(out, in, k, k)`` on NCHW tensors: :mod:`torchref.convert` alone transposes between the two.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxflow.core.layer import require_int
from jaxflow.core.serialize import register
from jaxflow.nets.init import fan_in_uniform
from jaxflow.nets.mlp import check_network_options

__all__ = ["ResNet", "ConvConditioner"]


class ConvConditioner(nn.Module):
    """The Flax module of :class:`ResNet`: ``h (N, H, W, in) -> (N, H, W, out_channels)``."""

    out_channels: int
    channels: int
    num_blocks: int
    kernel_size: int
    negative_slope: float = 0.01
    param_dtype: Any = jnp.float32
    compute_dtype: Optional[Any] = None

    def _conv(self, features: int, name: str) -> nn.Conv:
        return nn.Conv(features, (self.kernel_size, self.kernel_size), padding="SAME", dtype=self.compute_dtype,
                       param_dtype=self.param_dtype, name=name)

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        act = lambda a: nn.leaky_relu(a, self.negative_slope)
        h = self._conv(self.channels, "input")(h)
        for k in range(self.num_blocks):
            h = h + self._conv(self.channels, f"block_{k}_b")(act(self._conv(self.channels, f"block_{k}_a")(act(h))))
        return self._conv(self.out_channels, "output")(act(h))


@register
@dataclasses.dataclass(frozen=True)
class ResNet:
    """Spec of the convolutional conditioner: ``channels`` features, ``num_blocks`` residual blocks.

    ``kernel_size`` is odd (``"SAME"`` padding keeps ``H x W``); ``compute_dtype`` (e.g.
    ``"bfloat16"``) runs the convolutions in that dtype, outputs cast back to the input's dtype.
    """

    channels: int = 64
    num_blocks: int = 2
    kernel_size: int = 3
    negative_slope: float = 0.01
    compute_dtype: Optional[str] = None

    def __post_init__(self):
        require_int("ResNet", "channels", self.channels, 1, 2**14)
        require_int("ResNet", "num_blocks", self.num_blocks, 0, 1024)
        require_int("ResNet", "kernel_size", self.kernel_size, 1, 15)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"ResNet: kernel_size must be odd (SAME padding keeps H x W), got {self.kernel_size}")
        check_network_options(self)

    def layer_names(self) -> tuple[str, ...]:
        """The ``Conv`` layers in order: ``("input", "block_0_a", "block_0_b", ..., "output")``."""
        blocks = (f"block_{k}_{part}" for k in range(self.num_blocks) for part in "ab")
        return ("input", *blocks, "output")

    def module(self, out_channels: int, param_dtype=jnp.float32) -> ConvConditioner:
        return ConvConditioner(out_channels=out_channels, channels=self.channels, num_blocks=self.num_blocks,
                               kernel_size=self.kernel_size, negative_slope=self.negative_slope,
                               param_dtype=param_dtype, compute_dtype=self.compute_dtype)

    def param_shapes(self, in_channels: int, out_channels: int) -> dict[str, dict[str, tuple[int, ...]]]:
        """``{name: {"kernel": (k, k, in, out), "bias": (out,)}}``."""
        names = self.layer_names()
        widths = [in_channels] + [self.channels] * (len(names) - 1) + [out_channels]
        k = self.kernel_size
        return {name: {"kernel": (k, k, widths[i], widths[i + 1]), "bias": (widths[i + 1],)}
                for i, name in enumerate(names)}

    def init(self, key: jax.Array, in_channels: int, out_channels: int, dtype, zero_last: bool = False) -> dict:
        """Parameters ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` per ``Conv``; ``output`` zero if ``zero_last``."""
        return fan_in_uniform(key, self.param_shapes(in_channels, out_channels), dtype,
                              zero=("output",) if zero_last else ())

    def apply(self, params: dict, h: jax.Array, out_channels: int) -> jax.Array:
        """``(..., H, W, in) -> (..., H, W, out_channels)`` in ``h``'s dtype, for any batch axes."""
        images = h.reshape((-1,) + h.shape[-3:])
        out = self.module(out_channels).apply({"params": params}, images).astype(h.dtype)
        return out.reshape(h.shape[:-1] + (out_channels,))
