"""Inverse heat dissipation and Blurring Diffusion as special cases of the same engine."""
import math

import numpy as np
import pytest
import scipy.fft
import torch

from gendiff import BlurredDataPrior, DCTBasis, Diffusion, IdentityBasis, ResidualMeanPrediction
from gendiff.models import PRESETS, build_model
from gendiff.oracle import output_variance
from gendiff.coefficients import Coefficients
from gendiff.parameterization import Prediction
from gendiff.samplers import sample_ancestral
from gendiff.schedules import BlurringDiffusionSchedule, HeatDissipationSchedule, Schedule
from gendiff.schedules.base import broadcast_step


def heat_reference(x, t):
    """The heat equation with Neumann boundaries, solved with scipy's DCT."""
    h, w = x.shape[-2:]
    k, l = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    lam = (np.pi * k / h) ** 2 + (np.pi * l / w) ** 2
    c = scipy.fft.dctn(x, norm="ortho", axes=(-2, -1))
    return scipy.fft.idctn(c * np.exp(-lam * t), norm="ortho", axes=(-2, -1))


def test_ihdm_forward_is_the_heat_equation():
    sched = HeatDissipationSchedule(K=50, sigma_B_max=12.0, sigma=0.0)
    d = Diffusion(DCTBasis((12, 10)), sched, validate=False)  # σ = 0: pure blur, no noise
    x0 = torch.randn(2, 3, 12, 10, dtype=torch.float64)
    sigma_b = np.exp(np.linspace(np.log(0.5), np.log(12.0), 50))
    for k in [1, 20, 50]:
        x_k, _ = d.q_sample(x0, torch.tensor([k, k]))
        np.testing.assert_allclose(x_k.numpy(), heat_reference(x0.numpy(), sigma_b[k - 1] ** 2 / 2), atol=1e-12)


def test_ihdm_forward_noise_moments():
    d = Diffusion(DCTBasis((8, 8)), HeatDissipationSchedule(K=20, sigma_B_max=6.0, sigma=0.05))
    x0 = torch.randn(1, 1, 8, 8, dtype=torch.float64).expand(20000, 1, 8, 8)
    x_k, _ = d.q_sample(x0, torch.full((20000,), 7), generator=torch.Generator().manual_seed(0))
    mean, _ = d.q_sample(x0[:1], torch.tensor([7]), noise=torch.zeros_like(x0[:1]))
    assert (x_k.mean(0) - mean[0]).abs().max() < 5 * 0.05 / math.sqrt(20000)
    assert (x_k.std(0) / 0.05 - 1).abs().max() < 0.05


def test_blurring_diffusion_coefficients_match_the_paper():
    N, sb, dmin = 1000, 20.0, 0.001
    basis = DCTBasis((32, 32))
    d = Diffusion(basis, BlurringDiffusionSchedule(N=N, sigma_B_max=sb, d_min=dmin))
    lam = basis.rates.numpy()
    for i in [1, 250, 500, 999, 1000]:
        t = i / N
        logsnr = -2 * np.log(np.tan(t * (np.arctan(np.exp(5)) - np.arctan(np.exp(-5))) + np.arctan(np.exp(-5))))
        alpha, sigma = np.sqrt(1 / (1 + np.exp(-logsnr))), np.sqrt(1 / (1 + np.exp(logsnr)))
        tau = (sb * np.sin(np.pi * t / 2) ** 2) ** 2 / 2
        a_ref = alpha * ((1 - dmin) * np.exp(-lam * tau) + dmin)
        a, s = d.marginal(torch.tensor([i]))
        np.testing.assert_allclose(a[0].numpy(), a_ref, rtol=1e-10)
        np.testing.assert_allclose(s[0].numpy(), np.full_like(lam, sigma), rtol=1e-10)


class TableSchedule(Schedule):
    """Per-coordinate (a, s) at steps 0, 1, 2 from tables; the rates only carry the shape."""

    def __init__(self, a, s):
        super().__init__(2)
        self.a, self.s = torch.as_tensor(a), torch.as_tensor(s)

    def log_a(self, i, rates):
        return self.a[broadcast_step(i, rates)[..., 0, 0]].log().reshape(-1, *rates.shape)

    def s2(self, i, rates):
        return (self.s[broadcast_step(i, rates)[..., 0, 0]] ** 2).reshape(-1, *rates.shape)


