"""The timing method: warm-up apart, interleaved rounds, medians with min–max spread.

Every contender is a zero-argument callable that performs one complete, synchronised call (JAX
results pass through ``jax.block_until_ready``; torch on a GPU ends with
``torch.cuda.synchronize()``), so a wall-clock interval around it measures the work and not the
dispatch. The first call (tracing, compilation, allocator warm-up) is timed on its own and
reported separately. Then each round times every contender once, in a fresh random (seeded) order,
so slow drifts of a shared machine hit all contenders alike and no contender always runs right
after the same one; ratios are taken within a round.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = ["first_call_seconds", "calls_per_sample", "interleaved_rounds", "spread", "ratios_per_round"]


def _seconds(call: Callable[[], object], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - start) / number


def first_call_seconds(call: Callable[[], object]) -> float:
    """Wall time of the first (warm-up) call: tracing and compilation included."""
    return _seconds(call, 1)


def calls_per_sample(call: Callable[[], object], min_seconds: float) -> int:
    """How many back-to-back calls make one timed sample last at least ``min_seconds``.

    Calls much shorter than the timer's resolution and the machine's scheduling noise are timed
    in groups (as ``timeit`` does); the sample is the group's mean.
    """
    once = _seconds(call, 1)
    return max(1, int(np.ceil(min_seconds / max(once, 1e-9))))


def interleaved_rounds(calls: Mapping[str, Callable[[], object]], rounds: int,
                       min_seconds: float, seed: int = 0) -> dict[str, list[float]]:
    """Seconds per call of each contender in each of ``rounds`` interleaved rounds.

    The contenders must already be warm. Each round visits them in a new random permutation
    (``numpy.random.default_rng(seed)``). A fixed rotation (A B C, B C A, ...) would keep every
    contender behind the same predecessor in every round, and a predecessor that leaves threads
    spinning (torch's OpenMP pool after its call) would then slow the same contender every time.
    """
    names = list(calls)
    number = {name: calls_per_sample(calls[name], min_seconds) for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        for i in rng.permutation(len(names)):
            samples[names[i]].append(_seconds(calls[names[i]], number[names[i]]))
    return samples


def spread(values: Sequence[float]) -> dict[str, float]:
    """``{"median", "min", "max"}`` of ``values``."""
    values = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(values)), "min": float(values.min()), "max": float(values.max())}


def ratios_per_round(baseline: Sequence[float], other: Sequence[float]) -> list[float]:
    """Speed-up of ``other`` over ``baseline`` in each round: ``baseline[r] / other[r]``."""
    return [float(b / o) for b, o in zip(baseline, other)]
