r"""The one GPU check (issue 14): tests on CUDA, training and sampling speed of the paper UNet,
the engine's share, peak memory, and a 3-minute training run. Under 8 minutes on one H100.

    python benchmarks/gpu.py                          # on a CUDA machine; report under runs/gpu-<time>/
    python benchmarks/gpu.py --out /tmp/gpu           # report.md, loss.png, samples.png, loss.csv
    python benchmarks/gpu.py --quick --device cpu     # the same code paths on the CPU, < 1 min

Sections (each guarded: a failure prints its error in the report and the others still run):
  (a) ``pytest -m gpu`` in a subprocess, its summary line;
  (b) training step of the paper UNet ("paper64", 121M parameters) at 64², the largest batch of
      128/64 that fits, fp32 and bf16-mixed, blur vs identity basis (interleaved, so the ratio is
      the engine's overhead; goal ≤ 1.02), eager and ``torch.compile``-d network;
  (c) sampling at B = 64: dpm++2m 50 steps, reverse 1000 steps (timed over its first steps and
      extrapolated), and the engine's share of a step (network forward vs a sampling step with a
      zero network, timed side by side);
  (d) peak GPU memory of each of the above (``torch.cuda.max_memory_allocated``, reset between);
  (e) a 3-minute run of the "medium" UNet on the embedded photos through ``Trainer`` (Fabric,
      ``accelerator=gpu``, ``precision=bf16-mixed``), its loss curve and sample grid.

Sections run in the order a, b (eager), c, e, b (compiled), so a slow compilation can only cut
itself short; a global budget (``--budget``, default 450 s) skips what would not fit. The report is
rewritten after every section, so a run killed by a timeout still leaves what it measured.

On the lent device machine (its image has torch, torchvision, lightning_fabric through
pytorch-lightning, numpy, scipy, scikit-image/-learn, matplotlib, tqdm, einops, pytest and
hypothesis; PyWavelets, lmdb and gendiff are missing, and nothing can be fetched there), from the
repository root here, after the last change to the code, build the wheels it needs into .whl/:

    bash benchmarks/device_wheels.sh

then one device call with carry [".whl"] and timeout_s 600:

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl &&
    export PYTHONPATH=/tmp/site GENDIFF_COMMIT=<git rev-parse --short HEAD here> &&
    PYTHONUNBUFFERED=1 python3 benchmarks/gpu.py --out $OUT/gpu

``bash benchmarks/rehearse_device.sh`` runs these steps on the CPU in a Python 3.12 venv with the
image's torch 2.11.0, torchvision 0.26.0, numpy 2.5 and pytorch-lightning 2.6.6
(``--quick --device cpu``): all sections ok. It found that ``python -m pytest`` run from the checkout imports the checkout's
``gendiff/`` folder, which lacks ``bases``/``schedules``, before ``/tmp/site``; section (a) sets
PYTHONSAFEPATH for that reason.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _timing  # noqa: E402

from gendiff import Diffusion, GaussianBlurBasis, IdentityBasis  # noqa: E402
from gendiff.models import PRESETS, build_model  # noqa: E402
from gendiff.schedules import VPBlurSchedule  # noqa: E402
from gendiff.training import DataConfig, FabricConfig, RunConfig, TrainConfig, Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = {
    "a": "(a) GPU tests (`pytest -m gpu`)",
    "b": "(b) Training step of the UNet, blur vs identity basis",
    "c": "(c) Sampling and the engine's share of a step",
    "d": "(d) Peak GPU memory",
    "e": "(e) Short training run through Trainer/Fabric",
}
# The paper's schedule (Table 1, quartic f(N) = 0.140625, σ = 0.4 px); identity uses the same one.
SCHEDULE = dict(f_type="quartic", f_N=0.140625, N=1000)


@dataclass(frozen=True)
class Sizes:
    """Everything --quick shrinks."""

    preset: str = "paper64"
    side: int = 64
    batches: tuple[int, ...] = (128, 64)
    repeats: int = 7
    warmup: int = 2
    sample_batch: int = 64
    dpm_steps: int = 50
    reverse_timed: int = 50  # reverse steps actually run; extrapolated to N
    train_preset: str = "medium"
    train_data: str = "photos"
    train_side: int = 32
    train_batch: int = 128
    train_seconds: float = 180.0
    train_sample_steps: int = 50
    compile_backend: str = "inductor"


# The CPU dry run: "tiny" for the timed sections (CPU bf16 is emulated and slow), "small" trained.
QUICK = Sizes(preset="tiny", side=16, batches=(4, 2), repeats=2, warmup=1, sample_batch=4, dpm_steps=5,
              reverse_timed=5, train_preset="small", train_data="digits", train_side=16, train_batch=16,
              train_seconds=4.0, train_sample_steps=10, compile_backend="eager")


class Budget:
    """The global wall-clock budget; sections ask before starting work that may not fit."""

    def __init__(self, seconds: float):
        self.t0, self.seconds = time.monotonic(), seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return self.seconds - self.elapsed()


class Skipped(Exception):
    """A section (or part) left out to stay inside the budget."""


@dataclass
class Report:
    """The markdown report, sections in a fixed order whatever order they ran in."""

    path: Path
    header: str
    body: dict[str, str] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)

    def set(self, key: str, status: str, text: str) -> None:
        self.status[key], self.body[key] = status, text
        self.write()

    def markdown(self) -> str:
        parts = [self.header]
        for key, title in SECTIONS.items():
            status = self.status.get(key, "NOT RUN")
            parts.append(f"## {title}\n\nStatus: **{status}**\n\n{self.body.get(key, '')}".rstrip())
        return "\n\n".join(parts) + "\n"

    def write(self) -> None:
        self.path.write_text(self.markdown())


def guarded(report: Report, key: str, fn, *args) -> None:
    """Run one section; its error (with traceback) goes into the report, not out of the script."""
    try:
        fn(report, *args)
    except Skipped as e:
        report.set(key, "SKIPPED", (report.body.get(key, "") + f"\n\n{e}").strip())
    except Exception as e:  # noqa: BLE001 -- every failure must land in the report
        tb = traceback.format_exc(limit=6)
        text = report.body.get(key, "") + f"\n\n{type(e).__name__}: {e}\n\n```\n{tb}```"
        report.set(key, "FAILED", text.strip())
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# ---- measuring ---------------------------------------------------------------------------------

def synced(fn, device: torch.device):
    """``fn`` followed by a device synchronisation, so wall-clock timing sees the GPU's work."""
    if device.type != "cuda":
        return fn

    def call():
        fn()
        torch.cuda.synchronize(device)
    return call


