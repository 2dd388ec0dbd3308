"""The layer protocol, and the two ways to compose layers: :class:`Chain` and :class:`Repeat`.

A layer is a frozen, hashable dataclass (a *spec*: no arrays) with pure methods over a parameter
pytree that the layer itself lays out. For events ``x`` of shape ``(..., *event_shape)`` and a
context ``c`` of shape ``(..., context_dim)`` (``None`` for an unconditional flow; the batch axes
``...`` already broadcast against ``x``'s)::

    forward(params, x, c, event_shape) -> (z, log|det dz/dx|)       data -> latent
    inverse(params, z, c, event_shape) -> (x, log|det dx/dz|)       latent -> data
    init(key, event_shape, context_dim, dtype, data=None, context=None) -> params
    output_shape(event_shape) -> event shape of z                    (default: unchanged)
    check(event_shape, context_dim)                                  ValueError if it cannot apply

log-dets have the batch shape ``(...)``. ``init`` may look at ``data`` (a batch of events as this
layer will see them during training, with its ``context``) for a data-dependent start (ActNorm);
the composites pass each layer the data transformed by the layers before it. Every subclass is
registered by its class name in :data:`LAYERS`, which is how checkpoints name layer kinds.

Composition, ``f = f_L o ... o f_1`` (``layers[0]`` first in ``f``):

.. math::

    \\log\\left|\\det \\frac{\\partial f(x)}{\\partial x}\\right| = \\sum_{i=1}^{L}
    \\log\\left|\\det \\frac{\\partial f_i(x_{i-1})}{\\partial x_{i-1}}\\right|, \\qquad
    f^{-1} = f_1^{-1} \\circ \\dots \\circ f_L^{-1}.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxflow.core.serialize import register

__all__ = ["Layer", "LAYERS", "Chain", "Repeat", "require_int", "require_real", "MAX_REAL", "MIN_POSITIVE",
           "zero_log_det", "batch_shape"]

Shape = tuple[int, ...]

LAYERS: dict[str, type] = {}
"""Every layer kind by class name (filled by :class:`Layer` subclassing)."""


#: the largest size a spec accepts for widths, depths and dimensions: far past any use, and small
#: enough that shapes and int32 indices stay valid (a bigger request fails here, in one line)
MAX_SIZE = 2**20


def require_int(owner: str, name: str, value, minimum: int, maximum: int = MAX_SIZE) -> None:
    """``TypeError`` unless ``value`` is an int (not a bool), ``ValueError`` outside ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: {name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{owner}: {name} must be >= {minimum}, got {value}")
    if value > maximum:
        raise ValueError(f"{owner}: {name} must be <= {maximum}, got {value}")


#: the range of a spec's real numbers (float32's largest finite and smallest normal numbers): each
#: becomes an entry of an array in the parameters' dtype, float32 by default, where it must stay a
#: finite number (and a positive one that divides or takes a log must stay > 0)
MAX_REAL = 3.4028234663852886e38
MIN_POSITIVE = 1.1754943508222875e-38


def require_real(owner: str, name: str, value, minimum: float = -MAX_REAL, maximum: float = MAX_REAL,
                 what: str = "a number") -> None:
    """``ValueError`` unless ``value`` is a real number (not a bool) in ``[minimum, maximum]`` (NaN is not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not minimum <= value <= maximum:
        raise ValueError(f"{owner}: {name} must be {what} in [{minimum:.4g}, {maximum:.4g}], got {value!r}")


def batch_shape(x: jax.Array, event_shape: Shape) -> Shape:
    """The leading axes of ``x (..., *event_shape)``."""
    return x.shape[: x.ndim - len(event_shape)]


def zero_log_det(x: jax.Array, event_shape: Shape) -> jax.Array:
    """Zeros of ``x``'s batch shape, derived from ``x`` itself (so they vary with ``x`` under
    ``shard_map``, where a fresh ``jnp.zeros`` is a replicated value of another type)."""
    return jnp.zeros_like(x[(Ellipsis,) + (0,) * len(event_shape)])


class Layer:
    """Base class of layer specs; see the module docstring for the protocol."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):  # private bases are not layer kinds
            LAYERS[cls.__name__] = cls
            register(cls)

    def check(self, event_shape: Shape, context_dim: int) -> None:
        """Raise ``ValueError`` if this layer cannot act on events of ``event_shape``."""

    def output_shape(self, event_shape: Shape) -> Shape:
        return event_shape

    def init(self, key: jax.Array, event_shape: Shape, context_dim: int, dtype, data=None, context=None) -> Any:
        return {}

    def forward(self, params, x: jax.Array, context: Optional[jax.Array], event_shape: Shape):
        raise NotImplementedError

    def inverse(self, params, z: jax.Array, context: Optional[jax.Array], event_shape: Shape):
        raise NotImplementedError

    def inverse_steps(self, params, z, context, event_shape):
        """``(x, log-det, steps)``: :meth:`inverse` and the output of each of its top-level steps,
        stacked ``(S, ..., *event_shape)``; one step for a plain layer."""
        x, ld = self.inverse(params, z, context, event_shape)
        return x, ld, x[None]

    @classmethod
    def from_fields(cls, **fields) -> "Layer":
        """Rebuild from :func:`dataclasses.fields` values (checkpoints)."""
        return cls(**fields)

    def untransformed(self, coords: np.ndarray, event_shape: Shape) -> Optional[np.ndarray]:
        """Coverage of vector events: ``coords`` (int ``(D,)``) holds, at each coordinate of the
        input, the data coordinate still there untransformed by any coupling, or ``-1``; returns
        the same for the output, or ``None`` where the layer mixes coordinates (the analysis
        stops). Default: an elementwise layer, coordinates in place."""
        return coords

    def at_copy(self, index, copies: int) -> "Layer":
        """This layer as copy ``index`` of ``copies`` in a :class:`Repeat` (``index`` an int, or a
        traced int32 scalar inside the scan): itself, unless the layer differs between copies
        (a random :class:`~jaxflow.Permute` draws one permutation per copy)."""
        return self


