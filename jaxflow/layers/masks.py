"""Coupling masks: which coordinates of an event a coupling transforms (``True``) or conditions on.

Vector events ``x (..., D)``:

=============== ================================================================================
mask            transformed coordinates
=============== ================================================================================
``"half"``      the first ``d = D // 2`` (the article's split); the layer then writes the
                conditioning part first, ``z = concat(x_{d:}, z_{:d})``: the article's swap of
                halves, so that consecutive ``"half"`` couplings take turns
``"alternate"`` the even coordinates ``0, 2, 4, ...``; ``z`` keeps every coordinate in place
tuple of bools  ``True`` = transformed (at least one of each); ``z`` keeps coordinates in place
=============== ================================================================================

Image events ``x (..., H, W, C)`` (the RealNVP paper's masks, section 3.4), coordinates in place;
``flip=True`` transforms the complement:

================== =============================================================================
mask               transformed coordinates ``(i, j, c)``
================== =============================================================================
``"checkerboard"`` ``(i + j)`` even: every channel of the "black" pixels
``"channel"``      ``c < C // 2``: the first half of the channels at every pixel
================== =============================================================================
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Union

import numpy as np

from jaxflow.layers.names import IMAGE_MASKS, MASKS

__all__ = ["MASKS", "IMAGE_MASKS", "Mask", "resolve_mask", "check_mask", "image_mask", "check_image_mask"]

Mask = Union[str, tuple[bool, ...]]


class Split(NamedTuple):
    """Index arrays of one coupling on ``D`` coordinates.

    ``x_C = x[..., cond]``, ``x_T = x[..., trans]`` in ``f``; the output puts ``x_C`` at
    ``out_cond`` and ``z_T`` at ``out_trans`` (the same as ``cond``/``trans`` unless ``"half"``).
    """

    cond: np.ndarray
    trans: np.ndarray
    out_cond: np.ndarray
    out_trans: np.ndarray


def check_mask(mask: Mask, dim: int, owner: str) -> None:
    """``ValueError`` (naming the layer kind ``owner``) unless ``mask`` names a valid split of ``dim`` coordinates."""
    if isinstance(mask, str):
        if mask not in MASKS:
            hint = " (an image mask: the event must be (H, W, C))" if mask in IMAGE_MASKS else ""
            raise ValueError(f"{owner}: on vector events mask must be one of {MASKS} or a tuple of bools, "
                             f"got {mask!r}{hint}")
        if dim < 2:
            raise ValueError(f"{owner}: a coupling needs >= 2 coordinates, got event size {dim}")
        return
    if len(mask) != dim:
        raise ValueError(f"{owner}: mask has {len(mask)} entries, the event has {dim} coordinates")
    if all(mask) or not any(mask):
        raise ValueError(f"{owner}: mask must transform some coordinates and condition on others, "
                         f"got {'all' if all(mask) else 'no'} coordinates transformed")


@functools.lru_cache(maxsize=1024)
def resolve_mask(mask: Mask, dim: int) -> Split:
    """The :class:`Split` of ``mask`` on ``dim`` coordinates."""
    check_mask(mask, dim, "coupling")
    if mask == "half":
        d = dim // 2
        return Split(np.arange(d, dim), np.arange(d), np.arange(dim - d), np.arange(dim - d, dim))
    transformed = np.arange(dim) % 2 == 0 if mask == "alternate" else np.asarray(mask, bool)
    cond, trans = np.flatnonzero(~transformed), np.flatnonzero(transformed)
    return Split(cond, trans, cond, trans)


def check_image_mask(mask: Mask, event_shape: tuple[int, ...], owner: str) -> None:
    """``ValueError`` (naming ``owner``) unless ``mask`` is an image mask that splits events of ``event_shape = (H, W, C)``."""
    if mask not in IMAGE_MASKS:
        raise ValueError(f"{owner}: on image events (H, W, C) mask must be one of {IMAGE_MASKS}, got {mask!r}")
    height, width, channels = event_shape
    if mask == "checkerboard" and height * width < 2:
        raise ValueError(f"{owner}: a checkerboard needs >= 2 pixels, got event shape {tuple(event_shape)}")
    if mask == "channel" and channels < 2:
        raise ValueError(f"{owner}: a channel mask needs >= 2 channels, got event shape {tuple(event_shape)}")


@functools.lru_cache(maxsize=1024)
def image_mask(mask: str, flip: bool, event_shape: tuple[int, ...]) -> np.ndarray:
    """The 0/1 array ``m (H, W, C)`` of the transformed coordinates (``1``) of an image mask."""
    check_image_mask(mask, event_shape, "coupling")
    i, j, c = np.indices(event_shape)
    transformed = (i + j) % 2 == 0 if mask == "checkerboard" else c < event_shape[-1] // 2
    return (transformed != flip).astype(np.float64)