def peak_memory(fn, device: torch.device) -> float | None:
    """Peak bytes allocated during one call of ``fn`` (None on the CPU)."""
    if device.type != "cuda":
        fn()
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return float(torch.cuda.max_memory_allocated(device))


def fmt_mem(nbytes: float | None) -> str:
    return "n/a (CPU)" if nbytes is None else _timing.mib(nbytes)


def autocast(device: torch.device, precision: str):
    if precision == "bf16-mixed":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def diffusions(side: int) -> dict[str, Diffusion]:
    return {"blur": Diffusion(GaussianBlurBasis((side, side), sigma=0.4), VPBlurSchedule(**SCHEDULE)),
            "identity": Diffusion(IdentityBasis((side, side)), VPBlurSchedule(**SCHEDULE))}


def network(sizes: Sizes):
    """The timed UNet, RGB at the timed side."""
    return build_model(sizes.preset, image_size=sizes.side, in_channels=3)


def train_step(d: Diffusion, net, opt, x0: torch.Tensor, g: torch.Generator, precision: str):
    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(x0.device, precision):
            loss = d.loss(net, x0, generator=g)
        loss.backward()
        opt.step()
    return step


# ---- (a) tests ---------------------------------------------------------------------------------

def section_tests(report: Report, args, budget: Budget) -> None:
    timeout = min(150.0, budget.left() - 60)
    if timeout < 20:
        raise Skipped("time budget spent")
    # Only the files that hold gpu tests: an unrelated test file's missing import elsewhere must
    # not fail the GPU tests' collection.
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                   if "mark.gpu" in p.read_text())
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *files]
    # PYTHONSAFEPATH: `python -m pytest` would put the checkout first on sys.path, and its gendiff/
    # folder (bases/ and schedules/ live beside it) would shadow the installed package.
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    (args.out / "pytest-gpu.log").write_text(r.stdout + r.stderr)
    lines = [ln for ln in r.stdout.strip().splitlines() if ln.strip()]
    summary = lines[-1] if lines else "(no output)"
    text = f"`{' '.join(cmd[2:])}` (exit code {r.returncode}, full log `pytest-gpu.log`):\n\n    {summary}"
    if r.returncode != 0:
        raise RuntimeError(f"pytest failed.\n\n{text}\n\n```\n{r.stdout[-3000:]}{r.stderr[-2000:]}\n```")
    if args.device.type == "cuda" and "skipped" in summary:
        raise RuntimeError(f"GPU tests were skipped on a CUDA machine.\n\n{text}")
    note = ("" if args.device.type == "cuda" else
            "\n\nOn the CPU every GPU test skips (no CUDA); this only checks they collect.")
    report.set("a", "ok", text + note)


