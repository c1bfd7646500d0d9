"""Stochastic samplers: the paper's reverse diffusion (Eq. 19–20) and the exact ancestral step."""
from __future__ import annotations

import torch
from torch import Tensor

from .common import cast, noise_like, report, step_pairs


def sample_reverse(denoise, x: Tensor, timesteps, coef, *, generator=None, callback=None,
                   disable=False) -> Tensor:
    """Reverse-diffusion predictor (Eq. 19–20, index and exponent fixed, DESIGN §2).

    x̄_{i−1} = (2 − r_i) x̄_i − (σ_i²/s_i) ε̂̄ + σ_i z̄, no noise on the last step. Meant for the
    full grid N..0; on a coarser grid (r, σ) are those of the composed transition t → u.
    """
    for t, u in step_pairs(timesteps, disable, "reverse"):
        x0 = denoise(x, t)
        report(callback, t, x, x0)
        e = coef.eps(x, x0, t)
        r, var = coef.transition(t, u)
        x = torch.addcmul(cast(2 - r, x) * x, cast(-var / coef.s(t), x), e)
        if u > 0:
            x = torch.addcmul(x, cast(var.sqrt(), x), noise_like(x, generator))
    return x


def sample_ancestral(denoise, x: Tensor, timesteps, coef, *, generator=None, callback=None,
                     disable=False) -> Tensor:
    """Sample the Gaussian posterior q(x̄_u | x̄_t, x̂̄_0) per coordinate (Ho et al. 2020, Eq. 7).

    μ = (a_u σ²/s_t²) x̂̄_0 + (r s_u²/s_t²) x̄_t, var = σ² s_u²/s_t², with r = a_t/a_u and
    σ² = s_t² − r² s_u². Every multiplier is bounded, so the step is stable even where a_t ≈ 0.
    """
    for t, u in step_pairs(timesteps, disable, "ancestral"):
        x0 = denoise(x, t)
        report(callback, t, x, x0)
        r, var = coef.transition(t, u)
        s_t2, s_u2 = coef.s2(t), coef.s2(u)
        x = torch.addcmul(cast(r * s_u2 / s_t2, x) * x, cast(coef.log_a(u).exp() * var / s_t2, x), x0)
        if u > 0:
            x = torch.addcmul(x, cast((var * s_u2 / s_t2).sqrt(), x), noise_like(x, generator))
    return x
