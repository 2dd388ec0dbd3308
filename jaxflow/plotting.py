"""Models at a glance: a 2-D model's data, samples and density on a grid; an image model's samples."""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import numpy as np

from jaxflow.core.flow import log_prob, sample
from jaxflow.core.init import params_dtype
from jaxflow.core.spec import FlowSpec

__all__ = ["plot_2d", "plot_images"]


def plot_2d(path: str, flow: FlowSpec, params, data: Optional[np.ndarray] = None, num_samples: int = 5000,
            seed: int = 0, grid: int = 200, title: str = "",
            contexts: Sequence[Optional[np.ndarray]] = (None,)) -> None:
    """Write a PNG with panels [data,] samples, and ``p_X(x)`` on a ``grid x grid`` mesh.

    For a conditional flow, ``contexts`` lists the contexts ``c``: the panels are [data,] then
    the samples and the density ``p_X(x | c)`` of each. The plotting window covers the data (or,
    without data, the samples) with a 10 % margin.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dtype = params_dtype(params)
    samples = [np.asarray(sample(flow, params, jax.random.key(seed), num_samples, context=c)) for c in contexts]
    shown = np.concatenate(samples) if data is None else data
    low, high = np.quantile(shown, 0.001, axis=0), np.quantile(shown, 0.999, axis=0)
    margin = 0.1 * (high - low)
    low, high = low - margin, high + margin
    axes_x, axes_y = (np.linspace(low[i], high[i], grid) for i in range(2))
    mesh = np.stack(np.meshgrid(axes_x, axes_y), -1).reshape(-1, 2).astype(dtype)

    def density(c):
        return np.exp(np.asarray(log_prob(flow, params, mesh, context=c))).reshape(grid, grid)

    label = lambda c: "" if c is None else f" | c = {', '.join(f'{v:g}' for v in np.atleast_1d(c))}"
    panels = [("data", data)] if data is not None else []
    for c, points in zip(contexts, samples):
        panels += [("samples" + label(c), points), ("learned density" + label(c), density(c))]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, (name, content) in zip(axes[0], panels):
        if name.startswith("learned density"):
            ax.imshow(content, origin="lower", extent=(low[0], high[0], low[1], high[1]), aspect="auto", cmap="magma")
        else:
            ax.scatter(content[:num_samples, 0], content[:num_samples, 1], s=1, alpha=0.4)
        ax.set(xlim=(low[0], high[0]), ylim=(low[1], high[1]), title=name)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_images(path: str, flow: FlowSpec, params, image_shape: tuple[int, int, int], data: Optional[np.ndarray] = None,
                rows: int = 8, seed: int = 0, title: str = "") -> None:
    """Write a PNG of a ``rows x rows`` grid of samples (left), and of data examples beside it if given.

    Samples of a pixel model live in the unit cube (:mod:`jaxflow.units`); each is reshaped to
    ``image_shape`` ``(H, W, C)`` (a vector model's coordinates are the image's, row-major) and
    clipped to ``[0, 1]`` for display; one channel is drawn in grey, three as RGB.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def tile(images):
        images = np.clip(np.asarray(images, np.float64).reshape(rows, rows, *image_shape), 0, 1)
        images = np.pad(images, ((0, 0), (0, 0), (0, 1), (0, 1), (0, 0)), constant_values=0.5)  # a grey seam
        h, w, c = images.shape[2:]
        grid = images.transpose(0, 2, 1, 3, 4).reshape(rows * h, rows * w, c)
        return grid[..., 0] if c == 1 else grid

    panels = [("samples", tile(sample(flow, params, jax.random.key(seed), rows * rows)))]
    if data is not None:
        panels.append(("data", tile(data[: rows * rows])))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5), squeeze=False)
    for ax, (name, grid) in zip(axes[0], panels):
        ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set(title=name, xticks=[], yticks=[])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