# ---- (b) training step ---------------------------------------------------------------------------

def fit_batch(args, sizes: Sizes, memory: dict) -> int:
    """The largest batch of ``sizes.batches`` whose fp32 eager training step fits in memory."""
    d = diffusions(sizes.side)["blur"]
    for b in sizes.batches:
        net = opt = None
        try:
            net = network(sizes).to(args.device)
            opt = torch.optim.Adam(net.parameters(), lr=1e-4)
            x0 = torch.randn(b, 3, sizes.side, sizes.side, device=args.device)
            g = torch.Generator(args.device).manual_seed(0)
            train_step(d, net, opt, x0, g, "32-true")()
            return b
        except torch.cuda.OutOfMemoryError:
            memory[f"train fp32 B={b}"] = "out of memory"
        finally:
            del net, opt
            if args.device.type == "cuda":
                torch.cuda.empty_cache()
    raise RuntimeError(f"no batch of {sizes.batches} fits")


def time_training(args, sizes: Sizes, budget: Budget, batch: int, compiled: bool, memory: dict) -> list[list]:
    """Rows (precision, basis, ms, images/s, ratio) for one network variant, blur and identity
    interleaved in the same repeats (``_timing.compare``)."""
    torch.manual_seed(args.seed)
    net = network(sizes).to(args.device)
    model = torch.compile(net, backend=sizes.compile_backend) if compiled else net
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x0 = torch.randn(batch, 3, sizes.side, sizes.side, device=args.device)
    rows, tag = [], "compiled" if compiled else "eager"
    for precision in ("32-true", "bf16-mixed"):
        if compiled and budget.left() < 45:
            rows.append([tag, precision, "—", "skipped: time budget", "", "", "", ""])
            continue
        steps = {name: synced(train_step(d, model, opt, x0, torch.Generator(args.device).manual_seed(1), precision),
                              args.device) for name, d in diffusions(sizes.side).items()}
        t0 = time.monotonic()
        for fn in steps.values():  # compilation (if any) happens here, outside the timing
            fn()
        first = time.monotonic() - t0
        res = _timing.compare(steps, repeats=sizes.repeats, warmup=sizes.warmup, min_time=0.0)
        r = _timing.ratio(res, "blur", "identity")
        for name, fn in steps.items():
            memory[f"train {precision} {tag} {name} B={batch}"] = fmt_mem(peak_memory(fn, args.device))
            rows.append([tag, precision, name, res[name].median, batch / res[name].median * 1e3,
                         f"{res[name].spread:.0%}", f"{r:.3f}" if name == "blur" else "1",
                         f"{first:.0f} s" if name == "blur" else ""])
    return rows


TRAIN_HEADER = ["network", "precision", "basis", "ms / step", "images/s", "spread", "time ÷ identity",
                "first steps (incl. compile)"]


def section_training(report: Report, args, sizes: Sizes, budget: Budget, memory: dict, state: dict) -> None:
    if budget.left() < 60:
        raise Skipped("time budget spent")
    n_params = sum(p.numel() for p in network(sizes).parameters())
    batch = state["batch"] = fit_batch(args, sizes, memory)
    rows = state["rows"] = time_training(args, sizes, budget, batch, False, memory)
    report.set("b", "ok", training_text(sizes, n_params, batch, rows,
                                        compiled_note="(compiled runs follow at the end)"))
    state["n_params"] = n_params


