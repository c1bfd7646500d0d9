"""Step grids: strictly decreasing integer steps from t_0 ≤ N down to an explicit final 0.

A grid kind is ``grid(N, steps, log_snr) -> [t_0, …, 0]``. ``log_snr(i)`` gives the schedule's
λ_i = log(a_i/s_i) per coordinate for a LongTensor of steps (``Diffusion.log_snr``), for kinds
placed by the schedule itself; the power grids ignore it.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable, Sequence

import numpy as np
import torch

# λ below which a coordinate counts as pure noise for the log-SNR grid (a/s < e^{-3} ≈ 0.05):
# benchmarks/samplers.py (a) compares it with −6.9 (the x̂_0 floor) and with none.
LOGSNR_FLOOR = -3.0
# The longest last step the log-SNR grid keeps. x̂_0 of Gaussian data, v z (v + e^{−2λ})^{−1/2},
# is singular at λ = −½ log v ± iπ/2, so a polynomial in λ cannot follow it over a longer step.
MAX_LAST_STEP = math.pi / 2


def uniform_grid(N: int, steps: int, log_snr: Callable | None = None) -> list[int]:
    """``steps`` equal intervals from N to 0 (rounded to integers)."""
    return power_grid(N, steps, p=1.0)


def power_grid(N: int, steps: int, log_snr: Callable | None = None, p: float = 2.0) -> list[int]:
    """t_k = N ((K − k)/K)^p, k = 0..K: p > 1 puts more steps near the data (p = 2: quadratic)."""
    check_steps(N, steps)
    k = np.arange(steps + 1)
    return strictly_decreasing(np.round(N * ((steps - k) / steps) ** p).astype(int), N)


def log_snr_steps(N: int, log_snr: Callable, floor: float = LOGSNR_FLOOR, norm: float = 2.0,
                  chunk: int = 64) -> np.ndarray:
    """d_i = the power mean over coordinates of |λ'_i − λ'_{i+1}|, λ' = max(λ, floor), for
    i = 1..N − 1 (``d[i − 1]``): how far one integer step moves the schedule's log-SNR. ``norm``
    2 is the root mean square, 1 the mean, ``math.inf`` the fastest coordinate. Computed ``chunk``
    steps at a time: the (N, H, W) table at 256² would be 0.5 GB."""
    out, prev = [], None
    for lo in range(1, N + 1, chunk):
        lam = log_snr(torch.arange(lo, min(lo + chunk, N + 1))).clamp_min(floor).flatten(1)
        lam = lam if prev is None else torch.cat([prev, lam])
        step = (lam[:-1] - lam[1:]).abs()
        out.append(step.amax(1) if math.isinf(norm) else step.pow(norm).mean(1).pow(1 / norm))
        prev = lam[-1:]
    return torch.cat(out).double().cpu().numpy()


def logsnr_grid(N: int, steps: int, log_snr: Callable | None = None, floor: float = LOGSNR_FLOOR,
                norm: float = 2.0) -> list[int]:
    """Steps that move the schedule's log-SNR equally: equal spacing in the arc length
    A_i = Σ_{j<i} d_j (:func:`log_snr_steps`, the RMS change of λ per integer step for the default
    ``norm``) from step N to
    the last nonzero step e, each target rounded to the nearest step, then 0.

    The exponential integrators' error per step grows with each coordinate's h = Δλ. The RMS over
    coordinates weighs the fastest ones more than the mean does and less than the maximum:
    benchmarks/samplers.py (a) measured all three, and the RMS is the one that reaches the
    1000-step sampler in ≤ 20 evaluations on no blur, quartic 0.14 and log 0.6. Without blur every
    coordinate moves alike and the grid is uniform in λ; a blur whose coordinates lose their
    signal early (log 0.6) gets its steps near the data. Clipping λ at ``floor`` keeps coordinates
    that are already pure noise from claiming steps.

    Endpoint: e is 1 unless the step e + 1 → e moves λ by more than :data:`MAX_LAST_STEP` (in d),
    a step no λ-polynomial resolves (log 0.6: 2 → 1 by 2.6, since f(1) = 0); the grid then ends at
    e + 1 and leaves the jump to the final step to 0 (``unipc``'s σ² extrapolation).
    """
    check_steps(N, steps)
    if log_snr is None:
        raise ValueError("the logsnr grid needs the schedule's log_snr (Diffusion.grid passes it)")
    d = log_snr_steps(N, log_snr, floor, norm)
    arc = np.concatenate([[0.0], np.cumsum(d)])  # arc[i − 1] = A_i
    end = 1
    while end <= N - steps and d[end - 1] > MAX_LAST_STEP:
        end += 1
    targets = np.linspace(arc[N - 1], arc[end - 1], steps) if steps > 1 else np.array([arc[N - 1]])
    t = np.abs(arc[None, end - 1:] - targets[:, None]).argmin(1) + end
    return strictly_decreasing(np.append(t, 0), N)


GRIDS = {"uniform": uniform_grid, "quadratic": partial(power_grid, p=2.0),
         "cubic": partial(power_grid, p=3.0), "logsnr": logsnr_grid}


def make_grid(N: int, steps: int, kind: str = "uniform", log_snr: Callable | None = None) -> list[int]:
    """A grid by name (see :data:`GRIDS`); ``log_snr`` as ``Diffusion.log_snr``, for the kinds that need it."""
    if kind not in GRIDS:
        raise ValueError(f"unknown grid {kind!r}; valid: {sorted(GRIDS)}")
    return GRIDS[kind](N, steps, log_snr)


def check_steps(N: int, steps: int) -> None:
    if not 1 <= steps <= N:
        raise ValueError(f"steps must be between 1 and N={N}, got {steps}")


def strictly_decreasing(t, N: int) -> list[int]:
    """The grid N = t_0 > t_1 > … > t_K = 0 from K + 1 rounded targets (the last one 0): rounding
    can merge neighbours, so each t_j is first capped at N − j (room for the steps above it) and
    then pushed up to stay above the next; the grid keeps exactly K intervals."""
    t = np.minimum(np.array(t, dtype=np.int64), N - np.arange(len(t)))
    t[-1] = 0
    for j in range(len(t) - 2, -1, -1):
        t[j] = max(t[j], t[j + 1] + 1)
    t[0] = N
    return check_grid(t.tolist(), N)


def check_grid(timesteps: Sequence[int], N: int) -> list[int]:
    """Return the grid as ints, or raise ValueError saying what is wrong with it."""
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) or hasattr(v, "item") for v in timesteps):
        raise TypeError(f"timesteps must be integers, got {list(timesteps)[:8]}")
    if not all(math.isfinite(float(v)) and float(v) == int(v) for v in timesteps):
        raise ValueError(f"timesteps must be integers, got {list(timesteps)[:8]}")
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
