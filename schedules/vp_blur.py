"""The paper's variance-preserving blur diffusion (Eq. 6, 9, Proposition 1; docs/math.md, Equations)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import Schedule, broadcast_step
from .noise import NOISE, log_alpha_bar
from .speed import SpeedSchedule


def fine_to_coarse_rates(rates: Tensor) -> Tensor:
    """ρ' = −log(1 − e^{−ρ}): replaces D by I − D (the paper's Fig. 3 ablation).

    ρ = 0 (D = 1, e.g. the DC of a circular blur) would map to an infinite rate; it is clamped
    at ρ ≥ 1e-12 (ρ' ≤ 27.6) so the signal is destroyed at once but stays finite.
    """
    return -torch.log(-torch.expm1(-rates.clamp_min(1e-12)))


class VPBlurSchedule(Schedule):
    """a_i = √ᾱ_i · exp(−F(i) ρ), s_i = √(1 − a_i²) (docs/math.md, Equations).

    A_i = (1 − β_i) D^{2f(i)} is the per-step signal factor, so r_i² = A_i and σ_i² = 1 − A_i.
    ``f ≡ 0`` (``f_N = f_1 = 0``) or the identity basis is standard DDPM.

    Args:
        f_type: blur speed form (see :class:`SpeedSchedule`); ignored when ``speed`` is given.
        f_N: f(N) = (σ_max/σ)²; the paper's rows use 0.140625 (quartic) and 0.6 (log).
        f_1: f(1) = (σ_min/σ)², 0 in the paper.
        N: number of steps (1000).
        noise: ``"linear"`` (β 1e-4 → 0.02), ``"cosine"`` or ``"logsnr-cosine"``.
        speed: a :class:`SpeedSchedule` (overrides f_type, f_N, f_1).
        fine_to_coarse: use D → I − D, generating fine-to-coarse (the paper's Fig. 3).
        noise_kwargs: extra arguments of the noise schedule (e.g. ``beta_1``, ``beta_N``).
    """

    name = "vp_blur"

    def __init__(self, f_type: str = "linear", f_N: float = 0.0, f_1: float = 0.0, N: int = 1000,
                 noise: str = "linear", speed: SpeedSchedule | None = None,
                 fine_to_coarse: bool = False, noise_kwargs: dict | None = None):
        super().__init__(N)
        self.speed = speed if speed is not None else SpeedSchedule(f_type, f_N, f_1)
        self.noise, self.noise_kwargs = noise, dict(noise_kwargs or {})
        self.fine_to_coarse = bool(fine_to_coarse)
        self.half_log_abar = torch.as_tensor(0.5 * log_alpha_bar(noise, self.N, **self.noise_kwargs))
        self.F = torch.as_tensor(self.speed.cumulative(self.N))
        if not (np.isfinite(self.F.numpy()).all() and np.isfinite(self.half_log_abar.numpy()).all()):
            raise ValueError("blur speed or noise schedule produced non-finite values")

    def log_a(self, i: Tensor, rates: Tensor) -> Tensor:
        i = broadcast_step(i, rates).cpu()
        F = self.F[i].to(rates.device)
        if self.fine_to_coarse:
            rates = fine_to_coarse_rates(rates)
        blur = torch.where(F == 0, torch.zeros((), dtype=F.dtype, device=F.device), F * rates)
        return self.half_log_abar[i].to(rates.device) - blur

    def s2(self, i: Tensor, rates: Tensor) -> Tensor:
        return -torch.expm1(2 * self.log_a(i, rates))

    def marginal(self, i: Tensor, rates: Tensor) -> tuple[Tensor, Tensor]:
        log_a = self.log_a(i, rates)  # once, not again inside s2
        return log_a.exp(), (-torch.expm1(2 * log_a)).sqrt()

    def transition(self, i: Tensor, rates: Tensor) -> tuple[Tensor, Tensor]:
        # Variance preserving: σ_i² = 1 − r_i² exactly; expm1 keeps it accurate when r_i ≈ 1.
        i = torch.as_tensor(i)
        log_r = self.log_a(i, rates) - self.log_a(i - 1, rates)
        return log_r.exp(), -torch.expm1(2 * log_r)

    def validation_rates(self, rates: Tensor) -> Tensor:
        # log r_i = ½Δlog ᾱ_i − f(i) ρ' is affine in ρ' (and ρ' is monotone in ρ), so σ_i² = 1 − r_i²
        # is ≥ 0 for every coordinate iff it is at the smallest and the largest rate.
        return torch.stack([rates.min(), rates.max()]).reshape(1, 1, 2)

    def config_args(self) -> dict[str, Any]:
        return {"f_type": self.speed.kind_name(), "f_N": self.speed.f_N, "f_1": self.speed.f_1,
                "N": self.N, "noise": NOISE.name_of(NOISE.resolve(self.noise)),
                "fine_to_coarse": self.fine_to_coarse,
                "noise_kwargs": self.noise_kwargs}
