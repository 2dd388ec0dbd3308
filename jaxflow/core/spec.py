"""Flow specs: what every jaxflow function takes as its first argument.

A flow spec names an event shape, a root :class:`~jaxflow.core.layer.Layer` (usually a
:class:`~jaxflow.core.layer.Chain` or :class:`~jaxflow.core.layer.Repeat` of layers), and the
size of the context of a conditional density :math:`p(x \\mid c)`. It holds no arrays: it is
hashable, so it is a static argument of ``jax.jit``; parameters live in the pytree made by
:func:`jaxflow.init`, whose layout is the root layer's.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import warnings
from typing import Any, Optional

import numpy as np

from jaxflow.core.layer import Layer, require_int
from jaxflow.core.serialize import register
from jaxflow.nets.base import ConditionerNet, check_conditioner
from jaxflow.nets.resnet import ResNet

__all__ = ["FlowSpec", "Flow"]


def _outside_jaxflow() -> int:
    """The ``stacklevel`` of a warning that names the first caller outside jaxflow."""
    level, frame = 2, sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("jaxflow."):
        level, frame = level + 1, frame.f_back
    return level


class FlowSpec:
    """Base of :class:`Flow` and the presets (:class:`jaxflow.RealNVP`).

    Subclasses provide ``event_shape``, ``layers`` (the root layer), ``context_dim`` (``0``:
    unconditional), ``context_affine`` (``None``, or a parameter-free layer mapping the raw
    context before any layer sees it, e.g. its standardisation), and optionally ``embedding``
    and ``embedding_dim`` (default ``None`` and ``0``).

    The context every layer (every conditioner) sees is

    .. math::

        e(c) = \\operatorname{embedding}(\\operatorname{context\\_affine}(c)) \\in \\mathbb{R}^{E},
        \\qquad E = \\texttt{embedding\\_dim}

    (each map skipped where it is ``None``; without an embedding :math:`E` is ``context_dim``),
    so the conditioners are sized for :attr:`layer_context_dim` inputs of context. The embedding is
    a conditioner spec (:class:`~jaxflow.MLP`, or your :class:`~jaxflow.FlaxConditioner`) applied
    as ``embedding.apply(params, c, embedding_dim)``, ``(..., context_dim) -> (..., embedding_dim)``,
    learned jointly with the flow: its params are the ``"embedding"`` entry of the flow's params,
    ``{"embedding": <the network's params>, "layers": <the root layer's params>}`` (without an
    embedding the params are the root layer's alone, :mod:`jaxflow.core.init`).
    """

    event_shape: tuple[int, ...]
    layers: Layer
    context_dim: int
    context_affine: Optional[Layer]
    embedding = None
    embedding_dim = 0

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        register(cls)

    @property
    def event_size(self) -> int:
        """Number of coordinates of one event, ``prod(event_shape)``."""
        return math.prod(self.event_shape)

    @property
    def layer_context_dim(self) -> int:
        """The size of the context the layers see: ``embedding_dim`` with an embedding, else ``context_dim``."""
        return self.context_dim if self.embedding is None else self.embedding_dim

    def _check(self) -> None:
        name = type(self).__name__
        if not isinstance(self.event_shape, tuple):
            raise TypeError(f"{name}: event_shape must be a tuple of ints such as (2,), got {self.event_shape!r}")
        if not self.event_shape or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.event_shape):
            raise ValueError(f"{name}: event_shape must be a non-empty tuple of positive ints, got {self.event_shape!r}")
        require_int(name, "context_dim", self.context_dim, 0)
        self._check_embedding()
        if not isinstance(self.layers, Layer):
            raise TypeError(f"{name}: layers must be a jaxflow layer (e.g. jaxflow.Chain(...)), got "
                            f"{type(self.layers).__name__}")
        self.layers.check(tuple(self.event_shape), self.layer_context_dim)
        if self.layers.output_shape(tuple(self.event_shape)) != tuple(self.event_shape):
            raise ValueError(f"{name}: the layers map event shape {tuple(self.event_shape)} to "
                             f"{self.layers.output_shape(tuple(self.event_shape))}; the latent must have the data's shape")
        if len(self.event_shape) == 1:
            self._check_every_coordinate_transformed()
        if self.context_affine is not None:
            if self.context_dim == 0:
                raise ValueError(f"{name}: context_affine needs a conditional flow (context_dim > 0)")
            self.context_affine.check((self.context_dim,), 0)

    def _check_embedding(self) -> None:
        name = type(self).__name__
        if self.embedding is None:
            if self.embedding_dim != 0:
                raise ValueError(f"{name}: embedding_dim is the output size of an embedding; got embedding_dim="
                                 f"{self.embedding_dim!r} without an embedding")
            return
        if self.context_dim == 0:
            raise ValueError(f"{name}: an embedding needs a conditional flow (context_dim > 0)")
        if isinstance(self.embedding, (type, ResNet)) or not isinstance(self.embedding, ConditionerNet):
            raise TypeError(f"{name}: embedding must be a network of context vectors (jaxflow.MLP or a "
                            f"jaxflow.FlaxConditioner), got {self.embedding!r}")
        check_conditioner(f"{name} embedding", self.embedding)  # hashable
        require_int(name, "embedding_dim (the size of the embedded context every conditioner sees)",
                    self.embedding_dim, 1)

    def _check_every_coordinate_transformed(self) -> None:
        """Warn, in one line, of coordinates of a vector event that no coupling transforms (e.g. an
        odd-sized ``"alternate"`` mask with ``Permute("reverse")`` between couplings maps the even
        coordinates onto themselves): their density is only what the elementwise layers give."""
        coords = self.layers.untransformed(np.arange(self.event_shape[0]), self.event_shape)
        if coords is not None and (coords >= 0).any():
            never = sorted(coords[coords >= 0].tolist())
            warnings.warn(f"{type(self).__name__}: coordinate(s) {never} of the data are never transformed by a coupling; "
                          "put a Permute or LULinear between couplings, or use mask='half'", UserWarning, stacklevel=_outside_jaxflow())


@dataclasses.dataclass(frozen=True)
class Flow(FlowSpec):
    """Any composition of layers: ``z = layers.forward(x)`` on events of ``event_shape``.

    Args:
      event_shape: shape of one event, e.g. ``(5,)``.
      layers: the root layer, e.g. ``Repeat(Chain(ActNorm(), AffineCoupling(...), LULinear()), 6)``.
      context_dim: size of the context vector ``c`` of a conditional density ``p(x | c)``; every
        coupling's conditioner sees ``concat(x_cond, c)``. ``0``: unconditional.
      context_affine: optional parameter-free layer applied to ``c`` first (the trainer's
        standardisation of the context).
      embedding: optional learned network mapping the context to the vector every coupling's
        conditioner sees instead of ``c`` (:class:`FlowSpec`): :class:`~jaxflow.MLP` or a
        :class:`~jaxflow.FlaxConditioner`.
      embedding_dim: the size of the embedded context (``>= 1`` with an ``embedding``; ``0`` without).
    """

    event_shape: tuple[int, ...]
    layers: Layer
    context_dim: int = 0
    context_affine: Optional[Layer] = None
    embedding: Optional[Any] = None
    embedding_dim: int = 0

    def __post_init__(self):
        if isinstance(self.event_shape, (list, tuple)):
            object.__setattr__(self, "event_shape", tuple(self.event_shape))
        self._check()
