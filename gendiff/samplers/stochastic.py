"""Stochastic samplers: the paper's reverse diffusion (Eq. 19–20) and the exact ancestral step."""
from __future__ import annotations

from torch import Tensor

from .common import check_option, linear_step, report, step_pairs


def sample_reverse(denoise, x: Tensor, timesteps, coef, *, generator=None, callback=None,
                   disable=False, quiet_steps: int = 2) -> Tensor:
    """Reverse-diffusion predictor, Eq. 20 (index and exponent fixed, docs/math.md, Errata).

    x̄_u = (2 − r) x̄_t − (σ²/s_t) ε̂̄ + σ z̄ with the network's own ε̂̄ (never through x̂̄_0), and
    no noise on the last ``quiet_steps`` steps (the official loop: 2, docs/benchmarks.md). Meant
    for the full grid; on a coarser grid (r, σ²) are those of the composed transition t → u.
    """
    quiet_steps = check_option("quiet_steps", quiet_steps, 0, integer=True)

    def multipliers(t, u, noisy):
        r, var = coef.transition(t, u)
        return 2 - r, -var / coef.s(t), var.sqrt() if noisy else None

    last = len(timesteps) - 1 - quiet_steps
    for k, (t, u) in enumerate(step_pairs(timesteps, disable, "reverse")):
        pred = denoise(x, t)
        report(callback, t, x, pred)
        x = linear_step(coef, x, pred.eps, generator, multipliers, t, u, k < last)
    return x


def sample_ancestral(denoise, x: Tensor, timesteps, coef, *, generator=None, callback=None,
                     disable=False) -> Tensor:
    """Sample the Gaussian posterior q(x̄_u | x̄_t, x̂̄_0) per coordinate (Ho et al. 2020, Eq. 7).

    μ = (a_u σ²/s_t²) x̂̄_0 + (r s_u²/s_t²) x̄_t, var = σ² s_u²/s_t², with r = a_t/a_u and
    σ² = s_t² − r² s_u². Every multiplier is bounded, so the step is stable even where a_t ≈ 0.
    """
    def multipliers(t, u):
        r, var = coef.transition(t, u)
        s_t2, s_u2 = coef.s2(t), coef.s2(u)
        return r * s_u2 / s_t2, coef.a(u) * var / s_t2, (var * s_u2 / s_t2).sqrt() if u > 0 else None

    for t, u in step_pairs(timesteps, disable, "ancestral"):
        pred = denoise(x, t)
        report(callback, t, x, pred)
        x = linear_step(coef, x, pred.x0, generator, multipliers, t, u)
    return x
