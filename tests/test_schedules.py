"""Schedules and the engine against independent formulas (docs/math.md, Equations and Conventions)."""
import numpy as np
import pytest
import scipy.linalg
import torch

from gendiff import Diffusion, GaussianBlurBasis, IdentityBasis
from gendiff.schedules import (Schedule, ScheduleError, SpeedSchedule, VPBlurSchedule,
                               build_schedule, noise)
from gendiff.schedules.base import broadcast_step

N = 1000


def f_reference(kind, i, f_N, f_1=0.0, n=N):
    """docs/math.md, Conventions, written out again."""
    lin = (f_N - f_1) * (i - 1) / (n - 1) + f_1
    return {
        "linear": lin,
        "log": f_1 + (f_N - f_1) * np.log(i) / np.log(n),
        "quadratic": (f_N - f_1) * (i ** 2 - 1) / (n ** 2 - 1) + f_1,
        "cubic": (f_N - f_1) * (i / n) ** 3 + f_1,
        "quartic": (f_N - f_1) * (i / n) ** 4 + f_1,
        "triangular": np.where(i < n / 2, lin, (f_N - f_1) * (n - i - 1) / (n - 1) + f_1),
    }[kind]


KINDS = ["linear", "log", "quadratic", "cubic", "quartic", "triangular"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("f_N", [0.140625, 0.6])
def test_marginals_match_independent_formula(kind, f_N):
    basis = GaussianBlurBasis((16, 16))
    d = Diffusion(basis, VPBlurSchedule(kind, f_N, N=N))
    i = np.arange(1, N + 1)
    F = np.cumsum(f_reference(kind, i.astype(float), f_N))
    betas = np.linspace(1e-4, 0.02, N)
    log_abar = np.cumsum(np.log(1 - betas))
    rho = basis.rates.numpy().reshape(-1)
    log_a = 0.5 * log_abar[:, None] - F[:, None] * rho[None, :]
    a, s = d.marginal(torch.from_numpy(i))
    a, s = a.reshape(N, -1).numpy(), s.reshape(N, -1).numpy()
    assert np.isfinite(a).all() and np.isfinite(s).all() and (s > 0).all()
    np.testing.assert_allclose(np.log(a), log_a, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(s, np.sqrt(1 - np.exp(2 * log_a)), rtol=1e-10)
    a0, s0 = d.marginal(torch.tensor([0]))
    assert float(a0.min()) == 1.0 and float(s0.max()) == 0.0


def test_log_06_underflows_without_nans():
    d = Diffusion(GaussianBlurBasis((64, 64)), VPBlurSchedule("log", 0.6, N=N))
    for i in [1, 500, 1000]:
        a, s = d.marginal(torch.tensor([i]))
        r, var = d.transition(torch.tensor([i]))  # (r_i, σ_i²)
        for t in (a, s, r, var):
            assert torch.isfinite(t).all()
        assert (s > 0).all()
    a, _ = d.marginal(torch.tensor([N]))
    assert float(a.min()) < 1e-60  # the high frequencies really are gone


def test_speed_schedule_endpoints_and_effective_blur():
    for kind in ["linear", "log", "quadratic", "cubic", "quartic"]:
        f = SpeedSchedule(kind, 0.5, 0.01).values(N)
        assert f[0] == 0 and f[N] == pytest.approx(0.5) and f[1] == pytest.approx(0.01, abs=1e-3)
    F = SpeedSchedule.from_sigmas("quartic", 0.15).cumulative(N)
    assert 0.4 * np.sqrt(F[N]) == pytest.approx(2.1, abs=0.05)  # docs/math.md, Conventions: ≈ 2.1 px at i = N
    with pytest.raises(ValueError, match="valid"):
        SpeedSchedule("sinusoidal")


def test_noise_schedules_against_papers():
    betas = np.linspace(1e-4, 0.02, N)
    np.testing.assert_allclose(noise.linear(N), np.concatenate([[0], np.log(np.cumprod(1 - betas))]), rtol=1e-12)
    t = np.arange(N + 1) / N
    abar = np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2
    abar = abar / abar[0]
    ours = np.exp(noise.cosine(N))
    np.testing.assert_allclose(ours[:900], abar[:900], rtol=1e-9)  # before max_beta clipping
    lam = -2 * np.log(np.tan(t * (np.arctan(np.exp(5)) - np.arctan(np.exp(-5))) + np.arctan(np.exp(-5))))
    np.testing.assert_allclose(np.exp(noise.logsnr_cosine(N))[1:], 1 / (1 + np.exp(-lam[1:])), rtol=1e-12)


def test_proposition_1_pixel_chain_equals_closed_form():
    """Eq. 9 simulated in pixel space with the explicit blur matrix vs Eq. 8 (exact moments)."""
    h, w, n_steps = 5, 4, 60
    basis = GaussianBlurBasis((h, w), sigma=0.8)
    sched = VPBlurSchedule("quadratic", 3.0, N=n_steps)
    d = Diffusion(basis, sched)
    k_h, k_w = (scipy.linalg.toeplitz(_kernel(n, 0.8)[n - 1:]) for n in (h, w))
    blur = np.kron(k_h, k_w)  # W acting on the row-major flattened image
    f = SpeedSchedule("quadratic", 3.0).values(n_steps)
    betas = np.linspace(1e-4, 0.02, n_steps)
    x0 = np.random.default_rng(0).standard_normal(h * w)
    mean, cov = x0.copy(), np.zeros((h * w, h * w))
    eye = np.eye(h * w)
    for i in range(1, n_steps + 1):
        w_i = np.real(scipy.linalg.fractional_matrix_power(blur, f[i]))
        a_i = np.sqrt(1 - betas[i - 1]) * w_i
        c_i = eye - (1 - betas[i - 1]) * w_i @ w_i
        mean, cov = a_i @ mean, a_i @ cov @ a_i.T + c_i
        if i in (1, 17, n_steps):
            x0_t = torch.from_numpy(x0).reshape(1, 1, h, w)
            m, _ = d.q_sample(x0_t, torch.tensor([i]), noise=torch.zeros_like(x0_t))
            np.testing.assert_allclose(m.reshape(-1).numpy(), mean, atol=1e-10)
            _, s = d.marginal(torch.tensor([i]))
            units = torch.eye(h * w, dtype=torch.float64).reshape(-1, 1, h, w)
            ours = basis.inverse(s ** 2 * basis.forward(units)).reshape(h * w, h * w).numpy()
            np.testing.assert_allclose(ours, cov, atol=1e-10)


def _kernel(n, sigma):
    m = np.arange(-(n - 1), n)
    k = np.exp(-m ** 2 / (2 * sigma ** 2))
    return k / k.sum()


def test_identity_basis_is_ddpm():
    d = Diffusion(IdentityBasis((6, 6)), VPBlurSchedule("quartic", 0.5, N=N))
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, N))
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 6, 6, generator=g, dtype=torch.float64), torch.randn(4, 3, 6, 6, generator=g, dtype=torch.float64)
    i = torch.tensor([1, 10, 500, 1000])
    ab = torch.from_numpy(abar[i.numpy() - 1]).reshape(-1, 1, 1, 1)
    x_i, e = d.q_sample(x0, i, noise=eps)
    torch.testing.assert_close(x_i, ab.sqrt() * x0 + (1 - ab).sqrt() * eps, atol=1e-12, rtol=0)
    model = lambda x, t: 0.1 * x  # noqa: E731
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    loss = d.loss(model, x0, i=i, generator=g1)
    eps2 = torch.randn(x0.shape, generator=g2, dtype=x0.dtype)  # identity: ε̄ = ε
    xi2 = ab.sqrt() * x0 + (1 - ab).sqrt() * eps2
    assert float(loss) == pytest.approx(float(((0.1 * xi2 - eps2) ** 2).mean()), rel=1e-12)


