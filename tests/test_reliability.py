"""Reliability: bad input gets a clear error, training faults keep a good checkpoint, and the
numerics stay finite in float32 and under bf16 autocast. docs/reliability.md lists each case.
"""
import errno
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from gendiff import (DCTBasis, Diffusion, FourierBasis, GaussianBlurBasis, IdentityBasis, OrthoBasis,
                     ResidualMeanPrediction, WaveletBasis, build_basis, gaussian_prior)
from gendiff.models import PRESETS, build_model
from gendiff.parameterization import EpsPrediction, build_parameterization
from gendiff.priors import build_prior
from gendiff.samplers import check_grid, make_grid
from gendiff.schedules import (BlurringDiffusionSchedule, HeatDissipationSchedule, ScheduleError,
                               SpeedSchedule, VPBlurSchedule, build_schedule)
from gendiff.training import (DataConfig, FabricConfig, NonFiniteLossError, RunConfig, TrainConfig, Trainer,
                              load_run)
from gendiff.training import checkpoint as checkpoint_module
from gendiff.training.checkpoint import CheckpointError, load_checkpoint, save_atomic
from gendiff.training.config import ConfigError
from gendiff.training.loading import build_diffusion
from gendiff.training.rundir import RunDirError, RunLock, check_run_name, claim_run_dir, hold_run_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Everything here is tiny: on 2 shared, busy cores one thread is faster than two, whose
    OpenMP barriers wait on a descheduled partner (measured: a tiny UNet step 0.04 s vs 4 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def blur8(**kw):
    return Diffusion(GaussianBlurBasis((8, 8)), VPBlurSchedule("quartic", 2.0, N=100), **kw)


def zero_model(x, i):
    return torch.zeros_like(x)


# ---- bad input: data, steps, devices ---------------------------------------------------------

def test_integer_data_is_a_type_error():
    d, x0 = blur8(), torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(TypeError, match=r"x0 must be a floating-point tensor .* got torch.uint8"):
        d.q_sample(x0, torch.tensor([1, 2]))
    with pytest.raises(TypeError, match=r"x0 must be a floating-point tensor .* got torch.uint8"):
        d.loss(zero_model, x0)
    with pytest.raises(TypeError, match=r"x0 must be a torch.Tensor .* got list"):
        d.q_sample([[0.0]], torch.tensor([1]))


def test_image_shape_must_fit_the_basis():
    d = blur8()
    wrong = r"expects images of shape \(\.\.\., 8, 8\), got a tensor of shape \(2, 1, 8, 6\)"
    with pytest.raises(ValueError, match=wrong):
        d.q_sample(torch.zeros(2, 1, 8, 6), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"x0 must have shape \(B, C, H, W\) = \(B, C, 8, 8\), got shape \(1, 8, 8\)"):
        d.loss(zero_model, torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match=r"noise must have x0's shape \(2, 1, 8, 8\), got \(1, 1, 8, 8\)"):
        d.q_sample(torch.zeros(2, 1, 8, 8), torch.tensor([1, 2]), noise=torch.zeros(1, 1, 8, 8))


def test_bad_steps_are_named():
    d, x0 = blur8(), torch.zeros(4, 1, 8, 8)
    with pytest.raises(TypeError, match=r"LongTensor of shape \(B,\), got torch.float32"):
        d.q_sample(x0, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    with pytest.raises(ValueError, match=r"steps must be in 0..N=100, got min 0, max 101"):
        d.q_sample(x0, torch.tensor([0, 1, 2, 101]))
    with pytest.raises(ValueError, match=r"one entry per batch element, shape \(4,\) .* got shape \(3,\)"):
        d.loss(zero_model, x0, i=torch.tensor([1, 2, 3]))
    # Python ints, int32 and a single step for the whole batch are fine.
    assert d.q_sample(x0, [1, 2, 3, 4])[0].shape == x0.shape
    assert d.q_sample(x0, torch.tensor([5], dtype=torch.int32))[0].shape == x0.shape


def test_generator_on_another_device_than_the_data():
    # "meta" stands in for a second device on a CPU-only machine.
    d, g = blur8(), torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"generator is on cpu but the data are on meta; "
                                         r"use torch.Generator\('meta'\)"):
        d.q_sample(torch.zeros(2, 1, 8, 8, device="meta"), torch.tensor([1, 2]), generator=g)
    with pytest.raises(ValueError, match=r"generator is on cpu but the data are on meta"):
        d.sample(zero_model, (2, 1, 8, 8), steps=2, generator=g, device="meta", progress=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_steps_on_another_device_are_moved_to_the_data():
    d = blur8()
    for x_dev, i_dev in [("cuda", "cpu"), ("cpu", "cuda")]:
        x_i, eps = d.q_sample(torch.zeros(2, 1, 8, 8, device=x_dev), torch.tensor([1, 50], device=i_dev))
        assert x_i.device.type == x_dev and torch.isfinite(x_i).all()
        loss = d.loss(zero_model, torch.zeros(2, 1, 8, 8, device=x_dev), i=torch.tensor([1, 2], device=i_dev))
        assert loss.isfinite()


# ---- bad input: the model ----------------------------------------------------------------------

def test_model_with_the_wrong_output_shape():
    d, x0 = blur8(), torch.zeros(2, 1, 8, 8)
    crop = lambda x, i: x[..., :6]  # noqa: E731
    with pytest.raises(ValueError, match=r"must return the shape of x_i \(2, 1, 8, 8\), got \(2, 1, 8, 6\)"):
        d.loss(crop, x0)
    with pytest.raises(ValueError, match=r"must return the shape of x_i \(3, 1, 8, 8\), got \(3, 1, 8, 6\)"):
        d.sample(crop, (3, 1, 8, 8), steps=2, progress=False)
    with pytest.raises(TypeError, match=r"must return a floating-point tensor like x_i \(torch.float32\), got tuple"):
        d.sample(lambda x, i: (x,), (3, 1, 8, 8), steps=2, progress=False)
    with pytest.raises(TypeError, match=r"got torch.int64"):
        d.loss(lambda x, i: x.long(), x0)


def test_float64_model_output_is_cast_to_the_sample_dtype():
    d = blur8()
    x = d.sample(lambda x, i: torch.zeros_like(x, dtype=torch.float64), (2, 1, 8, 8), steps=3, progress=False)
    assert x.dtype == torch.float32 and torch.isfinite(x).all()
    loss = d.loss(lambda x, i: x.double(), torch.zeros(2, 1, 8, 8))
    assert loss.dtype == torch.float32


def test_sample_shape_and_dtype_are_checked():
    d = blur8()
    wrong = r"shape must be \(B, C, 8, 8\) for GaussianBlurBasis\(8, 8\), got \(2, 1, 8, 6\)"
    with pytest.raises(ValueError, match=wrong):
        d.sample(zero_model, (2, 1, 8, 6), steps=2, progress=False)
    with pytest.raises(ValueError, match=r"got \(1, 8, 8\)"):
        d.sample(zero_model, (1, 8, 8), steps=2, progress=False)
    with pytest.raises(TypeError, match=r"floating-point dtype .* got torch.int64"):
        d.sample(zero_model, (2, 1, 8, 8), steps=2, progress=False, dtype=torch.int64)


# ---- bad input: names, schedules, grids, bases ---------------------------------------------------

@pytest.mark.parametrize("make,match", [
    (lambda: build_basis({"name": "nope", "shape": [8, 8]}),
     r"unknown basis 'nope'; valid names: \[.*'blur'.*'wavelet'\]"),
    (lambda: build_schedule({"name": "nope"}), r"unknown schedule 'nope'; valid names: \[.*'heat'.*'vp_blur'\]"),
    (lambda: blur8().sample(zero_model, (1, 1, 8, 8), sampler="euler"),
     r"unknown sampler 'euler'; valid names: \[.*'dpm\+\+2m'.*\] or an import path"),
    (lambda: build_parameterization({"name": "v"}), r"unknown parameterization 'v'; valid names: \['eps', 'residual_mean'\]"),
    (lambda: EpsPrediction("snr"), r"unknown weighting 'snr'; valid: \['eps', 'score'\]"),
    (lambda: build_prior({"name": "nope"}), r"unknown prior 'nope'; valid names: \['blurred_data', 'gaussian'\]"),
    (lambda: VPBlurSchedule(noise="sqrt"),
     r"unknown noise schedule 'sqrt'; valid names: \['cosine', 'linear', 'logsnr-cosine'\]"),
    (lambda: SpeedSchedule("cosine"), r"unknown blur speed 'cosine'; valid names: \[.*'quartic'.*\] or an import path"),
    (lambda: GaussianBlurBasis((8, 8), boundary="mirror"),
     r"unknown boundary 'mirror'; valid: \['zero', 'circular', 'reflect'\]"),
    (lambda: make_grid(100, 5, "log"), r"unknown grid 'log'; valid: \['cubic', 'logsnr', 'quadratic', 'uniform'\]"),
    (lambda: build_model("huge"), r"unknown UNet preset 'huge'; valid names: \[.*'tiny'.*\]"),
])
def test_unknown_names_list_the_valid_ones(make, match):
    with pytest.raises((ValueError, KeyError), match=match):
        make()


def test_invalid_schedule_names_the_step():
    # Negative blur speed sharpens: the signal grows, which no Gaussian transition can do.
    named = r"not a valid diffusion at step i=1: σ_i² = .* = -[0-9.e]+ .*\(ρ = [0-9.]+\)"
    with pytest.raises(ScheduleError, match=named):
        Diffusion(GaussianBlurBasis((8, 8)), VPBlurSchedule("linear", -1.0, -1.0, N=50))


@pytest.mark.parametrize("grid,match", [
    ([100, 50, 50, 0], r"strictly decreasing to 0, but t\[1\]=50 ≤ t\[2\]=50"),
    ([100, 20, 50, 0], r"strictly decreasing to 0, but t\[1\]=20 ≤ t\[2\]=50"),
    ([100, 50, 10], r"must end with an explicit 0 .* got \[100, 50, 10\]"),
    ([101, 50, 0], r"must start in 1..N=100, got 101"),
    ([100, 50.5, 0], r"must be integers, got \[100, 50.5, 0\]"),
])
def test_bad_step_grids(grid, match):
    with pytest.raises(ValueError, match=match):
        check_grid(grid, 100)
    with pytest.raises(ValueError, match=match):
        blur8().sample(zero_model, (1, 1, 8, 8), timesteps=grid, progress=False)


class Scaled(OrthoBasis):
    """1.1 × the identity: invertible but not orthonormal (and optionally with a negative rate)."""

    def __init__(self, shape, negative_rate=False):
        super().__init__(shape)
        self.rho = torch.zeros(1, *self.shape, dtype=torch.float64)
        self.rho[0, 0, 0] = -1.0 if negative_rate else 0.0
        self.scale = 1.0 if negative_rate else 1.1

    def _forward(self, x):
        return self.scale * x

    def _inverse(self, c):
        return c / self.scale

    def _rates(self):
        return self.rho


def test_non_orthonormal_basis_is_rejected_unless_skipped():
    with pytest.raises(ValueError, match=r"Scaled is not orthonormal: .*<Uᵀx, Uᵀy> == <x, y> fails by .* "
                                         r"\(pass check_basis=False to skip\)"):
        Diffusion(Scaled((4, 4)), VPBlurSchedule(N=10))
    with pytest.raises(ValueError, match=r"Scaled.rates must be finite and ≥ 0, got min -1"):
        Diffusion(Scaled((4, 4), negative_rate=True), VPBlurSchedule(N=10))
    d = Diffusion(Scaled((4, 4)), VPBlurSchedule(N=10), check_basis=False)
    assert torch.isfinite(d.q_sample(torch.ones(1, 1, 4, 4), torch.tensor([5]))[0]).all()


# ---- numerics: float32 and bf16 autocast ---------------------------------------------------------

NUM_BASES = {"identity": lambda: IdentityBasis((8, 8)), "dct": lambda: DCTBasis((8, 8)),
             "fourier": lambda: FourierBasis((8, 8)), "wavelet": lambda: WaveletBasis((8, 8)),
             **{f"blur-{b}": (lambda b=b: GaussianBlurBasis((8, 8), boundary=b))
                for b in ("zero", "circular", "reflect")}}
NUM_SCHEDULES = {
    "ddpm": lambda: VPBlurSchedule(N=50),
    "vp-quartic-cosine": lambda: VPBlurSchedule("quartic", 2.0, N=50, noise="cosine"),
    "vp-log0.6-logsnr": lambda: VPBlurSchedule("log", 0.6, N=50, noise="logsnr-cosine"),
    "vp-fine-to-coarse": lambda: VPBlurSchedule("linear", 0.5, N=50, fine_to_coarse=True),
    "heat": lambda: HeatDissipationSchedule(K=50, sigma_B_max=8.0),
    "blurring": lambda: BlurringDiffusionSchedule(N=50, sigma_B_max=8.0),
}


class TinyConv(torch.nn.Module):
    """A conv ε-model: under CPU autocast its convolution runs in bf16 and returns bf16."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x, i):
        return torch.tanh(self.conv(x))


@pytest.mark.parametrize("sched", sorted(NUM_SCHEDULES))
@pytest.mark.parametrize("basis", sorted(NUM_BASES))
def test_every_schedule_and_basis_is_finite_in_fp32_and_bf16_autocast(basis, sched):
    d, model = Diffusion(NUM_BASES[basis](), NUM_SCHEDULES[sched]()), TinyConv()
    x0 = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for bf16 in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = d.loss(model, x0, generator=torch.Generator().manual_seed(1))
            loss.backward()
            for sampler in ("dpm++2m", "ancestral"):
                # explicit prior: IHDM's natural one needs training data (tests/test_exact_core.py)
                x = d.sample(model, (2, 1, 8, 8), sampler=sampler, steps=5, progress=False,
                             generator=torch.Generator().manual_seed(2), prior=gaussian_prior)
                assert x.dtype == torch.float32 and torch.isfinite(x).all(), (sampler, bf16)
        assert loss.dtype == torch.float32 and torch.isfinite(loss), bf16
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_basis_math_stays_float32_under_autocast():
    d = blur8()
    x0 = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        raw = d.basis.forward(x0)  # the basis itself turns autocast off (matmul would run in bf16)
        x_i, eps = d.q_sample(x0, torch.tensor([1, 10, 50, 100]), generator=torch.Generator().manual_seed(1))
        score = d.score(x_i, torch.tensor([1, 10, 50, 100]), eps)
        out = d.sample(zero_model, (2, 3, 8, 8), steps=5, progress=False, generator=torch.Generator().manual_seed(2))
    assert raw.dtype == torch.float32
    torch.testing.assert_close(raw, d.basis.forward(x0), atol=0, rtol=0)
    want_x, want_eps = d.q_sample(x0, torch.tensor([1, 10, 50, 100]), generator=torch.Generator().manual_seed(1))
    want_score = d.score(want_x, torch.tensor([1, 10, 50, 100]), want_eps)
    for got, want in [(x_i, want_x), (eps, want_eps), (score, want_score),
                      (out, d.sample(zero_model, (2, 3, 8, 8), steps=5, progress=False,
                                     generator=torch.Generator().manual_seed(2)))]:
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_parameterization_math_stays_float32_under_autocast():
    # ResidualMeanPrediction calls the basis itself: Diffusion.loss keeps it out of autocast too.
    d = Diffusion(DCTBasis((8, 8)), HeatDissipationSchedule(K=50, sigma_B_max=8.0),
                  parameterization=ResidualMeanPrediction())
    x0 = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    want = d.loss(zero_model, x0, generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = d.loss(zero_model, x0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(got, want, atol=1e-7, rtol=1e-5)


# ---- training faults, in process ------------------------------------------------------------------

def tiny_run(tmp_path, steps=10, ckpt_every=2, name="run"):
    model = replace(PRESETS["tiny"], in_channels=1, out_channels=1)
    t = TrainConfig(steps=steps, batch_size=8, lr=1e-3, ema_decay=0.99, log_every=1, ckpt_every=ckpt_every,
                    sample_every=0, sample_n=4, sample_steps=2)
    return RunConfig(name, GaussianBlurBasis((16, 16)).config(), VPBlurSchedule("quartic", 0.14, N=100).config(),
                     asdict(model), DataConfig("digits", 16, 1), t, FabricConfig("cpu", 1), str(tmp_path))


def ckpt_step(path) -> int:
    return int(load_checkpoint(path)["step"])


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    tr = Trainer(tiny_run(tmp_path))
    tr.setup()
    forward, calls = tr.raw_model.forward, []

    def poisoned(x, i):  # a model that diverges after 5 steps
        calls.append(1)
        out = forward(x, i)
        return out * float("nan") if len(calls) > 5 else out

    tr.raw_model.forward = poisoned
    ckpt, handler = tmp_path / "run" / "last.ckpt", signal.getsignal(signal.SIGTERM)
    stopped = rf"loss is nan at step 6; stopping. The last good checkpoint is {re.escape(str(ckpt))} \(hash verified\)"
    with pytest.raises(NonFiniteLossError, match=stopped):
        tr.fit()
    assert ckpt_step(ckpt) == 4
    good = load_checkpoint(ckpt)["model"]
    assert all(torch.isfinite(v).all() for v in good.values())
    assert signal.getsignal(signal.SIGTERM) is handler  # restored after the error

    # A damaged checkpoint is named, with what to do, instead of torch's zip-reader error.
    data = ckpt.read_bytes()
    for broken in (data[: len(data) // 2], b"", b"not a checkpoint" * 8):
        ckpt.write_bytes(broken)
        with pytest.raises(CheckpointError, match=rf"cannot load checkpoint {re.escape(str(ckpt))}: .*delete or move"):
            tr.resume()
        with pytest.raises(CheckpointError, match="cannot load checkpoint"):
            load_run(ckpt)


def test_sigint_in_process_saves_and_stops(tmp_path, recipes_importable):
    """The recipes' handlers (the library installs none) ask the trainer to stop: it finishes the
    step, saves and returns; the handlers are put back afterwards."""
    import cli
    tr = Trainer(tiny_run(tmp_path, steps=50, ckpt_every=1000))
    tr.setup()
    step = tr._train_step

    def interrupted_at_3(x0):
        if tr.step == 2:
            signal.raise_signal(signal.SIGINT)  # arrives mid-step: the step finishes, then a save
        return step(x0)

    tr._train_step, handler = interrupted_at_3, signal.getsignal(signal.SIGINT)
    with cli.stop_on_signals(tr):
        ckpt = tr.fit()
    assert tr.interrupted and tr.step == 3 and ckpt_step(ckpt) == 3
    assert signal.getsignal(signal.SIGINT) is handler
    tr2 = Trainer(tiny_run(tmp_path / "b", steps=50, ckpt_every=1000))
    tr2.setup()
    step2, seen = tr2._train_step, []
    tr2._train_step = lambda x0: (seen.append(signal.getsignal(signal.SIGINT)), step2(x0))[1]
    tr2.request_stop()  # from Python, without any signal
    assert ckpt_step(tr2.fit()) == 1 and tr2.interrupted
    assert seen == [handler]  # fit itself installs no handler


class OneProcess:
    """The Fabric surface save_atomic uses, for one process."""

    is_global_zero, world_size = True, 1

    def barrier(self):
        pass


def test_a_save_interrupted_midway_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    save_atomic(OneProcess(), path, {"step": 4})

    def dies_half_way(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt("killed during save")

    monkeypatch.setattr(checkpoint_module.torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_atomic(OneProcess(), path, {"step": 6})
    assert ckpt_step(path) == 4 and not (tmp_path / ".last.ckpt.tmp").exists()


@pytest.mark.parametrize("err,why", [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "the file system is read-only")])
def test_disk_full_or_read_only_leaves_no_partial_file_and_keeps_last_ckpt(tmp_path, monkeypatch, err, why):
    path = tmp_path / "last.ckpt"
    save_atomic(OneProcess(), path, {"step": 4, "w": torch.ones(1000)})
    before = path.read_bytes()

    def full_disk(obj, f):
        f.write(b"x" * 4096)  # some bytes reach the disk, then the write fails
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=rf"cannot write checkpoint {re.escape(str(path))}: {why}.*"
                                              rf"No partial file.*still holds the previous checkpoint"):
        save_atomic(OneProcess(), path, {"step": 6, "w": torch.ones(1000)})
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


# ---- training faults, in a subprocess: SIGTERM and SIGKILL ----------------------------------------

def start_recipe(out: Path, *args: str):
    """``recipes/lsun_blur.py`` on the digits with the tiny UNet; stdout/stderr go to files in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    # The progress bar redraws after every step (tqdm reads TQDM_* defaults from the environment),
    # so the last count on it is the number of steps the run finished.
    # One thread each: these runs are small, and several share 2 busy cores, where OpenMP threads
    # waiting on a descheduled partner make a step up to 100× slower.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_MININTERVAL": "0", "TQDM_MINITERS": "1",
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "recipes/lsun_blur.py", "--out", str(out), "--model", "tiny", "--batch-size", "8",
           "--sample-steps", "1", *args]
    with open(out / "stdout.txt", "w") as so, open(out / "stderr.txt", "w") as se:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=so, stderr=se)


