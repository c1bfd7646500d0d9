"""DDIM (Song et al. 2021) per coordinate, on any decreasing grid."""
from __future__ import annotations

from torch import Tensor

from .common import check_option, linear_step, report, step_pairs


def sample_ddim(denoise, x: Tensor, timesteps, coef, *, generator=None, callback=None,
                disable=False, eta: float = 0.0) -> Tensor:
    """x̄_u = a_u x̂̄_0 + k ε̄' + c z̄,  k = √(s_u² − c²),  c = η · (posterior std of the ancestral step).

    η = 0 is the deterministic first-order solver of the probability-flow ODE; η = 1 is the
    ancestral sampler. ε̄' = (x̄_t − a_t x̂̄_0)/s_t is the noise consistent with x̂̄_0, so the
    step is (k/s_t) x̄_t + (a_u − k a_t/s_t) x̂̄_0 + c z̄.
    """
    eta = check_option("eta", eta)

    def multipliers(t, u):
        r, var = coef.transition(t, u)
        s_t, s_u2 = coef.s(t), coef.s2(u)
        c2 = eta ** 2 * var * s_u2 / s_t ** 2
        k = (s_u2 - c2).clamp_min(0).sqrt()
        return k / s_t, coef.a(u) - k * coef.a(t) / s_t, c2.sqrt() if eta > 0 and u > 0 else None

    for t, u in step_pairs(timesteps, disable, f"ddim(eta={eta:g})"):
        pred = denoise(x, t)
        report(callback, t, x, pred)
        x = linear_step(coef, x, pred.x0, generator, multipliers, t, u)
    return x