def section_compiled(report: Report, args, sizes: Sizes, budget: Budget, memory: dict, state: dict) -> None:
    if "batch" not in state:  # the eager timing failed or was skipped, and says so already
        return
    if budget.left() < 90:
        report.set("b", report.status["b"], training_text(
            sizes, state["n_params"], state["batch"], state["rows"],
            compiled_note=f"**torch.compile not timed**: {budget.left():.0f} s of the budget were left (< 90 s)."))
        return
    rows = state["rows"] + time_training(args, sizes, budget, state["batch"], True, memory)
    note = f"compiled: `torch.compile(net, backend={sizes.compile_backend!r})`"
    report.set("b", "ok", training_text(sizes, state["n_params"], state["batch"], rows, compiled_note=note))


def training_text(sizes, n_params, batch, rows, compiled_note) -> str:
    return (f"UNet preset `{sizes.preset}` ({n_params / 1e6:.1f}M parameters) at {sizes.side}², batch {batch} "
            f"(the largest of {list(sizes.batches)} whose fp32 step fits), Adam; one step = loss "
            f"(Eq. 18, uniform steps) + backward + optimizer step, synchronised after every step; "
            f"median over {sizes.repeats} interleaved repeats after {sizes.warmup} warm-up steps. Schedule quartic "
            f"f(N) = 0.140625, N = 1000, for both bases. Goal: blur ÷ identity ≤ 1.02.\n\n"
            + _timing.table(TRAIN_HEADER, rows) + f"\n\n{compiled_note}")


# ---- (c) sampling --------------------------------------------------------------------------------

