"""Per-step coefficients: float64 schedule values on the sample's device, and cached multipliers.

A :class:`Diffusion` keeps one :class:`Coefficients` per (device, dtype), so the per-step
multipliers of a grid are computed once for every batch sampled on it. Their cache keys are built
automatically from every input of the multiplier — the function's code, the values it closes
over (say DDIM's η) and its arguments — so a ``sample()`` call with other keyword arguments can
never read another's entries; no caller writes a key.

``transition`` has one meaning everywhere in gendiff: (r, σ²) of q(x̄_t | x̄_u) = N(r x̄_u, σ²)
— the variance, never the standard deviation (docs/math.md, "Equations").
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

# Below this a/s a coordinate holds no recoverable data: x̂̄_0 there is its prior mean 0
# (docs/math.md, "Other samplers", where its measured effect is given).
SNR_FLOOR = 1e-3
# Bound on the cached multipliers of one call: ~100 MB holds a 100-step grid at 256².
MEMO_BYTES = 256 * 2 ** 20


class Coefficients:
    """Per-coordinate schedule values at integer steps, float64, on one device.

    Args:
        schedule: a :class:`gendiff.schedules.Schedule`.
        rates: the basis rates ρ, of its coefficient shape ((1, H, W) per channel).
        device: where the tensors live (the sample's device).
        dtype: the sample dtype that :meth:`cached` multipliers are cast to.
    """

    def __init__(self, schedule, rates: Tensor, device=None, dtype: torch.dtype = torch.float64):
        self.schedule, self.dtype = schedule, dtype
        self.rates = rates.to(device=device, dtype=torch.float64)
        self._values: dict[int, tuple[Tensor, Tensor]] = {}
        self._memo: dict[tuple, tuple] = {}
        self._memo_bytes = 0

    def _step(self, i: int) -> tuple[Tensor, Tensor]:
        # A step's values are read by several multipliers of one update and of the next; the last
        # few are kept (all N steps at 256² would be ~1.5 GB).
        i = int(i)
        if i not in self._values:
            if len(self._values) >= 4:
                self._values.pop(next(iter(self._values)))
            step = torch.tensor([i], device=self.rates.device)
            self._values[i] = (self.schedule.log_a(step, self.rates),
                               self.schedule.s2(step, self.rates).clamp_min(0))
        return self._values[i]

    def log_a(self, i: int) -> Tensor:
        return self._step(i)[0]

    def a(self, i: int) -> Tensor:
        return self.log_a(i).exp()

    def s2(self, i: int) -> Tensor:
        return self._step(i)[1]

    def s(self, i: int) -> Tensor:
        return self.s2(i).sqrt()

    def log_snr(self, i: int) -> Tensor:
        """log(a_i/s_i), finite where a_i underflows (−∞ only at s_i = 0 … +∞)."""
        return self.log_a(i) - self.s(i).log()

    def transition(self, t: int, u: int) -> tuple[Tensor, Tensor]:
        """(r, σ²) of q(x̄_t | x̄_u), u < t: r = a_t/a_u, σ² = s_t² − r² s_u² (clamped ≥ 0)."""
        if u == t - 1:
            r, var = self.schedule.transition(torch.tensor([int(t)], device=self.rates.device), self.rates)
        else:
            r = torch.exp(self.log_a(t) - self.log_a(u))
            var = self.s2(t) - r ** 2 * self.s2(u)
        return r, var.clamp_min(0)

    def inv_a(self, i: int) -> Tensor:
        """1/a_i where a_i/s_i ≥ SNR_FLOOR, else 0.

        Dividing by a only where the coordinate still carries signal gives x̂̄_0 = 0, the prior
        mean, elsewhere: the exact posterior mean to O(a/s), and it keeps a network's error from
        being multiplied by s/a (10^70 for log 0.6 at 64², where a_N underflows).
        """
        la = self.log_a(i)
        keep = self.log_snr(i) >= math.log(SNR_FLOOR)
        return torch.where(keep, torch.exp(-la), torch.zeros_like(la))

    def cached(self, fn: Callable[..., tuple], *args) -> tuple:
        """``fn(*args)`` — float64 multiplier tensors (or None) — cast to ``dtype``, computed once.

        The key is ``fn``'s code, the values it closes over and ``args``, so two closures with
        different captured options (say DDIM's η) never share an entry.
        """
        cells = tuple(c.cell_contents for c in (fn.__closure__ or ()))
        # default arguments are inputs too: def m(t, u, eta=eta) must not share η's entries
        kwdefaults = tuple(sorted((fn.__kwdefaults__ or {}).items()))
        key = (fn.__code__, fn.__defaults__, kwdefaults, cells, args)
        try:
            hash(key)
        except TypeError:  # an unhashable captured value: compute, do not cache
            return tuple(None if v is None else v.to(self.dtype) for v in fn(*args))
        if key not in self._memo:
            value = tuple(None if v is None else v.to(self.dtype) for v in fn(*args))
            size = sum(v.numel() * v.element_size() for v in value if v is not None)
            if self._memo_bytes + size > MEMO_BYTES:
                self._memo.clear()
                self._memo_bytes = 0
            self._memo[key], self._memo_bytes = value, self._memo_bytes + size
        return self._memo[key]
