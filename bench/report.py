"""What a run reports: the environment, a readable table, the JSON record and the throughput plot."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
from pathlib import Path

import jax
import torch

from bench.harness import ratios_per_round, spread

__all__ = ["environment", "format_results", "format_summary", "format_vs_best_peer", "format_compile_times",
           "result_stem", "write_json", "plot_sweep"]

UNMATCHED = "*"
"""Marks implementations whose values are not compared (``value_matched`` false) in tables."""

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "XLA_FLAGS",
                     "TF_CPP_MIN_LOG_LEVEL", "JAX_PLATFORMS", "CUDA_VISIBLE_DEVICES")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str, dtype: str, torch_threads: int | None = None) -> dict:
    """Versions, devices and thread settings (library defaults unless ``torch_threads`` was set);
    the optional peers' versions are None when they are not installed."""
    import distrax
    import flax
    import optax

    jax_device = jax.devices("gpu" if device == "gpu" else "cpu")[0]
    return {
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device == "gpu" else _cpu_name(),
        "jax_device": str(jax_device),
        "dtype": dtype,
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15_min": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {"jax": jax.__version__, "jaxlib": jax.lib.__version__, "flax": flax.__version__,
                     "optax": optax.__version__, "torch": torch.__version__, "distrax": distrax.__version__,
                     **{name: _installed_version(name) for name in ("flowjax", "equinox")}},
        "threads": {"threading": ("default threading on both sides" if torch_threads is None
                                  else f"torch.set_num_threads({torch_threads}), JAX default"),
                    "torch_num_threads": torch.get_num_threads(),
                    "torch_num_interop_threads": torch.get_num_interop_threads(),
                    "environment": {k: os.environ.get(k) for k in _THREAD_VARIABLES}},
    }


def _label(row: dict) -> str:
    return row["implementation"] + ("" if row["value_matched"] else UNMATCHED)


def _footnote(rows: list[dict]) -> list[str]:
    if all(r["value_matched"] for r in rows):
        return []
    return [f"{UNMATCHED} shape-matched with its own weights: timed, not compared with torch eager's values"]


def _installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _stats(s: dict, scale: float = 1.0, digits: int = 3) -> str:
    return f"{s['median'] * scale:.{digits}g} [{s['min'] * scale:.{digits}g}-{s['max'] * scale:.{digits}g}]"


def format_results(rows: list[dict]) -> str:
    """One table per problem: time, speed-up over torch eager, GFLOP/s and fraction of peak."""
    lines = []
    header = (f"{'op':<11} {'implementation':<20} {'ms median [min-max]':<26} {'vs eager [min-max]':<22}"
              f" {'GFLOP/s':>8} {'%peak':>6} {'warm-up s':>9}")
    problem = None
    for row in rows:
        key = (row["config"], row["batch"])
        if key != problem:
            problem = key
            shape = row["shape"]
            spline = f" K={shape['bins']} B={shape['bound']}" if "bins" in shape else ""
            lines += ["", f"{row['config']} {shape['flow']}: D={shape['dim']} L={shape['num_flows']} "
                          f"H={shape['hidden_dim']} num_hidden={shape['num_hidden']}{spline} batch={row['batch']}",
                      header]
        lines.append(f"{row['op']:<11} {_label(row):<20} {_stats(row['seconds'], 1e3):<26} "
                     f"{_stats(row['speedup_vs_eager']):<22} {row['gflops']:>8.1f} "
                     f"{100 * row['fraction_of_peak']:>5.0f}% {row['warmup_seconds']:>9.2f}")
    return "\n".join(lines + _footnote(rows))


def format_summary(rows: list[dict]) -> str:
    """Speed-ups over torch eager (median of per-round ratios) as a markdown table, one column per
    configuration and operation, as in the issue."""
    cells = [(r["config"], r["op"]) for r in rows]
    columns = list(dict.fromkeys(cells))
    labels = {r["implementation"]: _label(r) for r in rows}
    speedup = {(r["implementation"], r["config"], r["op"]): r["speedup_vs_eager"]["median"] for r in rows}
    lines = ["| implementation | " + " | ".join(f"{c} {op}" for c, op in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for name, label in labels.items():
        lines.append(f"| {label} | " + " | ".join(f"{speedup[(name, c, op)]:.2f}x" for c, op in columns) + " |")
    return "\n".join(lines + _footnote(rows))


def format_vs_best_peer(rows: list[dict], names: list[str]) -> str:
    """``names`` (jaxflow's rows) against the fastest peer of each configuration and operation
    (lowest median time): the median over rounds of ``t_peer[r] / t[r]`` (> 1: faster than every
    peer), as a markdown table with the fastest peer named per column."""
    columns = list(dict.fromkeys((r["config"], r["op"]) for r in rows if r["peer"]))
    by_cell = {(r["implementation"], r["config"], r["op"]): r for r in rows}
    best = {cell: min((r for r in rows if r["peer"] and (r["config"], r["op"]) == cell),
                      key=lambda r: r["seconds"]["median"]) for cell in columns}
    lines = ["| implementation | " + " | ".join(f"{c} {op}" for c, op in columns) + " |",
             "|---|" + "---:|" * len(columns),
             "| fastest peer | " + " | ".join(_label(best[cell]) for cell in columns) + " |"]
    for name in names:
        ratios = [ratios_per_round(best[cell]["samples_seconds"], by_cell[(name, *cell)]["samples_seconds"])
                  for cell in columns]
        lines.append(f"| {name} | " + " | ".join(f"{spread(r)['median']:.2f}x" for r in ratios) + " |")
    return "\n".join(lines)


def format_compile_times(rows: list[dict]) -> str:
    """Compile seconds by depth, scan against unrolled, per operation."""
    depths = sorted({r["num_flows"] for r in rows})
    lines = ["compile time (s): " + "  ".join(f"L={d:<5}" for d in depths)]
    for op in dict.fromkeys(r["op"] for r in rows):
        for form in ("scan", "unrolled"):
            seconds = {r["num_flows"]: r["seconds"] for r in rows if r["op"] == op and r["scan_unroll"] == form}
            lines.append(f"  {op:<10} {form:<8} " + "  ".join(f"{seconds[d]:<7.2f}" for d in depths))
    return "\n".join(lines)


def result_stem(env: dict, date: str) -> str:
    """``<date>_<device name>_<dtype>``, e.g. ``2026-11-29T1305Z_cpu-amd-epyc_float32``."""
    name = re.sub(r"[^a-z0-9]+", "-", f"{env['device']}-{env['device_name']}".lower()).strip("-")
    return f"{date}_{name}_{env['dtype']}"


def write_json(record: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


def plot_sweep(rows: list[dict], title: str, path: Path) -> None:
    """Throughput (events/s) against batch size, log-log, one panel per operation; peers dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = list(dict.fromkeys(r["op"] for r in rows))
    fig, axes = plt.subplots(1, len(ops), figsize=(5.5 * len(ops), 4.2), squeeze=False)
    for ax, op in zip(axes[0], ops):
        for name, row in {r["implementation"]: r for r in rows}.items():
            points = sorted((r["batch"], r["batch"] / r["seconds"]["median"]) for r in rows
                            if r["op"] == op and r["implementation"] == name)
            batches, throughput = zip(*points)
            ax.plot(batches, throughput, marker="o", linestyle="--" if row["peer"] else "-", label=_label(row))
        ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="events / s (median)", title=op)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
