"""The engine, the samplers, bf16 autocast and the Fabric trainer on CUDA.

Marked ``gpu``: they skip without CUDA (so the CPU suite skips them) and ``pytest -m gpu`` selects
them; ``benchmarks/gpu.py`` runs them first on a GPU machine.
"""
import csv
from dataclasses import asdict, replace

import pytest
import torch

from gendiff import Diffusion, GaussianBlurBasis
from gendiff.models import PRESETS, build_model
from gendiff.priors import gaussian_prior
from gendiff.samplers import SAMPLERS
from gendiff.training import sampling_steps
from gendiff.schedules import VPBlurSchedule
from gendiff.training import DataConfig, FabricConfig, RunConfig, TrainConfig, Trainer

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

CUDA = torch.device("cuda")


def blur(side=8, N=100):
    return Diffusion(GaussianBlurBasis((side, side), sigma=0.4), VPBlurSchedule("quartic", 0.140625, N=N))


def linear_model(x, i):
    """A fixed, device-independent ε-predictor: deterministic, so CPU and CUDA must agree."""
    return 0.5 * x + 1e-3 * i.to(x.dtype)[:, None, None, None]


def test_q_sample_on_cuda_equals_cpu():
    d, g = blur(), torch.Generator().manual_seed(0)
    x0, noise = torch.randn(16, 3, 8, 8, generator=g), torch.randn(16, 3, 8, 8, generator=g)
    i = torch.randint(1, d.N + 1, (16,), generator=g)
    cpu, _ = d.q_sample(x0, i, noise=noise)
    gpu, _ = d.q_sample(x0.to(CUDA), i.to(CUDA), noise=noise.to(CUDA))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)


def test_loss_on_cuda_matches_cpu_in_distribution():
    """The noise comes from each device's own generator, so the two losses are two estimates of
    one expectation over 4096·64 coordinates: their standard error is ~0.5 %, the tolerance 3 %."""
    d, g = blur(), torch.Generator().manual_seed(1)
    x0 = torch.randn(4096, 1, 8, 8, generator=g)
    i = torch.randint(1, d.N + 1, (4096,), generator=g)
    cpu = d.loss(linear_model, x0, i=i, generator=torch.Generator().manual_seed(2))
    gpu = d.loss(linear_model, x0.to(CUDA), i=i.to(CUDA), generator=torch.Generator(CUDA).manual_seed(2))
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
    assert abs(gpu.item() / cpu.item() - 1) < 0.03


@pytest.mark.parametrize("sampler", ["dpm++2m", "ddim", "dpm++3m", "unipc"])
def test_deterministic_sampling_on_cuda_equals_cpu(sampler):
    """Same prior draw (passed in), deterministic sampler and model: the samples must agree."""
    d, shape = blur(), (4, 3, 8, 8)

    def prior(diffusion, shape, t0, generator, dtype, device):  # one CPU draw for both devices
        return gaussian_prior(diffusion, shape, t0, torch.Generator().manual_seed(3), dtype, "cpu").to(device)

    out = {dev: d.sample(linear_model, shape, sampler=sampler, steps=20, prior=prior, device=dev,
                         progress=False) for dev in ("cpu", "cuda")}
    assert out["cuda"].device.type == "cuda"
    torch.testing.assert_close(out["cuda"].cpu(), out["cpu"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_runs_on_cuda_with_the_unet(sampler):
    d = blur(side=16, N=50)
    torch.manual_seed(0)
    net = build_model("tiny").to(CUDA).eval()
    g = torch.Generator(CUDA).manual_seed(0)
    steps = sampling_steps(sampler, 10, d.last_train_step)  # None for samplers that walk every step
    x = d.sample(net, (4, 3, 16, 16), sampler=sampler, steps=steps, generator=g, device=CUDA, progress=False,
                 clip_x0=(-1.0, 1.0))
    assert x.device.type == "cuda" and x.shape == (4, 3, 16, 16)
    assert torch.isfinite(x).all()


def test_loss_under_bf16_autocast_is_finite_and_close_to_fp32():
    d = blur(side=16)
    torch.manual_seed(0)
    net = build_model("tiny").to(CUDA)
    x0 = torch.randn(64, 3, 16, 16, device=CUDA).clamp(-1, 1)
    fp32 = d.loss(net, x0, generator=torch.Generator(CUDA).manual_seed(4))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        bf16 = d.loss(net, x0, generator=torch.Generator(CUDA).manual_seed(4))
    assert bf16.dtype == torch.float32  # the engine's math stays float32 under autocast
    assert torch.isfinite(bf16)
    assert abs(bf16.item() / fp32.item() - 1) < 0.05  # bf16 keeps 8 bits: ~0.4 % per operation
    bf16.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_trainer_runs_through_fabric_on_gpu_in_bf16(tmp_path):
    model = asdict(replace(PRESETS["small"], image_size=16, in_channels=1, out_channels=1))
    config = RunConfig("gpu", GaussianBlurBasis((16, 16), sigma=0.4).config(),
                       VPBlurSchedule("quartic", 0.140625, N=100).config(), model, DataConfig("digits", 16, 1),
                       TrainConfig(steps=4, batch_size=8, lr=1e-3, log_every=1, ckpt_every=4, sample_every=0,
                                   sample_n=4, sample_steps=3),
                       FabricConfig(accelerator="gpu", precision="bf16-mixed"), str(tmp_path))
    trainer = Trainer(config)
    trainer.setup()
    ckpt = trainer.fit()
    assert trainer.step == 4 and ckpt.is_file()
    assert trainer.fabric.device.type == "cuda"
    assert all(p.device.type == "cuda" for p in trainer.raw_model.parameters())
    with open(trainer.run_dir / "metrics.csv", newline="") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert trainer.sample_grid().is_file()
