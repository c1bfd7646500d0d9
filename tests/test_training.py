"""The trainer, the recipes and resumption, on embedded data with tiny models (CPU)."""
import json
import os
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from gendiff import GaussianBlurBasis
from gendiff.models import PRESETS
from gendiff.schedules import VPBlurSchedule
from gendiff.training.config import ConfigError
from gendiff.training import DataConfig, FabricConfig, RunConfig, TrainConfig, Trainer, load_run

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(tmp_path, steps=20, name="run", **train):
    model = replace(PRESETS["tiny"], in_channels=1, out_channels=1)
    t = TrainConfig(steps=steps, batch_size=16, lr=2e-3, ema_decay=0.99, log_every=5, ckpt_every=10,
                    sample_every=0, sample_n=4, sample_steps=5, **train)
    return RunConfig(name, GaussianBlurBasis((16, 16)).config(), VPBlurSchedule("quartic", 0.14, N=100).config(),
                     asdict(model), DataConfig("digits", 16, 1), t, FabricConfig("cpu", 1), str(tmp_path))


def eval_loss(trainer):
    x0 = torch.stack([trainer.dataset[k] for k in range(64)])
    g = torch.Generator().manual_seed(0)
    i = torch.randint(1, trainer.diffusion.N + 1, (64,), generator=g)
    with torch.no_grad():
        return float(trainer.diffusion.loss(trainer.model, x0, i=i, generator=g))


def test_training_reduces_the_loss(tmp_path):
    tr = Trainer(tiny_config(tmp_path, steps=60))
    tr.setup()
    before = eval_loss(tr)
    tr.fit()
    assert eval_loss(tr) < 0.7 * before
    run = tmp_path / "run"
    assert {"config.json", "last.ckpt", "metrics.csv", "forward.png"} <= {p.name for p in run.iterdir()}
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 60


def params(trainer):
    return torch.cat([p.detach().flatten() for p in trainer.raw_model.parameters()])


def test_resume_equals_uninterrupted(tmp_path):
    full = Trainer(tiny_config(tmp_path, steps=20, name="full"))
    full.setup()
    full.fit()
    half = Trainer(tiny_config(tmp_path, steps=10, name="split"))
    half.setup()
    half.fit()
    rest = Trainer(tiny_config(tmp_path, steps=20, name="split"))
    rest.setup()
    assert rest.resume() and rest.step == 10
    rest.fit()
    torch.testing.assert_close(params(rest), params(full), atol=1e-6, rtol=0)
    ema_full = torch.cat([p.flatten() for p in full.ema.parameters()])
    ema_rest = torch.cat([p.flatten() for p in rest.ema.parameters()])
    torch.testing.assert_close(ema_rest, ema_full, atol=1e-6, rtol=0)


def test_missing_data_fails_before_the_model(tmp_path):
    cfg = replace(tiny_config(tmp_path), data=DataConfig(str(tmp_path / "nope"), 16, 1))
    tr = Trainer(cfg)
    with pytest.raises(ConfigError, match=r"data.spec '.*nope': .* neither an embedded dataset"):
        tr.setup()
    assert not hasattr(tr, "raw_model")


def run_recipe(*args, timeout=600):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_default_recipe_quick_and_sample(tmp_path):
    out = run_recipe("recipes/lsun_blur.py", "--quick", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "demo-digits"
    for f in ["samples.png", "forward.png", "trajectory.png", "last.ckpt", "config.json", "metrics.csv"]:
        assert (run / f).is_file(), f
    assert "recipes/sample.py" in out.stdout
    res = run_recipe("recipes/sample.py", "--ckpt", str(run / "last.ckpt"), "--n", "5", "--batch-size", "3",
                     "--steps", "4", "--out", str(tmp_path / "s"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "s").glob("0*.png")) == [f"{k:06d}.png" for k in range(5)]
    assert (tmp_path / "s" / "grid.png").is_file()
    config, diffusion, model = load_run(run / "last.ckpt")
    assert config.name == "demo-digits" and diffusion.N == 1000
    ev = run_recipe("recipes/evaluate.py", "--ckpt", str(run / "last.ckpt"), "--n", "16", "--seeds", "0", "1",
                    "--steps", "5", "--out", str(tmp_path / "ev"),
                    "--inception", str(tmp_path / "nowhere" / "inception-2015-12-05.pt"))
    assert ev.returncode == 0, ev.stderr[-3000:]
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert {"swd_16", "swd_8", "spec_high"} <= set(metrics["summary"])
    assert "inception-2015-12-05.pt" in metrics["per_seed"][0]["fid_unavailable"]  # no weights offline
    assert (tmp_path / "ev" / "spectrum.png").is_file() and (tmp_path / "ev" / "samples.png").is_file()


def test_ddp_on_cpu_two_processes(tmp_path):
    out = run_recipe("recipes/lsun_blur.py", "--quick", "--out", str(tmp_path), "--accelerator", "cpu",
                     "--devices", "2", "--strategy", "ddp", "--model", "tiny", "--steps", "6")
    assert out.returncode == 0, out.stderr[-3000:]
    ckpts = list(tmp_path.rglob("*.ckpt"))
    assert [p.name for p in ckpts] == ["last.ckpt"]
    assert torch.load(ckpts[0], weights_only=True)["step"] == 6  # format 2: no code to load


@pytest.mark.parametrize("recipe,extra", [("heat_dissipation", ["--K", "20"]), ("blurring_diffusion", ["--N", "100"])])
def test_family_recipes_quick(tmp_path, recipe, extra):
    out = run_recipe(f"recipes/{recipe}.py", "--quick", "--steps", "4", "--size", "16", "--model", "tiny",
                     "--sample-steps", "4", "--out", str(tmp_path), *extra)
    assert out.returncode == 0, out.stderr[-3000:]
    run = next(tmp_path.iterdir())
    assert {"samples.png", "trajectory.png", "last.ckpt"} <= {p.name for p in run.iterdir()}


def test_resume_refuses_a_different_process(tmp_path):
    from gendiff.training.checkpoint import CheckpointError
    first = Trainer(tiny_config(tmp_path, steps=4, name="same"))
    first.setup()
    first.fit()
    other = replace(tiny_config(tmp_path, steps=8, name="same"),
                    schedule=VPBlurSchedule("log", 0.6, N=100).config())
    tr = Trainer(other)
    tr.setup()
    with pytest.raises(CheckpointError, match="different schedule"):
        tr.resume()


def test_nonfinite_gradients_stop_before_the_weights_change(tmp_path):
    from gendiff.training import NonFiniteLossError
    tr = Trainer(tiny_config(tmp_path, steps=4, name="grad"))
    tr.setup()
    before = params(tr).clone()
    # finite forward, infinite backward: the loss check alone would let this step through
    next(tr.raw_model.parameters()).register_hook(lambda g: g * float("inf"))
    with pytest.raises(NonFiniteLossError, match="gradient norm"):
        tr.fit()
    assert torch.equal(params(tr), before)


class LocalNet(torch.nn.Module):
    """A network that is not a UNet: one convolution, scaled per step."""

    def __init__(self, channels=1):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, i):
        return self.conv(x) * (i.float() / 100)[:, None, None, None]


