"""Pictures people would rather look at than read: sample grids, forward strips, trajectories.

Every figure takes a batch of any event shape: images (B, C, H, W) as a grid of images,
volumes (B, C, D, H, W) as the three middle slices of each volume side by side (the D, H and
W planes through its centre), signals (B, C, L) as a grid of line plots (one line per channel).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import make_grid, save_image

from gendiff.files import write_atomic
from gendiff.value_range import map_range


def grid_image(x: Tensor, value_range=(-1.0, 1.0), nrow: int | None = None) -> Tensor:
    """A batch as one (3, H', W') image in [0, 1], ``nrow`` examples per row (default √B): images
    (B, C, H, W) as they are, volumes (B, C, D, H, W) as their middle slices, signals (B, C, L)
    as line plots."""
    nrow = nrow or max(1, int(round(x.shape[0] ** 0.5)))
    x = x.detach().cpu()
    if x.ndim == 3:
        return line_plots(x, value_range, nrow)
    if x.ndim == 5:
        x = middle_slices(x, pad_value=float(value_range[1]))
    elif x.ndim != 4:
        raise ValueError(f"figures take (B, C, L) signals, (B, C, H, W) images or (B, C, D, H, W) volumes, "
                         f"got shape {tuple(x.shape)}")
    return make_grid(map_range(x, value_range, clamp=True), nrow=nrow, padding=1, pad_value=1.0)


def middle_slices(x: Tensor, pad_value: float = 1.0) -> Tensor:
    """(B, C, D, H, W) volumes as (B, C, S, 3S) images, S = max(D, H, W): the slices through the
    centre across D (H×W), H (D×W) and W (D×H), each padded to S×S with ``pad_value``."""
    d, h, w = x.shape[2:]
    side = max(d, h, w)
    planes = [x[:, :, d // 2], x[:, :, :, h // 2], x[:, :, :, :, w // 2]]
    return torch.cat([F.pad(p, (0, side - p.shape[-1], 0, side - p.shape[-2]), value=pad_value) for p in planes], -1)


def line_plots(x: Tensor, value_range=(-1.0, 1.0), nrow: int = 8) -> Tensor:
    """(B, C, L) signals as one (3, H', W') image in [0, 1]: a grid of small line plots, ``nrow``
    per row, one line per channel, the y axis spanning ``value_range``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = math.ceil(x.shape[0] / nrow)
    fig = Figure(figsize=(1.6 * nrow, 1.0 * rows), dpi=80)
    canvas = FigureCanvasAgg(fig)
    axes = fig.subplots(rows, nrow, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < x.shape[0]:
            ax.plot(x[k].double().T.numpy(), linewidth=0.8)
            ax.set_ylim(*value_range)
    fig.subplots_adjust(0.01, 0.01, 0.99, 0.99, 0.05, 0.05)
    canvas.draw()
    rgba = torch.from_numpy(np.asarray(canvas.buffer_rgba()).copy())
    return rgba[..., :3].permute(2, 0, 1).float() / 255.0


def save_grid(x: Tensor, path: str | Path, value_range=(-1.0, 1.0), nrow: int | None = None) -> Path:
    """Save a batch of any event shape as one PNG grid (``nrow`` examples per row, default √B;
    see :func:`grid_image`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = grid_image(x, value_range, nrow)
    return write_atomic(path, lambda f: save_image(image, f, format="png"), sync=False)


@torch.no_grad()
def forward_strip(diffusion, x0: Tensor, path, columns: int = 8, value_range=(-1.0, 1.0),
                  generator: torch.Generator | None = None) -> Path:
    """x_0 … x_N of the forward process: one row per image, the same noise along a row."""
    steps = torch.linspace(0, diffusion.N, columns).round().long()
    noise = diffusion.from_basis(torch.randn(x0.shape, generator=generator, dtype=x0.dtype))
    cols = [diffusion.q_sample(x0, steps[k].repeat(x0.shape[0]), noise=noise)[0] for k in range(columns)]
    return save_grid(torch.stack(cols, 1).flatten(0, 1), path, value_range, nrow=columns)


@torch.no_grad()
def trajectory(sample: Callable[[Callable], Tensor], path, frames: int = 8,
               value_range=(-1.0, 1.0)) -> tuple[Path, Tensor]:
    """The predicted x̂_0 along the reverse process (coarse to fine), one row per sample.

    Args:
        sample: ``sample(callback) -> samples``, running any sampling path with the per-step
            callback (``{"i", "x", "x0"}``), e.g. ``lambda cb: sample_run(run, 8, callback=cb)``.
    Returns the figure's path and the final samples.
    """
    seen: list[tuple[int, Tensor]] = []
    out = sample(lambda d: seen.append((d["i"], d["x0"].cpu())))
    pick = torch.linspace(0, len(seen) - 1, frames - 1).round().long().unique()
    cols = [seen[k][1] for k in pick.tolist()] + [out.cpu()]
    return save_grid(torch.stack(cols, 1).flatten(0, 1), path, value_range, nrow=len(cols)), out