def steps_shown(out: Path) -> int:
    """Steps finished, from the progress bar (updated after each step, before its save)."""
    found = re.findall(r"\| *(\d+)/\d+ \[", (out / "stderr.txt").read_text(errors="replace"))
    return int(found[-1]) if found else 0


def wait_for(cond, proc, timeout=120.0, poll=0.02):
    end = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"the run exited early with {proc.returncode}"
        assert time.monotonic() < end, "timed out"
        time.sleep(poll)


def test_sigterm_saves_a_checkpoint_and_resume_continues(tmp_path):
    proc = start_recipe(tmp_path, "--steps", "100000", "--ckpt-every", "1000000")
    run = tmp_path / "demo-digits"
    try:
        wait_for(lambda: steps_shown(tmp_path) >= 3, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 1
    finally:
        proc.kill()
    err = (tmp_path / "stderr.txt").read_text()
    m = re.search(r"stopped by a signal at step (\d+); checkpoint (\S+); continue with: .* --resume", err)
    assert m, err[-2000:]
    step = int(m[1])
    assert step >= 3 and Path(m[2]) == run / "last.ckpt" and ckpt_step(run / "last.ckpt") == step

    res = start_recipe(tmp_path, "--steps", str(step + 2), "--ckpt-every", "1000000", "--resume")
    assert res.wait(300) == 0, (tmp_path / "stderr.txt").read_text()[-2000:]
    assert f"resumed {run / 'last.ckpt'} at step {step}" in (tmp_path / "stdout.txt").read_text()
    assert ckpt_step(run / "last.ckpt") == step + 2


def kill_trial(out: Path, moment) -> dict:
    """Start a run saving every 2 steps and SIGKILL it: as a save starts, or at a random delay."""
    proc = start_recipe(out, "--steps", "400", "--ckpt-every", "2")
    run = out / "demo-digits"
    try:
        wait_for(lambda: (run / "last.ckpt").is_file(), proc)
        if moment == "during-save":
            wait_for(lambda: (run / ".last.ckpt.tmp").exists(), proc, poll=0.001)
        else:
            time.sleep(moment)
        assert proc.poll() is None
        proc.kill()
        assert proc.wait(60) == -signal.SIGKILL
    finally:
        proc.kill()
    return {"moment": moment, "shown": steps_shown(out), "mid_save": (run / ".last.ckpt.tmp").exists()}


def test_sigkill_at_random_moments_leaves_a_resumable_checkpoint(tmp_path):
    moments = ["during-save", round(random.uniform(0, 1.5), 2), round(random.uniform(0, 1.5), 2)]
    # Concurrently: the runs' start-up (imports) dominates, and overlapping it keeps this test short.
    with ThreadPoolExecutor(len(moments)) as pool:
        trials = list(pool.map(lambda k: kill_trial(tmp_path / f"t{k}", moments[k]), range(len(moments))))
    for k, trial in enumerate(trials):
        ckpt = tmp_path / f"t{k}" / "demo-digits" / "last.ckpt"
        state = load_checkpoint(ckpt)  # loadable and hash-verified, whatever the moment
        step = int(state["step"])
        # Saves happen at even steps; at most one interval (2 steps) is lost.
        assert step >= 2 and step % 2 == 0 and trial["shown"] - step <= 2, (trial, step)
        if trial["mid_save"]:  # killed while step `shown` was being saved: the one before it survives
            assert step == trial["shown"] - 2, (trial, step)
        config = RunConfig.from_dict(state["config"])
        tr = Trainer(replace(config, train=replace(config.train, steps=step + 2)))
        tr.setup()
        assert tr.resume() and tr.step == step, trial
        tr.fit()
        assert ckpt_step(ckpt) == step + 2


def test_basis_and_speed_construction_errors():
    from gendiff import GaussianBlurBasis, WaveletBasis
    from gendiff.schedules import SpeedSchedule
    with pytest.raises(ValueError, match="too wide for the image"):
        GaussianBlurBasis((4, 4), sigma=2.0, boundary="circular")
    with pytest.raises(ValueError, match="even H and W"):
        WaveletBasis((7, 8))
    with pytest.raises(ValueError, match="needs N ≥ 2"):
        SpeedSchedule("linear", 0.5).values(1)


def test_marginal_and_transition_name_their_step_range():
    from gendiff import Diffusion, GaussianBlurBasis
    from gendiff.schedules import VPBlurSchedule
    d = Diffusion(GaussianBlurBasis((4, 4)), VPBlurSchedule(N=10))
    with pytest.raises(ValueError, match=r"marginal is defined for steps 0..10, got min 11"):
        d.marginal(torch.tensor([11]))
    with pytest.raises(ValueError, match=r"transition is defined for steps 1..10, got min 0"):
        d.transition(torch.tensor([0]))


# ---- checkpoints that cannot hurt their owner ----------------------------------------------------

class Payload:
    """What a tampered checkpoint may carry: unpickling it would create ``marker`` (open(..., 'w'))."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def run_py(*args, timeout=300):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


RECIPE = ["recipes/lsun_blur.py", "--quick", "--model", "tiny", "--batch-size", "8", "--sample-steps", "1"]


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    """One real 2-step run of the default recipe (its folder is copied by each test that changes it)."""
    out = tmp_path_factory.mktemp("recipe")
    res = run_py(*RECIPE, "--steps", "2", "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    return out / "demo-digits"


def copy_run(recipe_run, tmp_path) -> Path:
    import shutil
    run = tmp_path / "demo-digits"
    shutil.copytree(recipe_run, run)
    (run / ".lock").unlink(missing_ok=True)
    return run


def test_a_checkpoint_that_runs_code_is_refused_by_sample_and_resume(recipe_run, tmp_path):
    run = copy_run(recipe_run, tmp_path)
    marker = tmp_path / "pwned"
    state = load_checkpoint(run / "last.ckpt")
    state["rng"]["payload"] = Payload(marker)
    torch.save(state, run / "last.ckpt")  # a copy of a real checkpoint with a __reduce__ payload

    res = run_py("recipes/sample.py", "--ckpt", str(run / "last.ckpt"), "--n", "1", "--device", "cpu")
    assert res.returncode == 1 and "refusing to load checkpoint" in res.stderr, res.stderr[-2000:]
    assert "Nothing in it was executed" in res.stderr and not marker.exists()
    res = run_py(*RECIPE, "--steps", "4", "--out", str(tmp_path), "--resume")
    assert res.returncode == 1 and f"refusing to load checkpoint {run / 'last.ckpt'}" in res.stderr, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and not marker.exists()
    with pytest.raises(CheckpointError, match="need code to run"):
        load_run(run / "last.ckpt")
    assert not marker.exists()


def flip_bit_in_a_weight(path: Path) -> None:
    """Flip the top exponent bit of one weight, keeping the stored hash (a bit rot on disk)."""
    state = load_checkpoint(path)
    w = state["model"][next(k for k, v in state["model"].items() if v.is_floating_point() and v.numel() > 4)]
    w.view(torch.int32).view(-1)[3] ^= 1 << 30
    torch.save(state, path)


def test_flipped_bit_and_truncation_are_checkpoint_errors(tmp_path):
    tr = Trainer(tiny_run(tmp_path, steps=2))
    tr.setup()
    tr.fit()
    ckpt = tmp_path / "run" / "last.ckpt"
    good = ckpt.read_bytes()
    flip_bit_in_a_weight(ckpt)
    with pytest.raises(CheckpointError, match=rf"checkpoint {re.escape(str(ckpt))} is corrupt: .*SHA-256"):
        tr.resume()
    with pytest.raises(CheckpointError, match="is corrupt"):
        load_run(ckpt)
    # a flipped bit anywhere in the file and truncations (5 kB, 20 kB) are errors naming the file
    flipped = bytearray(good)
    flipped[len(good) * 2 // 3] ^= 0x10
    for broken in (bytes(flipped), good[:5000], good[:20000]):
        ckpt.write_bytes(broken)
        with pytest.raises(CheckpointError, match=re.escape(str(ckpt))):
            tr.resume()
        with pytest.raises(CheckpointError, match=re.escape(str(ckpt))):
            load_run(ckpt)


def test_the_last_good_checkpoint_is_the_verified_one(tmp_path):
    """A NaN after a corrupted save names no checkpoint as good."""
    tr = Trainer(tiny_run(tmp_path, steps=10, ckpt_every=2))
    tr.setup()
    forward, calls = tr.raw_model.forward, []

    def poisoned(x, i):
        calls.append(1)
        if len(calls) == 5:
            flip_bit_in_a_weight(tmp_path / "run" / "last.ckpt")
        out = forward(x, i)
        return out * float("nan") if len(calls) > 5 else out

    tr.raw_model.forward = poisoned
    with pytest.raises(NonFiniteLossError, match="There is no good checkpoint: .*last.ckpt fails verification"):
        tr.fit()


def test_checkpoints_hold_only_tensors_and_plain_values(tmp_path):
    tr = Trainer(tiny_run(tmp_path, steps=2))
    tr.setup()
    tr.fit()
    state = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)
    assert state["format"] == 2 and state["sha256"] == checkpoint_module.content_hash(state)
    rng = state["rng"]
    assert torch.is_tensor(rng["numpy"]["keys"]) and torch.is_tensor(rng["python"]["state"])


def test_resume_restores_every_rng_exactly(tmp_path):
    import random as py_random

    import numpy as np
    tr = Trainer(tiny_run(tmp_path, steps=2))
    tr.setup()
    tr.fit()
    want = (torch.rand(3), np.random.rand(3), py_random.random())  # drawn right after the save
    torch.rand(5), np.random.rand(7), py_random.random()
    again = Trainer(tiny_run(tmp_path, steps=4))
    again.setup()
    assert again.resume()
    got = (torch.rand(3), np.random.rand(3), py_random.random())
    assert torch.equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[2] == want[2]


# ---- run folders: no silent overwrite, one process at a time ------------------------------------

def test_a_run_started_from_python_never_writes_over_another_run(tmp_path):
    Trainer(tiny_run(tmp_path, steps=2)).fit()
    run = tmp_path / "run"
    before = {f: (run / f).read_bytes() for f in ("last.ckpt", "metrics.csv", "config.json")}
    with pytest.raises(RunDirError, match=r"already holds a run.*Trainer.resume\(\).*overwrite=True"):
        Trainer(tiny_run(tmp_path, steps=4)).fit()
    assert {f: (run / f).read_bytes() for f in before} == before
    again = Trainer(tiny_run(tmp_path, steps=4))  # resuming continues it ...
    assert again.resume()
    again.fit()
    assert ckpt_step(run / "last.ckpt") == 4
    Trainer(tiny_run(tmp_path, steps=2), overwrite=True).fit()  # ... overwrite starts it over
    assert ckpt_step(run / "last.ckpt") == 2
    with RunLock(run):  # the lock lasts as long as fit(): free again
        pass


def test_a_run_started_from_python_is_refused_while_another_process_trains_there(tmp_path):
    run = tmp_path / "run"
    # The holder keeps the lock until its stdin closes, however slow the machine.
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from gendiff.training import RunLock; "
                               "RunLock(sys.argv[1]).acquire(); print('held', flush=True); sys.stdin.read()",
                               str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError, match=f"in use by process {holder.pid}"):
            Trainer(tiny_run(tmp_path, steps=2)).fit()
        assert not (run / "last.ckpt").exists() and not (run / "config.json").exists()
    finally:
        holder.stdin.close()
        holder.stdout.close()
        holder.wait(timeout=60)


def test_resuming_another_runs_checkpoint_does_not_overwrite_this_run(tmp_path):
    Trainer(tiny_run(tmp_path / "a", steps=2)).fit()
    Trainer(tiny_run(tmp_path / "b", steps=4)).fit()
    b = Trainer(tiny_run(tmp_path / "b", steps=3))
    assert b.resume(tmp_path / "a" / "run" / "last.ckpt")
    with pytest.raises(RunDirError, match="already holds a run"):
        b.fit()
    assert ckpt_step(tmp_path / "b" / "run" / "last.ckpt") == 4


def test_a_fit_that_fails_before_training_releases_the_lock(tmp_path, monkeypatch):
    tr = Trainer(tiny_run(tmp_path, steps=2))
    monkeypatch.setattr(tr, "_loader", lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        tr.fit()
    with RunLock(tmp_path / "run"):  # free for anyone, this process included
        pass
    monkeypatch.undo()
    tr.fit()  # the same trainer may retry: the config.json there is its own
    assert ckpt_step(tmp_path / "run" / "last.ckpt") == 2


def test_a_second_lock_in_the_same_process_is_refused(tmp_path):
    """flock is per open file: two trainers of one process cannot share a run folder either."""
    with RunLock(tmp_path / "run"):
        with pytest.raises(RunDirError, match=f"in use by process {os.getpid()}"):
            RunLock(tmp_path / "run").acquire()


def test_a_refused_claim_leaves_no_folders_behind(tmp_path):
    with pytest.raises(RunDirError, match="nothing to resume"):
        hold_run_dir(tmp_path / "runs" / "deep" / "x", resume=True)
    assert list(tmp_path.iterdir()) == []


def test_rerun_without_resume_is_refused_and_last_ckpt_keeps_its_bytes(recipe_run, tmp_path):
    run = copy_run(recipe_run, tmp_path)
    before = {f: (run / f).read_bytes() for f in ("last.ckpt", "metrics.csv", "config.json")}
    res = run_py(*RECIPE, "--steps", "5", "--out", str(tmp_path))
    assert res.returncode == 1, res.stderr[-2000:]
    assert f"run folder {run} already holds a run" in res.stderr
    assert "--resume" in res.stderr and "--overwrite" in res.stderr and "Traceback" not in res.stderr
    assert {f: (run / f).read_bytes() for f in before} == before


def test_run_folder_rules(tmp_path):
    run = tmp_path / "r"
    with pytest.raises(RunDirError, match=r"nothing to resume in .*r: no last.ckpt \(no run there\)"):
        claim_run_dir(run, resume=True)
    assert claim_run_dir(run, resume=False) is None  # a new run
    run.mkdir()
    (run / "config.json").write_text("{}")
    with pytest.raises(RunDirError, match="stopped before its first checkpoint.*--overwrite"):
        claim_run_dir(run, resume=True)
    with pytest.raises(RunDirError, match="already holds a run.*--resume.*--overwrite"):
        claim_run_dir(run, resume=False)
    (run / "last.ckpt").write_bytes(b"x")
    assert claim_run_dir(run, resume=True) == run / "last.ckpt"
    assert claim_run_dir(run, resume=False, overwrite=True) is None  # allowed; it moves nothing itself
    assert (run / "last.ckpt").exists() and (run / "config.json").exists()
    lock = hold_run_dir(run, overwrite=True)  # the trainer's claim moves the old run aside
    try:
        assert not (run / "last.ckpt").exists() and (lock.backup / "last.ckpt").read_bytes() == b"x"
    finally:
        lock.release()


@pytest.mark.parametrize("name", ["", "  ", "../../escape", "a/b", "..", ".", "a\\b"])
def test_run_names_are_one_folder_name(name, tmp_path):
    with pytest.raises(ConfigError, match="run name must be"):
        check_run_name(name)
    with pytest.raises(ConfigError, match="run name must be"):
        replace(tiny_run(tmp_path), name=name)


def test_a_second_process_on_one_run_folder_is_refused(recipe_run, tmp_path):
    run = copy_run(recipe_run, tmp_path)
    with RunLock(run):  # this process trains there
        res = run_py(*RECIPE, "--steps", "4", "--out", str(tmp_path), "--resume")
    assert res.returncode == 1, res.stderr[-2000:]
    assert f"run folder {run} is in use by process {os.getpid()}" in res.stderr
    assert ckpt_step(run / "last.ckpt") == 2


def test_a_stale_lock_from_a_killed_run_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(f"{dead.pid} somehost\n")  # its owner is gone: nothing holds it
    with RunLock(tmp_path) as lock:
        assert lock.held and (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())
        with pytest.raises(RunDirError, match=f"in use by process {os.getpid()}"):
            RunLock(tmp_path).acquire()  # a second holder, even in one process (flock per open file)


# ---- every flag checked before any work -----------------------------------------------------------

def test_cpu_times_sums_the_named_cpus_of_proc_stat(recipes_importable, tmp_path):
    import threads as policy
    stat = tmp_path / "stat"
    stat.write_text("cpu  90 0 30 300 6 0 0 0 0 0\n"
                    "cpu0 10 0 5 100 2 0 0 0 0 0\ncpu1 30 0 10 100 2 0 0 0 0 0\ncpu2 50 0 15 100 2 0 0 0 0 0\n"
                    "intr 12345 0 0\nctxt 999\n")
    assert policy.cpu_times({0, 2}, str(stat)) == (204, 284)  # idle + iowait; every tick, cpu0 + cpu2
    with pytest.raises(ValueError, match="no CPU"):
        policy.cpu_times({7}, str(stat))


@pytest.mark.parametrize("idle_share,threads", [(1.0, 2), (0.8, 2), (0.75, 1), (0.5, 1), (0.0, 1)])
def test_default_threads_are_the_cores_other_processes_leave_idle(recipes_importable, monkeypatch, capsys,
                                                                  idle_share, threads):
    import threads as policy
    ticks = iter([(1000, 4000), (1000 + round(200 * idle_share), 4200)])  # 200 ticks on 2 CPUs
    # 0.75 idle is 0.5 busy cores: rounded half up, one thread (Python's round() would say 0)
    monkeypatch.setattr(policy.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(policy, "cpu_times", lambda cpus: next(ticks))
    monkeypatch.setattr(policy.time, "sleep", lambda s: None)
    chosen = []
    monkeypatch.setattr(policy.torch, "set_num_threads", chosen.append)
    assert policy.set_threads(None) == threads and chosen == [threads]
    busy = 2 * (1 - idle_share)
    assert f"torch threads: {threads} (2 cores, {busy:.1f} busy now" in capsys.readouterr().out
    assert policy.set_threads(3) == 3  # --threads wins


def test_without_proc_stat_the_load_average_decides(recipes_importable, monkeypatch, capsys):
    import threads as policy

    def no_proc(cpus):
        raise OSError("no /proc/stat")
    monkeypatch.setattr(policy.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(policy, "cpu_times", no_proc)
    monkeypatch.setattr(policy.os, "getloadavg", lambda: (1.3, 1.0, 1.0))
    monkeypatch.setattr(policy.torch, "set_num_threads", lambda n: None)
    assert policy.set_threads(None) == 1
    assert "1.3 load average" in capsys.readouterr().out


@pytest.mark.parametrize("recipe,argv,message", [
    ("lsun_blur", ["--batch-size", "0"], "--batch-size: must be an integer >= 1, got 0"),
    ("lsun_blur", ["--ckpt-every", "0"], "--ckpt-every: must be an integer >= 1, got 0"),
    ("lsun_blur", ["--steps", "0"], "--steps: must be an integer >= 1, got 0"),
    ("lsun_blur", ["--steps", "-5"], "--steps: must be an integer >= 1, got -5"),
    ("lsun_blur", ["--ema-decay", "-1"], "--ema-decay: must be a finite number [0.0, 1.0], got -1"),
    ("lsun_blur", ["--ema-decay", "2"], "--ema-decay: must be a finite number [0.0, 1.0], got 2"),
    ("lsun_blur", ["--sample-steps", "0"], "--sample-steps: must be an integer >= 1, got 0"),
    ("lsun_blur", ["--lr", "nan"], "--lr: must be a finite number > 0.0, got nan"),
    ("lsun_blur", ["--name", ""], "--name: run name must be a non-empty folder name, got ''"),
    ("lsun_blur", ["--name", "../../escape"], "--name: run name must be one folder name"),
    ("lsun_blur", ["--resume", "--overwrite"], "not allowed with argument --resume"),
    ("heat_dissipation", ["--size", "0"], "--size: must be an integer >= 1, got 0"),
    ("heat_dissipation", ["--K", "1"], "--K: must be an integer >= 2, got 1"),
    ("heat_dissipation", ["--sigma-B-max", "0"], "--sigma-B-max: must be a finite number > 0.0, got 0"),
    ("heat_dissipation", ["--sigma", "-1"], "--sigma: must be a finite number > 0.0, got -1"),
    ("heat_dissipation", ["--delta-scale", "-1"], "--delta-scale: must be a finite number >= 0.0, got -1"),
    ("blurring_diffusion", ["--N", "0"], "--N: must be an integer >= 1, got 0"),
    ("blurring_diffusion", ["--sigma-B-max", "0"], "--sigma-B-max: must be a finite number > 0.0, got 0"),
    ("sample", ["--ckpt", "x", "--n", "0"], "--n: must be an integer >= 1, got 0"),
    ("sample", ["--ckpt", "x", "--steps", "0"], "--steps: must be an integer >= 1, got 0"),
    ("sample", ["--ckpt", "x", "--steps", "-5"], "--steps: must be an integer >= 1, got -5"),
    ("sample", ["--ckpt", "x", "--batch-size", "0"], "--batch-size: must be an integer >= 1, got 0"),
    ("evaluate", ["--ckpt", "x", "--swd-min-size", "0"], "--swd-min-size: must be an integer >= 1, got 0"),
    ("evaluate", ["--ckpt", "x", "--n", "0"], "--n: must be an integer >= 1, got 0"),
])
def test_bad_flags_stop_before_any_work(recipes_importable, capsys, recipe, argv, message):
    import importlib
    module = importlib.import_module(recipe)
    with pytest.raises(SystemExit) as info:
        module.parse_args(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("field,value,message", [
    ("steps", 0, r"invalid TrainConfig: steps: Input should be greater than or equal to 1 \(got 0\)"),
    ("steps", 2.5, r"steps: Input should be a valid integer \(got 2.5\)"),
    ("steps", True, r"steps: Input should be a valid integer \(got True\)"),
    ("batch_size", 0, r"batch_size: Input should be greater than or equal to 1 \(got 0\)"),
    ("ckpt_every", 0, r"ckpt_every: Input should be greater than or equal to 1"),
    ("ema_decay", -1.0, r"ema_decay: Input should be greater than or equal to 0"),
    ("ema_decay", 2.0, r"ema_decay: Input should be less than or equal to 1"),
    ("sample_steps", 0, r"sample_steps: Input should be greater than or equal to 1"),
    ("lr", 0.0, r"lr: Input should be greater than 0 \(got 0.0\)"),
    ("lr", float("nan"), r"lr: Input should be a finite number"),
    ("clip_x0", "no", r"clip_x0: Input should be a valid boolean \(got 'no'\)"),
])
def test_train_config_checks_every_field(tmp_path, field, value, message):
    """The library's messages name the field (the recipes' name the flag)."""
    config = tiny_run(tmp_path)
    with pytest.raises(ConfigError, match=message):
        replace(config, train=replace(config.train, **{field: value}))


@pytest.mark.parametrize("field,value,message", [
    ("sample_steps", 5000, r"train.sampler / train.sample_steps .*must be in 1..N=100 for sampler 'dpm\+\+2m', got 5000"),
    ("sampler", "euler", r"train.sampler / train.sample_steps .*unknown sampler 'euler'; valid names: \[.*\] or an import path"),
])
def test_sampler_fields_are_checked_when_the_run_is_built(tmp_path, field, value, message):
    """The config builds nothing, so the sampler and the grid budget (which needs N) are checked
    where the schedule is first built."""
    config = tiny_run(tmp_path)
    config = replace(config, train=replace(config.train, **{field: value}))  # data: accepted
    with pytest.raises(ConfigError, match=message):
        build_diffusion(config)


def test_data_config_is_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"invalid DataConfig: size: Input should be greater than or equal to 1"):
        DataConfig("digits", 0, 1)
    with pytest.raises(ConfigError, match=r"value_range: must be \(lo, hi\) with lo < hi, got \(1.0, -1.0\)"):
        DataConfig("digits", 16, 1, (1.0, -1.0))


def test_recipe_refusals_before_any_work(recipes_importable, tmp_path):
    import cli
    import lsun_blur
    args = lsun_blur.parse_args(["--sample-steps", "5000", "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match=r"--sampler / --sample-steps / --sampler-args: .*must be in 1..N=1000"):
        with cli.flags_named(args):
            cli.check_run(cli.configure(lsun_blur.build_config(args), args))
    assert not any(tmp_path.iterdir())
    # a schedule flag the schedule cannot take (d_min = 0: log 0) fails before the folder is made
    import blurring_diffusion
    with pytest.raises(SystemExit) as stop:  # argparse: "--d-min: must be a finite number (0.0, 0.999], got 0"
        blurring_diffusion.main(["--d-min", "0", "--out", str(tmp_path), "--quick"])
    assert stop.value.code == 2 and not any(tmp_path.iterdir())  # nothing was written
    with pytest.raises(ValueError, match=r"d_min must be in \(0, 1\).*got 0.0"):  # the library's own check
        BlurringDiffusionSchedule(d_min=0.0)
    # --resume with no checkpoint is an error, and leaves no folder behind
    with pytest.raises(RunDirError, match="nothing to resume"):
        lsun_blur.main(["--resume", "--out", str(tmp_path), "--name", "none", "--threads", "1"])
    assert not (tmp_path / "none").exists() and sorted(tmp_path.iterdir()) == []


@pytest.mark.parametrize("recipe,argv,message", [
    ("lsun_blur", ["--size", "7", "--model", "tiny"], r"image_size=7 must be divisible by 2\*\*"),
    ("lsun_blur", ["--model-args", '{"model_channels": 7}'], "num_groups=.* must divide every channel count"),
    ("lsun_blur", ["--basis", "blur", "--basis-args", '{"shape": [8, 8]}'],
     r"the data are 1×16×16 \(--size, --channels\) but basis .* does not take them: GaussianBlurBasis expects"),
    ("lsun_blur", ["--data", "/no/such/folder"], "--data '/no/such/folder': dataset '/no/such/folder' is neither an "
     "embedded dataset"),
    ("lsun_blur", ["--data", __file__], r"--data '.*test_reliability.py': image folder not found: .*not a directory"),
    ("lsun_blur", ["--data", "{empty}"], "--data '.*empty': no image files under"),
    ("lsun_blur", ["--channels", "3"], r"--data 'digits' gives images of shape \(1, 16, 16\), but the run expects "
     r"\(3, 16, 16\) \(--channels 3, --size 16\)"),
    ("lsun_blur", ["--basis-args", '{"sigmaa": 1}'], r"invalid run 'demo-digits': basis \{.*TypeError.*sigmaa"),
    ("heat_dissipation", ["--prior-args", '{"delta_scale": -1}'],
     r"invalid run 'ihdm-digits': prior \{.*'delta_scale': -1\}: ValueError: delta_scale must be a finite number ≥ 0"),
    ("heat_dissipation", ["--sigma-B-max", "0.3"],
     r"--K, --sigma-B-max, --sigma, --schedule / --schedule-args / --speed / --speed-args: invalid run "
     r"'ihdm-digits': schedule \{.*\}: ValueError: need 0 < sigma_B_min < sigma_B_max, got 0.5, 0.3"),
])
def test_a_run_is_checked_before_its_folder_is_made(recipes_importable, tmp_path, recipe, argv, message):
    """Flags that only fail together (sizes, shapes, paths, ranges set by another flag) stop as a
    one-line ConfigError before anything is written."""
    import importlib
    module = importlib.import_module(recipe)
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "runs"
    with pytest.raises(ConfigError, match=message):
        module.main([a.replace("{empty}", str(empty)) for a in argv] + ["--out", str(out), "--quick", "--threads", "1"])
    assert not out.exists()


def test_config_of_a_moved_run_folder_resumes_it_where_it_is(recipes_importable, recipe_run, tmp_path):
    import cli
    import lsun_blur
    moved = copy_run(recipe_run, tmp_path / "elsewhere")
    args = lsun_blur.parse_args(["--config", str(moved / "config.json"), "--resume"])
    config = cli.configure(lsun_blur.build_config(args), args)
    assert Path(config.out_dir) / config.name == moved  # not the folder recorded inside the file
    args = lsun_blur.parse_args(["--config", str(moved / "config.json"), "--name", "longer", "--steps", "9"])
    config = cli.configure(lsun_blur.build_config(args), args)
    assert Path(config.out_dir) / config.name == moved.parent / "longer" and config.train.steps == 9
    edited = moved / "bigger.json"  # another file in the run folder: a new run, not this one
    edited.write_text((moved / "config.json").read_text().replace('"name": "demo-digits"', '"name": "bigger"'))
    args = lsun_blur.parse_args(["--config", str(edited)])
    config = cli.configure(lsun_blur.build_config(args), args)
    assert config.name == "bigger" and Path(config.out_dir) != moved.parent
    plain = tmp_path / "mine.json"  # a config file outside a run folder: the place it records
    plain.write_text((moved / "config.json").read_text())
    args = lsun_blur.parse_args(["--config", str(plain)])
    recorded = json.loads(plain.read_text())
    config = cli.configure(lsun_blur.build_config(args), args)
    assert (config.out_dir, config.name) == (recorded["out_dir"], recorded["name"])


def test_resume_with_a_different_model_is_the_short_message(tmp_path):
    tr = Trainer(tiny_run(tmp_path, steps=2))
    tr.setup()
    tr.fit()
    config = tiny_run(tmp_path, steps=4)
    other = Trainer(replace(config, model={**config.model, "model_channels": 2 * config.model["model_channels"]}))
    other.setup()
    with pytest.raises(CheckpointError, match="was trained with a different model") as info:
        other.resume()
    assert len(str(info.value)) < 600 and "size mismatch" not in str(info.value)
    assert f"--config {tr.run_dir / 'config.json'} --resume" in str(info.value)


def test_sample_device_cuda_without_cuda_names_cuda(recipe_run):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = run_py("recipes/sample.py", "--ckpt", str(recipe_run / "last.ckpt"), "--device", "cuda", "--n", "1")
    assert res.returncode == 1 and "CUDA is not available" in res.stderr, res.stderr[-2000:]
    assert "delete" not in res.stderr
    res = run_py("recipes/sample.py", "--ckpt", str(recipe_run / "last.ckpt"), "--steps", "5000", "--n", "1",
                 "--device", "cpu")
    assert res.returncode == 1 and "steps must be in 1..N=1000" in res.stderr, res.stderr[-2000:]
