"""DPM-Solver++(2M) (Lu et al. 2022) with a per-coordinate log-SNR λ = log(a/s)."""
from __future__ import annotations

import torch
from torch import Tensor

from .common import cast, report, step_pairs


def sample_dpmpp_2m(denoise, x: Tensor, timesteps, coef, *, generator=None, callback=None,
                    disable=False) -> Tensor:
    """Second-order multistep exponential integrator in data-prediction form (Lu et al., Alg. 2).

    Every coordinate is an independent scalar diffusion, so the update applies elementwise with
    h = λ_u − λ_t per coordinate:
    x̄_u = (s_u/s_t) x̄_t + (1 − e^{−h}) a_u D,  D = (1 + 1/2r) x̂̄_0(t) − (1/2r) x̂̄_0(t_prev),
    r = h_prev/h. The last step to 0 (s = 0, λ = ∞) is first order, x̄_0 = x̂̄_0, as in k-diffusion.
    """
    prev = None
    for t, u in step_pairs(timesteps, disable, "dpm++2m"):
        x0 = denoise(x, t)
        report(callback, t, x, x0)
        if u == 0:
            return x0
        la_t, s_t, la_u, s_u = coef.log_a(t), coef.s(t), coef.log_a(u), coef.s(u)
        h = (la_u - s_u.log()) - (la_t - s_t.log())
        phi_a = -torch.expm1(-h) * la_u.exp()  # (1 − e^{−h}) a_u
        x_new = torch.addcmul(cast(s_u / s_t, x) * x, cast(phi_a, x), x0)
        if prev is not None:  # D = x̂_0 + (1/2r)(x̂_0 − x̂_0,prev), expanded to fuse the updates
            x0_p, h_p = prev
            w = phi_a * torch.where(h_p > 0, h / (2 * h_p), torch.zeros_like(h))
            x_new = torch.addcmul(torch.addcmul(x_new, cast(w, x), x0), cast(-w, x), x0_p)
        x, prev = x_new, (x0, h)
    return x
