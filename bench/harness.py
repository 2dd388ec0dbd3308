"""The timing method: warm-up apart, interleaved rounds, medians with min–max spread.

Every contender is a zero-argument callable that performs one complete, synchronised call (JAX
results pass through ``jax.block_until_ready``; torch on a GPU ends with
``torch.cuda.synchronize()``), so a wall-clock interval around it measures the work and not the
dispatch. The first call (tracing, compilation, allocator warm-up) is timed on its own and
reported separately. Then each round times every contender once, in an order rotated from round
to round, so slow drifts of a shared machine hit all contenders alike; ratios are taken within a
round.
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
                       min_seconds: float) -> dict[str, list[float]]:
    """Seconds per call of each contender in each of ``rounds`` interleaved rounds.

    The contenders must already be warm. Round ``r`` visits them starting at the ``r``-th,
    cyclically (A B C, B C A, C A B, ...).
    """
    names = list(calls)
    number = {name: calls_per_sample(calls[name], min_seconds) for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            samples[name].append(_seconds(calls[name], number[name]))
    return samples


def spread(values: Sequence[float]) -> dict[str, float]:
    """``{"median", "min", "max"}`` of ``values``."""
    values = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(values)), "min": float(values.min()), "max": float(values.max())}


def ratios_per_round(baseline: Sequence[float], other: Sequence[float]) -> list[float]:
    """Speed-up of ``other`` over ``baseline`` in each round: ``baseline[r] / other[r]``."""
    return [float(b / o) for b, o in zip(baseline, other)]
