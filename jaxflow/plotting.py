"""A 2-D model at a glance: the data, samples from the flow, and the learned density on a grid."""

from __future__ import annotations

from typing import Optional

import jax
import numpy as np

from jaxflow.spec import RealNVP
from jaxflow.train import Standardization, data_log_prob, data_sample

__all__ = ["plot_2d"]


def plot_2d(path: str, flow: RealNVP, params, std: Standardization, data: Optional[np.ndarray] = None,
            num_samples: int = 5000, seed: int = 0, grid: int = 200, title: str = "") -> None:
    """Write a PNG with panels [data,] samples, and ``p_X(x)`` on a ``grid x grid`` mesh.

    The plotting window covers the data (or, without data, the samples) with a 10 % margin.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = np.asarray(data_sample(flow, params, std, jax.random.key(seed), num_samples))
    shown = samples if data is None else data
    low, high = np.quantile(shown, 0.001, axis=0), np.quantile(shown, 0.999, axis=0)
    margin = 0.1 * (high - low)
    low, high = low - margin, high + margin
    axes_x, axes_y = (np.linspace(low[i], high[i], grid) for i in range(2))
    mesh = np.stack(np.meshgrid(axes_x, axes_y), -1).reshape(-1, 2).astype(np.asarray(std.mean).dtype)
    density = np.exp(np.asarray(data_log_prob(flow, params, std, mesh))).reshape(grid, grid)

    panels = ([("data", data)] if data is not None else []) + [("samples", samples), ("learned density", None)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, (name, points) in zip(axes[0], panels):
        if points is None:
            ax.imshow(density, origin="lower", extent=(low[0], high[0], low[1], high[1]), aspect="auto",
                      cmap="magma")
        else:
            ax.scatter(points[:num_samples, 0], points[:num_samples, 1], s=1, alpha=0.4)
        ax.set(xlim=(low[0], high[0]), ylim=(low[1], high[1]), title=name)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
