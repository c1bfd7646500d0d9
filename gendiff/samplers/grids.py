"""Step grids: strictly decreasing integer steps from t_0 ≤ N down to an explicit final 0."""
from __future__ import annotations

from functools import partial
from typing import Sequence

import math

import numpy as np


def uniform_grid(N: int, steps: int) -> list[int]:
    """``steps`` equal intervals from N to 0 (rounded to integers)."""
    return power_grid(N, steps, p=1.0)


def power_grid(N: int, steps: int, p: float = 2.0) -> list[int]:
    """t_k = N ((K − k)/K)^p, k = 0..K: p > 1 puts more steps near the data (p = 2: quadratic).

    Rounding can merge neighbouring steps near 0; each step is pushed up to stay strictly above
    the next, so the grid always has exactly ``steps`` intervals.
    """
    if not 1 <= steps <= N:
        raise ValueError(f"steps must be between 1 and N={N}, got {steps}")
    k = np.arange(steps + 1)
    t = np.round(N * ((steps - k) / steps) ** p).astype(int)
    for j in range(steps - 1, -1, -1):
        t[j] = max(t[j], t[j + 1] + 1)
    t[0] = N
    return check_grid(t.tolist(), N)


GRIDS = {"uniform": uniform_grid, "quadratic": partial(power_grid, p=2.0),
         "cubic": partial(power_grid, p=3.0)}


def make_grid(N: int, steps: int, kind: str = "uniform") -> list[int]:
    """A grid by name: ``uniform``, ``quadratic`` or ``cubic``."""
    if kind not in GRIDS:
        raise ValueError(f"unknown grid {kind!r}; valid: {sorted(GRIDS)}")
    return GRIDS[kind](N, steps)


def check_grid(timesteps: Sequence[int], N: int) -> list[int]:
    """Return the grid as ints, or raise ValueError saying what is wrong with it."""
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) or hasattr(v, "item") for v in timesteps):
        raise TypeError(f"timesteps must be integers, got {list(timesteps)[:8]}")
    if not all(math.isfinite(float(v)) and float(v) == int(v) for v in timesteps):
        raise ValueError(f"timesteps must be finite integers, got {list(timesteps)[:8]}")
    t = [int(v) for v in timesteps]
    if len(t) < 2 or t[-1] != 0:
        raise ValueError(f"timesteps must end with an explicit 0 and have at least two entries, got {t[-5:]}")
    if not 0 < t[0] <= N:
        raise ValueError(f"timesteps must start in 1..N={N}, got {t[0]}")
    bad = [k for k in range(len(t) - 1) if t[k] <= t[k + 1]]
    if bad:
        k = bad[0]
        raise ValueError(f"timesteps must be strictly decreasing to 0, but t[{k}]={t[k]} ≤ t[{k + 1}]={t[k + 1]}")
    return t
