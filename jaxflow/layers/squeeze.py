"""Space to depth and back: :class:`Squeeze` and :class:`Unsqueeze` (the RealNVP paper's squeeze).

``Squeeze`` maps an image ``x (..., H, W, C)`` (``H``, ``W`` even) to ``z (..., H/2, W/2, 4C)``,
each ``2 x 2`` block of pixels becoming one pixel with four times the channels:

.. math::

    z_{i, j, (2 a + b) C + c} = x_{2 i + a,\\, 2 j + b,\\, c}, \\qquad a, b \\in \\{0, 1\\},

a permutation of the coordinates, so its log-det is 0. ``Unsqueeze`` is its inverse (depth to
space, ``(..., H, W, 4C) -> (..., 2H, 2W, C)``). No parameters.
"""

from __future__ import annotations

import dataclasses

import jax

from jaxflow.core.layer import Layer, zero_log_det

__all__ = ["Squeeze", "Unsqueeze", "squeeze", "unsqueeze"]


def squeeze(x: jax.Array) -> jax.Array:
    """``(..., H, W, C) -> (..., H/2, W/2, 4C)``, channel ``(2 a + b) C + c`` from pixel ``(2i + a, 2j + b)``."""
    *batch, height, width, channels = x.shape
    blocks = x.reshape(*batch, height // 2, 2, width // 2, 2, channels).swapaxes(-4, -3)
    return blocks.reshape(*batch, height // 2, width // 2, 4 * channels)


def unsqueeze(z: jax.Array) -> jax.Array:
    """The inverse of :func:`squeeze`: ``(..., H, W, 4C) -> (..., 2H, 2W, C)``."""
    *batch, height, width, channels = z.shape
    blocks = z.reshape(*batch, height, width, 2, 2, channels // 4).swapaxes(-4, -3)
    return blocks.reshape(*batch, 2 * height, 2 * width, channels // 4)


def _check_image(owner: str, event_shape) -> None:
    if len(event_shape) != 3:
        raise ValueError(f"{owner}: acts on image events (H, W, C), got event shape {tuple(event_shape)}")


@dataclasses.dataclass(frozen=True)
class Squeeze(Layer):
    """``(H, W, C) -> (H/2, W/2, 4C)``, log-det 0 (equation in the module docstring)."""

    def check(self, event_shape, context_dim):
        _check_image("Squeeze", event_shape)
        if event_shape[0] % 2 or event_shape[1] % 2:
            raise ValueError(f"Squeeze: height and width must be even, got event shape {tuple(event_shape)}")

    def output_shape(self, event_shape):
        height, width, channels = event_shape
        return (height // 2, width // 2, 4 * channels)

    def forward(self, params, x, context, event_shape):
        return squeeze(x), zero_log_det(x, event_shape)

    def inverse(self, params, z, context, event_shape):
        return unsqueeze(z), zero_log_det(z, self.output_shape(event_shape))


@dataclasses.dataclass(frozen=True)
class Unsqueeze(Layer):
    """``(H, W, 4C) -> (2H, 2W, C)``, log-det 0: the inverse of :class:`Squeeze`."""

    def check(self, event_shape, context_dim):
        _check_image("Unsqueeze", event_shape)
        if event_shape[2] % 4:
            raise ValueError(f"Unsqueeze: the channels must divide by 4, got event shape {tuple(event_shape)}")

    def output_shape(self, event_shape):
        height, width, channels = event_shape
        return (2 * height, 2 * width, channels // 4)

    def forward(self, params, x, context, event_shape):
        return unsqueeze(x), zero_log_det(x, event_shape)

    def inverse(self, params, z, context, event_shape):
        return squeeze(z), zero_log_det(z, self.output_shape(event_shape))
