"""diffusers interop (the optional extra): the step correspondence i = t + 1, the schedules, the
UNet adapter, and gendiff's dpm++2m, dpm++3m and unipc against diffusers' DPMSolverMultistepScheduler
and UniPCMultistepScheduler.

Nothing is downloaded: the UNet is built from a config with random weights.
"""
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
# diffusers' own numpy-2 deprecation inside set_timesteps, not ours
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

from gendiff import Diffusion, IdentityBasis  # noqa: E402
from gendiff.interop.diffusers import (DiffusersUNet, alphas_cumprod, schedule_from_scheduler,  # noqa: E402
                                       timesteps_to_grid)
from gendiff.schedules import VPBlurSchedule  # noqa: E402


def tiny_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
        norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D")).eval()


@pytest.mark.parametrize("scheduler", ["DDPMScheduler", "DPMSolverMultistepScheduler"])
@pytest.mark.parametrize("config,rtol", [
    ({}, 1e-6), ({"beta_start": 2e-4, "beta_end": 0.03, "num_train_timesteps": 500}, 1e-6),
    ({"beta_schedule": "squaredcos_cap_v2"}, 5e-5)])
def test_alphas_cumprod_match_at_i_equal_t_plus_1(scheduler, config, rtol):
    sched = getattr(diffusers, scheduler)(**config)
    schedule = schedule_from_scheduler(sched)
    ours, theirs = alphas_cumprod(schedule), sched.alphas_cumprod.double()
    assert ours.shape == theirs.shape
    rel = ((ours - theirs) / theirs).abs().max()  # diffusers accumulates in float32
    assert rel < rtol, float(rel)


def test_linear_vp_blur_with_no_blur_is_the_ddpm_schedule():
    sched = diffusers.DDPMScheduler(beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    ours = alphas_cumprod(VPBlurSchedule())  # the library default: linear β 1e-4 → 0.02, f ≡ 0
    assert float(((ours - sched.alphas_cumprod.double()) / ours).abs().max()) < 1e-6
    # and on the identity basis every coordinate follows it: a_i² = ᾱ_i for i = t + 1
    d = Diffusion(IdentityBasis((4, 4)), VPBlurSchedule())
    a, s = d.marginal(torch.tensor([1, 500, 1000]))
    want = sched.alphas_cumprod.double()[[0, 499, 999]].reshape(3, 1, 1, 1)
    assert torch.allclose(a ** 2, want.expand_as(a), rtol=1e-6)
    assert torch.allclose(s ** 2, 1 - want.expand_as(s), rtol=1e-6, atol=1e-7)  # 1 − ᾱ from float32 ᾱ


def test_unsupported_scheduler_config_is_refused():
    with pytest.raises(ValueError, match="beta_schedule='scaled_linear'"):
        schedule_from_scheduler(diffusers.DDPMScheduler(beta_schedule="scaled_linear"))


def test_adapter_calls_the_unet_at_t_equal_i_minus_1():
    unet = tiny_unet()
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    i = torch.tensor([1, 500, 1000])
    with torch.no_grad():
        got = DiffusersUNet(unet)(x, i)
        want = torch.cat([unet(x[k:k + 1], int(i[k]) - 1).sample for k in range(3)])
        other = torch.cat([unet(x[k:k + 1], int(i[k])).sample for k in range(3)])
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, other, atol=1e-3)  # the off-by-one would be visible
    # gendiff's loss accepts it as a network
    loss = Diffusion(IdentityBasis((8, 8)), VPBlurSchedule()).loss(DiffusersUNet(unet), x)
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_adapter_refuses_learned_variance():
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=2, layers_per_block=1,
                                 block_out_channels=(8, 16), norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"))
    with pytest.raises(ValueError, match="out_channels=2"):
        DiffusersUNet(unet)