def test_score_is_the_gradient_of_log_q():
    basis = GaussianBlurBasis((4, 3), sigma=0.9)
    d = Diffusion(basis, VPBlurSchedule("linear", 2.0, N=100))
    i = torch.tensor([3])  # s_i ≪ 1, where the exponent matters
    x0 = torch.randn(1, 1, 4, 3, dtype=torch.float64)
    x_i, eps = d.q_sample(x0, i)
    units = torch.eye(12, dtype=torch.float64).reshape(12, 1, 4, 3)
    a, s = d.marginal(i)
    mean = basis.inverse(a * basis.forward(x0)).reshape(-1)
    cov = basis.inverse(s ** 2 * basis.forward(units)).reshape(12, 12)
    x = x_i.reshape(-1).clone().requires_grad_(True)
    torch.distributions.MultivariateNormal(mean, cov).log_prob(x).backward()
    torch.testing.assert_close(d.score(x_i, i, eps).reshape(-1), x.grad, atol=1e-9, rtol=1e-9)
    # The paper's printed exponent −1 gives a different (wrong) vector:
    wrong = -basis.inverse(basis.forward(eps) / s ** 2).reshape(-1)
    assert (wrong - x.grad).abs().max() > 1e-2


def test_conversions_round_trip():
    d = Diffusion(GaussianBlurBasis((8, 8)), VPBlurSchedule("quartic", 1.0, N=100))
    x0 = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    i = torch.tensor([3, 60])
    x_i, eps = d.q_sample(x0, i)
    torch.testing.assert_close(d.eps_to_x0(x_i, i, eps), x0)
    torch.testing.assert_close(d.x0_to_eps(x_i, i, x0), eps)


