"""Stochastic samplers: the paper's reverse diffusion (Eq. 19–20) and the exact ancestral step."""
from __future__ import annotations

from torch import Tensor

from .common import linear_step, report, step_pairs


def sample_reverse(denoise, x: Tensor, timesteps, coef, *, generator=None, callback=None,
                   disable=False) -> Tensor:
    """Reverse-diffusion predictor (Eq. 19–20, index and exponent fixed, docs/math.md, Errata).

    x̄_{i−1} = (2 − r_i) x̄_i − (σ_i²/s_i) ε̂̄ + σ_i z̄, no noise on the last step, with
    ε̂̄ = (x̄_i − a_i x̂̄_0)/s_i. Meant for the full grid N..0; on a coarser grid (r, σ) are those
    of the composed transition t → u.
    """
    def multipliers(t, u):
        r, var = coef.transition(t, u)
        a_t, s_t2 = coef.log_a(t).exp(), coef.s2(t)
        return 2 - r - var / s_t2, var * a_t / s_t2, var.sqrt() if u > 0 else None

    for t, u in step_pairs(timesteps, disable, "reverse"):
        x0 = denoise(x, t)
        report(callback, t, x, x0)
        x = linear_step(coef, ("reverse", t, u), x, x0, generator, lambda: multipliers(t, u))
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
        return r * s_u2 / s_t2, coef.log_a(u).exp() * var / s_t2, (var * s_u2 / s_t2).sqrt() if u > 0 else None

    for t, u in step_pairs(timesteps, disable, "ancestral"):
        x0 = denoise(x, t)
        report(callback, t, x, x0)
        x = linear_step(coef, ("ancestral", t, u), x, x0, generator, lambda: multipliers(t, u))
    return x
