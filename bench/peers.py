"""Peer JAX implementations of the same flow, timed next to jaxflow: what a user would write without it.

* ``flax+scan (minimal)``: a hand-written Flax MLP and a ``jax.lax.scan`` over the layer stack;
* ``distrax+flax``: distrax's ``SplitCoupling`` / ``ScalarAffine`` / ``Chain`` / ``Transformed``
  around the same Flax MLP;
* ``flowjax``: ``flowjax.flows.coupling_flow`` with an affine transformer, or for a
  ``NeuralSplineFlow`` a rational-quadratic spline one, or for a ``MAF``
  ``flowjax.flows.masked_autoregressive_flow`` with an affine transformer (optional dependency);
  the only peer of the spline flow and of MAF (:data:`PEERS_OF`).

The first two run on jaxflow's parameters (``jaxflow.init``, stacked on a leading layer axis) and
compute jaxflow's function, so the bench compares their outputs with torch eager's. They share
nothing with jaxflow's code but the parameter layout and the spec's fields. Layer ``i`` maps data
to latent (``d = dim // 2``, conditioner ``theta_i`` with blocked output ``[t | s]``):

.. math::

    x_2, x_1 = x_{[:d]}, x_{[d:]}, \\quad (t, s) = \\theta_i(x_1), \\quad
    f_i(x) = \\operatorname{concat}(x_1,\\; x_2 \\odot e^{s} + t), \\quad
    \\log|\\det \\partial f_i / \\partial x| = \\textstyle\\sum_j s_j,

and ``log p_X(x) = -|f(x)|^2 / 2 - (D / 2) log 2 pi + sum_i log|det|``. ``flowjax`` has its own
weights, scale map (softplus) and permutations: it matches the conditioner's layer shapes (so the
FLOPs) for even ``dim``, not the values, and is marked ``value_matched=False``.

bfloat16: the Flax peers run their conditioner's matmuls in bfloat16 and cast ``t`` and ``s`` to
float32, as jaxflow does; flowjax has no compute-dtype option and is skipped (:func:`skipped`).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Optional

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp

import jaxflow
from bench.contenders import Contender, Problem, jax_contender

__all__ = ["PEERS", "PEERS_OF", "MLP", "minimal_contender", "distrax_contender", "flowjax_contender", "skipped",
           "peer_contenders"]


class MLP(nn.Module):
    """``x1 (..., D - d) -> (..., 2 d)``: ``num_hidden + 1`` Dense layers with leaky_relu, then a
    last Dense, named by :meth:`jaxflow.MLP.layer_names` so jaxflow's params apply as they are."""

    hidden_dim: int
    num_hidden: int
    out_dim: int
    negative_slope: float
    dtype: Optional[Any] = None  # matmul dtype; None: the parameters'

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        *hidden, last = jaxflow.MLP(self.hidden_dim, self.num_hidden).layer_names()
        for name in hidden:
            h = nn.leaky_relu(nn.Dense(self.hidden_dim, dtype=self.dtype, name=name)(h), self.negative_slope)
        return nn.Dense(self.out_dim, dtype=self.dtype, name=last)(h)


def _shift_and_log_scale(flow: jaxflow.RealNVP, dtype, layer_params, x1: jax.Array):
    """``(t, s)``, each ``(..., d)`` in ``x1``'s dtype: the blocked halves of the MLP's output."""
    mlp = MLP(flow.hidden_dim, flow.num_hidden, 2 * flow.split_dim, flow.negative_slope, dtype)
    t, s = jnp.split(mlp.apply({"params": layer_params}, x1).astype(x1.dtype), 2, axis=-1)
    return t, s


def _require_exp_scale(flow: jaxflow.RealNVP) -> None:
    if flow.scale != "exp":
        raise ValueError(f"bench.peers: the peers implement the article's exp scale, not {flow.scale!r}")


def _layer(params, i: int):
    """Layer ``i``'s slice of the stacked conditioner parameters."""
    return jax.tree.map(lambda leaf: leaf[i], params["conditioner"])


def minimal_contender(problem: Problem) -> Contender:
    """``flax+scan (minimal)``: :func:`_minimal_log_prob` and :func:`_minimal_sample`."""
    flow, dtype = problem.flow, problem.compute_dtype
    _require_exp_scale(flow)
    return jax_contender(problem, "flax+scan (minimal)",
                         lambda params, x: _minimal_log_prob(flow, dtype, params, x),
                         lambda params, z: _minimal_sample(flow, dtype, params, z), problem.params)


