"""Reliability: bad input gets a clear error, training faults keep a good checkpoint, and the
numerics stay finite in float32 and under bf16 autocast. docs/reliability.md lists each case.
"""
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
from gendiff.training.checkpoint import CheckpointError, save_atomic

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
     r"unknown sampler 'euler'; valid: \[.*'dpm\+\+2m'.*\]"),
    (lambda: build_parameterization({"name": "v"}), r"unknown parameterization 'v'; valid: \['eps', 'residual_mean'\]"),
    (lambda: EpsPrediction("snr"), r"unknown weighting 'snr'; valid: \['eps', 'score'\]"),
    (lambda: build_prior({"name": "nope"}), r"unknown prior 'nope'; valid: \['blurred_data', 'gaussian'\]"),
    (lambda: VPBlurSchedule(noise="sqrt"),
     r"unknown noise schedule 'sqrt'; valid: \['cosine', 'linear', 'logsnr-cosine'\]"),
    (lambda: SpeedSchedule("cosine"), r"unknown blur speed 'cosine'; valid: \[.*'quartic'.*\] or a callable"),
    (lambda: GaussianBlurBasis((8, 8), boundary="mirror"),
     r"unknown boundary 'mirror'; valid: \['zero', 'circular', 'reflect'\]"),
    (lambda: make_grid(100, 5, "log"), r"unknown grid 'log'; valid: \['cubic', 'quadratic', 'uniform'\]"),
    (lambda: build_model("huge"), r"unknown UNet preset 'huge'; choose from \[.*'tiny'.*\]"),
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
        self._rates = torch.zeros(1, *self.shape, dtype=torch.float64)
        self._rates[0, 0, 0] = -1.0 if negative_rate else 0.0
        self.scale = 1.0 if negative_rate else 1.1

    def forward(self, x):
        return self.scale * x

    def inverse(self, c):
        return c / self.scale

    @property
    def rates(self):
        return self._rates


def test_non_orthonormal_basis_is_rejected_unless_skipped():
    with pytest.raises(ValueError, match=r"Scaled is not orthonormal: .*<Uᵀx, Uᵀy> == <x, y> fails by .* "
                                         r"\(pass check_basis=False to skip\)"):
        Diffusion(Scaled((4, 4)), VPBlurSchedule(N=10))
    with pytest.raises(ValueError, match=r"rates must be ≥ 0 with trailing shape \(4, 4\), "
                                         r"got shape \(1, 4, 4\), min -1"):
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
        raw = d.basis.forward(x0)  # why the engine turns autocast off: matmul runs in bf16
        x_i, eps = d.q_sample(x0, torch.tensor([1, 10, 50, 100]), generator=torch.Generator().manual_seed(1))
        score = d.score(x_i, torch.tensor([1, 10, 50, 100]), eps)
        out = d.sample(zero_model, (2, 3, 8, 8), steps=5, progress=False, generator=torch.Generator().manual_seed(2))
    assert raw.dtype == torch.bfloat16
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
    return int(torch.load(path, weights_only=False)["step"])


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
    stopped = rf"loss is nan at step 6; stopping. The last good checkpoint is {re.escape(str(ckpt))}"
    with pytest.raises(NonFiniteLossError, match=stopped):
        tr.fit()
    assert ckpt_step(ckpt) == 4
    good = torch.load(ckpt, weights_only=False)["model"]
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


def test_sigint_in_process_saves_and_stops(tmp_path):
    tr = Trainer(tiny_run(tmp_path, steps=50, ckpt_every=1000))
    tr.setup()
    step = tr._train_step

    def interrupted_at_3(x0):
        if tr.step == 2:
            signal.raise_signal(signal.SIGINT)  # arrives mid-step: the step finishes, then a save
        return step(x0)

    tr._train_step, handler = interrupted_at_3, signal.getsignal(signal.SIGINT)
    ckpt = tr.fit()
    assert tr.interrupted and tr.step == 3 and ckpt_step(ckpt) == 3
    assert signal.getsignal(signal.SIGINT) is handler


class DiesWhileSaving:
    """A Fabric stand-in whose save writes half a file and then dies, as a kill mid-save would."""

    is_global_zero = True

    def save(self, path, state):
        Path(path).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt("killed during save")

    def barrier(self):
        pass


def test_a_save_interrupted_midway_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save({"step": 4}, path)
    with pytest.raises(KeyboardInterrupt):
        save_atomic(DiesWhileSaving(), path, {"step": 6})
    assert ckpt_step(path) == 4 and (tmp_path / ".last.ckpt.tmp").exists()


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
        state = torch.load(ckpt, weights_only=False)  # loadable, whatever the moment
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
