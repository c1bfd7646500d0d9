"""The variational bound (gendiff.likelihood) against exact answers on Gaussian data."""
import math

import pytest
import torch
from scipy.stats import norm

from gendiff import DCTBasis, Diffusion, FourierBasis, GaussianBlurBasis, IdentityBasis
from gendiff.likelihood import _log_bin_prob, nll
from gendiff.oracle import oracle_model
from gendiff.schedules import HeatDissipationSchedule, VPBlurSchedule

SHAPE = (8, 8)
D = SHAPE[0] * SHAPE[1]


def gaussian(N, blur=False):
    """Data N(0, U diag(λ) Uᵀ) with power falling with frequency; the log-SNR-cosine noise keeps
    its end points fixed as N grows, and the blur's total F(N) is fixed too (f(N) ∝ 1/N)."""
    basis = GaussianBlurBasis(SHAPE, sigma=0.8) if blur else DCTBasis(SHAPE)
    sched = VPBlurSchedule("quartic" if blur else "none", 20.0 / N if blur else 0.0, N=N, noise="logsnr-cosine")
    d = Diffusion(basis, sched)
    lam = 0.02 + 0.5 / (1.0 + 5 * basis.rates)
    return d, lam


def draw(d, lam, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return d.basis.inverse(lam.sqrt() * torch.randn(n, 1, *SHAPE, generator=g, dtype=torch.float64)), g


def entropy_bpd(lam):
    """The exact NLL of the data distribution: its differential entropy, bits/dim."""
    return float((0.5 * torch.log(2 * math.pi * math.e * lam)).sum() / (D * math.log(2)))


def expected_bound_bpd(d, lam):
    """E[bound] for the linear oracle in closed form, written from docs/math.md independently of
    the library: every term is a Gaussian expectation of a quadratic in (x̄_0, ε̄)."""
    rho, s, i = d.basis.rates.double(), d.schedule, torch.arange(1, d.N + 1)
    la_p, la, s2_p, s2 = s.log_a(i - 1, rho), s.log_a(i, rho), s.s2(i - 1, rho), s.s2(i, rho)
    r, a = (la - la_p).exp(), la.exp()
    var = s2 - r ** 2 * s2_p
    c = 2 - r - var / s2.sqrt() * s2.sqrt() / (a ** 2 * lam + s2)   # μ_θ = c x̄_i (Eq. 19–20)
    A, B = la_p.exp() * var / s2, r * s2_p / s2                      # μ̃ = A x̄_0 + B x̄_i
    err = (A + (B - c) * a) ** 2 * lam + (B - c) ** 2 * s2            # E(μ̃ − μ_θ)²
    v_q = var * s2_p / s2
    kl = 0.5 * (torch.log(var / v_q) + (v_q + err) / var - 1)[1:]
    dec = 0.5 * torch.log(2 * math.pi * var[0]) + ((1 - c[0] * a[0]) ** 2 * lam + c[0] ** 2 * s2[0]) / (2 * var[0])
    prior = 0.5 * a[-1] ** 2 * lam / s2[-1]
    return float((kl.sum(0) + dec + prior).sum() / (D * math.log(2)))


@pytest.mark.parametrize("blur", [False, True])
def test_bound_is_above_the_exact_nll_and_approaches_it(blur):
    H, gaps = None, []
    for N in (10, 100, 1000):
        d, lam = gaussian(N, blur)
        H = entropy_bpd(lam)
        x0, g = draw(d, lam, 128)
        steps = None if N <= 100 else 16  # the exact sum at N = 1000 is covered at N ≤ 100
        r = d.nll(oracle_model(d, lam), x0, steps=steps, decoder="continuous", generator=g, progress=False)
        want = expected_bound_bpd(d, lam)
        assert abs(r.bpd - want) < 4 * r.stderr, (N, r.bpd, want, r.stderr)  # the library is the bound
        assert r.bpd - H > -3 * r.stderr and want > H, (N, r.bpd, want, H)  # ≥ the exact NLL
        assert r.bpd == pytest.approx(r.prior + r.diffusion + r.decoder)
        gaps.append(want - H)
    assert gaps[0] > 10 * gaps[2] and gaps[1] > gaps[2] and gaps[2] < 0.03, gaps


@pytest.mark.parametrize("proposal", ["uniform", "snr"])
def test_sampled_steps_agree_with_the_exact_sum(proposal):
    d, lam = gaussian(100, blur=True)
    x0, g = draw(d, lam, 256, seed=1)
    model = oracle_model(d, lam)
    exact = d.nll(model, x0, decoder="continuous", generator=g, progress=False)
    est = d.nll(model, x0, steps=8, proposal=proposal, decoder="continuous", generator=g, progress=False)
    assert exact.exact and not est.exact and est.steps == 8
    se = math.hypot(exact.stderr, est.stderr)
    assert abs(est.bpd - exact.bpd) < 4 * se, (est, exact)
    assert abs(est.diffusion - expected_bound_bpd(d, lam) + exact.prior + exact.decoder) < 6 * se
    assert est.stderr > exact.stderr  # the step draws add variance, and the SE shows it


def test_bits_per_dim_do_not_depend_on_the_basis_without_blur():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 1, 3, padding=1, dtype=torch.float64)  # any fixed pixel-space model
    model = lambda x, i: torch.tanh(net(x)) * (1 + i.double()[:, None, None, None] / 1000)  # noqa: E731
    x0 = torch.rand(32, 1, *SHAPE, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2 - 1
    out = {}
    for basis in (IdentityBasis(SHAPE), DCTBasis(SHAPE), FourierBasis(SHAPE)):
        d = Diffusion(basis, VPBlurSchedule("none", 0.0, N=50, noise="logsnr-cosine"))
        for steps in (None, 6):
            r = d.nll(model, x0, steps=steps, generator=torch.Generator().manual_seed(5), progress=False)
            out.setdefault(steps, []).append(r)
    for rs in out.values():
        for r in rs[1:]:
            torch.testing.assert_close(r.per_image, rs[0].per_image, rtol=1e-9, atol=1e-9)
    assert 0 < out[None][0].bpd < 20


def test_posterior_variance_is_an_option_and_differs():
    d, lam = gaussian(100)
    x0, _ = draw(d, lam, 64)
    rs = [d.nll(oracle_model(d, lam), x0, variance=v, decoder="continuous", progress=False,
                generator=torch.Generator().manual_seed(0)) for v in ("transition", "posterior")]
    assert rs[0].decoder == rs[1].decoder and rs[0].diffusion != rs[1].diffusion
    with pytest.raises(ValueError, match="variance must be one of"):
        d.nll(oracle_model(d, lam), x0, variance="learned")


def test_discretised_gaussian_is_a_distribution_with_accurate_tails():
    inner = torch.linspace(-1, 1, 256, dtype=torch.float64)[1:] - 1 / 255  # the bin edges of 8 bits
    edges = torch.cat([torch.tensor([-math.inf]), inner, torch.tensor([math.inf])])
    for mu, std in ((0.3, 0.01), (-0.99, 0.002), (5.0, 0.1)):
        logp = _log_bin_prob((edges[:-1] - mu) / std, (edges[1:] - mu) / std)
        assert float(torch.logsumexp(logp, 0)) == pytest.approx(0.0, abs=1e-9)
    lo, hi = torch.tensor([8.0, -30.0], dtype=torch.float64), torch.tensor([8.5, -29.0], dtype=torch.float64)  # far tails: no cancellation
    want = [math.log(norm.sf(8.0) - norm.sf(8.5)), math.log(norm.cdf(-29.0) - norm.cdf(-30.0))]
    torch.testing.assert_close(_log_bin_prob(lo, hi), torch.tensor(want, dtype=lo.dtype), rtol=1e-6, atol=0)


def test_data_outside_the_range_and_bad_steps_are_refused():
    d, lam = gaussian(10)
    model = oracle_model(d, lam)
    with pytest.raises(ValueError, match="value_range"):
        d.nll(model, torch.full((2, 1, *SHAPE), 3.0))
    with pytest.raises(ValueError, match="steps must be"):
        d.nll(model, torch.zeros(2, 1, *SHAPE), steps=0)


def test_non_gaussian_prior_is_refused():
    d = Diffusion(DCTBasis(SHAPE), HeatDissipationSchedule(K=20, sigma_B_max=6.0))
    with pytest.raises(ValueError, match="Gaussian-prior.*HeatDissipationSchedule.*a_N/s_N"):
        d.nll(lambda x, i: torch.zeros_like(x), torch.zeros(2, 1, *SHAPE))
