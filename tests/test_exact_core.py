"""The exact core: each sampler step is its equation computed literally, and no input is a silent trap."""
from __future__ import annotations

import inspect
import math
import warnings

import pytest
import torch

from gendiff import BlurredDataPrior, DCTBasis, Diffusion, GaussianBlurBasis, ResidualMeanPrediction
from gendiff.oracle import gaussian_kl, output_variance
from gendiff.parameterization import Prediction
from gendiff.samplers import make_grid, sample_reverse
from gendiff.schedules import HeatDissipationSchedule, VPBlurSchedule


def fake_net(x, i):
    """A fixed nonlinear network (not the oracle): its output is nothing like the true ε."""
    return torch.sin(3 * x) + 0.01 * i.to(x.dtype)[:, None, None, None]


def one_step(d, x_bar, timesteps, sampler, seed=0, **kw):
    """x̄ after the first step of ``timesteps``, from the fixed start x̄ (no generator use by the prior)."""
    seen = {}
    d.sample(fake_net, x_bar.shape, sampler=sampler, timesteps=timesteps, prior=lambda *a: x_bar.clone(),
             dtype=torch.float64, progress=False, generator=torch.Generator().manual_seed(seed),
             callback=lambda s: seen.setdefault(s["i"], s["x"]), **kw)
    return d.to_basis(seen[timesteps[1]]) if timesteps[1] in seen else None


