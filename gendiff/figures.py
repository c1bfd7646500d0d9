"""Pictures people would rather look at than read: sample grids, forward strips, trajectories."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import Tensor
from torchvision.utils import make_grid, save_image

from gendiff.files import write_atomic
from gendiff.value_range import map_range


def grid_image(x: Tensor, value_range=(-1.0, 1.0), nrow: int | None = None) -> Tensor:
    """A (B, C, H, W) batch as one (3, H', W') image in [0, 1] (``nrow`` per row, default √B)."""
    nrow = nrow or max(1, int(round(x.shape[0] ** 0.5)))
    return make_grid(map_range(x.detach().cpu(), value_range, clamp=True), nrow=nrow, padding=1, pad_value=1.0)


def save_grid(x: Tensor, path: str | Path, value_range=(-1.0, 1.0), nrow: int | None = None) -> Path:
    """Save a (B, C, H, W) batch as one PNG grid (``nrow`` images per row, default √B)."""
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
