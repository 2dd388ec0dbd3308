"""Coupling masks: which coordinates of an event a coupling transforms (``True``) or conditions on.

=============== ================================================================================
mask            transformed coordinates of ``x (..., D)``
=============== ================================================================================
``"half"``      the first ``d = D // 2`` (the article's split); the layer then writes the
                conditioning part first, ``z = concat(x_{d:}, z_{:d})``: the article's swap of
                halves, so that consecutive ``"half"`` couplings take turns
``"alternate"`` the even coordinates ``0, 2, 4, ...``; ``z`` keeps every coordinate in place
tuple of bools  ``True`` = transformed (at least one of each); ``z`` keeps coordinates in place
=============== ================================================================================
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Union

import numpy as np

from jaxflow.layers.names import MASKS

__all__ = ["MASKS", "Mask", "resolve_mask", "check_mask"]

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


def check_mask(mask: Mask, dim: int) -> None:
    """``ValueError`` unless ``mask`` names a valid split of ``dim`` coordinates."""
    if isinstance(mask, str):
        if mask not in MASKS:
            raise ValueError(f"AffineCoupling: mask must be one of {MASKS} or a tuple of bools, got {mask!r}")
        if dim < 2:
            raise ValueError(f"AffineCoupling: a coupling needs >= 2 coordinates, got event size {dim}")
        return
    if len(mask) != dim:
        raise ValueError(f"AffineCoupling: mask has {len(mask)} entries, the event has {dim} coordinates")
    if all(mask) or not any(mask):
        raise ValueError("AffineCoupling: mask must transform some coordinates and condition on others, "
                         f"got {'all' if all(mask) else 'no'} coordinates transformed")


@functools.lru_cache(maxsize=1024)
def resolve_mask(mask: Mask, dim: int) -> Split:
    """The :class:`Split` of ``mask`` on ``dim`` coordinates."""
    check_mask(mask, dim)
    if mask == "half":
        d = dim // 2
        return Split(np.arange(d, dim), np.arange(d), np.arange(dim - d), np.arange(dim - d, dim))
    transformed = np.arange(dim) % 2 == 0 if mask == "alternate" else np.asarray(mask, bool)
    cond, trans = np.flatnonzero(~transformed), np.flatnonzero(transformed)
    return Split(cond, trans, cond, trans)
