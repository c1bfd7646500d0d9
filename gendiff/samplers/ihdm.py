"""Inverse heat dissipation's sampler (Rissanen et al. 2023, Alg. 2)."""
from __future__ import annotations

from torch import Tensor

from .common import check_option, noise_like, report, step_pairs


def sample_ihdm(denoise, x: Tensor, timesteps, coef, *, generator=None, callback=None,
                disable=False, delta_scale: float = 1.25) -> Tensor:
    """x̄_u = μ̄ + δ z̄ with μ̄ the predicted a_u x̄_0, no noise on the last step.

    With the residual-mean parameterization on the full grid μ̄ is the network's ū + f̄(u, k)
    itself (never formed through a_{k−1}, which underflows float64 for k ≥ 199 at 32²).
    δ = ``delta_scale`` · s_u: with IHDM's constant s = σ this is their δ = 1.25σ.
    """
    delta_scale = check_option("delta_scale", delta_scale)

    def multipliers(u):
        return None, None, delta_scale * coef.s(u) if u > 0 else None

    for t, u in step_pairs(timesteps, disable, "ihdm"):
        pred = denoise(x, t)
        report(callback, t, x, pred)
        _, _, c = coef.cached(multipliers, u)
        x = pred.signal(u) if c is None else pred.signal(u).addcmul(c, noise_like(x, generator))
    return x
