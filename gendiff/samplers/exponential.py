"""The exponential integrator in data-prediction form, per coordinate, and its multistep loop.

Every coordinate is a scalar diffusion with its own λ = log(a/s) (docs/math.md, Notation). Over
a step t → u with h = λ_u − λ_t the probability-flow ODE gives exactly (DPM-Solver++, Lu et al.
2022: the solution of the data-prediction ODE)

    x̄_u = (s_u/s_t) x̄_t + a_u h ∫_0^1 e^{−h(1−τ)} x̂̄_0(λ_t + hτ) dτ .

A multistep method replaces x̂̄_0 by the polynomial through predictions already made, at nodes
τ_j = (λ_{t_j} − λ_t)/h (τ_0 = 0 the newest; earlier steps are at τ < 0, a corrector's new
prediction at τ = 1). Integrating that polynomial needs only the moments
μ_n(h) = h ∫_0^1 e^{−h(1−τ)} τ^n dτ, so every solver here is a set of per-coordinate weights
w_j(h, τ) on the stored x̂̄_0's: x̄_u = (s_u/s_t) x̄_t + a_u Σ_j w_j x̂̄_0(t_j). Nothing is divided
by a; where a_u underflows the step is x̄_u = (s_u/s_t) x̄_t, as it should be.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from .common import step_pairs

SERIES_TERMS = 20  # |h| < 1: the series' remainder is below h^21/21! ≈ 2e-20


def moments(h: Tensor, n: int) -> list[Tensor]:
    """μ_0..μ_n of h, elementwise: μ_k(h) = h ∫_0^1 e^{−h(1−τ)} τ^k dτ (μ_0 = 1 − e^{−h}).

    For |h| ≥ 1 by parts, μ_k = 1 − k μ_{k−1}/h (error grows at most k/h per order); below, where
    that recurrence cancels catastrophically, by the series μ_k = h Σ_j (−h)^j k!/(k + j + 1)!.
    """
    small = h.abs() < 1
    hs, hl = torch.where(small, h, 0.0), torch.where(small, 1.0, h)
    out, rec = [], -torch.expm1(-hl)
    for k in range(n + 1):
        term = hs / (k + 1)
        series = term
        for j in range(1, SERIES_TERMS):
            term = term * (-hs) / (k + j + 1)
            series = series + term
        if k > 0:
            rec = 1 - k * rec / hl
        out.append(torch.where(small, series, rec))
    return out


def divided_difference(nodes: Sequence[Tensor]) -> list[Tensor]:
    """Weights of f[τ_0, …, τ_m] = Σ_j f(τ_j) / Π_{i≠j}(τ_j − τ_i) (Newton's divided difference)."""
    out = []
    for j, tj in enumerate(nodes):
        denom = torch.ones_like(tj)
        for i, ti in enumerate(nodes):
            if i != j:
                denom = denom * (tj - ti)
        out.append(1 / denom)
    return out


def lagrange_weights(mu: Sequence[Tensor], nodes: Sequence[Tensor]) -> list[Tensor]:
    """Weights w_j = ∫ kernel · L_j of the polynomial through ``nodes`` (τ_j, distinct).

    L_j(τ) = Π_{i≠j} (τ − τ_i)/(τ_j − τ_i) is expanded in powers of τ and each power τ^n
    integrates to ``mu[n]``; exact for x̂̄_0 a polynomial of degree < len(nodes).
    """
    weights = []
    for j, inv_denom in enumerate(divided_difference(nodes)):
        poly = [torch.ones_like(inv_denom)]
        for ti in nodes[:j] + nodes[j + 1:]:  # poly ← poly · (τ − τ_i)
            poly = [(poly[k - 1] if k > 0 else 0) - (ti * poly[k] if k < len(poly) else 0)
                    for k in range(len(poly) + 1)]
        weights.append(sum(c * m for c, m in zip(poly, mu)) * inv_denom)
    return weights


def exponential_step(coef, weights: Callable, u: int, t: int, steps: Sequence[int]) -> tuple:
    """(s_u/s_t, a_u w_j for each of ``steps``): the multipliers of the step t → u from x̂̄_0 at
    ``steps`` (``steps[0] == t``, the node τ = 0).

    ``weights(h, mu, nodes) -> [w_j]`` gets h, the moments μ_0..μ_len(steps) and the nodes
    τ_j = (λ_{steps_j} − λ_t)/h. In a coordinate where h = 0 or two nodes coincide (λ does not
    move there, e.g. IHDM's mean colour) the nodes are undefined and the step is first order
    there: μ_0 on x̂̄_0(t), 0 on the others — the update every solver makes on its first step.
    """
    lam_t = coef.log_snr(t)
    h = coef.log_snr(u) - lam_t
    lams = [coef.log_snr(s) for s in steps]
    ok = h != 0
    for i in range(len(lams)):
        for j in range(i):
            ok = ok & (lams[i] != lams[j])
    safe_h = torch.where(ok, h, 1.0)
    nodes = [torch.where(ok, (lj - lam_t) / safe_h, float(j)) for j, lj in enumerate(lams)]
    mu = moments(h, len(steps))
    w = weights(h, mu, nodes) if len(steps) > 1 else [mu[0]]
    a_u = coef.a(u)
    return (coef.s(u) / coef.s(t), *[a_u * torch.where(ok, wj, mu[0] if j == 0 else 0.0)
                                     for j, wj in enumerate(w)])


def extrapolation_to_data(coef, steps: Sequence[int]) -> tuple:
    """(None, L_j(0) for each of ``steps``): x̄_0 = P(0) with P the polynomial in σ² = e^{−2λ}
    through x̂̄_0 at ``steps`` — Lagrange's weights at σ² = 0,
    L_j(0) = Π_{i≠j} σ_i²/(σ_i² − σ_j²) = Π_{i≠j} −1/expm1(2(λ_i − λ_j)).

    Near the data x̂̄_0 is smooth in σ² (Tweedie: x̂_0 = x + σ² ∇log p), while the λ-polynomials
    of the steps above diverge at λ = ∞; a prediction far from the data (σ_i² ≫ σ_j²) gets a
    weight of order σ_j²/σ_i², so the extrapolation is bounded. Where two λ coincide the
    coordinate keeps x̂̄_0 at the last step.
    """
    lams = [coef.log_snr(s) for s in steps]
    ok = torch.ones_like(lams[0], dtype=torch.bool)
    weights = []
    for j, lj in enumerate(lams):
        w = torch.ones_like(lj)
        for i, li in enumerate(lams):
            if i != j:
                ok = ok & (li != lj)
                w = w * (-1 / torch.expm1(2 * (li - lj)))
        weights.append(w)
    return (None, *[torch.where(ok, w, 1.0 if j == 0 else 0.0) for j, w in enumerate(weights)])


def combine(coef, multipliers: Callable, x: Tensor, x0s: Sequence[Tensor], *args) -> Tensor:
    """A ⊙ x̄ + Σ_j B_j ⊙ x̂̄_0(t_j) with (A, B_0, …) = ``multipliers(*args)`` (A may be None),
    computed once per grid and cast to the sample dtype (:meth:`Coefficients.cached`)."""
    a, *b = coef.cached(multipliers, *args)
    out = None if a is None else a * x
    for bj, x0 in zip(b, x0s):
        out = bj * x0 if out is None else torch.addcmul(out, bj, x0)
    return out


def sample_multistep(denoise, x: Tensor, timesteps, coef, predictor: Callable, order: Callable[[int, int], int],
                     corrector: Callable | None = None, endpoint: Callable | None = None, *, callback=None,
                     disable=False, desc="multistep") -> Tensor:
    """The loop every multistep solver here shares: one network evaluation per step.

    Args:
        predictor: ``predictor(u, t, *earlier) -> (A, B_t, B_earlier…)``, the multipliers of the
            step t → u from x̂̄_0 at t and at the ``earlier`` grid steps (newest first).
        order: ``order(k, K) -> p``: the k-th of K steps uses p predictions (capped by those made).
        corrector: ``corrector(t, t_prev, *earlier) -> (A, B_prev, B_earlier…, B_t)``: x̄_t
            recomputed from x̄_{t_prev} once x̂̄_0(t) is known, with the predictions the predictor
            of that step used plus the new one (UniC, Zhao et al. 2023); no extra evaluation.
        endpoint: ``endpoint(t, *earlier) -> (None, B_t, B_earlier…)``: the last step, to 0
            (s = 0, λ = ∞), from x̂̄_0 at t and the predictions the step before used; default
            x̄_0 = x̂̄_0(t) (k-diffusion, diffusers).
    """
    K = len(timesteps) - 1
    steps: list[int] = []  # the grid steps of the predictions the next step may use, newest first
    x0s: list[Tensor] = []
    x_prev = None
    for k, (t, u) in enumerate(step_pairs(timesteps, disable, desc)):
        x0 = denoise(x, t).x0
        if callback is not None:
            callback({"i": t, "x": x, "x0": x0})
        if u == 0:
            return x0 if endpoint is None else combine(coef, endpoint, x, [x0, *x0s], t, *steps)
        if corrector is not None and steps:
            x = combine(coef, corrector, x_prev, [*x0s, x0], t, *steps)
        p = min(order(k, K), len(steps) + 1)
        steps, x0s = [t, *steps[:p - 1]], [x0, *x0s[:p - 1]]
        x_prev = x
        x = combine(coef, predictor, x, x0s, u, *steps)
    return x
