"""Conditioning and classifier-free guidance against the exact two-class Gaussian-mixture oracle
(docs/math.md, "Guidance per coordinate")."""
import math

import pytest
import torch

from gendiff import Diffusion, GaussianBlurBasis
from gendiff.guidance import NULL_CLASS, SNRGate, drop_condition
from gendiff.oracle import (constant_prior, expected_bound_bpd, gaussian_entropy_bpd, linear_output_variance,
                            mixture_model, oracle_model, output_variance)
from gendiff.schedules import VPBlurSchedule

SHAPE = (1, 6, 5)
STOCHASTIC = [("reverse", {}, None), ("ancestral", {}, 100), ("ddim", {"eta": 0.7}, 50)]
DETERMINISTIC = [("ddim", {"eta": 0.0}, 50), ("dpm++2m", {}, 50), ("dpm++3m", {}, 50), ("unipc", {}, 50)]


def mixture_setup():
    """Two classes diagonal in a blur basis: opposite low-frequency means, different variances."""
    basis = GaussianBlurBasis(SHAPE[1:], sigma=0.8)
    d = Diffusion(basis, VPBlurSchedule("quartic", 6.0, N=100))
    lam = 0.05 + 1.0 / (1.0 + 20 * basis.rates.double())
    mu = 0.8 * torch.exp(-3 * basis.rates.double())
    means, lams = torch.stack([mu, -mu]), torch.stack([lam, 0.4 * lam])
    return d, means, lams, mixture_model(d, means, lams)


def draw(d, model, n, sampler, opts, steps, seed=0, **kw):
    x = d.sample(model, (n, *SHAPE), sampler=sampler, steps=steps, progress=False, dtype=torch.float64,
                 generator=torch.Generator().manual_seed(seed), **opts, **kw)
    return d.to_basis(x)


def kl(mean, var, mu, lam) -> float:
    """Mean over coordinates of KL(N(mean, var) ‖ N(mu, lam)), nats."""
    q = var / lam
    return float((0.5 * (q - 1 - torch.log(q) + (mean - mu) ** 2 / lam)).mean())


@pytest.mark.parametrize("sampler,opts,steps", STOCHASTIC)
def test_guidance_one_draws_from_the_class_gaussian(sampler, opts, steps):
    d, means, lams, mix = mixture_setup()
    n, c = 3000, 1
    x = draw(d, mix, n, sampler, opts, steps, cond=c, guidance=1.0)
    # the conditional branch is class c's exact model: the same draws as that model alone
    alone = draw(d, oracle_model(d, lams[c], means[c]), n, sampler, opts, steps)
    assert torch.allclose(x, alone, rtol=0, atol=1e-10)
    grid = d.grid(sampler, steps)
    want_var = output_variance(d, lams[c], sampler, grid, **opts)  # the sampler's exact variance
    assert kl(means[c], want_var, means[c], lams[c]) < 0.02          # which is class c's, to its error
    se = (lams[c] / n).sqrt()
    assert float(((x.mean(0) - means[c]) / se).abs().max()) < 5
    assert float((x.var(0) / want_var - 1).abs().max()) < 5 * (2 / n) ** 0.5


@pytest.mark.parametrize("sampler,opts,steps", DETERMINISTIC)
def test_guidance_one_deterministic_samplers_reach_the_class_exactly(sampler, opts, steps):
    """Affine in x̄_T with the class's linear oracle: the run from x̄_T = 0 is the output mean,
    the one from s_T·1 adds the gain, so mean and variance are exact (no Monte Carlo)."""
    d, means, lams, mix = mixture_setup()
    for c in (0, 1):
        run = [draw(d, mix, 1, sampler, opts, steps, cond=torch.tensor([c]), prior=constant_prior(s))[0]
               for s in (0.0, 1.0)]
        mean, var = run[0], (run[1] - run[0]) ** 2
        assert torch.allclose(var, linear_output_variance(d, lams[c], sampler, steps=steps, **opts)[0], rtol=1e-9)
        assert kl(mean, var, means[c], lams[c]) < 0.01, (c, kl(mean, var, means[c], lams[c]))