def sampling_candidates(args, sizes: Sizes, net) -> dict:
    """The network's forward alone; dpm++2m and reverse with the network (blur basis) and with a
    zero network (the engine alone: basis round trips, the sampler's arithmetic, the prior) for
    both bases. reverse runs the first K steps of its N-step grid, the same work per step."""
    shape, N, K = (sizes.sample_batch, 3, sizes.side, sizes.side), SCHEDULE["N"], sizes.reverse_timed
    zero = lambda x, i: torch.zeros_like(x)  # noqa: E731
    grids = {"dpm++2m": dict(steps=sizes.dpm_steps), "reverse": dict(timesteps=list(range(N, N - K, -1)) + [0])}

    def run(d, model, sampler):
        g = torch.Generator(args.device).manual_seed(0)
        return synced(lambda: d.sample(model, shape, sampler=sampler, generator=g, device=args.device,
                                       progress=False, **grids[sampler]), args.device)
    x = torch.randn(shape, device=args.device)
    i = torch.full(shape[:1], N // 2, dtype=torch.long, device=args.device)
    cand = {"network": synced(lambda: torch.no_grad()(net)(x, i), args.device)}
    for basis, d in diffusions(sizes.side).items():
        for sampler in grids:
            if basis == "blur":
                cand[f"{basis} {sampler}"] = run(d, net, sampler)
            cand[f"{basis} {sampler} engine"] = run(d, zero, sampler)
    return cand


def section_sampling(report: Report, args, sizes: Sizes, budget: Budget, memory: dict) -> None:
    if budget.left() < 40:
        raise Skipped("time budget spent")
    torch.manual_seed(args.seed)
    net = network(sizes).to(args.device).eval()
    B, N, K, repeats = sizes.sample_batch, SCHEDULE["N"], sizes.reverse_timed, max(3, sizes.repeats // 2)
    cand = sampling_candidates(args, sizes, net)
    res = _timing.compare(cand, repeats=repeats, warmup=1, min_time=0.0)
    net_ms, rows = res["network"].median, []
    for basis in ("blur", "identity"):
        for sampler, nfe, calls in [("dpm++2m", sizes.dpm_steps, sizes.dpm_steps), ("reverse", N, K)]:
            engine = res[f"{basis} {sampler} engine"].median / calls
            label = f"{sampler} {nfe}" + ("" if calls == nfe else f" (timed {calls}, extrapolated)")
            full = [None] * 3
            if f"{basis} {sampler}" in res:
                step = res[f"{basis} {sampler}"].median / calls
                full = [step * nfe / 1e3, B / (step * nfe) * 1e3, step]
                peak = peak_memory(cand[f"{basis} {sampler}"], args.device)
                memory[f"sample {sampler} {basis} B={B}"] = fmt_mem(peak)
            rows.append([basis, label, *["—" if v is None else v for v in full], net_ms, engine,
                         f"{engine / (engine + net_ms):.1%}"])
    header = ["basis", "sampler, steps", "s / batch", "images/s", "ms / step", "network ms", "engine ms / step",
              "engine share"]
    report.set("c", "ok", (
        f"Batch {B}, `{sizes.preset}` in fp32, eager, no_grad. \"network ms\": one forward of the UNet; "
        f"\"engine ms / step\": the same sampling run with a zero network (basis round trips, the "
        f"sampler's arithmetic, the prior), per step; engine share = engine ÷ (engine + network). "
        f"The full runs use the blur basis (the network's time does not depend on the basis). All "
        f"{len(cand)} candidates timed interleaved, median of {repeats} repeats after 1 warm-up. "
        f"**reverse is timed over its first {K} steps** (`timesteps=[{N}, …, {N - K + 1}, 0]`, the same "
        f"per-step work) **and extrapolated to {N} steps**; dpm++2m runs in full.\n\n"
        + _timing.table(header, rows)))


# ---- (e) training through Trainer ------------------------------------------------------------------

class StopAfter:
    """``trainer.request_stop()`` after ``seconds``: ``Trainer.fit`` then saves and stops (the
    library installs no signal handler since issue 19, item 8, so a SIGINT no longer reaches it)."""

    def __init__(self, trainer, seconds: float):
        self.timer = threading.Timer(seconds, trainer.request_stop)
        self.timer.daemon = True
        self.timer.start()

    def stop(self):
        self.timer.cancel()


def section_train_run(report: Report, args, sizes: Sizes, budget: Budget) -> None:
    seconds = min(sizes.train_seconds, budget.left() - 40)
    if seconds < min(sizes.train_seconds, 30):
        raise Skipped(f"time budget spent ({budget.left():.0f} s left)")
    channels = 1 if sizes.train_data in ("digits", "photos-gray") else 3
    side = sizes.train_side
    model = asdict(replace(PRESETS[sizes.train_preset], image_size=side, in_channels=channels,
                           out_channels=channels))
    accelerator = "gpu" if args.device.type == "cuda" else "cpu"
    config = RunConfig(
        "gpu-check", GaussianBlurBasis((side, side), sigma=0.4).config(), VPBlurSchedule(**SCHEDULE).config(),
        model, DataConfig(sizes.train_data, side, channels),
        TrainConfig(steps=10**7, batch_size=sizes.train_batch, lr=3e-4, ema_decay=0.999, grad_clip=1.0,
                    log_every=1 if args.quick else 10, ckpt_every=10**7, sample_every=0, sample_n=64,
                    sample_steps=sizes.train_sample_steps),
        FabricConfig(accelerator=accelerator, precision=args.precision))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, run_dir=Path(tmp) / "run")
        trainer.setup()
        stopper = StopAfter(trainer, seconds)
        t0 = time.monotonic()
        try:
            trainer.fit()
        finally:
            stopper.stop()
        wall = time.monotonic() - t0
        steps = trainer.step
        sample_path = trainer.sample_grid(n=64, path=args.out / "samples.png")
        metrics = Path(tmp) / "run" / "metrics.csv"
        log = []
        if metrics.is_file():
            with open(metrics, newline="") as f:
                log = [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]
    if not log:
        raise RuntimeError(f"no loss was logged in {steps} steps")
    write_loss(log, args.out, f"{sizes.train_preset} UNet, {wall:.0f} s on {accelerator}, {args.precision}")
    first, last = statistics.mean(v for _, v in log[:3]), statistics.mean(v for _, v in log[-3:])
    report.set("e", "ok", (
        f"`Trainer` with `FabricConfig(accelerator={accelerator!r}, precision={args.precision!r})`: UNet "
        f"`{sizes.train_preset}` on the embedded `{sizes.train_data}` at {side}² ({channels} channels), "
        f"batch {sizes.train_batch}, Adam 3e-4, EMA 0.999, blur basis with the quartic 0.14 schedule; "
        f"stopped by `Trainer.request_stop()` after {seconds:.0f} s (it saves and stops).\n\n"
        f"- {steps} steps in {wall:.0f} s ({steps / wall:.1f} steps/s, "
        f"{steps * sizes.train_batch / wall:.0f} images/s, data loading included)\n"
        f"- loss: {first:.4f} (mean of the first 3 logged) → {last:.4f} (mean of the last 3)\n"
        f"- loss curve: `loss.png` (values `loss.csv`); EMA samples (dpm++2m, "
        f"{config.train.sample_steps} steps): `{Path(sample_path).name}`"))


def write_loss(log: list[tuple[int, float]], out: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    with open(out / "loss.csv", "w", newline="") as f:
        csv.writer(f).writerows([("step", "loss"), *log])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*zip(*log), lw=1)
    ax.set(xlabel="step", ylabel="training loss (Eq. 18)", yscale="log", title=title)
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=120)
    plt.close(fig)


