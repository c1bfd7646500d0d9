"""Samplers against exact answers on Gaussian data, and the (basis × schedule × sampler) suite."""
import pytest
import torch

from gendiff import DCTBasis, Diffusion, FourierBasis, GaussianBlurBasis, IdentityBasis, WaveletBasis
from gendiff.oracle import gaussian_kl, linear_output_variance, oracle_model, output_variance
from gendiff.samplers import GRIDS, SAMPLERS, check_grid, make_grid
from gendiff.schedules import HeatDissipationSchedule, VPBlurSchedule

SAMPLER_CASES = [("reverse", {}), ("ancestral", {}), ("ddim", {"eta": 0.0}), ("ddim", {"eta": 0.7}),
                 ("dpm++2m", {})]
# the multistep solvers without a recursion in gendiff.oracle (their variance: linear_output_variance)
MULTISTEP_CASES = [("dpm++3m", {}), ("unipc", {}), ("unipc", {"order": 2, "endpoint": "x0"})]


def gaussian_setup(N=100):
    basis = GaussianBlurBasis((6, 5), sigma=0.8)
    d = Diffusion(basis, VPBlurSchedule("quartic", 6.0, N=N))
    lam = 0.05 + 1.0 / (1.0 + 20 * basis.rates)  # natural-image-like: power falls with frequency
    return d, lam


@pytest.mark.parametrize("sampler,opts", SAMPLER_CASES)
def test_oracle_variance_matches_closed_form(sampler, opts):
    d, lam = gaussian_setup()
    grid = d.grid(sampler, steps=None if sampler == "reverse" else 12)
    n = 4000
    x = d.sample(oracle_model(d, lam), (n, 1, 6, 5), sampler=sampler, timesteps=grid, progress=False,
                 generator=torch.Generator().manual_seed(0), dtype=torch.float64, **opts)
    emp = d.basis.forward(x).var(0, unbiased=True)[0]
    want = output_variance(d, lam, sampler, grid, **opts)[0]
    rel = (emp / want - 1).abs()
    assert float(rel.max()) < 5 * (2 / n) ** 0.5, (sampler, float(rel.max()))


@pytest.mark.parametrize("sampler,opts", [c for c in SAMPLER_CASES if c[0] != "reverse"])
def test_kl_to_data_decreases_with_steps(sampler, opts):
    d, lam = gaussian_setup(N=1000)
    kls = [gaussian_kl(output_variance(d, lam, sampler, make_grid(1000, k, SAMPLERS[sampler].grid), **opts), lam)
           for k in (5, 10, 20, 50, 200, 1000)]
    assert all(b < a for a, b in zip(kls, kls[1:])), kls
    assert kls[-1] < 0.01 * kls[0] and kls[-1] < 2e-3


@pytest.mark.parametrize("sampler,opts", MULTISTEP_CASES)
def test_multistep_kl_to_data_falls_with_steps(sampler, opts):
    d, lam = gaussian_setup(N=1000)
    kls = [gaussian_kl(linear_output_variance(d, lam, sampler, steps=k, **opts)[0], lam) for k in (5, 10, 20, 50)]
    assert all(b < a for a, b in zip(kls, kls[1:])), kls
    assert kls[-1] < 0.01 * kls[0] and kls[-1] < 1e-4


def test_dpmpp_50_beats_reverse_1000_on_quartic():
    d, lam = gaussian_setup(N=1000)
    kl_rev = gaussian_kl(output_variance(d, lam, "reverse", make_grid(1000, 1000)), lam)
    kl_dpm = gaussian_kl(output_variance(d, lam, "dpm++2m", d.grid("dpm++2m", 50)), lam)
    assert kl_dpm < kl_rev


BASES = {"identity": IdentityBasis, "dct": DCTBasis, "fourier": FourierBasis, "blur": GaussianBlurBasis,
         "wavelet": WaveletBasis}
SCHEDS = {"ddpm": lambda: VPBlurSchedule(N=100), "vp-quartic": lambda: VPBlurSchedule("quartic", 2.0, N=100),
          "vp-log": lambda: VPBlurSchedule("log", 0.6, N=100)}


@pytest.mark.parametrize("basis", sorted(BASES))
@pytest.mark.parametrize("sched", sorted(SCHEDS))
@pytest.mark.parametrize("sampler,opts", SAMPLER_CASES + MULTISTEP_CASES + [("unipc", {"variant": "bh1"})])
def test_every_basis_schedule_sampler_runs(basis, sched, sampler, opts):
    d = Diffusion(BASES[basis]((8, 8)), SCHEDS[sched]())
    lam = torch.full((1, 8, 8), 0.5, dtype=torch.float64)
    x = d.sample(oracle_model(d, lam), (2, 3, 8, 8), sampler=sampler, steps=None if sampler == "reverse" else 8,
                 progress=False, generator=torch.Generator().manual_seed(0), **opts)
    assert x.shape == (2, 3, 8, 8) and x.dtype == torch.float32 and torch.isfinite(x).all()