class _Composite(Layer):
    """A layer made of layers: ``_inverse(..., keep_steps)`` returns ``(x, log-det, steps)`` and
    ``_stack`` stacks the steps in the order ``g`` applies them."""

    def inverse(self, params, z, context, event_shape):
        x, total, _ = self._inverse(params, z, context, event_shape, keep_steps=False)
        return x, total

    def inverse_steps(self, params, z, context, event_shape):
        x, total, steps = self._inverse(params, z, context, event_shape, keep_steps=True)
        return x, total, self._stack(steps)


@dataclasses.dataclass(frozen=True, init=False)
class Chain(_Composite):
    """``Chain(l_1, ..., l_n)``: apply ``l_1`` first in ``f``; params are the list of the layers' params."""

    layers: tuple[Layer, ...]

    def __init__(self, *layers: Layer):
        if not layers:
            raise ValueError("Chain: needs at least one layer")
        for layer in layers:
            if not isinstance(layer, Layer):
                raise TypeError(f"Chain: every element must be a jaxflow layer, got {type(layer).__name__}")
        object.__setattr__(self, "layers", tuple(layers))

    @classmethod
    def from_fields(cls, layers) -> "Chain":
        return cls(*layers)

    def untransformed(self, coords, event_shape):
        for layer in self.layers:
            if coords is None:
                return None
            coords = layer.untransformed(coords, event_shape)
        return coords

    def at_copy(self, index, copies):
        layers = tuple(layer.at_copy(index, copies) for layer in self.layers)
        return self if all(new is old for new, old in zip(layers, self.layers)) else Chain(*layers)

    def _shapes(self, event_shape: Shape) -> list[Shape]:
        """Event shape entering each layer, then the output's."""
        shapes = [event_shape]
        for layer in self.layers:
            shapes.append(layer.output_shape(shapes[-1]))
        return shapes

    def check(self, event_shape, context_dim):
        for layer, shape in zip(self.layers, self._shapes(event_shape)):
            layer.check(shape, context_dim)

    def output_shape(self, event_shape):
        return self._shapes(event_shape)[-1]

    def init(self, key, event_shape, context_dim, dtype, data=None, context=None):
        params = []
        for layer, shape, layer_key in zip(self.layers, self._shapes(event_shape), jax.random.split(key, len(self.layers))):
            params.append(layer.init(layer_key, shape, context_dim, dtype, data, context))
            if data is not None:
                data = layer.forward(params[-1], data, context, shape)[0]
        return params

    def forward(self, params, x, context, event_shape):
        total = zero_log_det(x, event_shape)
        for layer, layer_params, shape in zip(self.layers, params, self._shapes(event_shape)):
            x, ld = layer.forward(layer_params, x, context, shape)
            total = total + ld
        return x, total

    def _stack(self, steps):
        if len({step.shape for step in steps}) != 1:
            raise ValueError("g_steps: the layers of this Chain change the event shape, so their steps cannot be stacked")
        return jnp.stack(steps)

    def _inverse(self, params, z, context, event_shape, keep_steps):
        shapes = self._shapes(event_shape)
        total, steps = zero_log_det(z, shapes[-1]), []
        for layer, layer_params, shape in reversed(list(zip(self.layers, params, shapes))):
            z, ld = layer.inverse(layer_params, z, context, shape)
            total = total + ld
            steps.append(z)
        return z, total, steps


