"""Inverse heat dissipation (Rissanen et al., ICLR 2023) as a schedule (docs/family.md)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import Schedule, broadcast_step, distinct_rates


class HeatDissipationSchedule(Schedule):
    """a_k = exp(−λ σ_B,k²/2), s_k = σ for k ≥ 1 (not variance preserving). Use with DCTBasis.

    The heat equation run for time t = σ_B²/2 multiplies DCT coordinate λ by exp(−λt); σ_B,k
    is log-spaced from ``sigma_B_min`` to ``sigma_B_max`` over k = 1..K and σ_B,0 = 0.

    Args:
        K: number of levels (100–400 in the paper; 200 for 32×32).
        sigma_B_max: final blur std in pixels (≈ image side × 0.75; 24 at 32×32, 20 at 28×28).
        sigma_B_min: first blur std (0.5).
        sigma: training noise std σ (0.01); the sampler adds δ = 1.25σ.
    """

    name = "heat"
    prior = "blurred_data"  # a kernel density estimate of q(u_K): needs the training images

    def __init__(self, K: int = 200, sigma_B_max: float = 24.0, sigma_B_min: float = 0.5,
                 sigma: float = 0.01):
        super().__init__(K)
        if not 0 < sigma_B_min < sigma_B_max:
            raise ValueError(f"need 0 < sigma_B_min < sigma_B_max, got {sigma_B_min}, {sigma_B_max}")
        self.sigma_B_max, self.sigma_B_min, self.sigma = float(sigma_B_max), float(sigma_B_min), float(sigma)
        sb = np.exp(np.linspace(np.log(sigma_B_min), np.log(sigma_B_max), K))
        self.tau = torch.as_tensor(np.concatenate([[0.0], sb ** 2 / 2]))  # heat time t_k = σ_B,k²/2

    def log_a(self, i: Tensor, rates: Tensor) -> Tensor:
        i = broadcast_step(i, rates).cpu()
        return -self.tau[i].to(rates.device) * rates

    def s2(self, i: Tensor, rates: Tensor) -> Tensor:
        i = broadcast_step(i, rates).to(rates.device)
        s2 = torch.full_like(rates, self.sigma ** 2)  # float64, like rates: σ² = 1e-4 exactly
        return torch.where(i > 0, s2, torch.zeros_like(s2))

    def validation_rates(self, rates: Tensor) -> Tensor:
        return distinct_rates(rates)  # a function of ρ alone

    def config_args(self) -> dict[str, Any]:
        return {"K": self.N, "sigma_B_max": self.sigma_B_max, "sigma_B_min": self.sigma_B_min,
                "sigma": self.sigma}