def test_ancestral_step_is_the_textbook_posterior():
    rng = np.random.default_rng(0)
    n = 6
    a1 = rng.uniform(0.3, 1.0, n)
    a2 = a1 * rng.uniform(1e-6, 0.9, n)  # includes a_t ~ 1e-6, where dividing by a_t would fail
    s1 = rng.uniform(0.05, 0.6, n)
    s2 = np.sqrt((a2 / a1) ** 2 * s1 ** 2 + rng.uniform(0.01, 0.5, n))
    sched = TableSchedule(np.stack([np.ones(n), a1, a2]), np.stack([np.zeros(n), s1, s2]))
    coef = Coefficients(sched, IdentityBasis((1, n)).rates, "cpu")
    x0 = torch.tensor(rng.standard_normal(n)).reshape(1, 1, 1, n)
    x_t = torch.tensor(rng.standard_normal(n)).reshape(1, 1, 1, n)
    m = 200_000
    out = sample_ancestral(lambda x, t: Prediction("x0", x0.expand_as(x), x, t, coef), x_t.expand(m, 1, 1, n).clone(), [2, 1], coef,
                           generator=torch.Generator().manual_seed(0), disable=True)
    # Bayes for the joint Gaussian x_1 = a1 x0 + s1 e1, x_2 = (a2/a1) x_1 + σ e2:
    r = a2 / a1
    cov12, var2 = r * s1 ** 2, s2 ** 2
    mean = a1 * x0.numpy().ravel() + cov12 / var2 * (x_t.numpy().ravel() - a2 * x0.numpy().ravel())
    var = s1 ** 2 - cov12 ** 2 / var2
    emp = out.reshape(m, n).numpy()
    assert np.all(np.abs(emp.mean(0) - mean) < 5 * np.sqrt(var / m) + 1e-12)
    assert np.all(np.abs(emp.var(0) / var - 1) < 5 * np.sqrt(2 / m))


def residual_oracle(d, lam):
    """IHDM's exact residual f = μ − u with μ = a_{k−1} E[x̄_0 | x̄_k] for Gaussian data."""
    def model(x, i):
        a, s = d.marginal(i)
        a_prev, _ = d.marginal(i - 1)
        gain = (a_prev * a * lam / (a ** 2 * lam + s ** 2)).to(x.dtype)
        return d.basis.inverse(gain * d.basis.forward(x)) - x
    return model


def test_ihdm_sampler_variance_matches_recursion():
    basis = DCTBasis((6, 6))
    d = Diffusion(basis, HeatDissipationSchedule(K=30, sigma_B_max=4.0, sigma=0.05),
                  parameterization=ResidualMeanPrediction())
    lam = 0.02 + 1.0 / (1.0 + 10 * basis.rates)
    g = torch.Generator().manual_seed(0)
    train = basis.inverse(lam.sqrt() * torch.randn(20000, 1, 6, 6, generator=g, dtype=torch.float64))
    prior = BlurredDataPrior(train, delta_scale=1.25)
    n = 4000
    x = d.sample(residual_oracle(d, lam), (n, 1, 6, 6), sampler="ihdm", prior=prior, progress=False,
                 generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    emp = basis.forward(x).var(0)[0]
    grid = d.grid("ihdm")
    a_T, s_T = d.marginal(torch.tensor([30]))
    want = output_variance(d, lam, "ihdm", grid, v_T=a_T[0] ** 2 * lam + (1.25 * s_T[0]) ** 2,
                           snr_floor=0)[0]  # the residual mean is read as is, never floored
    assert float((emp / want - 1).abs().max()) < 5 * (2 / n) ** 0.5 + 0.03  # + the KDE prior's error


@pytest.mark.parametrize("family", ["ihdm", "blurring"])
def test_both_run_through_sample_with_a_tiny_model(family):
    model = build_model(PRESETS["tiny"], in_channels=1)
    basis = DCTBasis((16, 16))
    x0 = torch.rand(8, 1, 16, 16)
    if family == "ihdm":
        d = Diffusion(basis, HeatDissipationSchedule(K=20, sigma_B_max=12.0), parameterization=ResidualMeanPrediction())
        kw = {"sampler": "ihdm", "prior": BlurredDataPrior(x0)}
    else:
        d = Diffusion(basis, BlurringDiffusionSchedule(N=100, sigma_B_max=12.0))
        kw = {"sampler": "ancestral", "steps": 10}
    loss = d.loss(model, x0)
    loss.backward()
    assert torch.isfinite(loss)
    with torch.no_grad():
        x = d.sample(model, (3, 1, 16, 16), progress=False, generator=torch.Generator().manual_seed(0), **kw)
    assert x.shape == (3, 1, 16, 16) and torch.isfinite(x).all()
