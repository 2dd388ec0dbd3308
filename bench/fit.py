"""``python -m bench --fit``: the whole ``train.fit`` loop against its bare jitted step, and against a plain
torchref training loop, in interleaved rounds in one process.

For each configuration (spec and batch of :data:`bench.__main__.CONFIGS`) and ``K`` in
``steps_per_call``, one sample is a run of ``steps`` optimiser steps on the same standard-normal
training data: ``fit K`` is ``train.fit`` (validation on 5000 rows every 250 steps, progress bar
off, the step compiled beforehand); ``bare step K`` calls the same compiled chunk ``steps / K``
times and waits once at the end (no host reads, no validation); ``torch loop`` draws the same
batch size with ``torch.randint`` and runs ``torch.optim.Adam`` on torchref's ``-mean log_prob``.
Reports steps/s medians and, per round, ``fit / bare`` (the loop's cost) and ``fit / torch``.
"""

from __future__ import annotations

import jax
import numpy as np
import torch

import torchref
from bench.harness import interleaved_rounds, ratios_per_round, spread
from jaxflow import train

__all__ = ["fit_rows", "format_fit"]

VALIDATION_ROWS = 5000
EVAL_EVERY = 250


def _calls(flow, batch: int, steps: int, steps_per_call: list[int], rows: int, seed: int) -> dict:
    """Zero-argument synchronised runs of ``steps`` steps, by contender name."""
    rng = np.random.default_rng(seed)
    x, x_val = (rng.standard_normal((n, flow.dim), dtype=np.float32) for n in (rows, VALIDATION_ROWS))
    calls = {}
    for k in steps_per_call:
        config = train.TrainConfig(steps=steps, batch_size=batch, eval_every=EVAL_EVERY, patience=0, lr=1e-4,
                                   steps_per_call=k)
        step = train.make_train_step(flow, config)
        state = train.init_state(flow, config)
        calls[f"fit K={k}"] = lambda config=config, step=step, state=state: train.fit(
            flow, x, x_val, config, state=state, progress=False, train_step=step)

        def bare(step=step, state=state, k=k):
            params, opt_state = jax.tree.map(jax.numpy.copy, (state.params, state.opt_state))
            x_device = jax.numpy.asarray(x)
            for start in range(0, steps, k):
                params, opt_state, losses = step(params, opt_state, state.rng, np.int32(start), np.int32(k), x_device, None)
            return jax.block_until_ready(losses)

        calls[f"bare step K={k}"] = bare
    model = torchref.from_jax(flow, train.init_state(flow, config).params)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x_torch = torch.from_numpy(x)

    def torch_loop():
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss = -model.log_prob(x_torch[torch.randint(0, rows, (batch,))]).mean()
            loss.backward()
            optimizer.step()
        return loss.item()

    calls["torch loop"] = torch_loop
    return calls


def fit_rows(configs: dict, steps: dict, steps_per_call: list[int], rounds: int, rows: int, seed: int) -> list[dict]:
    """One row per configuration and contender: steps/s (median, min, max) and the per-round ratios."""
    out = []
    for name, (flow, batch) in configs.items():
        calls = _calls(flow, batch, steps[name], steps_per_call, rows, seed)
        for call in calls.values():  # warm-up: compilation, allocators
            call()
        samples = interleaved_rounds(calls, rounds, 0.0, seed)
        rate = lambda seconds: [steps[name] / s for s in seconds]
        for contender, seconds in samples.items():
            k = contender.split("K=")[-1]
            row = {"config": name, "batch": batch, "steps": steps[name], "implementation": contender,
                   "steps_per_second": spread(rate(seconds)), "samples_seconds": seconds}
            if contender.startswith("fit"):
                row["fit_over_bare"] = spread(ratios_per_round(samples[f"bare step K={k}"], seconds))
                row["fit_over_torch"] = spread(ratios_per_round(samples["torch loop"], seconds))
            out.append(row)
    return out


def format_fit(rows: list[dict]) -> str:
    """A table: steps/s per contender; for ``fit`` rows its speed relative to the bare step and to torch."""
    lines = [f"{'config':<8} {'implementation':<16} {'steps/s median [min-max]':<28} {'fit/bare':>9} {'fit/torch':>10}"]
    for r in rows:
        s = r["steps_per_second"]
        ratio = lambda key: f"{r[key]['median']:.3f}" if key in r else ""
        lines.append(f"{r['config']:<8} {r['implementation']:<16} "
                     f"{s['median']:<8.1f} [{s['min']:.1f}-{s['max']:.1f}]{'':<8} {ratio('fit_over_bare'):>9} "
                     f"{ratio('fit_over_torch'):>10}")
    return "\n".join(lines)


def steps_for(configs: dict, small: int, other: int) -> dict:
    """Steps per sample: ``small`` for the small configuration, ``other`` for the slower ones."""
    return {name: small if name == "small" else other for name in configs}