def diffusers_dpmpp2m(model_t, x_T, sched, stop=None):
    """diffusers' own loop: ε from the model at each of its timesteps, then scheduler.step
    (``stop``: that many steps only)."""
    x = x_T.clone()
    with torch.no_grad():
        for t in sched.timesteps[:stop]:
            x = sched.step(model_t(x, t), t, x).prev_sample
    return x


def gendiff_dpmpp2m(model_i, x_T, sched, sampler="dpm++2m", **opts):
    d = Diffusion(IdentityBasis(tuple(x_T.shape[-2:])), schedule_from_scheduler(sched))
    grid = timesteps_to_grid(sched.timesteps.tolist())  # i = t + 1, then the data at 0
    return d.sample(model_i, x_T.shape, sampler=sampler, timesteps=grid, progress=False,
                    prior=lambda *_: x_T.clone(), **opts)  # start both from the same x_T


def scheduler(steps=None, timesteps=None, kind="DPMSolverMultistepScheduler", **kw):
    kw = {"algorithm_type": "dpmsolver++", "solver_order": 2, **kw} if kind == "DPMSolverMultistepScheduler" else kw
    sched = getattr(diffusers, kind)(beta_schedule="linear", **kw)
    sched.set_timesteps(steps) if timesteps is None else sched.set_timesteps(timesteps=timesteps)
    return sched