@dataclasses.dataclass(frozen=True)
class Repeat(_Composite):
    """``n`` copies of ``layer``, each with its own parameters, run as one ``jax.lax.scan``.

    The copies' params are ``layer``'s params with every leaf stacked on a leading axis of size
    ``n`` (copy 0 applied first in ``f``), so the traced program, and the compile time, do not grow
    with ``n``. ``unroll`` is the scan's ``unroll`` (``True`` unrolls all ``n``; stored as ``n``);
    ``unroll >= n`` leaves no loop at all, not even one of one trip (XLA:CPU runs convolution
    gradients in a loop body ~40x slower, ``bench/conv_scan.py``). The layer must keep the
    event shape. Copy ``k`` is ``layer.at_copy(k, n)`` (:meth:`Layer.at_copy`): the scan also
    runs over the copy index where the copies differ.
    """

    layer: Layer
    n: int
    unroll: int = 1

    def __post_init__(self):
        if not isinstance(self.layer, Layer):
            raise TypeError(f"Repeat: layer must be a jaxflow layer, got {type(self.layer).__name__}")
        require_int("Repeat", "n", self.n, 1, 2**16)
        if isinstance(self.unroll, bool):
            # normalised to an int: 1 == True in Python, so a bool would collide in jit's cache
            object.__setattr__(self, "unroll", self.n if self.unroll else 1)
        require_int("Repeat", "unroll", self.unroll, 1)

    def check(self, event_shape, context_dim):
        self.layer.check(event_shape, context_dim)
        if self.layer.output_shape(event_shape) != tuple(event_shape):
            raise ValueError(f"Repeat: the repeated layer must keep the event shape {tuple(event_shape)}, "
                             f"it maps it to {self.layer.output_shape(event_shape)}")

    # (outer, outer_copies) of a Repeat that is itself a copy (:meth:`at_copy`): its copy k is copy
    # outer * n + k of outer_copies * n. An instance attribute, not a field: not part of the spec.
    _outer = (0, 1)

    def at_copy(self, index, copies):
        if not self._varies:
            return self
        inner = dataclasses.replace(self)
        object.__setattr__(inner, "_outer", (index, copies))
        return inner

    def untransformed(self, coords, event_shape):
        for index in range(self.n):
            if coords is None or (coords < 0).all():
                return coords
            coords = self.copy(index).untransformed(coords, event_shape)
        return coords

    @property
    def _varies(self) -> bool:
        """Whether the copies differ (then the scans run over the copy index too)."""
        return self.layer.at_copy(0, self.n) is not self.layer

    def _copies(self, params):
        """The scans' ``xs``: each copy's params, with its index where the copies differ."""
        return (params, jnp.arange(self.n, dtype=jnp.int32)) if self._varies else (params, None)

    def copy(self, index) -> Layer:
        """The spec of copy ``index`` (an int, or the scan's traced index; ``None``: ``layer``)."""
        if index is None:
            return self.layer
        outer, outer_copies = self._outer
        return self.layer.at_copy(outer * self.n + index, outer_copies * self.n)

    def init(self, key, event_shape, context_dim, dtype, data=None, context=None):
        keys = jax.random.split(key, self.n)
        one = lambda layer_key, data: self.layer.init(layer_key, event_shape, context_dim, dtype, data, context)
        if data is None:
            return jax.vmap(lambda layer_key: one(layer_key, None))(keys)

        def step(data, xs):
            layer_key, index = xs
            params = one(layer_key, data)
            return self.copy(index).forward(params, data, context, event_shape)[0], params

        return jax.lax.scan(step, data, self._copies(keys))[1]

    def forward(self, params, x, context, event_shape):
        def step(carry, xs):
            (x, total), (layer_params, index) = carry, xs
            z, ld = self.copy(index).forward(layer_params, x, context, event_shape)
            return (z, total + ld), None

        (z, total), _ = jax.lax.scan(step, (x, zero_log_det(x, event_shape)), self._copies(params), length=self.n,
                                     unroll=self._scan_unroll)
        return z, total

    @property
    def _scan_unroll(self) -> int:
        return 0 if self.unroll >= self.n else self.unroll  # lax.scan's 0: unrolled, no while loop

    def _stack(self, steps):
        return steps[::-1]  # the reversed scan stacked them by layer index; g applies the last layer first

    def _inverse(self, params, z, context, event_shape, keep_steps):
        def step(carry, xs):
            (z, total), (layer_params, index) = carry, xs
            x, ld = self.copy(index).inverse(layer_params, z, context, event_shape)
            return (x, total + ld), (x if keep_steps else None)

        (x, total), steps = jax.lax.scan(step, (z, zero_log_det(z, event_shape)), self._copies(params), length=self.n,
                                         reverse=True, unroll=self._scan_unroll)
        return x, total, steps
