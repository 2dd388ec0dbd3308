"""Compile time against depth: ``lax.scan`` over the layer stack against a fully unrolled stack.

Each entry is the wall time of ``jax.jit(fn).lower(*args).compile()`` (tracing, lowering and XLA
compilation) on cleared caches, for ``log_prob`` and the whole training step by default.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp

import jaxflow
from bench.contenders import adam_train_step

__all__ = ["DEPTH_FIELD", "compile_seconds"]

DEPTH_FIELD = {jaxflow.RealNVP: "num_flows", jaxflow.NeuralSplineFlow: "num_layers", jaxflow.MAF: "num_layers"}
"""Each preset's field for its number of coupling layers."""


def compile_seconds(flow: jaxflow.RealNVP | jaxflow.NeuralSplineFlow | jaxflow.MAF, depths: list[int], ops: list[str], batch: int,
                    device: str) -> list[dict]:
    """``[{"num_flows", "scan_unroll", "op", "seconds"}, ...]`` for every depth, both stack forms and
    each of ``ops`` (``"log_prob"``, ``"sample"``, ``"train_step"``)."""
    dev = jax.devices("gpu" if device == "gpu" else "cpu")[0]
    rows = []
    for depth in depths:
        for unroll in (1, True):
            spec = dataclasses.replace(flow, **{DEPTH_FIELD[type(flow)]: depth}, scan_unroll=unroll)
            params = jax.device_put(jaxflow.init(spec, jax.random.key(0), jnp.float32), dev)
            x = jax.device_put(jnp.zeros((batch, spec.dim), jnp.float32), dev)
            step, optimizer = adam_train_step(spec)
            programs = {
                "log_prob": (lambda p, x: jaxflow.log_prob(spec, p, x), (params, x)),
                "sample": (lambda p, z: jaxflow.g(spec, p, z), (params, x)),
                "train_step": (step, (params, optimizer.init(params), x)),
            }
            for op in ops:
                fn, args = programs[op]
                jax.clear_caches()
                start = time.perf_counter()
                jax.jit(fn).lower(*args).compile()
                rows.append({"num_flows": depth, "scan_unroll": "unrolled" if unroll is True else "scan",
                             "op": op, "seconds": time.perf_counter() - start})
    return rows