def test_guidance_zero_is_the_unconditional_model():
    d, means, lams, mix = mixture_setup()
    labels = torch.tensor([0, 1, 1, 0])
    uncond = draw(d, mix, 4, "dpm++2m", {}, 10)
    assert torch.equal(draw(d, mix, 4, "dpm++2m", {}, 10, cond=labels, guidance=0.0), uncond)
    # a per-coordinate weight of 0 goes through the batched two-branch call: the same answer
    zero = torch.zeros(SHAPE, dtype=torch.float64)
    assert torch.allclose(draw(d, mix, 4, "dpm++2m", {}, 10, cond=labels, guidance=zero), uncond, atol=1e-12)
    # and the unconditional mixture is not either class: guidance matters here
    assert not torch.allclose(draw(d, mix, 4, "dpm++2m", {}, 10, cond=labels), uncond, atol=1e-3)


def guided_by_hand(d, mix, labels, weight_of_step):
    """ε̂̄_u + w ⊙ (ε̂̄_c − ε̂̄_u) formed in the basis by two separate calls: Eq. G1 as written."""
    def model(x, i):
        e_c = d.to_basis(mix(x, i, labels))
        e_u = d.to_basis(mix(x, i, None))
        return d.from_basis(e_u + weight_of_step(int(i[0])) * (e_c - e_u))
    return model


@pytest.mark.parametrize("kind", ["scalar", "tensor", "rule"])
def test_guided_prediction_is_eq_g1_per_coordinate(kind):
    d, means, lams, mix = mixture_setup()
    labels = torch.tensor([1, 0, 1])
    w_tensor = torch.linspace(0.5, 4.0, 30, dtype=torch.float64).view(SHAPE)
    gate = SNRGate(3.0, min_snr=2.0, otherwise=1.0)
    guidance = {"scalar": 2.5, "tensor": w_tensor, "rule": gate}[kind]
    coef = d.coefficients()
    weight_of_step = {"scalar": lambda i: 2.5, "tensor": lambda i: w_tensor,
                      "rule": lambda i: torch.where(coef.a(i) / coef.s(i) >= 2.0, 3.0, 1.0).double()}[kind]
    for sampler, opts in [("dpm++2m", {}), ("ancestral", {}), ("unipc", {})]:
        got = draw(d, mix, 3, sampler, opts, 12, cond=labels, guidance=guidance)
        want = draw(d, guided_by_hand(d, mix, labels, weight_of_step), 3, sampler, opts, 12)
        assert torch.allclose(got, want, atol=1e-10), (kind, sampler)
    if kind == "rule":  # the gate is active on some coordinates at some steps, not everywhere
        on = [float((coef.a(i) / coef.s(i) >= 2.0).double().mean()) for i in d.grid("dpm++2m", 12)[:-1]]
        assert any(0 < f < 1 for f in on), on


class Counting:
    """The mixture oracle, recording the batch size of every call."""

    def __init__(self, model):
        self.model, self.batches = model, []

    def __call__(self, x, i, cond=None):
        self.batches.append(x.shape[0])
        return self.model(x, i, cond)


@pytest.mark.parametrize("sampler", ["dpm++2m", "ancestral", "unipc", "dpm++3m"])
def test_one_batched_network_call_per_step_for_both_branches(sampler):
    d, means, lams, mix = mixture_setup()
    plain, guided = Counting(mix), Counting(mix)
    draw(d, plain, 3, sampler, {}, 8)
    draw(d, guided, 3, sampler, {}, 8, cond=torch.tensor([0, 1, 0]), guidance=3.0)
    assert len(guided.batches) == len(plain.batches) > 0
    assert set(plain.batches) == {3} and set(guided.batches) == {6}


