"""Blurring Diffusion Models (Hoogeboom & Salimans, ICLR 2023) as a schedule (docs/math.md, Conventions)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import Schedule, broadcast_step, distinct_rates
from .noise import logsnr_cosine_t


class BlurringDiffusionSchedule(Schedule):
    """a_t[k] = α_t d_t(λ_k), s_t = σ_t on t_i = i/N (not variance preserving). Use with DCTBasis.

    σ_B(t) = σ_B,max sin²(πt/2), τ_t = σ_B(t)²/2, d_t(λ) = (1 − d_min) e^{−λτ_t} + d_min,
    α_t² = sigmoid(logsnr(t)), σ_t² = sigmoid(−logsnr(t)) with the log-SNR cosine schedule.
    d_min keeps every coordinate's signal ≥ d_min α_t, so no step divides by ~0.

    Args:
        N: grid size for the continuous time t ∈ [0, 1].
        sigma_B_max: final blur std in pixels (20 for 32×32 in the paper).
        d_min: minimal frequency scaling (0.001).
        logsnr_max, logsnr_min: the log-SNR range of the noise schedule (10, −10).
    """

    name = "blurring"

    def __init__(self, N: int = 1000, sigma_B_max: float = 20.0, d_min: float = 0.001,
                 logsnr_max: float = 10.0, logsnr_min: float = -10.0):
        super().__init__(N)
        if not 0 < float(d_min) < 1:
            raise ValueError(f"d_min must be in (0, 1) (the smallest frequency scaling; 0.001 in the paper), got {d_min!r}")
        if not float(sigma_B_max) > 0:
            raise ValueError(f"sigma_B_max must be > 0 (the final blur std in pixels), got {sigma_B_max!r}")
        self.sigma_B_max, self.d_min = float(sigma_B_max), float(d_min)
        self.logsnr_max, self.logsnr_min = float(logsnr_max), float(logsnr_min)
        t = np.arange(N + 1) / N
        logsnr = logsnr_cosine_t(t, logsnr_max, logsnr_min)
        self.log_alpha = torch.as_tensor(np.where(t > 0, -0.5 * np.logaddexp(0.0, -logsnr), 0.0))
        self.sigma2 = torch.as_tensor(np.where(t > 0, 1.0 / (1.0 + np.exp(logsnr)), 0.0))
        self.tau = torch.as_tensor((sigma_B_max * np.sin(np.pi * t / 2) ** 2) ** 2 / 2)

    def log_a(self, i: Tensor, rates: Tensor) -> Tensor:
        i = broadcast_step(i, rates).cpu()
        tau, log_alpha = self.tau[i].to(rates.device), self.log_alpha[i].to(rates.device)
        log_d = torch.logaddexp(torch.full_like(rates, math.log(self.d_min)),
                                math.log1p(-self.d_min) - tau * rates)
        # at t = 0 the data is unblurred: d_0 = 1 exactly, not (1 − d_min) + d_min in floating point
        return log_alpha + torch.where(tau > 0, log_d, torch.zeros_like(log_d))

    def s2(self, i: Tensor, rates: Tensor) -> Tensor:
        i = broadcast_step(i, rates).cpu()
        return self.sigma2[i].to(rates.device) * torch.ones_like(rates)

    def validation_rates(self, rates: Tensor) -> Tensor:
        return distinct_rates(rates)  # a function of ρ alone

    def config_args(self) -> dict[str, Any]:
        return {"N": self.N, "sigma_B_max": self.sigma_B_max, "d_min": self.d_min,
                "logsnr_max": self.logsnr_max, "logsnr_min": self.logsnr_min}
