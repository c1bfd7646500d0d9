"""The variational bound (gendiff.likelihood) against exact answers on Gaussian data."""
import math

import pytest
import torch
from scipy.stats import norm

from gendiff import DCTBasis, Diffusion, FourierBasis, GaussianBlurBasis, IdentityBasis, ResidualMeanPrediction
from gendiff.likelihood import _log_bin_prob, bounds, nll
from gendiff.oracle import expected_bound_bpd, gaussian_entropy_bpd, oracle_model
from gendiff.parameterization import EpsPrediction, Prediction
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


@pytest.mark.parametrize("mean", ["posterior", "reverse"])
@pytest.mark.parametrize("blur", [False, True])
def test_bound_is_above_the_exact_nll_and_approaches_it(blur, mean):
    H, gaps = None, []
    for N in (10, 100, 1000):
        d, lam = gaussian(N, blur)
        H = gaussian_entropy_bpd(lam)
        x0, g = draw(d, lam, 128)
        steps = None if N <= 100 else 16  # the exact sum at N = 1000 is covered at N ≤ 100
        r = d.nll(oracle_model(d, lam), x0, steps=steps, decoder="continuous", generator=g, progress=False,
                  mean=mean)
        want = expected_bound_bpd(d, lam, mean)
        assert abs(r.bpd - want) < 4 * r.stderr, (N, r.bpd, want, r.stderr)  # the library is the bound
        assert r.bpd - H > -3 * r.stderr and want > H, (N, r.bpd, want, H)  # ≥ the exact NLL
        assert r.bpd == pytest.approx(r.prior + r.diffusion + r.decoder) and r.mean == mean
        gaps.append(want - H)
    assert gaps[0] > 10 * gaps[2] and gaps[1] > gaps[2] and gaps[2] < 0.03, gaps


def exact_nll_bpd(d, lam, x0):
    """−log p(x_0) per image for the Gaussian data, bits/dim."""
    c = d.basis.forward(x0)
    return (0.5 * (torch.log(2 * math.pi * lam) + c ** 2 / lam)).flatten(1).sum(1) / (D * math.log(2))


# The settings: 8×8, linear β, N = 1000, the paper's blur speeds. On the DCT the rates are
# (πk/8)² (up to 15), so f(N) = 0.14 blurs far more per step than on the σ = 0.4 blur basis.
TABLE1 = {"no blur": ("none", 0.0), "quartic 0.14": ("quartic", 0.140625), "log 0.6": ("log", 0.6)}
CASES = [("dct", "no blur"), ("dct", "quartic 0.14"), ("blur", "no blur"), ("blur", "quartic 0.14"),
         ("blur", "log 0.6")]


def table1_process(basis, row):
    b = DCTBasis(SHAPE) if basis == "dct" else GaussianBlurBasis(SHAPE, sigma=0.4)
    return Diffusion(b, VPBlurSchedule(*TABLE1[row], N=1000)), 0.02 + 0.5 / (1.0 + 5 * b.rates)


@pytest.mark.parametrize("basis,row", CASES)
def test_posterior_mean_bound_is_tight_with_the_exact_eps(basis, row):
    d, lam = table1_process(basis, row)
    H = gaussian_entropy_bpd(lam)
    gap, gap_reverse = (expected_bound_bpd(d, lam, m) - H for m in ("posterior", "reverse"))
    assert 0 < gap < 0.05 and gap <= gap_reverse + 1e-12, (gap, gap_reverse)
    if (basis, row) == ("dct", "quartic 0.14"):  # Eq. 19–20's mean is wrong where r_i ≪ 1, even with ε exact
        assert gap_reverse > 10, gap_reverse


def test_the_exact_sum_at_N_1000_is_the_closed_form_for_both_means():
    d, lam = table1_process("dct", "quartic 0.14")
    x0, g = draw(d, lam, 48)
    rs = bounds(d, oracle_model(d, lam), x0, decoder="continuous", generator=g, progress=False)
    for mean, r in rs.items():  # the per-image gap removes the data's own spread from the SE
        gap = r.per_image - exact_nll_bpd(d, lam, x0)
        se = float(gap.std() / math.sqrt(len(gap)))
        want = expected_bound_bpd(d, lam, mean) - gaussian_entropy_bpd(lam)
        assert abs(float(gap.mean()) - want) < 4 * se + 1e-3, (mean, float(gap.mean()), want, se)
        assert r.exact and r.steps == 999 and r.mean == mean


def test_the_posterior_mean_is_exact_so_the_remaining_gap_is_the_variance():
    """log 0.6 on the DCT (per-step r_i down to e^−0.9): the posterior mean with the true
    Var(x̄_{i−1} | x̄_i) of the data gives the exact NLL; the 1 bit/dim left with σ_i² is σ_i²'s."""
    b = DCTBasis(SHAPE)
    d, lam = Diffusion(b, VPBlurSchedule("log", 0.6, N=1000)), 0.02 + 0.5 / (1.0 + 5 * b.rates)
    H = gaussian_entropy_bpd(lam)
    assert abs(expected_bound_bpd(d, lam, "posterior", "exact") - H) < 1e-4
    assert expected_bound_bpd(d, lam, "reverse", "exact") - H > 100
    assert 0.5 < expected_bound_bpd(d, lam, "posterior") - H < 2