def _minimal_log_prob(flow: jaxflow.RealNVP, dtype, params, x: jax.Array) -> jax.Array:
    """``x (..., D) -> log p_X(x) (...)``: ``f = f_L o ... o f_1`` as one scan, then the standard
    normal ``-|z|^2 / 2 - (D / 2) log 2 pi`` plus the summed log-scales."""
    d = flow.split_dim

    def layer(carry, layer_params):
        x, log_det = carry
        x2, x1 = x[..., :d], x[..., d:]
        t, s = _shift_and_log_scale(flow, dtype, layer_params, x1)
        return (jnp.concatenate([x1, x2 * jnp.exp(s) + t], axis=-1), log_det + s.sum(-1)), None

    (z, log_det), _ = jax.lax.scan(layer, (x, jnp.zeros(x.shape[:-1], x.dtype)), params["conditioner"])
    return -0.5 * jnp.sum(z**2, axis=-1) - 0.5 * flow.dim * math.log(2 * math.pi) + log_det


def _minimal_sample(flow: jaxflow.RealNVP, dtype, params, z: jax.Array) -> jax.Array:
    """``z (..., D) -> x = g(z) (..., D)``: the layers' inverses, last layer first (a reversed scan);
    ``z_1, z_2 = z[..., :D-d], z[..., D-d:]``, ``x = concat((z_2 - t) e^{-s}, z_1)``."""
    c = flow.condition_dim

    def layer(z, layer_params):
        z1, z2 = z[..., :c], z[..., c:]
        t, s = _shift_and_log_scale(flow, dtype, layer_params, z1)
        return jnp.concatenate([(z2 - t) * jnp.exp(-s), z1], axis=-1), None

    x, _ = jax.lax.scan(layer, z, params["conditioner"], reverse=True)
    return x


def distrax_contender(problem: Problem) -> Contender:
    """``distrax+flax``: ``log_prob`` of :func:`_distrax_flow`, ``sample`` its bijector's forward."""
    flow, dtype = problem.flow, problem.compute_dtype
    _require_exp_scale(flow)
    return jax_contender(problem, "distrax+flax",
                         lambda params, x: _distrax_flow(flow, dtype, params).log_prob(x),
                         lambda params, z: _distrax_flow(flow, dtype, params).bijector.forward(z),
                         problem.params)


def _distrax_flow(flow: jaxflow.RealNVP, dtype, params) -> distrax.Transformed:
    """``p_X = Transformed(N(0, I), Inverse(f))`` with ``f = Chain([f_L, ..., f_1])`` (data ->
    latent; distrax's ``Chain`` applies its last bijector first) and, per layer,
    ``f_i = Chain([roll, SplitCoupling(swap=True, ScalarAffine(shift=t, log_scale=s))])``.

    ``SplitCoupling(split_index=d, swap=True)`` keeps ``x[..., d:]`` and transforms ``x[..., :d]``
    in place; the roll by ``-d`` moves the kept half to the front, as ``f_i`` does (distrax has no
    permutation bijector, so it is a ``Lambda`` with zero log-det). The Python loop unrolls the
    ``L`` layers into the traced program: that is how distrax composes bijectors.
    """
    d = flow.split_dim
    roll = distrax.Lambda(forward=lambda y: jnp.roll(y, -d, axis=-1), inverse=lambda x: jnp.roll(x, d, axis=-1),
                          forward_log_det_jacobian=lambda y: jnp.zeros(y.shape[:-1], y.dtype),
                          inverse_log_det_jacobian=lambda x: jnp.zeros(x.shape[:-1], x.dtype),
                          event_ndims_in=1, is_constant_jacobian=True)

    def coupling(layer_params) -> distrax.SplitCoupling:
        return distrax.SplitCoupling(
            split_index=d, event_ndims=1, swap=True,
            conditioner=functools.partial(_shift_and_log_scale, flow, dtype, layer_params),
            bijector=lambda ts: distrax.ScalarAffine(shift=ts[0], log_scale=ts[1]))

    f = distrax.Chain([distrax.Chain([roll, coupling(_layer(params, i))]) for i in reversed(range(flow.num_flows))])
    param_dtype = jax.tree.leaves(params)[0].dtype
    latent = distrax.MultivariateNormalDiag(jnp.zeros(flow.dim, param_dtype), jnp.ones(flow.dim, param_dtype))
    return distrax.Transformed(latent, distrax.Inverse(f))


