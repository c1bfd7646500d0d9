"""Inverse heat dissipation's sampler (Rissanen et al. 2023, Alg. 2)."""
from __future__ import annotations

from torch import Tensor

from .common import linear_step, report, step_pairs


def sample_ihdm(denoise, x: Tensor, timesteps, coef, *, generator=None, callback=None,
                disable=False, delta_scale: float = 1.25) -> Tensor:
    """μ = a_u x̂̄_0 (the predicted less-blurred image), then x̄_u = μ + δ z̄, none on the last step.

    δ = ``delta_scale`` · s_u: with IHDM's constant s = σ this is their δ = 1.25σ. The slightly
    larger-than-training noise is what makes the deterministic deblurring a sampler.
    """
    def multipliers(u):
        return None, coef.log_a(u).exp(), delta_scale * coef.s(u) if u > 0 else None

    for t, u in step_pairs(timesteps, disable, "ihdm"):
        x0 = denoise(x, t)
        report(callback, t, x, x0)
        x = linear_step(coef, ("ihdm", delta_scale, u), x, x0, generator, lambda: multipliers(u))
    return x