def residual_oracle(d, lam):
    """IHDM's residual f = μ − x with μ = a_{i−1} E[x̄_0 | x̄_i], exact for the Gaussian data."""
    def model(x, i):
        (a, s), (a_prev, _) = d.marginal(i), d.marginal(i - 1)
        return d.basis.inverse(a_prev * a * lam / (a ** 2 * lam + s ** 2) * d.basis.forward(x)) - x
    return model


class X0Prediction(EpsPrediction):
    """A network that predicts x_0 (the loss is not used here)."""

    def predict(self, out, x, i, coef):
        return Prediction("x0", out, x, i, coef)


def x0_oracle(d, lam):
    def model(x, i):
        a, s = d.marginal(i)
        return d.basis.inverse(a * lam / (a ** 2 * lam + s ** 2) * d.basis.forward(x))
    return model


@pytest.mark.parametrize("param,oracle", [(ResidualMeanPrediction(), residual_oracle), (X0Prediction(), x0_oracle)])
def test_every_parameterization_gives_the_same_bound_as_eps(param, oracle):
    """The same exact network in another form is the same reverse model: the same bound per image."""
    b = GaussianBlurBasis(SHAPE, sigma=0.8)
    sched = VPBlurSchedule("quartic", 0.5, N=100, noise="logsnr-cosine")
    d_eps, d_other = Diffusion(b, sched), Diffusion(b, sched, parameterization=param)
    lam = 0.02 + 0.5 / (1.0 + 5 * b.rates)
    x0, _ = draw(d_eps, lam, 32)
    for steps in (None, 4):
        kw = {"steps": steps, "progress": False, "decoder": "discrete"}
        want = bounds(d_eps, oracle_model(d_eps, lam), x0.clamp(-1, 1), generator=torch.Generator().manual_seed(2),
                      **kw)
        got = bounds(d_other, oracle(d_other, lam), x0.clamp(-1, 1), generator=torch.Generator().manual_seed(2), **kw)
        for mean in want:
            torch.testing.assert_close(got[mean].per_image, want[mean].per_image, rtol=1e-7, atol=1e-7)


def test_a_prediction_the_bound_cannot_read_is_refused():
    class Raw(EpsPrediction):
        def predict(self, out, x, i, coef):
            return out  # a tensor: it must not be taken for ε̂
    d = Diffusion(DCTBasis(SHAPE), VPBlurSchedule(N=20, noise="logsnr-cosine"), parameterization=Raw())
    with pytest.raises(TypeError, match=r"Raw.predict returned Tensor.*never taken as ε"):
        d.nll(lambda x, i: torch.zeros_like(x), torch.zeros(2, 1, *SHAPE), progress=False)


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
            rs = bounds(d, model, x0, steps=steps, generator=torch.Generator().manual_seed(5), progress=False)
            for mean, r in rs.items():
                out.setdefault((steps, mean), []).append(r)
    for rs in out.values():
        for r in rs[1:]:
            torch.testing.assert_close(r.per_image, rs[0].per_image, rtol=1e-9, atol=1e-9)
    assert all(0 < rs[0].bpd < 100 for rs in out.values())  # a random network: far from the data's ~8


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


def test_data_outside_the_range_and_bad_arguments_are_refused():
    d, lam = gaussian(10)
    model = oracle_model(d, lam)
    x = torch.zeros(2, 1, *SHAPE)
    with pytest.raises(ValueError, match="value_range"):
        d.nll(model, torch.full((2, 1, *SHAPE), 3.0))
    with pytest.raises(ValueError, match="steps must be"):
        d.nll(model, x, steps=0)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"x0 holds 1 NaN/Inf value\(s\) of 128"):
            d.nll(model, x.index_put((torch.tensor([1]), torch.tensor([0]), torch.tensor([3]), torch.tensor([4])),
                                     torch.tensor(bad)))
    for bits in (0, True, 8.0, "8"):
        with pytest.raises(ValueError, match=f"bits must be a positive int .*got {bits!r}"):
            d.nll(model, x, bits=bits)
    with pytest.raises(ValueError, match="batch_size must be a positive int .*got 0"):
        d.nll(model, x, batch_size=0)
    with pytest.raises(ValueError, match=r"at least one image, got x0 of shape \(0, 1, 8, 8\)"):
        d.nll(model, x[:0])
    with pytest.raises(ValueError, match="value_range must be a finite"):
        d.nll(model, x, value_range=(1.0, -1.0))
    with pytest.raises(ValueError, match="mean must be one of"):
        d.nll(model, x, mean="ddpm")


def test_non_gaussian_prior_is_refused():
    d = Diffusion(DCTBasis(SHAPE), HeatDissipationSchedule(K=20, sigma_B_max=6.0))
    with pytest.raises(ValueError, match="Gaussian-prior.*HeatDissipationSchedule.*a_N/s_N"):
        d.nll(lambda x, i: torch.zeros_like(x), torch.zeros(2, 1, *SHAPE))