def test_p_uncond_dropping_is_reproducible_and_bernoulli():
    labels = torch.arange(4000) % 10
    a = drop_condition(labels, 0.2, torch.Generator().manual_seed(3))
    b = drop_condition(labels, 0.2, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    dropped = a == NULL_CLASS
    assert torch.equal(a[~dropped], labels[~dropped])
    assert abs(float(dropped.double().mean()) - 0.2) < 5 * math.sqrt(0.2 * 0.8 / 4000)
    assert torch.equal(drop_condition(labels, 0.0, None), labels)
    assert bool((drop_condition(labels, 1.0, torch.Generator()) == NULL_CLASS).all())
    emb = torch.randn(8, 3)  # a tensor condition: dropped rows become zeros
    e = drop_condition(emb, 1.0, torch.Generator())
    assert torch.equal(e, torch.zeros_like(emb))


def test_loss_passes_the_dropped_condition_to_the_network():
    d, means, lams, mix = mixture_setup()
    seen = []

    def model(x, i, cond=None):
        seen.append(cond)
        return mix(x, i, cond)

    x0 = torch.randn(64, *SHAPE, dtype=torch.float64)
    labels = torch.arange(64) % 2
    losses = [d.loss(model, x0, cond=labels, p_uncond=0.5, generator=torch.Generator().manual_seed(7))
              for _ in range(2)]
    assert torch.equal(losses[0], losses[1]) and torch.equal(seen[0], seen[1])
    assert bool((seen[0] == NULL_CLASS).any()) and bool((seen[0] == labels).any())
    # without a condition the network keeps its two-argument call and the same random stream
    plain = d.loss(oracle_model(d, lams[0]), x0, generator=torch.Generator().manual_seed(7))
    assert torch.equal(plain, d.loss(lambda x, i: oracle_model(d, lams[0])(x, i), x0,
                                     generator=torch.Generator().manual_seed(7)))
    with pytest.raises(ValueError, match="p_uncond"):
        d.loss(model, x0, p_uncond=0.1)
    with pytest.raises(TypeError, match="takes no condition"):
        d.loss(oracle_model(d, lams[0]), x0, cond=labels)
    with pytest.raises(ValueError, match="guidance needs a condition"):
        d.sample(mix, (2, *SHAPE), guidance=2.0, progress=False)


def test_nll_of_a_class_is_its_exact_nll_within_the_bound_gap():
    d, means, lams, mix = mixture_setup()
    n, c = 1500, 0
    g = torch.Generator().manual_seed(0)
    x0 = d.from_basis(means[c] + lams[c].sqrt() * torch.randn(n, *SHAPE, generator=g, dtype=torch.float64))
    kw = dict(decoder="continuous", progress=False, batch_size=400)
    got = d.nll(mix, x0, cond=torch.full((n,), c), generator=torch.Generator().manual_seed(1), **kw)
    # the bound of class c's Gaussian: the zero-mean closed form plus the prior term of its mean
    a_N, s_N = d.marginal(torch.tensor([d.N]))
    shift = float((0.5 * a_N[0] ** 2 * means[c] ** 2 / s_N[0] ** 2).mean()) / math.log(2)
    want = expected_bound_bpd(d, lams[c]) + shift
    exact = gaussian_entropy_bpd(lams[c])
    assert abs(got.bpd - want) < 4 * got.stderr, (got.bpd, want, got.stderr)
    assert exact <= want and got.bpd - exact < (want - exact) + 4 * got.stderr
    other = d.nll(mix, x0, cond=torch.full((n,), 1 - c), generator=torch.Generator().manual_seed(1), **kw)
    assert other.bpd > got.bpd + 0.1  # the other class's model scores these images worse


# ------------------------------------------------------------------ networks, data, runs

def test_unet_class_embedding_and_null_class():
    from gendiff.models import PRESETS, UNet
    from dataclasses import replace
    torch.manual_seed(0)
    net = UNet(replace(PRESETS["tiny"], in_channels=1, out_channels=1, num_classes=3)).eval()
    for p in net.parameters():  # the zero-initialised residual branches would hide every difference
        if not p.any():
            torch.nn.init.normal_(p, std=0.1)
    x, i = torch.randn(4, 1, 16, 16), torch.tensor([5, 5, 9, 9])
    with torch.no_grad():
        null = net(x, i, torch.full((4,), NULL_CLASS))
        assert torch.equal(net(x, i), null) and torch.equal(net(x, i, None), null)
        a, b = net(x, i, torch.tensor([0, 1, 2, 0])), net(x, i, torch.tensor([1, 1, 2, 2]))
    assert torch.equal(a[1:3], b[1:3]) and not torch.allclose(a[0], b[0]) and not torch.allclose(a[0], null[0])
    with pytest.raises(ValueError, match="class labels in 0..2"):
        net(x, i, torch.tensor([0, 1, 3, 0]))
    plain = UNet(replace(PRESETS["tiny"], in_channels=1, out_channels=1))
    with pytest.raises(ValueError, match="unconditional"):
        plain(x, i, torch.zeros(4, dtype=torch.long))
    # the unconditional network's weights are unchanged by the option: the embedding comes last
    torch.manual_seed(1)
    u = UNet(replace(PRESETS["tiny"], in_channels=1, out_channels=1))
    torch.manual_seed(1)
    c = UNet(replace(PRESETS["tiny"], in_channels=1, out_channels=1, num_classes=3))
    assert all(torch.equal(p, c.state_dict()[k]) for k, p in u.state_dict().items())


def test_diffusers_adapter_passes_class_labels_with_a_null_class():
    diffusers = pytest.importorskip("diffusers")
    from gendiff.interop.diffusers import DiffusersUNet
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                 block_out_channels=(8, 16), norm_num_groups=4, num_class_embeds=4,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D")).eval()
    net = DiffusersUNet(unet)
    x, i = torch.randn(3, 1, 8, 8), torch.tensor([1, 10, 100])
    with torch.no_grad():
        want = unet(x, i - 1, class_labels=torch.tensor([0, 2, 3])).sample
        assert torch.equal(net(x, i, torch.tensor([0, 2, -1])), want)
        assert torch.equal(net(x, i), unet(x, i - 1, class_labels=torch.full((3,), 3)).sample)
    d = Diffusion(GaussianBlurBasis((8, 8)), VPBlurSchedule(N=100))
    x = d.sample(net, (2, 1, 8, 8), steps=4, cond=torch.tensor([0, 1]), guidance=2.0, progress=False,
                 generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all()


def test_data_labels_digits_folders_and_lsun(tmp_path):
    import lmdb
    from PIL import Image
    from gendiff.data import DigitsDataset, ImageFolderDataset, LSUNDataset, Labelled
    digits = Labelled(DigitsDataset("test"))
    assert digits.classes == [str(k) for k in range(10)] and int(digits[5][1]) == int(digits.dataset.labels[5])
    root = tmp_path / "folder"
    for cls, colour in (("cat", 10), ("ant", 200)):
        (root / cls / "deep").mkdir(parents=True)
        Image.new("L", (8, 8), colour).save(root / cls / "x.png")
        Image.new("L", (8, 8), colour).save(root / cls / "deep" / "y.png")
    (root / "ant" / "a_bad.png").write_bytes(b"not a png")  # sorted first: skipped for the next image
    ds = Labelled(ImageFolderDataset(root, size=8, channels=1))
    assert ds.classes == ["ant", "cat"]
    with pytest.warns(RuntimeWarning):
        pairs = [ds[k] for k in range(len(ds))]
    for x, y in pairs:  # each image with its own class (ant bright, cat dark), the skipped one too
        assert int(y) == (0 if float(x.mean()) > 0 else 1)
    Image.new("L", (8, 8)).save(root / "loose.png")
    with pytest.raises(ValueError, match="no class labels"):
        Labelled(ImageFolderDataset(root, size=8, channels=1))
    lsun = tmp_path / "tower_train_lmdb"
    env = lmdb.open(str(lsun), map_size=1 << 22)
    with env.begin(write=True) as txn:
        for k in range(3):
            buf = __import__("io").BytesIO()
            Image.new("RGB", (8, 8), (k, 0, 0)).save(buf, format="PNG")
            txn.put(f"{k}".encode(), buf.getvalue())
    env.close()
    ls = Labelled(LSUNDataset(lsun, size=8, cache_dir=tmp_path / "cache"))
    assert ls.classes == ["tower"] and [int(ls[k][1]) for k in range(3)] == [0, 0, 0]


def conditional_config(tmp_path, steps, name):
    from dataclasses import asdict, replace
    from gendiff.models import PRESETS
    from gendiff.training import CondConfig, DataConfig, FabricConfig, RunConfig, TrainConfig
    model = replace(PRESETS["tiny"], in_channels=1, out_channels=1, num_classes=10)
    t = TrainConfig(steps=steps, batch_size=8, lr=2e-3, ema_decay=0.99, log_every=2, ckpt_every=2, sample_every=0,
                    sample_n=4, sample_steps=4)
    return RunConfig(name, GaussianBlurBasis((16, 16)).config(), VPBlurSchedule("quartic", 0.14, N=100).config(),
                     asdict(model), DataConfig("digits", 16, 1), t, FabricConfig("cpu", 1), str(tmp_path),
                     cond=CondConfig("classes", 10, p_uncond=0.3, guidance=2.0, guidance_min_snr=0.5))


def test_conditional_run_trains_checkpoints_resumes_bitwise_and_samples_a_class(tmp_path):
    from gendiff.training import Trainer, load_checkpoint, open_run, sample_run
    seen = []
    full = Trainer(conditional_config(tmp_path, 6, "full"), figures=False)
    full.setup()
    loss = full.diffusion.loss

    def spy(model, x0, **kw):  # the labels and p_uncond the trainer passes
        seen.append((kw["cond"].clone(), kw["p_uncond"]))
        return loss(model, x0, **kw)
    full.diffusion.loss = spy
    full.fit()
    digits = full.dataset.labels
    assert len(seen) == 6 and all(p == 0.3 and c.dtype == torch.long and c.shape == (8,) for c, p in seen)
    assert all(bool((c >= 0).all() & (c < 10).all()) for c, _ in seen)
    assert len(torch.cat([c for c, _ in seen]).unique()) > 3
    assert set(digits.tolist()) == set(range(10))
    half = Trainer(conditional_config(tmp_path, 3, "split"), figures=False)
    half.fit()
    rest = Trainer(conditional_config(tmp_path, 6, "split"), figures=False)
    assert rest.resume() and rest.step == 3
    rest.fit()
    for a, b in zip(full.raw_model.state_dict().values(), rest.raw_model.state_dict().values()):
        assert torch.equal(a, b)
    saved = load_checkpoint(tmp_path / "split" / "last.ckpt")["config"]["cond"]
    assert saved == {"kind": "classes", "num_classes": 10, "p_uncond": 0.3, "guidance": 2.0, "guidance_min_snr": 0.5}
    run = open_run(tmp_path / "split" / "last.ckpt")
    calls = []
    net = run.model

    def recorder(x, i, cond=None):
        calls.append(None if cond is None else cond.clone())
        return net(x, i, cond)
    x7 = sample_run(run, 3, model=recorder, classes=7, generator=torch.Generator().manual_seed(0))
    assert x7.shape == (3, 1, 16, 16) and torch.isfinite(x7).all()
    # guided (w = 2): every call holds both branches, class 7 then the null class
    assert calls and all(torch.equal(c, torch.tensor([7, 7, 7, -1, -1, -1])) for c in calls)
    x3 = sample_run(run, 3, classes=3, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(x3, x7)
    assert torch.equal(run.labels(20), torch.arange(10).repeat_interleave(2))  # a grid row per class
    with pytest.raises(ValueError, match="classes must be in 0..9"):
        run.labels(2, 10)


def test_cond_config_is_checked_and_a_changed_p_uncond_is_not_resumed(tmp_path):
    from dataclasses import replace
    from gendiff.training import CheckpointError, CondConfig, Trainer
    from gendiff.training.config import ConfigError
    with pytest.raises(ConfigError, match="num_classes"):
        CondConfig("classes")
    with pytest.raises(ConfigError, match="p_uncond"):
        CondConfig("classes", 10, p_uncond=1.5)
    cfg = conditional_config(tmp_path, 2, "c")
    with pytest.raises(ConfigError, match="model.num_classes"):
        replace(cfg, cond=CondConfig("classes", 5))
    with pytest.raises(ConfigError, match="model.num_classes"):
        replace(cfg, cond=CondConfig())
    Trainer(cfg, figures=False).fit()
    other = Trainer(replace(cfg, cond=replace(cfg.cond, p_uncond=0.5)), figures=False)
    with pytest.raises(CheckpointError, match="cond.p_uncond"):
        other.resume()
    photos = replace(cfg, data=replace(cfg.data, spec="photos-gray"))
    with pytest.raises(ConfigError, match="no class labels"):
        Trainer(photos, figures=False).setup()


def test_command_line_trains_a_conditional_run_and_samples_a_class_in_a_fresh_process(tmp_path):
    """`lsun_blur.py --cond classes --guidance 2.0`, then `sample.py --class 7` in another process:
    its PNGs are the library's samples of class 7 with the run's guidance (8-bit, ±1 level)."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    import numpy as np
    from PIL import Image
    from gendiff.training import open_run, sample_run
    from gendiff.training.run import run_sampling
    from gendiff.value_range import map_range
    root = Path(__file__).resolve().parents[1]

    def recipe(*args):
        out = subprocess.run([sys.executable, *args, "--threads", "1"], cwd=root, capture_output=True, text=True,
                             timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert out.returncode == 0, out.stderr[-3000:]
        return out
    recipe("recipes/lsun_blur.py", "--cond", "classes", "--guidance", "2.0", "--p-uncond", "0.2", "--quick",
           "--steps", "4", "--model", "tiny", "--no-figures", "--name", "c", "--out", str(tmp_path))
    ckpt = tmp_path / "c" / "last.ckpt"
    run = open_run(ckpt)
    assert (run.config.cond.kind, run.config.cond.num_classes, run.config.cond.p_uncond) == ("classes", 10, 0.2)
    assert run.config.model["num_classes"] == 10 and run.config.cond.guidance == 2.0
    recipe("recipes/sample.py", "--ckpt", str(ckpt), "--class", "7", "--n", "3", "--steps", "3", "--out",
           str(tmp_path / "s7"))
    # grey images saved as RGB: one channel
    got = np.stack([np.asarray(Image.open(tmp_path / "s7" / f"{k:06d}.png"))[..., 0] for k in range(3)]).astype(int)
    sampling = run_sampling(run.config, steps=3)
    want = sample_run(run, 3, sampling, classes=7, generator=torch.Generator().manual_seed(0))
    want = (map_range(want, run.config.data.value_range, clamp=True) * 255).round().numpy().astype(int)
    assert np.abs(got - want[:, 0]).max() <= 1
    other = sample_run(run, 3, sampling, classes=3, generator=torch.Generator().manual_seed(0))
    sevens = sample_run(run, 3, sampling, classes=7, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(other, sevens)
    refused = subprocess.run([sys.executable, "recipes/sample.py", "--ckpt", str(ckpt), "--class", "10", "--n", "1"],
                             cwd=root, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "--class" in refused.stderr + refused.stdout
