"""The conditioner protocol, and :class:`FlaxConditioner`: your own Flax module as a conditioner.

A conditioner is a frozen, hashable spec (no arrays) with two pure methods::

    init(key, in_dim, out_dim, dtype, zero_last=False) -> params    zero_last: output exactly 0
    apply(params, h, out_dim) -> out                                 h (..., in_dim) -> (..., out_dim), h's dtype

A coupling sizes it: ``in_dim`` = conditioning coordinates + context, ``out_dim`` = the
transform's numbers (:mod:`jaxflow.layers.transforms`); ``identity_init`` asks for
``zero_last``. :class:`~jaxflow.MLP` and :class:`~jaxflow.ResNet` implement it;
:class:`~jaxflow.MADE`, the conditioner of :class:`~jaxflow.MaskedAutoregressive` (not of a
coupling), has its ``init`` and an ``apply(params, h, out_dim, dim)`` that also takes the
number ``dim`` of autoregressive coordinates at the front of ``h``. Checkpoints
name a spec by its class (:func:`jaxflow.register`): an unregistered one is refused by
:func:`jaxflow.checkpoint.save`, before anything is written.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Protocol, runtime_checkable

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["ConditionerNet", "FlaxConditioner", "check_conditioner"]


@runtime_checkable
class ConditionerNet(Protocol):
    """The conditioner protocol (module docstring)."""

    def init(self, key: jax.Array, in_dim: int, out_dim: int, dtype, zero_last: bool = False) -> Any: ...

    def apply(self, params: Any, h: jax.Array, out_dim: int) -> jax.Array: ...


def check_conditioner(owner: str, conditioner) -> None:
    """``TypeError`` in one line unless ``conditioner`` is a hashable spec with ``init`` and ``apply``."""
    if isinstance(conditioner, type) or not isinstance(conditioner, ConditionerNet):
        raise TypeError(f"{owner}: conditioner must be a conditioner spec (jaxflow.MLP, jaxflow.ResNet or a "
                        f"jaxflow.FlaxConditioner), got {conditioner!r}")
    try:
        hash(conditioner)
    except TypeError:
        raise TypeError(f"{owner}: conditioner {type(conditioner).__name__} must be hashable "
                        "(a @dataclasses.dataclass(frozen=True))") from None


@dataclasses.dataclass(frozen=True)  # field-less, so that subclasses can be frozen dataclasses
class FlaxConditioner:
    """Base class of a conditioner built from any Flax module.

    A subclass is a frozen dataclass of its hyperparameters that defines ``module(out_dim)``,
    returning a Flax module ``(..., in_dim) -> (..., out_dim)`` whose last layer is the
    submodule named :attr:`last_layer` (zeroed by ``zero_last``)::

        @jaxflow.register                       # optional: lets checkpoints name it
        @dataclasses.dataclass(frozen=True)
        class GeluMLP(jaxflow.FlaxConditioner):
            width: int = 32

            def module(self, out_dim):
                return GeluNet(self.width, out_dim)    # a flax.linen.Module, last layer named "output"

    Parameters are the module's own Flax params (``module(out_dim).init(...)["params"]``) in the
    flow's dtype.
    """

    #: the name of the submodule ``zero_last`` zeroes
    last_layer: ClassVar[str] = "output"

    def module(self, out_dim: int) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__}: define module(out_dim)")

    def init(self, key: jax.Array, in_dim: int, out_dim: int, dtype, zero_last: bool = False) -> dict:
        params = self.module(out_dim).init(key, jnp.zeros((1, in_dim), dtype))["params"]
        params = jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype), dict(params))
        if zero_last:
            if self.last_layer not in params:
                raise ValueError(f"{type(self).__name__}: identity_init zeroes the last layer {self.last_layer!r}, "
                                 f"which the module does not have (its layers: {', '.join(params)})")
            params[self.last_layer] = jax.tree.map(jnp.zeros_like, params[self.last_layer])
        return params

    def apply(self, params: dict, h: jax.Array, out_dim: int) -> jax.Array:
        return self.module(out_dim).apply({"params": params}, h).astype(h.dtype)

