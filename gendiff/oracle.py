"""Exact answers on Gaussian data: the oracle denoiser and each sampler's output variance.

For data x̄_0 ~ N(0, diag(λ)) in the diffusion's basis every coordinate stays Gaussian, the
exact ε-predictor is linear, ε̂̄ = s x̄ / (a²λ + s²), and so every sampler step is linear with
Gaussian noise. The recursions below follow each sampler's update as written in its paper
(scalar per coordinate, float64) and give the exact output variance — written independently of
``gendiff.samplers`` so tests can check the samplers against them, and the benchmark can report
KL(sampled ‖ data) without Monte Carlo error.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def oracle_model(diffusion, lam: Tensor):
    """``model(x_i, i) -> ε̂`` (pixel space) exact for data N(0, U diag(λ) Uᵀ)."""
    def model(x: Tensor, i: Tensor) -> Tensor:
        a, s = diffusion.marginal(i)
        k = (s / (a ** 2 * lam + s ** 2)).to(x.dtype)
        return diffusion.from_basis(k * diffusion.to_basis(x))
    return model


def _ms(diffusion, i: int):
    """(log a_i, a_i, s_i); log a stays finite where a_i underflows to 0."""
    i = torch.tensor([i])
    la = diffusion.schedule.log_a(i, diffusion.basis.rates.to(torch.float64))[0]
    return la, la.exp(), diffusion.marginal(i)[1][0]


def _x0_gain(a, s, lam):
    """E[x̄_0 | x̄_t] = aλ/(a²λ + s²) x̄_t (the oracle's x̂̄_0, no division by a)."""
    return a * lam / (a ** 2 * lam + s ** 2)


def output_variance(diffusion, lam: Tensor, sampler: str, timesteps: list[int],
                    eta: float = 0.0, delta_scale: float = 1.25, quiet_steps: int = 2,
                    v_T: Tensor | None = None) -> Tensor:
    """Per-coordinate variance of the samples (coefficient space).

    Args:
        diffusion, lam: the process and the data's per-coordinate variance λ.
        sampler, timesteps: which sampler, on which grid (``eta``, ``delta_scale``,
            ``quiet_steps`` as in it).
        v_T: the variance of the start x̄_{t0}; default s_{t0}², the Gaussian prior.
    """
    lam = lam.to(torch.float64)
    _, a_T, s_T = _ms(diffusion, timesteps[0])
    v_T = s_T ** 2 if v_T is None else v_T
    g, v = torch.ones_like(lam), torch.zeros_like(lam)  # x = g·x_T + noise(var v)
    h_prev, x0g_prev = None, None
    for n, (t, u) in enumerate(zip(timesteps[:-1], timesteps[1:])):
        (la_t, a_t, s_t), (la_u, a_u, s_u) = _ms(diffusion, t), _ms(diffusion, u)
        k = s_t / (a_t ** 2 * lam + s_t ** 2)           # ε̂ = k x_t
        x0 = _x0_gain(a_t, s_t, lam)                    # x̂_0 = x0 · x_t
        r = torch.exp(la_t - la_u)
        var = (s_t ** 2 - r ** 2 * s_u ** 2).clamp_min(0)
        c2 = torch.zeros_like(lam)
        if sampler == "reverse":                         # Eq. 20: (2 − r)x − σ²/s ε̂ + σ z
            m = 2 - r - var / s_t * k
            c2 = var if n < len(timesteps) - 1 - quiet_steps else c2
        elif sampler == "ihdm":                          # μ = a_u x̂_0, then + δ z
            m = a_u * x0
            c2 = (delta_scale * s_u) ** 2 if u > 0 else c2
        elif sampler in ("ancestral", "ddim"):
            post = var * s_u ** 2 / s_t ** 2             # posterior variance (Ho et al. Eq. 7)
            c2 = post if sampler == "ancestral" else eta ** 2 * post
            if sampler == "ancestral":                   # μ̃ = a_u σ²/s_t² x̂_0 + r s_u²/s_t² x_t
                m = a_u * var / s_t ** 2 * x0 + r * s_u ** 2 / s_t ** 2
            else:                                        # DDIM: a_u x̂_0 + √(s_u² − c²) ε̂ + c z
                m = a_u * x0 + (s_u ** 2 - c2).clamp_min(0).sqrt() * k
        elif sampler == "dpm++2m":
            if u == 0:
                g = x0 * g
                break
            h = (la_u - torch.log(s_u)) - (la_t - torch.log(s_t))
            phi = 1 - torch.exp(-h)
            if h_prev is None:                           # first step: DPM-Solver++(1) = DDIM(0)
                new_g = (s_u / s_t) * g + phi * a_u * x0 * g
            else:                                        # Lu et al. 2022, Alg. 2
                rr = h_prev / h
                d = (1 + 1 / (2 * rr)) * x0 * g - (1 / (2 * rr)) * x0g_prev
                new_g = (s_u / s_t) * g + phi * a_u * d
            h_prev, x0g_prev, g = h, x0 * g, new_g
            continue
        else:
            raise ValueError(f"no oracle recursion for sampler {sampler!r}")
        g, v = m * g, m ** 2 * v + c2
    return g ** 2 * v_T + v


def gaussian_kl(v: Tensor, lam: Tensor) -> float:
    """Mean over coordinates of KL(N(0, v) ‖ N(0, λ)), in nats per dimension."""
    q = v / lam
    return float((0.5 * (q - 1 - torch.log(q))).mean())


def gaussian_entropy_bpd(lam: Tensor) -> float:
    """The exact NLL of data N(0, U diag(λ) Uᵀ): its differential entropy, bits/dim."""
    return float((0.5 * torch.log(2 * math.pi * math.e * lam.to(torch.float64))).mean() / math.log(2))


def expected_bound_bpd(diffusion, lam: Tensor, mean: str = "posterior", variance: str = "transition") -> float:
    """E[the variational bound of ``gendiff.likelihood.nll``] in bits/dim, in closed form, for data
    N(0, U diag(λ) Uᵀ), the exact ε and the continuous decoder (docs/math.md, "Likelihood").

    The exact ε̂̄ = k x̄_i makes the reverse mean c x̄_i, so every term is a Gaussian expectation
    of a quadratic in (x̄_0, ε̄). ``mean``: ``"posterior"`` or ``"reverse"`` (Eq. 19–20), as in
    ``nll``; ``variance``: ``"transition"`` (σ_i²), ``"posterior"`` (σ̃_i²) or ``"exact"``, the
    true Var(x̄_{i−1} | x̄_i) of this data (the decoder's too), with which the posterior mean
    makes the bound equal to the exact NLL: it splits a gap into the mean's part and the
    variance's.
    """
    lam, rho, sch = lam.to(torch.float64), diffusion.basis.rates.to(torch.float64), diffusion.schedule
    i = torch.arange(1, diffusion.N + 1)
    la_p, la, s2_p, s2 = sch.log_a(i - 1, rho), sch.log_a(i, rho), sch.s2(i - 1, rho), sch.s2(i, rho)
    r, a = torch.exp(la - la_p), la.exp()
    var = s2 - r ** 2 * s2_p
    k = s2.sqrt() / (a ** 2 * lam + s2)                      # ε̂̄ = k x̄_i
    c = {"reverse": 2 - r - var / s2.sqrt() * k,            # μ_θ = c x̄_i
         "posterior": torch.exp(la_p - la) * (1 - var / s2.sqrt() * k)}[mean]
    A, B = la_p.exp() * var / s2, r * s2_p / s2              # μ̃ = A x̄_0 + B x̄_i
    err = (A + (B - c) * a) ** 2 * lam + (B - c) ** 2 * s2   # E(μ̃ − μ_θ)²
    v_q = var * s2_p / s2
    v_p = {"transition": var, "posterior": v_q, "exact": v_q + A ** 2 * lam * s2 / (a ** 2 * lam + s2)}[variance]
    kl = 0.5 * (torch.log(v_p / v_q) + (v_q + err) / v_p - 1)[1:].sum(0)
    v_1 = v_p[0] if variance == "exact" else var[0]  # the decoder's: σ_1² in nll (σ̃_1 = 0)
    dec = 0.5 * torch.log(2 * math.pi * v_1) + ((1 - c[0] * a[0]) ** 2 * lam + c[0] ** 2 * s2[0]) / (2 * v_1)
    prior = 0.5 * a[-1] ** 2 * lam / s2[-1]
    return float((kl + dec + prior).mean() / math.log(2))


class _Counted:
    """The oracle network, counting its calls (network evaluations, one per batched call)."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, x: Tensor, i: Tensor) -> Tensor:
        self.calls += 1
        return self.model(x, i)


def linear_output_variance(diffusion, lam: Tensor, sampler="dpm++2m", *, shape=None,
                           check_deterministic: bool = True, **sample_kwargs) -> tuple[Tensor, int]:
    """Exact per-coordinate output variance of any deterministic sampler, from one run.

    With the exact (linear) oracle every deterministic sampler is a linear map per coordinate,
    x̄_0 = g ⊙ x̄_T, so starting from x̄_T = s_T·1 gives g·s_T and the output variance
    g² s_T² = (x̄_0)² exactly: no recursion written per sampler, so it holds for a user's
    sampler too, and there is no Monte-Carlo floor.

    Args:
        diffusion, lam: the process and the data's per-coordinate variance λ (coefficient shape).
        sampler: a registered name, an import path or a :class:`gendiff.samplers.Sampler`'s name
            as ``Diffusion.sample`` takes it.
        shape: the sample shape, batch 1 (default ``(1, *lam.shape)``, ``lam`` with a channel axis).
        check_deterministic: run a second time with another generator and refuse a sampler whose
            output changes (it adds noise: use the Monte-Carlo check instead).
        sample_kwargs: ``steps``, ``timesteps``, ``start`` and sampler options, as ``sample``.
    Returns:
        (variance in coefficient space, network evaluations the sampler made).
    """
    lam = lam.to(torch.float64)
    shape = tuple(shape) if shape is not None else (1, *lam.shape)

    def run(seed: int) -> tuple[Tensor, int]:
        model = _Counted(oracle_model(diffusion, lam))

        def unit_prior(d, shape_, t0, generator, dtype, device):
            s = d.marginal(torch.tensor([t0], device=device))[1].to(dtype)
            return s * torch.ones(shape_, dtype=dtype, device=device)
        x = diffusion.sample(model, shape, sampler=sampler, prior=unit_prior, dtype=torch.float64,
                             generator=torch.Generator().manual_seed(seed), progress=False, **sample_kwargs)
        return diffusion.to_basis(x)[0] ** 2, model.calls

    v, calls = run(0)
    if check_deterministic:
        v2, _ = run(1)
        if not torch.allclose(v, v2, rtol=1e-12, atol=0.0):
            raise ValueError(f"sampler {sampler!r} is not deterministic (its output depends on the generator): "
                             "the linear-oracle variance holds only for deterministic samplers")
    return v, calls