X_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
CASES = {"10 steps": dict(steps=10), "20 steps": dict(steps=20),
         "explicit grid to t=0": dict(timesteps=[999, 700, 400, 200, 100, 50, 20, 0]),
         # these only act on order 3 or a non-zero final sigma: no change for order 2 ending at 0
         "lower_order_final off": dict(steps=10, lower_order_final=False),
         "euler_at_final": dict(steps=20, euler_at_final=True)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_dpmpp2m_matches_diffusers_with_a_unet(case):
    sched, unet = scheduler(**CASES[case]), tiny_unet()
    theirs = diffusers_dpmpp2m(lambda x, t: unet(x, t).sample, X_T, sched)
    ours = gendiff_dpmpp2m(DiffusersUNet(unet), X_T, sched)
    # an untrained UNet's ε makes x̂_0 = (x − sε)/a large (a_N ≈ 0.006), so compare relatively;
    # float32 on both sides
    err = float((ours - theirs).abs().max() / theirs.abs().max())
    assert err < 1e-5, err


def linear_eps(sched, lam=0.3):
    """The exact ε-predictor for N(0, λ I) data at diffusers timestep t: ε̂ = s x / (a² λ + s²)."""
    acp = sched.alphas_cumprod

    def eps(x, t):
        a2 = acp[t.long()].reshape(-1, 1, 1, 1) if t.ndim else acp[int(t)]
        return (1 - a2).sqrt() * x / (a2 * lam + 1 - a2)
    return eps


def test_dpmpp2m_matches_diffusers_with_a_linear_model():
    """The exact denoiser of Gaussian data (samples O(1)): agreement to float32 precision."""
    sched = scheduler(steps=15)
    eps = linear_eps(sched)
    theirs = diffusers_dpmpp2m(eps, X_T, sched)
    ours = gendiff_dpmpp2m(lambda x, i: eps(x, i - 1), X_T, sched)
    assert float((ours - theirs).abs().max()) < 1e-5
    assert 0.1 < float(ours.std()) < 1.0  # a real sample, not a degenerate one


def test_sigma_min_final_step_is_a_documented_difference():
    """final_sigmas_type="sigma_min" ends at t = 0 (i = 1) and keeps that step's noise, s_1 = 0.01;
    gendiff always ends at the data (i = 0) with x̂_0. docs/extending.md says so."""
    same, differ = scheduler(steps=20), scheduler(steps=20, final_sigmas_type="sigma_min")
    eps = linear_eps(same)
    ours = gendiff_dpmpp2m(lambda x, i: eps(x, i - 1), X_T, same)
    assert float((ours - diffusers_dpmpp2m(eps, X_T, same)).abs().max()) < 1e-5
    assert float((ours - diffusers_dpmpp2m(eps, X_T, differ)).abs().max()) > 1e-3


# gendiff sampler and options ↔ the diffusers scheduler config it equals
HIGHER = {
    "dpm++3m": ("dpm++3m", {}, dict(solver_order=3)),
    "unipc-2": ("unipc", {"order": 2, "endpoint": "x0"}, dict(kind="UniPCMultistepScheduler", solver_order=2)),
    "unipc-3": ("unipc", {"order": 3, "endpoint": "x0"}, dict(kind="UniPCMultistepScheduler", solver_order=3)),
    "unip-3 (no corrector)": ("unipc", {"order": 3, "corrector": False, "endpoint": "x0"},
                              dict(kind="UniPCMultistepScheduler", solver_order=3, disable_corrector=list(range(30)))),
}


@pytest.mark.parametrize("steps", [8, 14, 15, 25])  # diffusers' order rule for 3M changes at 15 steps
@pytest.mark.parametrize("case", sorted(HIGHER))
def test_higher_order_solvers_match_diffusers_with_a_linear_model(case, steps):
    name, opts, config = HIGHER[case]
    sched = scheduler(steps=steps, **config)
    eps = linear_eps(sched)
    theirs = diffusers_dpmpp2m(eps, X_T, sched)
    ours = gendiff_dpmpp2m(lambda x, i: eps(x, i - 1), X_T, sched, name, **opts)
    assert float((ours - theirs).abs().max()) < 1e-5
    assert 0.1 < float(ours.std()) < 1.0


@pytest.mark.parametrize("case", sorted(HIGHER))
def test_higher_order_solvers_match_diffusers_with_a_unet(case):
    name, opts, config = HIGHER[case]
    sched, unet = scheduler(steps=10, **config), tiny_unet()
    theirs = diffusers_dpmpp2m(lambda x, t: unet(x, t).sample, X_T, sched)
    ours = gendiff_dpmpp2m(DiffusersUNet(unet), X_T, sched, name, **opts)
    err = float((ours - theirs).abs().max() / theirs.abs().max())
    assert err < 1e-5, err


def test_unipc_bh1_matches_diffusers_up_to_its_last_step():
    """diffusers' bh1 divides by B(h) = h = ∞ on its last step to σ = 0 and returns NaN; every state
    before it equals ours (and ours ends at x̂_0, finite)."""
    make = lambda: scheduler(steps=10, kind="UniPCMultistepScheduler", solver_order=3, solver_type="bh1")  # noqa: E731
    eps = linear_eps(make())
    assert torch.isnan(diffusers_dpmpp2m(eps, X_T, make())).all()
    seen = []
    ours = gendiff_dpmpp2m(lambda x, i: eps(x, i - 1), X_T, make(), "unipc", variant="bh1", endpoint="x0",
                           callback=lambda info: seen.append(info["x"]))
    assert torch.isfinite(ours).all()
    # the state ours evaluates the network at on the last step is diffusers' input to its last step
    assert float((seen[-1] - diffusers_dpmpp2m(eps, X_T, make(), stop=-1)).abs().max()) < 1e-5


def test_unipc_sigma2_endpoint_differs_from_diffusers_only_on_the_last_step():
    """The default endpoint extrapolates x̂_0 to σ = 0 instead of returning it (docs/math.md):
    every state before the last step is diffusers' one, the output is not."""
    sched = scheduler(steps=10, kind="UniPCMultistepScheduler", solver_order=3)
    eps = linear_eps(sched)
    runs = {}
    for endpoint in ("x0", "sigma2"):
        seen = []
        out = gendiff_dpmpp2m(lambda x, i: eps(x, i - 1), X_T, sched, "unipc", endpoint=endpoint,
                              callback=lambda info: seen.append(info["x"]))
        runs[endpoint] = out, torch.stack(seen)
    assert torch.equal(runs["x0"][1], runs["sigma2"][1])
    assert float((runs["x0"][0] - runs["sigma2"][0]).abs().max()) > 1e-3  # the last step is at t = 99