@pytest.mark.parametrize("i", [1000, 500])
def test_one_reverse_step_is_eq_20_in_every_coordinate(i):
    d = Diffusion(GaussianBlurBasis((16, 16)), VPBlurSchedule("log", 0.6, N=1000))
    x_bar = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = one_step(d, x_bar, [i, i - 1, 0], "reverse", quiet_steps=1)
    step = torch.tensor([i])
    a, s = d.marginal(step)
    r, var = d.transition(step)
    eps_bar = d.to_basis(fake_net(d.from_basis(x_bar), step.repeat(2)))
    z = torch.randn(x_bar.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    want = (2 - r) * x_bar - var / s * eps_bar + var.sqrt() * z
    assert bool((a / s < 1e-3).any())  # the coordinates where x̂̄_0 would have been floored to 0
    assert float((got - want).abs().max()) <= 1e-12


@pytest.mark.parametrize("k", [200, 1])
def test_one_ihdm_step_is_the_residual_mean_plus_noise(k):
    K = 200
    d = Diffusion(DCTBasis((32, 32)), HeatDissipationSchedule(K=K), parameterization=ResidualMeanPrediction())
    x_bar = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grid = [k, k - 1, 0] if k > 1 else [1, 0]
    if k > 1:
        got = one_step(d, x_bar, grid, "ihdm")
    else:
        got = d.to_basis(d.sample(fake_net, x_bar.shape, sampler="ihdm", timesteps=grid, dtype=torch.float64,
                                  prior=lambda *a: x_bar.clone(), progress=False))
    u = d.from_basis(x_bar)
    mean = d.to_basis(u + fake_net(u, torch.full((2,), k)))
    z = torch.randn(x_bar.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    want = mean + 1.25 * 0.01 * z if k > 1 else mean
    if k == K:
        assert float(d.marginal(torch.tensor([k - 1]))[0].min()) == 0.0  # a_{k−1} underflows here
    assert float((got - want).abs().max()) <= 1e-12


def test_default_reverse_is_no_worse_than_the_official_loop_on_log_06():
    d = Diffusion(GaussianBlurBasis((64, 64)), VPBlurSchedule("log", 0.6, N=1000))
    lam = 0.02 + 1.0 / (1.0 + 30.0 * d.basis.rates.to(torch.float64))
    quiet = inspect.signature(sample_reverse).parameters["quiet_steps"].default
    ours = gaussian_kl(output_variance(d, lam, "reverse", d.grid("reverse"), quiet_steps=quiet), lam)
    official = gaussian_kl(output_variance(d, lam, "reverse", make_grid(999, 999), quiet_steps=2), lam)
    assert ours <= official * (1 + 1e-9)


def small():
    return Diffusion(GaussianBlurBasis((8, 8)), VPBlurSchedule("quartic", 0.14, N=100))


def test_ihdm_without_a_prior_says_what_to_pass():
    d = Diffusion(DCTBasis((8, 8)), HeatDissipationSchedule(K=5), parameterization=ResidualMeanPrediction())
    with pytest.raises(ValueError, match="natural prior is 'blurred_data'.*BlurredDataPrior"):
        d.sample(fake_net, (1, 1, 8, 8), sampler="ihdm", progress=False)
    x = d.sample(fake_net, (1, 1, 8, 8), sampler="ihdm", progress=False, prior=BlurredDataPrior(torch.rand(3, 1, 8, 8)))
    assert torch.isfinite(x).all()


def test_step_zero_is_refused_by_loss_and_score():
    d, x = small(), torch.randn(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"loss: steps must be in 1\.\.N=100 \(step 0 is the data"):
        d.loss(fake_net, x, i=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"score: steps must be in 1\.\.N=100"):
        d.score(x, torch.tensor([0, 0]), x)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_sampling_warns_with_its_cost(dtype):
    with pytest.warns(UserWarning, match=r"costs accuracy \(KL/dim 1\.3e-3 in bfloat16"):
        small().sample(fake_net, (1, 1, 8, 8), dtype=dtype, steps=2, progress=False)


def test_non_finite_inputs_and_outputs_are_refused_unless_switched_off():
    d, x = small(), torch.randn(2, 1, 8, 8)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    i = torch.tensor([3, 4])
    with pytest.raises(ValueError, match="x0 holds 1 NaN/Inf"):
        d.loss(fake_net, bad, i=i)
    with pytest.raises(ValueError, match="noise holds 1 NaN/Inf"):
        d.q_sample(x, i, noise=bad)
    # in training a diverging network is a non-finite loss, which the trainer stops on
    assert not math.isfinite(float(d.loss(lambda x, i: x * float("inf"), x, i=i)))
    with pytest.raises(ValueError, match=r"model\(x_i, i\) at step 100 holds 64 NaN/Inf.*check_finite=False"):
        d.sample(lambda x, i: x * float("nan"), (1, 1, 8, 8), steps=2, progress=False)
    off = Diffusion(d.basis, d.schedule, check_finite=False)
    assert math.isnan(float(off.loss(fake_net, bad, i=i)))


def test_heat_schedule_noise_is_float64():
    sched = HeatDissipationSchedule(K=5, sigma=0.01)
    rates = DCTBasis((4, 4)).rates.to(torch.float64)
    s2 = sched.s2(torch.tensor([1, 0]), rates)
    assert s2.dtype == torch.float64
    assert float(s2[0].max()) == 0.01 ** 2 and float(s2[1].abs().max()) == 0.0


def test_api_arguments_are_checked():
    d = small()
    run = lambda **kw: d.sample(fake_net, (1, 1, 8, 8), progress=False, **kw)  # noqa: E731
    with pytest.raises(ValueError, match=r"steps must be in 1\.\.100 .*got 0"):
        run(steps=0)
    with pytest.raises(TypeError, match=r"steps must be an integer in 1\.\.100, got 2\.5"):
        run(steps=2.5)
    with pytest.raises(ValueError, match=r"clip_x0 must be a finite range \(lo, hi\) with lo < hi, got \(1, -1\)"):
        run(clip_x0=(1, -1))
    with pytest.raises(ValueError, match=r"eta must be a finite number ≥ 0, got nan"):
        run(sampler="ddim", eta=float("nan"))
    with pytest.raises(ValueError, match="quiet_steps must be an integer ≥ 0"):
        run(sampler="reverse", quiet_steps=-1)
    with pytest.raises(ValueError, match="non-empty batch"):
        d.loss(fake_net, torch.zeros(0, 1, 8, 8))
    with pytest.raises(ValueError, match=r"N must be an integer ≥ 1, got 1\.5"):
        VPBlurSchedule("quartic", 0.14, N=1.5)


def test_the_trained_range_is_where_loss_draws_and_sampling_outside_it_warns():
    d = Diffusion(GaussianBlurBasis((8, 8)), VPBlurSchedule("quartic", 0.14, N=3), last_train_step=2)
    seen = []
    d.loss(lambda x, i: seen.append(i) or torch.zeros_like(x), torch.zeros(400, 1, 8, 8),
           generator=torch.Generator().manual_seed(0))
    assert set(torch.cat(seen).tolist()) == {1, 2}
    with pytest.warns(UserWarning, match=r"grid starts at step 3 but the model is trained on steps 1\.\.2; pass start=2"):
        d.sample(fake_net, (1, 1, 8, 8), sampler="reverse", start=3, progress=False)
    assert d.grid("reverse") == [2, 1, 0]  # the default grid starts at the last trained step
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d.sample(fake_net, (1, 1, 8, 8), sampler="reverse", progress=False)


def test_the_multiplier_cache_never_carries_options_across_calls():
    d, fresh = small(), small()
    kw = dict(sampler="ddim", steps=4, progress=False)
    d.sample(fake_net, (2, 1, 8, 8), eta=1.0, generator=torch.Generator().manual_seed(0), **kw)
    x = d.sample(fake_net, (2, 1, 8, 8), eta=0.0, generator=torch.Generator().manual_seed(0), **kw)
    y = fresh.sample(fake_net, (2, 1, 8, 8), eta=0.0, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(x, y)


@pytest.mark.parametrize("form", ["eps", "mean", "x0"])
@pytest.mark.parametrize("clip", [None, lambda x0: x0.clamp(-0.3, 0.3)])
def test_the_forms_of_a_prediction_are_one_prediction(form, clip):
    """x̄ = a x̂̄_0 + s ε̂̄ and signal(u) = a_u x̂̄_0, whatever form the network gave (and after a clamp)."""
    d, i = small(), 50
    coef = d.coefficients(dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    x, v = (torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64) for _ in range(2))
    p = Prediction(form, v, x, i, coef, clip=clip)
    a, s = coef.a(i), coef.s(i)
    assert bool((a / s >= 1e-3).all())  # no floored coordinate: the identities are exact
    assert float((a * p.x0 + s * p.eps - x).abs().max()) < 1e-12
    for u in (i - 1, 10):
        assert float((p.signal(u) - coef.a(u) * p.x0).abs().max()) < 1e-12
    if clip is not None:
        assert float(p.x0.abs().max()) <= 0.3


def test_per_sample_generators_make_sample_k_independent_of_the_batch():
    """A list of generators (diffusers' convention): sample k of a batch of 4 equals the batch
    of 1 drawn with generator k, for every stochastic sampler and the Gaussian prior."""
    from gendiff import DCTBasis, Diffusion
    from gendiff.oracle import oracle_model
    from gendiff.schedules import VPBlurSchedule

    d = Diffusion(DCTBasis((8, 8)), VPBlurSchedule("quartic", 0.5, N=100))
    model = oracle_model(d, torch.linspace(0.1, 1.0, 64, dtype=torch.float64).reshape(1, 8, 8))

    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    for sampler in ("reverse", "ancestral", "ddim", "dpm++2m"):
        kw = {"eta": 1.0} if sampler == "ddim" else {}
        four = d.sample(model, (4, 2, 8, 8), sampler=sampler, steps=None if sampler == "reverse" else 10,
                        generator=gens([0, 1, 2, 3]), progress=False, dtype=torch.float64, **kw)
        one = d.sample(model, (1, 2, 8, 8), sampler=sampler, steps=None if sampler == "reverse" else 10,
                       generator=gens([2]), progress=False, dtype=torch.float64, **kw)
        torch.testing.assert_close(one[0], four[2], rtol=0, atol=1e-12, msg=sampler)
        assert not torch.allclose(four[1], four[2])  # different seeds, different samples


def test_generator_lists_are_checked_and_q_sample_takes_a_scalar_step():
    from gendiff import Diffusion, IdentityBasis
    from gendiff.schedules import VPBlurSchedule

    d = Diffusion(IdentityBasis((4, 4)), VPBlurSchedule(N=10))
    x0 = torch.zeros(3, 1, 4, 4)
    with pytest.raises(ValueError, match="one per sample: batch size 3, got 2"):
        d.q_sample(x0, 5, generator=[torch.Generator(), torch.Generator()])
    with pytest.raises(TypeError, match="torch.Generator or a list of them"):
        d.q_sample(x0, 5, generator=[0, 1, 2])
    noise = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    scalar, _ = d.q_sample(x0.double() + 1, 5, noise=noise)
    batched, _ = d.q_sample(x0.double() + 1, torch.full((3,), 5), noise=noise)
    torch.testing.assert_close(scalar, batched, rtol=0, atol=0)
    loss = d.loss(lambda x, i: torch.zeros_like(x), x0, i=torch.tensor(5))
    assert torch.isfinite(loss)
