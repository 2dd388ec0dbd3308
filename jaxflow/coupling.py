"""One affine coupling layer, forward and inverse, on the parameters of that layer alone.

Forward (data -> latent), with ``d = dim // 2``:

.. math::

    x_2, x_1 = x_{[:d]}, x_{[d:]}, \\quad (t, s) = \\theta(x_1), \\quad
    z = \\operatorname{concat}(x_1,\\; x_2 \\odot e^{h(s)} + t), \\quad
    \\log|\\det \\partial z / \\partial x| = \\textstyle\\sum_j h(s_j).

Inverse (latent -> data) splits at ``dim - d``, where the forward put the conditioning half:

.. math::

    z_1, z_2 = z_{[:D-d]}, z_{[D-d:]}, \\quad (t, s) = \\theta(z_1), \\quad
    x = \\operatorname{concat}((z_2 - t) \\odot e^{-h(s)},\\; z_1), \\quad
    \\log|\\det \\partial x / \\partial z| = -\\textstyle\\sum_j h(s_j).

Shapes: ``x, z: (..., D)``; log-dets ``(...)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxflow.conditioner import Conditioner
from jaxflow.scales import log_scale
from jaxflow.spec import RealNVP

__all__ = ["conditioner_module", "coupling_forward", "coupling_inverse"]


def conditioner_module(flow: RealNVP, param_dtype=jnp.float32) -> Conditioner:
    """The Flax conditioner of every layer of ``flow``."""
    return Conditioner(
        out_dim=flow.split_dim,
        hidden_dim=flow.hidden_dim,
        num_hidden=flow.num_hidden,
        negative_slope=flow.negative_slope,
        param_dtype=param_dtype,
        compute_dtype=flow.compute_dtype,
    )


def _shift_and_log_scale(flow: RealNVP, layer_params, h: jax.Array) -> tuple[jax.Array, jax.Array]:
    t, s = conditioner_module(flow).apply({"params": layer_params}, h)
    t, s = t.astype(h.dtype), s.astype(h.dtype)
    return t, log_scale(flow.scale, s, flow.clamp)


def coupling_forward(flow: RealNVP, layer_params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``f_i``: ``x (..., D) -> (z (..., D), log|det dz/dx| (...))``."""
    x2, x1 = x[..., : flow.split_dim], x[..., flow.split_dim :]
    t, ls = _shift_and_log_scale(flow, layer_params, x1)
    z = jnp.concatenate([x1, x2 * jnp.exp(ls) + t], axis=-1)
    return z, ls.sum(-1)


def coupling_inverse(flow: RealNVP, layer_params, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``g_i = f_i^{-1}``: ``z (..., D) -> (x (..., D), log|det dx/dz| (...))``."""
    z1, z2 = z[..., : flow.condition_dim], z[..., flow.condition_dim :]
    t, ls = _shift_and_log_scale(flow, layer_params, z1)
    x = jnp.concatenate([(z2 - t) * jnp.exp(-ls), z1], axis=-1)
    return x, -ls.sum(-1)
