"""The implementations under test, each reduced to synchronised zero-argument calls per operation.

Operations (``OPS``), on the same weights, dtype and batches for every contender:

* ``log_prob``: data -> log-density, ``log p_X(x)`` for a batch ``x``;
* ``sample``: latent -> data, ``g(z)`` for a fixed latent batch ``z`` (drawing ``z`` is not timed);
* ``train_step``: loss ``-mean log p_X(x)``, its gradient and one Adam update (``optax.adam`` /
  ``torch.optim.Adam``, same hyper-parameters), state carried from call to call.

Contenders: jaxflow under ``jax.jit`` with the layer stack as a ``lax.scan`` and fully unrolled
(``RealNVP(..., scan_unroll=True)``), torchref eager, and torchref under ``torch.compile``; the
peer JAX implementations (:mod:`bench.peers`) are built with :func:`jax_contender` too.
bfloat16 means bfloat16 matmuls with float32 parameters and log-det accumulation: jaxflow's
``RealNVP(compute_dtype="bfloat16")`` and torch's ``torch.autocast``.

.. warning:: Under ``torch.autocast`` the conditioner's ``t`` and ``s`` come out in bfloat16
   and torchref sums the log-scales in bfloat16 before adding them to the float32 total;
   jaxflow casts ``t`` and ``s`` to float32 first. bfloat16 parity is therefore loose.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

import jaxflow
import torchref

__all__ = ["OPS", "Problem", "Contender", "adam_step", "adam_train_step", "jax_contender", "jaxflow_contender",
           "torch_contender"]

OPS = ("log_prob", "sample", "train_step")

LEARNING_RATE = 1e-4
"""Small, so that tens of Adam steps on random data keep every value finite and timings stable."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """One benchmark problem: the flow spec, one batch of data and one of latents, and the device."""

    flow: jaxflow.RealNVP | jaxflow.NeuralSplineFlow | jaxflow.MAF
    params: dict  # float32 jaxflow parameters, shared by every contender
    x: np.ndarray  # (batch, dim) float32 data
    z: np.ndarray  # (batch, dim) float32 latents
    device: str  # "cpu" or "gpu"
    dtype: str  # "float32" or "bfloat16": the matmul dtype

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    @property
    def compute_dtype(self) -> str | None:
        """The conditioner's matmul dtype for a JAX implementation; None: the parameters' (float32)."""
        return "bfloat16" if self.dtype == "bfloat16" else None


@dataclasses.dataclass
class Contender:
    """One implementation: ``calls[op]()`` runs ``op`` once, synchronised, and returns its output
    as NumPy (``train_step``: the loss before the update)."""

    name: str
    library: str  # "jax" or "torch": whose matmul peak its GFLOP/s are compared with
    calls: dict[str, Callable[[], np.ndarray]]
    value_matched: bool = True  # same weights and function as torch eager, so its outputs are compared


def _jax_device(device: str) -> jax.Device:
    return jax.devices("gpu" if device == "gpu" else "cpu")[0]


def adam_step(loss: Callable, learning_rate: float = LEARNING_RATE):
    """``(step, optimizer)``: ``step(params, opt_state, x) -> (params, opt_state, loss(params, x))``,
    one ``optax.adam`` update on ``loss``'s gradient in ``params`` (torch's Adam defaults: b1 0.9,
    b2 0.999, eps 1e-8); the loss returned is the one before the update."""
    optimizer = optax.adam(learning_rate)

    def step(params, opt_state, x):
        value, grads = jax.value_and_grad(loss)(params, x)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step, optimizer


def adam_train_step(flow: jaxflow.RealNVP, learning_rate: float = LEARNING_RATE):
    """:func:`adam_step` minimising jaxflow's ``-mean log p_X(x)``."""
    return adam_step(lambda params, x: -jnp.mean(jaxflow.log_prob(flow, params, x)), learning_rate)


def jax_contender(problem: Problem, name: str, log_prob: Callable, sample: Callable, params,
                  value_matched: bool = True) -> Contender:
    """A JAX implementation under ``jax.jit``: ``log_prob(params, x) -> (batch,)`` and
    ``sample(params, z) -> (batch, dim)`` on ``problem``'s batches; the train step is
    :func:`adam_step` on ``-mean log_prob`` and donates parameters and optimiser state."""
    device = _jax_device(problem.device)
    params, x, z = jax.device_put((params, jnp.asarray(problem.x), jnp.asarray(problem.z)), device)
    # float32 rows run at full float32 precision (no TF32 on GPUs); it is part of jit's cache key.
    precision = "highest" if problem.dtype == "float32" else "default"

    train_step, optimizer = adam_step(lambda params, x: -jnp.mean(log_prob(params, x)))
    jit_log_prob, jit_sample = jax.jit(log_prob), jax.jit(sample)
    step = jax.jit(train_step, donate_argnums=(0, 1))
    state = [jax.tree.map(jnp.copy, params), optimizer.init(params)]

    def run_step():
        state[0], state[1], value = step(state[0], state[1], x)
        return value

    def synchronised(fn: Callable[[], jax.Array]) -> Callable[[], np.ndarray]:
        def call():
            with jax.default_matmul_precision(precision):
                return np.asarray(jax.block_until_ready(fn()), dtype=np.float32)
        return call

    return Contender(name, "jax", {
        "log_prob": synchronised(lambda: jit_log_prob(params, x)),
        "sample": synchronised(lambda: jit_sample(params, z)),
        "train_step": synchronised(run_step),
    }, value_matched)


def jaxflow_contender(problem: Problem, name: str, scan_unroll: int | bool) -> Contender:
    """jaxflow (``log_prob`` and ``g``) on ``problem.params``, through :func:`jax_contender`
    (a ``NeuralSplineFlow`` has no ``compute_dtype``: float32 only)."""
    bfloat16 = {"compute_dtype": problem.compute_dtype} if problem.compute_dtype else {}
    flow = dataclasses.replace(problem.flow, scan_unroll=scan_unroll, **bfloat16)
    return jax_contender(problem, name, lambda params, x: jaxflow.log_prob(flow, params, x),
                         lambda params, z: jaxflow.g(flow, params, z), problem.params)


def torch_device(device: str) -> torch.device:
    return torch.device("cuda" if device == "gpu" else "cpu")


def torch_contender(problem: Problem, name: str, compile: bool) -> Contender:
    """torchref, eager or under ``torch.compile`` (log_prob, g and the loss are compiled; the
    backward pass follows through AOTAutograd, Adam's step stays eager)."""
    device = torch_device(problem.device)
    model = torchref.from_jax(problem.flow, problem.params, device=device)
    x = torch.from_numpy(problem.x).to(device)
    z = torch.from_numpy(problem.z).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    maybe_compile = torch.compile if compile else (lambda fn: fn)
    log_prob = maybe_compile(model.log_prob)
    g = maybe_compile(model.g)
    loss = maybe_compile(lambda x: -model.log_prob(x).mean())

    def autocast():
        if problem.dtype == "bfloat16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def synchronised(fn: Callable[[], torch.Tensor]) -> Callable[[], np.ndarray]:
        def call():
            out = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            return out.detach().float().cpu().numpy()
        return call

    def inference(fn, arg):
        with torch.no_grad(), autocast():
            return fn(arg)

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            value = loss(x)
        value.backward()
        optimizer.step()
        return value

    return Contender(name, "torch", {
        "log_prob": synchronised(lambda: inference(log_prob, x)),
        "sample": synchronised(lambda: inference(g, z)),
        "train_step": synchronised(train_step),
    })