# ---- (d) and the frame ---------------------------------------------------------------------------

def section_memory(report: Report, memory: dict) -> None:
    if not memory:
        raise RuntimeError("nothing was measured (sections b and c failed or were skipped)")
    rows = [[k, v] for k, v in memory.items()]
    report.set("d", "ok", "`torch.cuda.max_memory_allocated` over one call, reset before each (training: "
               "model, Adam state and activations; sampling: model and the batch).\n\n"
               + _timing.table(["what", "peak allocated"], rows))


def header(args, sizes: Sizes) -> str:
    dev = args.device
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU: {_timing.cpu_model()}"
    try:
        commit = (os.environ.get("GENDIFF_COMMIT")  # the device machine gets the files without .git
                  or subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                    text=True, timeout=10).stdout.strip() or "unknown")
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": name,
        "torch": torch.__version__,
        "CUDA (torch build)": torch.version.cuda or "none",
        "cuDNN": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else "none",
        "TF32 matmul / cuDNN": f"{torch.backends.cuda.matmul.allow_tf32} / {torch.backends.cudnn.allow_tf32}",
        "gendiff commit": commit,
        "mode": "--quick (tiny sizes; not a measurement)" if args.quick else "full",
    }
    return "# GPU check: gendiff on " + name + "\n\n" + _timing.machine_markdown(info)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--out", type=Path, help="output folder (default runs/gpu-<date-time>)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and a few seconds of training (CPU smoke run)")
    p.add_argument("--budget", type=float,
                   help="global time budget in seconds (default 450; --quick 300, for a loaded CPU)")
    p.add_argument("--precision", default="bf16-mixed", help="the Trainer run's Fabric precision")
    p.add_argument("--train-seconds", type=float, help="length of section (e)'s run (default 180)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch sees no CUDA device; use --device cpu (with --quick) on a CPU")
    args.out = args.out or ROOT / "runs" / f"gpu-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    args.budget = args.budget or (300.0 if args.quick else 450.0)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    if args.train_seconds:
        sizes = replace(sizes, train_seconds=args.train_seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.device.type == "cpu":
        torch.set_num_threads(1)  # as the tests: on a shared CPU more threads stall (benchmarks/_timing.py)
    budget, memory, state = Budget(args.budget), {}, {}
    report = Report(args.out / "report.md", header(args, sizes))
    report.write()
    guarded(report, "a", section_tests, args, budget)
    guarded(report, "b", section_training, args, sizes, budget, memory, state)
    guarded(report, "c", section_sampling, args, sizes, budget, memory)
    guarded(report, "e", section_train_run, args, sizes, budget)
    guarded(report, "b", section_compiled, args, sizes, budget, memory, state)
    guarded(report, "d", section_memory, memory)
    report.header += f"\n- wall time: {budget.elapsed():.0f} s (budget {args.budget:.0f} s)"
    report.write()
    print(report.markdown())
    print(f"written to {args.out}")
    return 0 if all(report.status.get(k) == "ok" for k in SECTIONS) else 1


if __name__ == "__main__":
    sys.exit(main())
