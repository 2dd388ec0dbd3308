"""The conditioner ``theta``: an MLP mapping the conditioning half to shift ``t`` and raw scale ``s``.

Parameter layout (Flax ``Dense``, kernels are ``(in, out)``)::

    input     kernel (D - d, H)   bias (H,)
    hidden_k  kernel (H, H)       bias (H,)      k = 0 .. num_hidden - 1
    dims      kernel (H, 2 d)     bias (2 d,)    columns [t_1 .. t_d | s_1 .. s_d]

The last layer is *blocked*: its first ``d`` outputs are ``t`` and its last ``d`` are ``s``.
The article's torch code instead reads its output interleaved (``reshape(..., d, 2)``:
``t = out[..., 0]``, ``s = out[..., 1]``); :mod:`torchref.convert` permutes the rows between the
two layouts, and that is the only place the layouts meet.

Values come from :func:`jaxflow.init` (``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, as
``torch.nn.Linear``); this module defines the computation and the parameters' names and shapes.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["Conditioner"]


class Conditioner(nn.Module):
    """``x1 (..., D - d) -> (t, s)``, each ``(..., d)``."""

    out_dim: int
    hidden_dim: int
    num_hidden: int
    negative_slope: float = 0.01
    param_dtype: Any = jnp.float32
    compute_dtype: Optional[Any] = None

    def _dense(self, features: int, name: str) -> nn.Dense:
        return nn.Dense(features, dtype=self.compute_dtype, param_dtype=self.param_dtype, name=name)

    @nn.compact
    def __call__(self, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
        act = lambda h: nn.leaky_relu(h, self.negative_slope)
        h = act(self._dense(self.hidden_dim, "input")(x1))
        for k in range(self.num_hidden):
            h = act(self._dense(self.hidden_dim, f"hidden_{k}")(h))
        out = self._dense(2 * self.out_dim, "dims")(h)
        t, s = jnp.split(out, 2, axis=-1)
        return t, s
