"""What every sampler shares: the per-step coefficients, the step loop and the callback schema.

A sampler is a plain function (k-diffusion style)::

    sampler(denoise, x, timesteps, coef, *, generator=None, callback=None, disable=False, **opts)

- ``denoise(x̄, i) -> x̂̄_0``: the data prediction in coefficient space (the engine wraps the
  model with one ``inverse`` before it and one ``forward`` after it, and the parameterization
  turns the model's output — ε̂, or IHDM's residual mean — into x̂̄_0);
- ``x``: x̄ at ``timesteps[0]``, in coefficient space; the sampler returns x̄ at step 0;
- ``coef``: a :class:`StepCoefficients` — per-coordinate log a_i and s_i as float64 tensors;
- ``callback({"i": i, "x": x̄_i, "x0": x̂̄_0})`` once per step, in coefficient space.

Per-coordinate multipliers are computed in float64 from log a (finite where a underflows),
cast once and cached per step (they are the same for every batch). Samplers never divide by a:
each step is a combination of x̄_t, x̂̄_0 (bounded) and fresh noise (:func:`linear_step`).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

Denoiser = Callable[[Tensor, int], Tensor]
# Below this a/s a coordinate holds no recoverable data: x̂_0 there is its prior mean 0.
SNR_FLOOR = 1e-3
# Cached per-step multipliers (see StepCoefficients.memo): ~100 MB holds a 100-step grid at 256².
MEMO_BYTES = 256 * 2 ** 20


class StepCoefficients:
    """Per-coordinate schedule values at integer steps, float64, on one device.

    Args:
        schedule: a :class:`gendiff.schedules.Schedule`.
        rates: the basis rates ρ, shape (1, H, W).
        device: where the tensors live (the sample's device).
    """

    def __init__(self, schedule, rates: Tensor, device):
        self.schedule = schedule
        self.rates = rates.to(device=device, dtype=torch.float64)
        self._recent: dict[int, tuple[Tensor, Tensor]] = {}
        self._memo: dict[tuple, tuple] = {}
        self._memo_bytes = 0

    def _step(self, i: int) -> Tensor:
        return torch.tensor([int(i)], device=self.rates.device)

    def _values(self, i: int) -> tuple[Tensor, Tensor]:
        # A step's values are read several times by one update and again by the next, so the
        # last few are kept (a bounded cache: all N steps at 256² would be ~1.5 GB).
        i = int(i)
        if i not in self._recent:
            if len(self._recent) >= 4:
                self._recent.pop(next(iter(self._recent)))
            step = self._step(i)
            self._recent[i] = (self.schedule.log_a(step, self.rates),
                               self.schedule.s2(step, self.rates).clamp_min(0))
        return self._recent[i]

    def memo(self, key: tuple, fn: Callable[[], tuple]) -> tuple:
        """``fn()`` — a tuple of multiplier tensors (or None) — cached under ``key``.

        A step's multipliers are the same for every batch sampled on a grid, so sampling many
        batches (recipes/sample.py, evaluation) computes them once. Bounded to MEMO_BYTES.
        """
        if key not in self._memo:
            value = fn()
            size = sum(v.numel() * v.element_size() for v in value if v is not None)
            if self._memo_bytes + size > MEMO_BYTES:
                self._memo.clear()
                self._memo_bytes = 0
            self._memo[key], self._memo_bytes = value, self._memo_bytes + size
        return self._memo[key]

    def log_a(self, i: int) -> Tensor:
        return self._values(i)[0]

    def s2(self, i: int) -> Tensor:
        return self._values(i)[1]

    def s(self, i: int) -> Tensor:
        return self.s2(i).sqrt()

    def transition(self, t: int, u: int) -> tuple[Tensor, Tensor]:
        """(r, σ²) of q(x̄_t | x̄_u) for u < t: r = a_t/a_u, σ² = s_t² − r² s_u² (≥ 0)."""
        if u == t - 1:
            r, var = self.schedule.transition(self._step(t), self.rates)
        else:
            r = torch.exp(self.log_a(t) - self.log_a(u))
            var = self.s2(t) - r ** 2 * self.s2(u)
        return r, var.clamp_min(0)

    def inv_a(self, i: int) -> Tensor:
        """1/a_i where a_i/s_i ≥ SNR_FLOOR, else 0 (float64).

        Dividing by a only where the coordinate still carries signal gives x̂̄_0 = 0, the prior
        mean, elsewhere: the exact posterior mean to O(a/s), and it keeps a network's error from
        being multiplied by s/a (10^70 for the paper's log 0.6 schedule at 64², where a_N
        underflows).
        """
        la, s = self.log_a(i), self.s(i)
        return torch.where(la - s.log() >= math.log(SNR_FLOOR), torch.exp(-la), torch.zeros_like(la))



def linear_step(coef: StepCoefficients, key: tuple, x: Tensor, x0: Tensor, generator,
                multipliers: Callable[[], tuple]) -> Tensor:
    """x̄_u = A ⊙ x̄_t + B ⊙ x̂̄_0 + C ⊙ z̄, the form of every first-order sampler step here.

    ``multipliers()`` returns float64 (A, B, C) for the step (A or C may be None); they are
    cast to x's dtype once and cached under ``key`` (see :meth:`StepCoefficients.memo`).
    """
    a, b, c = coef.memo(key + (x.dtype,), lambda: tuple(
        None if m is None else cast(m, x) for m in multipliers()))
    out = b * x0 if a is None else torch.addcmul(a * x, b, x0)
    return out if c is None else torch.addcmul(out, c, noise_like(x, generator))


def cast(c: Tensor, like: Tensor) -> Tensor:
    """A float64 coefficient in the sample's dtype."""
    return c.to(dtype=like.dtype)


def noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Fresh white noise, drawn directly in coefficient space (it is basis-invariant)."""
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def step_pairs(timesteps: list[int], disable: bool, desc: str):
    """(t, u) for consecutive grid points, with a progress bar unless disabled."""
    return tqdm(list(zip(timesteps[:-1], timesteps[1:])), desc=desc, disable=disable, leave=False)


def report(callback, i: int, x: Tensor, x0: Tensor) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "x0": x0})