def flowjax_contender(problem: Problem, seed: int = 0) -> Contender:
    """``flowjax``: ``coupling_flow(invert=True)`` with :func:`_flowjax_transformer`, ``L``
    layers, conditioner ``eqx.nn.MLP(width=H, depth=num_hidden + 1)`` -- ``num_hidden + 2`` Linear
    layers, ``D // 2 -> H -> ... -> H -> P (D - D // 2)`` -- and leaky_relu; its own weights and
    random permutations between layers (no ``LULinear``, unlike jaxflow's spline flow). For a
    ``MAF``: ``masked_autoregressive_flow(invert=True)`` with an ``Affine()`` transformer, the same
    ``L``, width, depth and activation, MADE ``D -> H -> ... -> H -> 2 D``, reversed orders
    between layers as jaxflow's (its sampling is a ``lax.scan`` over the ``D`` positions too).

    The latent is flowjax's ``StandardNormal`` (no trainable parameters, like the other
    contenders'). Trainable leaves are ``eqx.partition(..., eqx.is_inexact_array)`` and the model
    is ``paramax.unwrap``-ped inside every call, as ``flowjax.train.fit_to_data`` does.
    ``invert=True`` stores the layers data -> latent: ``log_prob`` runs them forward and
    ``bijection.transform`` (latent -> data, used for ``sample``) runs their inverses.
    """
    import equinox as eqx
    import paramax
    from flowjax.distributions import StandardNormal
    from flowjax.flows import coupling_flow

    from flowjax.bijections import Affine
    from flowjax.flows import masked_autoregressive_flow

    flow = problem.flow
    options = dict(base_dist=StandardNormal((flow.dim,)), flow_layers=flow.layers.n, nn_width=flow.hidden_dim,
                   nn_depth=flow.num_hidden + 1, invert=True,
                   nn_activation=functools.partial(jax.nn.leaky_relu, negative_slope=flow.negative_slope))
    if isinstance(flow, jaxflow.MAF):  # MADE layers, reversed orders between them, an affine transformer
        model = masked_autoregressive_flow(jax.random.key(seed), transformer=Affine(), **options)
    else:
        model = coupling_flow(jax.random.key(seed), transformer=_flowjax_transformer(flow), **options)
    params, static = eqx.partition(model, eqx.is_inexact_array,
                                   is_leaf=lambda leaf: isinstance(leaf, paramax.NonTrainable))

    def unwrapped(params):
        return paramax.unwrap(eqx.combine(params, static))

    return jax_contender(problem, "flowjax", lambda params, x: unwrapped(params).log_prob(x),
                         lambda params, z: jax.vmap(unwrapped(params).bijection.transform)(z), params,
                         value_matched=False)


def _flowjax_transformer(flow: jaxflow.RealNVP | jaxflow.NeuralSplineFlow):
    """flowjax's transformer for ``flow``'s couplings: ``Affine()`` (``P = 2``) for the article's
    exp-scale ``RealNVP``; for a ``NeuralSplineFlow`` of ``K`` bins on ``[-B, B]``,
    ``RationalQuadraticSpline(knots=K - 1, interval=B)``: ``K - 1`` interior knots make the same
    ``K`` bins, and with its two boundary derivatives ``P = 3 K + 1`` against jaxflow's
    ``3 K - 1`` (identity-slope boundaries)."""
    from flowjax.bijections import Affine, RationalQuadraticSpline

    if isinstance(flow, jaxflow.NeuralSplineFlow):
        return RationalQuadraticSpline(knots=flow.bins - 1, interval=flow.bound)
    _require_exp_scale(flow)
    return Affine()


PEERS = {"flax+scan (minimal)": minimal_contender, "distrax+flax": distrax_contender, "flowjax": flowjax_contender}
"""Every peer by name: ``problem -> Contender``."""

PEERS_OF = {jaxflow.RealNVP: tuple(PEERS), jaxflow.NeuralSplineFlow: ("flowjax",), jaxflow.MAF: ("flowjax",)}
"""The peers that implement each flow family."""


@functools.cache
def _flowjax_import_error() -> Optional[str]:
    try:
        import equinox, flowjax, paramax  # noqa: F401
    except ImportError as error:
        return str(error)
    return None


def skipped(dtype: str) -> dict[str, str]:
    """``{peer: reason}`` for the peers that cannot run here in ``dtype`` (matmul dtype)."""
    if (error := _flowjax_import_error()) is not None:
        return {"flowjax": f"not importable ({error}); pip install -e '.[bench]'"}
    if dtype == "bfloat16":
        return {"flowjax": "no compute-dtype option: its MLP runs in the parameters' float32"}
    return {}


def peer_contenders(problem: Problem) -> list[Contender]:
    """The peers of :data:`PEERS` that implement ``problem``'s flow (:data:`PEERS_OF`) and can run
    on it (see :func:`skipped`)."""
    skip = skipped(problem.dtype)
    return [PEERS[name](problem) for name in PEERS_OF[type(problem.flow)] if name not in skip]
