"""DPM-Solver++(2M) (Lu et al. 2022) with a per-coordinate log-SNR λ = log(a/s)."""
from __future__ import annotations

import torch
from torch import Tensor

from .common import step_pairs


def sample_dpmpp_2m(denoise, x: Tensor, timesteps, coef, *, generator=None, callback=None,
                    disable=False) -> Tensor:
    """Second-order multistep exponential integrator in data-prediction form (Lu et al., Alg. 2).

    Every coordinate is an independent scalar diffusion, so the update applies elementwise with
    h = λ_u − λ_t per coordinate:
    x̄_u = (s_u/s_t) x̄_t + (1 − e^{−h}) a_u D,  D = (1 + 1/2r) x̂̄_0(t) − (1/2r) x̂̄_0(t_prev),
    r = h_prev/h. The last step to 0 (s = 0, λ = ∞) is first order, x̄_0 = x̂̄_0, as in k-diffusion.
    """
    def multipliers(t_prev, t, u):  # x̄_u = A x̄_t + B x̂̄_0(t) + B' x̂̄_0(t_prev)
        h = coef.log_snr(u) - coef.log_snr(t)
        phi_a = -torch.expm1(-h) * coef.a(u)  # (1 − e^{−h}) a_u
        w = torch.zeros_like(h)
        if t_prev is not None:
            h_p = coef.log_snr(t) - coef.log_snr(t_prev)
            w = torch.where(h_p > 0, h / (2 * h_p), w)  # 1/(2r)
        return coef.s(u) / coef.s(t), phi_a * (1 + w), -phi_a * w

    t_prev, x0_p = None, None
    for t, u in step_pairs(timesteps, disable, "dpm++2m"):
        x0 = denoise(x, t).x0
        if callback is not None:
            callback({"i": t, "x": x, "x0": x0})
        if u == 0:
            return x0
        a, b, b_p = coef.cached(multipliers, t_prev, t, u)
        x = torch.addcmul(a * x, b, x0)
        if x0_p is not None:
            x = torch.addcmul(x, b_p, x0_p)
        t_prev, x0_p = t, x0
    return x
