"""DDIM (Song et al. 2021) per coordinate, on any decreasing grid."""
from __future__ import annotations

from torch import Tensor

from .common import cast, noise_like, report, step_pairs


def sample_ddim(denoise, x: Tensor, timesteps, coef, *, generator=None, callback=None,
                disable=False, eta: float = 0.0) -> Tensor:
    """x̄_u = a_u x̂̄_0 + √(s_u² − c²) ε̄' + c z̄,  c = η · (posterior std of the ancestral step).

    η = 0 is the deterministic first-order solver of the probability-flow ODE; η = 1 is the
    ancestral sampler. ε̄' = (x̄_t − a_t x̂̄_0)/s_t is the noise consistent with x̂̄_0.
    """
    for t, u in step_pairs(timesteps, disable, f"ddim(eta={eta:g})"):
        x0 = denoise(x, t)
        report(callback, t, x, x0)
        r, var = coef.transition(t, u)
        s_t, s_u2 = coef.s(t), coef.s2(u)
        e = coef.eps(x, x0, t)
        c2 = eta ** 2 * var * s_u2 / s_t ** 2
        x = cast(coef.log_a(u).exp(), x) * x0 + cast((s_u2 - c2).clamp_min(0).sqrt(), x) * e
        if eta > 0 and u > 0:
            x = x + cast(c2.sqrt(), x) * noise_like(x, generator)
    return x