def test_trainer_takes_ready_components_and_fit_sets_up(tmp_path):
    from gendiff import Diffusion
    from gendiff.training import CheckpointError
    cfg = tiny_config(tmp_path, steps=6, name="ready")
    cfg = replace(cfg, train=replace(cfg.train, sample_every=3))
    diffusion = Diffusion(GaussianBlurBasis((16, 16)), VPBlurSchedule("quartic", 0.14, N=100))
    tr = Trainer(diffusion=diffusion, model=LocalNet(), data=cfg.data, train=cfg.train, fabric=cfg.fabric,
                 name="ready", out_dir=str(tmp_path), figures=False)
    ckpt = tr.fit()  # no setup() call
    assert tr.step == 6 and tr.diffusion is diffusion and isinstance(tr.raw_model, LocalNet)
    assert tr.config.basis == diffusion.basis.config() and tr.config.schedule == diffusion.schedule.config()
    assert not (tmp_path / "ready" / "forward.png").exists()
    assert sorted(p.name for p in (tmp_path / "ready" / "samples").iterdir()) == ["step-0000003.png",
                                                                                  "step-0000006.png"]
    # a class defined in a test module is importable by path: the checkpoint rebuilds it
    config, _, model = load_run(ckpt, trust_code=True)
    assert config.model == {"name": f"{__name__}:LocalNet"} and isinstance(model, torch.nn.Module)

    class Unimportable(LocalNet):
        pass

    tr = Trainer(tiny_config(tmp_path, steps=2, name="local"), model=Unimportable(), figures=False)
    ckpt = tr.fit()
    with pytest.raises(CheckpointError, match="model was not recorded"):
        load_run(ckpt)


def test_metrics_log_lr_grad_norm_ema_decay_and_throughput(tmp_path):
    import csv
    tr = Trainer(tiny_config(tmp_path, steps=10, name="log"), figures=False)
    tr.fit()
    rows = list(csv.DictReader(open(tmp_path / "log" / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [5, 10]
    for r in rows:
        assert float(r["lr"]) == 2e-3 and float(r["grad_norm"]) > 0 and float(r["images_per_s"]) > 0
        n = float(r["ema_n"])
        assert float(r["ema_decay"]) == pytest.approx(min(0.99, n / (9 + n)))  # warm-up at the last update
    fabric_csv = list((tmp_path / "log" / "logs").glob("version_*/metrics.csv"))
    assert len(fabric_csv) == 1 and "grad_norm" in fabric_csv[0].read_text()


def test_sample_grids_go_to_tensorboard_as_images_and_to_pngs(tmp_path):
    from types import SimpleNamespace

    from lightning_fabric.loggers import TensorBoardLogger

    from gendiff.training.logs import RunLog

    class FakeTensorBoard(TensorBoardLogger):  # records add_image calls; needs no tensorboard
        def __init__(self):
            self.images = []

        @property
        def experiment(self):
            return SimpleNamespace(add_image=lambda tag, img, step: self.images.append((tag, tuple(img.shape), step)))

    tb = FakeTensorBoard()
    log = RunLog(SimpleNamespace(loggers=[tb]), tmp_path, 0, 4)
    png = log.images("samples", torch.zeros(4, 1, 8, 8), (-1.0, 1.0), 30)
    assert png == tmp_path / "samples" / "step-0000030.png" and png.is_file()
    assert tb.images == [("samples", (3, 19, 19), 30)]  # a 2×2 grid of 8×8 with 1-px padding