def test_seeded_determinism_batch_by_batch():
    d = Diffusion(GaussianBlurBasis((8, 8)), VPBlurSchedule("quartic", 2.0, N=100))
    model = oracle_model(d, torch.full((1, 8, 8), 0.5, dtype=torch.float64))
    runs = [d.sample(model, (3, 3, 8, 8), sampler="ancestral", steps=10, progress=False,
                     generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    other = d.sample(model, (3, 3, 8, 8), sampler="ancestral", steps=10, progress=False,
                     generator=torch.Generator().manual_seed(8))
    assert not torch.equal(runs[0], other)


def test_callback_schema_and_transform_count():
    d = Diffusion(GaussianBlurBasis((8, 8)), VPBlurSchedule("quartic", 2.0, N=100))
    calls = {"forward": 0, "inverse": 0}
    fwd, inv = d.basis.forward, d.basis.inverse
    d.basis.forward = lambda x: (calls.__setitem__("forward", calls["forward"] + 1), fwd(x))[1]
    d.basis.inverse = lambda c: (calls.__setitem__("inverse", calls["inverse"] + 1), inv(c))[1]
    d.sample(lambda x, i: torch.zeros_like(x), (2, 1, 8, 8), steps=10, progress=False)
    # one inverse before the network and one forward after it per step, plus the final inverse
    assert calls == {"forward": 10, "inverse": 11}
    seen = []
    d.sample(lambda x, i: torch.zeros_like(x), (2, 1, 8, 8), steps=5, progress=False,
             callback=lambda info: seen.append((info["i"], info["x"].shape, info["x0"].shape)))
    assert [s[0] for s in seen] == d.grid("dpm++2m", 5)[:-1]
    assert all(s[1] == s[2] == (2, 1, 8, 8) for s in seen)


def test_grids():
    d = Diffusion(IdentityBasis((4, 4)), VPBlurSchedule("log", 0.6))
    for kind in ["uniform", "quadratic", "cubic", "logsnr"]:
        for steps in (1, 7, 50, 1000):
            g = make_grid(1000, steps, kind, d.log_snr)
            assert g[0] == 1000 and g[-1] == 0 and len(g) == steps + 1
            assert all(a > b for a, b in zip(g, g[1:]))
    # every step: the full grid, also where the log-SNR stops moving (heat dissipation's tiny
    # schedule once merged targets at N: [4, 4, 3, 1, 0], found by tests/test_properties.py)
    heat = Diffusion(DCTBasis((1, 2)), HeatDissipationSchedule(K=4, sigma_B_min=0.1, sigma_B_max=1.1, sigma=0.01),
                     check_basis=False)
    for kind in GRIDS:
        for N in (1, 2, 4):
            assert make_grid(N, N, kind, heat.log_snr if N == 4 else d.log_snr) == list(range(N, -1, -1))
    with pytest.raises(ValueError, match="strictly decreasing"):
        check_grid([100, 50, 50, 0], 100)
    with pytest.raises(ValueError, match="explicit 0"):
        check_grid([100, 50, 10], 100)
    with pytest.raises(ValueError, match="valid"):
        Diffusion(IdentityBasis((4, 4)), VPBlurSchedule(N=10)).sample(lambda x, i: x, (1, 1, 4, 4), sampler="euler")


@pytest.mark.parametrize("sampler,opts", [("dpm++2m", {}), ("ddim", {}), ("dpm++3m", {}), ("unipc", {"endpoint": "x0"})])
def test_clip_x0_bounds_the_data_prediction(sampler, opts):
    d = Diffusion(GaussianBlurBasis((8, 8)), VPBlurSchedule("quartic", 2.0, N=100))
    wild = lambda x, i: 50 * torch.randn_like(x)  # noqa: E731  a badly wrong ε predictor
    seen = []
    x = d.sample(wild, (4, 1, 8, 8), sampler=sampler, steps=10, progress=False, clip_x0=(-1.0, 1.0),
                 generator=torch.Generator().manual_seed(0), callback=lambda info: seen.append(info["x0"]), **opts)
    assert all(float(x0.abs().max()) <= 1 + 1e-5 for x0 in seen)
    assert float(x.abs().max()) <= 1 + 1e-5  # the last deterministic step returns x̂_0
    free = d.sample(wild, (4, 1, 8, 8), sampler=sampler, steps=10, progress=False,
                    generator=torch.Generator().manual_seed(0), **opts)
    assert float(free.abs().max()) > 2
