"""UniPC (Zhao et al. 2023): a multistep predictor (UniP) and corrector (UniC), per coordinate."""
from __future__ import annotations

from torch import Tensor

from .common import check_option
from .exponential import exponential_step, extrapolation_to_data, lagrange_weights, sample_multistep

# UniPC's B(h) (bh1: h, bh2: e^h − 1), for the data prediction and with its sign folded in
B_H = {"bh1": lambda h, mu: h, "bh2": lambda h, mu: mu[0]}


def unipc_weights(variant: str):
    """UniP/UniC weights on nodes τ_j: with three or more predictions the system R ρ = b is solved,
    which is the exact integral of the polynomial through them (Lagrange); with two, UniPC fixes
    ρ = ½ and the slope (m_1 − m_0)/τ_1 gets B(h)/2 (exact: μ_1)."""
    b_h = B_H[variant]

    def weights(h, mu, nodes):
        if len(nodes) > 2:
            return lagrange_weights(mu, nodes)
        c = b_h(h, mu) / 2 / nodes[1]
        return [mu[0] - c, c]
    return weights


WEIGHTS = {v: unipc_weights(v) for v in B_H}  # one object per variant: the multiplier cache's key


def sample_unipc(denoise, x: Tensor, timesteps, coef, *, generator=None, callback=None, disable=False,
                 order: int = 3, corrector: bool = True, variant: str = "bh2", endpoint: str = "sigma2") -> Tensor:
    """UniPC-p: the order-p multistep predictor UniP-p, then UniC-p at the next point (Zhao et al. 2023).

    UniP-p steps t → u with the polynomial through the last p predictions x̂̄_0 (exact exponential
    Adams–Bashforth for p ≥ 3). Once x̂̄_0(u) is evaluated, UniC-p recomputes x̄_u from x̄_t with
    that prediction too (order p + 1), and the next step starts from the corrected x̄_u; the
    network is not called again. Orders warm up 1, 2, …, p and fall to 2, 1 over the last steps
    (diffusers' ``lower_order_final``). Per coordinate with h = λ_u − λ_t
    (gendiff.samplers.exponential). With ``endpoint="x0"`` equal to diffusers'
    ``UniPCMultistepScheduler`` (``solver_type`` = ``variant``) to 1e-5 (tests/test_diffusers_interop.py).

    Args:
        endpoint: the last step, to 0: ``"sigma2"`` extrapolates the last predictions to σ = 0
            in σ² (:func:`extrapolation_to_data`; measured better, docs/benchmarks.md), ``"x0"``
            returns x̂̄_0 at the last step as UniPC and diffusers do.
        order: p ≥ 1 (diffusers' ``solver_order``; the paper uses 3 for unconditional models).
        corrector: apply UniC (False: UniP alone; ``order=3`` is then DPM-Solver++(3M) with the
            exact weight on its second difference).
        variant: ``"bh2"`` (B(h) = e^h − 1, diffusers' default) or ``"bh1"`` (B(h) = h): the weight of
            the slope where only two predictions are combined.
    """
    order = check_option("order", order, 1, integer=True)
    if variant not in WEIGHTS:
        raise ValueError(f"variant must be one of {sorted(WEIGHTS)}, got {variant!r}")
    if endpoint not in ("x0", "sigma2"):
        raise ValueError(f"endpoint must be 'x0' or 'sigma2', got {endpoint!r}")
    weights = WEIGHTS[variant]

    def predictor(u, t, *earlier):
        return exponential_step(coef, weights, u, t, (t, *earlier))

    def correct(t, t_prev, *earlier):
        return exponential_step(coef, weights, t, t_prev, (t_prev, *earlier, t))

    def to_data(t, *earlier):
        return extrapolation_to_data(coef, (t, *earlier))

    return sample_multistep(denoise, x, timesteps, coef, predictor, lambda k, K: min(order, K - k),
                            correct if corrector else None, to_data if endpoint == "sigma2" else None,
                            callback=callback, disable=disable, desc=f"unipc-{order}")
