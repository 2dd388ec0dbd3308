"""Arithmetic: the conditioner's matmul FLOPs per operation and the machine's measured matmul peak.

The conditioners' dense layers are nearly all of the flow's arithmetic. One forward pass of a
batch ``B`` through ``L`` layers costs

.. math::

    2 B L \\sum_k \\mathrm{in}_k \\mathrm{out}_k, \\qquad
    \\sum_k \\mathrm{in}_k \\mathrm{out}_k = c H + n H^2 + H P d

(input layer, ``n`` hidden layers, output layer; ``c`` conditioning coordinates, ``d``
transformed ones and ``P`` numbers per transformed coordinate: ``c = D - d``, ``P = 2`` for the
affine ``RealNVP``; ``c = d = D / 2`` for even ``D`` and ``P = 3 K - 1`` for a ``NeuralSplineFlow``
of ``K`` bins, whose spline arithmetic and ``D x D`` ``LULinear`` maps are not counted; ``c = D``,
``d = D`` for a ``MAF``'s MADE, whose masks zero entries of dense matmuls that are counted whole).
``log_prob`` and ``sample`` are one forward pass each (``sample`` of a masked autoregressive layer
``D`` passes); a training step is counted as three
(forward, and the two backward products per layer, with respect to inputs and to weights), the
usual arithmetic floor.

The peak is the best median over a few sizes, measured once at the start; as a shared machine's
speed drifts, the benchmark also times that best matmul inside every round of every problem and
reports each contender's fraction of the peak measured in the same round.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch

import jaxflow
from bench.contenders import torch_device
from bench.harness import interleaved_rounds, spread

__all__ = ["FORWARD_PASSES", "conditioner_flops", "matmul_calls", "matmul_peak"]

FORWARD_PASSES = {"log_prob": 1, "sample": 1, "train_step": 3}


def conditioner_flops(flow: jaxflow.RealNVP | jaxflow.NeuralSplineFlow | jaxflow.MAF, batch: int, op: str) -> int:
    """Matmul FLOPs of the conditioners in one call of ``op`` on a batch of ``batch`` events."""
    layer = flow.autoregressive_layer if isinstance(flow, jaxflow.MAF) else flow.coupling
    c, out, h = *layer.sizes(flow.event_shape, flow.context_dim), flow.hidden_dim
    macs_per_event = c * h + flow.num_hidden * h * h + h * out
    passes = FORWARD_PASSES[op] * (flow.dim if op == "sample" and isinstance(layer, jaxflow.MaskedAutoregressive) else 1)
    return 2 * batch * flow.layers.n * macs_per_event * passes


def matmul_calls(n: int, device: str, dtype: str) -> dict[str, Callable[[], object]]:
    """Synchronised, warm ``n x n`` matmul calls of each library, ``{"jax": ..., "torch": ...}``."""
    rng = np.random.default_rng(n)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    jax_dev, torch_dev = jax.devices("gpu" if device == "gpu" else "cpu")[0], torch_device(device)
    ja, jb = jax.device_put((jnp.asarray(a, jnp.dtype(dtype)), jnp.asarray(b, jnp.dtype(dtype))), jax_dev)
    ta, tb = (torch.from_numpy(v).to(torch_dev, getattr(torch, dtype)) for v in (a, b))
    jmatmul = jax.jit(jnp.matmul)

    def jax_call():
        with jax.default_matmul_precision("highest"):
            return jax.block_until_ready(jmatmul(ja, jb))

    def torch_call():
        out = ta @ tb
        if torch_dev.type == "cuda":
            torch.cuda.synchronize()
        return out

    calls = {"jax": jax_call, "torch": torch_call}
    for call in calls.values():
        call()
    return calls


def matmul_peak(sizes: list[int], device: str, dtype: str, rounds: int, min_seconds: float) -> dict:
    """Best median GFLOP/s of square ``n x n`` matmuls over ``sizes``, per library, interleaved.

    Returns ``{"jax": {"gflops", "n", "seconds"}, "torch": {...}}``; float32 at highest precision.
    """
    best: dict[str, dict] = {}
    for n in sizes:
        samples = interleaved_rounds(matmul_calls(n, device, dtype), rounds, min_seconds)
        for library, seconds in samples.items():
            stats = spread(seconds)
            gflops = 2 * n**3 / stats["median"] / 1e9
            if gflops > best.get(library, {}).get("gflops", 0.0):
                best[library] = {"gflops": gflops, "n": n, "seconds": stats}
    return best