class ConstantNoiseBlur(Schedule):
    """Not variance preserving: a_i = exp(−c (i/N)(1 + ρ)), s_i = 0.3 for i ≥ 1."""

    def __init__(self, N=50, c=3.0):
        super().__init__(N)
        self.c = c

    def log_a(self, i, rates):
        t = broadcast_step(i, rates).to(torch.float64) / self.N
        return -self.c * t * (1 + rates)

    def s2(self, i, rates):
        return torch.where(broadcast_step(i, rates) > 0, 0.09, 0.0) * torch.ones_like(rates)


def test_non_vp_schedule_runs_unchanged():
    d = Diffusion(GaussianBlurBasis((8, 8)), ConstantNoiseBlur())
    x0 = torch.randn(3, 2, 8, 8)
    x_i, eps = d.q_sample(x0, torch.tensor([1, 25, 50]))
    _, s = d.marginal(torch.tensor([25]))
    assert torch.allclose(s, torch.full_like(s, 0.3))
    assert torch.isfinite(d.loss(lambda x, i: x, x0))
    for sampler in ["ancestral", "ddim", "dpm++2m", "reverse"]:
        out = d.sample(lambda x, i: torch.zeros_like(x), (2, 2, 8, 8), sampler=sampler, steps=10, progress=False)
        assert torch.isfinite(out).all()


class Growing(ConstantNoiseBlur):
    """Invalid: the signal grows after step 20, which no Gaussian transition can do."""

    def log_a(self, i, rates):
        t = broadcast_step(i, rates).to(torch.float64)
        return torch.where(t <= 20, -0.05 * t, -1.0 + 0.5 * (t - 20)) * torch.ones_like(rates)


def test_invalid_schedule_names_the_step():
    with pytest.raises(ScheduleError, match=r"step i=21"):
        Diffusion(GaussianBlurBasis((4, 4)), Growing())


def test_schedule_memory_is_O_N():
    sched = VPBlurSchedule("quartic", 0.14, N=N)
    Diffusion(GaussianBlurBasis((64, 64)), sched)
    for v in vars(sched).values():
        if isinstance(v, torch.Tensor):
            assert v.numel() <= N + 1


def test_fine_to_coarse_reverses_the_order():
    basis = GaussianBlurBasis((16, 16))
    a_c2f, _ = Diffusion(basis, VPBlurSchedule("linear", 0.5, N=100)).marginal(torch.tensor([50]))
    a_f2c, _ = Diffusion(basis, VPBlurSchedule("linear", 0.5, N=100, fine_to_coarse=True)).marginal(torch.tensor([50]))
    low, high = (0, 0, 0, 0), (0, 0, 15, 15)
    assert a_c2f[low] > a_c2f[high] and a_f2c[low] < a_f2c[high]


def test_schedule_config_round_trip():
    s = VPBlurSchedule("log", 0.6, N=200, noise="cosine", fine_to_coarse=True)
    s2 = build_schedule(s.config())
    rates = GaussianBlurBasis((8, 8)).rates
    i = torch.arange(0, 201)
    torch.testing.assert_close(s.log_a(i, rates), s2.log_a(i, rates))
    with pytest.raises(ValueError, match="valid names"):
        build_schedule({"name": "nope"})
