"""DPM-Solver++(2M) and (3M) (Lu et al. 2022) with a per-coordinate log-SNR λ = log(a/s)."""
from __future__ import annotations

from torch import Tensor

from .exponential import divided_difference, exponential_step, lagrange_weights, sample_multistep


def half_difference(h, mu, nodes):
    """Two predictions at τ = 0 and τ_1: x̂̄_0 ≈ m_0 + τ (m_1 − m_0)/τ_1 with the slope's integral
    μ_1 replaced by μ_0/2 (Lu et al. 2022, Alg. 2; equal to second order)."""
    c = mu[0] / 2 / nodes[1]
    return [mu[0] - c, c]


def dpmpp_3m_weights(h, mu, nodes):
    """Third order as published (Lu et al.'s code, diffusers, k-diffusion): the quadratic through
    the three predictions, except that its second divided difference D_2 gets μ_2/2 where the
    exact integral has μ_2, so the step is exact only for linear x̂̄_0 (docs/math.md)."""
    if len(nodes) == 2:
        return half_difference(h, mu, nodes)
    exact, d2 = lagrange_weights(mu, nodes), divided_difference(nodes)
    return [w - mu[2] / 2 * d for w, d in zip(exact, d2)]


def _predictor(coef, weights):
    def multipliers(u, t, *earlier):
        return exponential_step(coef, weights, u, t, (t, *earlier))
    return multipliers


def sample_dpmpp_2m(denoise, x: Tensor, timesteps, coef, *, generator=None, callback=None,
                    disable=False) -> Tensor:
    """Second-order multistep exponential integrator in data-prediction form (Lu et al., Alg. 2).

    Every coordinate is an independent scalar diffusion, so the update applies elementwise with
    h = λ_u − λ_t per coordinate:
    x̄_u = (s_u/s_t) x̄_t + (1 − e^{−h}) a_u D,  D = (1 + 1/2r) x̂̄_0(t) − (1/2r) x̂̄_0(t_prev),
    r = h_prev/h. The last step to 0 (s = 0, λ = ∞) is first order, x̄_0 = x̂̄_0, as in k-diffusion.
    """
    return sample_multistep(denoise, x, timesteps, coef, _predictor(coef, half_difference), lambda k, K: 2,
                            callback=callback, disable=disable, desc="dpm++2m")


def dpmpp_3m_order(k: int, K: int) -> int:
    """diffusers' orders: 1, 2, then 3; with fewer than 15 steps the step before the last is
    second order ("lower_order_final", for stability at few steps)."""
    return min(3, K - k) if K < 15 else 3


def sample_dpmpp_3m(denoise, x: Tensor, timesteps, coef, *, generator=None, callback=None,
                    disable=False) -> Tensor:
    """DPM-Solver++(3M): third-order multistep in data-prediction form, per coordinate.

    x̄_u = (s_u/s_t) x̄_t + a_u (μ_0 D_0 + μ_1 D_1 + ½ μ_2 D_2) with D_0 = x̂̄_0(t) and D_1, D_2 the
    first and second Newton differences of the last three predictions in units of h
    (Lu et al. 2022, the multistep third-order update of their code; diffusers'
    ``DPMSolverMultistepScheduler(solver_order=3)`` to 1e-5, tests/test_diffusers_interop.py).
    μ_n are the moments of :mod:`gendiff.samplers.exponential`. As published the ½ on D_2 makes
    the local error O(h³): it converges at second order (docs/benchmarks.md measures it);
    ``unipc`` with ``order=3, corrector=False`` is the same step with the exact μ_2.
    """
    return sample_multistep(denoise, x, timesteps, coef, _predictor(coef, dpmpp_3m_weights), dpmpp_3m_order,
                            callback=callback, disable=disable, desc="dpm++3m")
