"""What every training recipe shares: the flags, the embedded CPU demo settings and the run.

Recipes parse argv; the library never does.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from gendiff.figures import trajectory  # noqa: E402
from gendiff.models import PRESETS as MODELS  # noqa: E402
from gendiff.samplers import sampler_steps  # noqa: E402
from gendiff.training import (CheckpointError, FabricConfig, RunConfig, RunDirError, RunLock,  # noqa: E402
                              TrainConfig, Trainer, build_diffusion, check_run_name, claim_run_dir, sample_clip)
from gendiff.data.lsun import LMDBError  # noqa: E402
from gendiff.training.config import ConfigError  # noqa: E402


# ---- flag types: a bad value stops argparse (exit 2, usage shown) before anything is built ------

def int_at_least(lo: int):
    """An argparse type: an integer >= ``lo``; the error names the value and the range."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {v}")
        return v
    parse.__name__ = f"integer >= {lo}"
    return parse


def float_in(lo: float, hi: float = math.inf, *, open_lo: bool = False):
    """An argparse type: a finite number in [lo, hi] (or (lo, hi] with ``open_lo``)."""
    rng = f"{'(' if open_lo else '['}{lo}, {hi}]" if math.isfinite(hi) else f"{'>' if open_lo else '>='} {lo}"

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number {rng}, got {text!r}") from None
        if not (math.isfinite(v) and (v > lo if open_lo else v >= lo) and v <= hi):
            raise argparse.ArgumentTypeError(f"must be a finite number {rng}, got {text}")
        return v
    parse.__name__ = f"number {rng}"
    return parse


def run_name(text: str) -> str:
    try:
        return check_run_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_run_args(p: argparse.ArgumentParser) -> None:
    """Flags for naming, optimisation, devices and resumption (each checked as it is parsed)."""
    p.add_argument("--name", type=run_name, help="run name (the folder under --out)")
    p.add_argument("--out", default="runs")
    p.add_argument("--steps", type=int_at_least(1))
    p.add_argument("--batch-size", type=int_at_least(1))
    p.add_argument("--lr", type=float_in(0.0, open_lo=True))
    p.add_argument("--ema-decay", type=float_in(0.0, 1.0))
    p.add_argument("--model", choices=sorted(MODELS), help="UNet preset")
    p.add_argument("--seed", type=int_at_least(0), default=0)
    p.add_argument("--ckpt-every", type=int_at_least(1))
    p.add_argument("--sample-every", type=int_at_least(0), help="0: no sample grids during training")
    p.add_argument("--sample-steps", type=int_at_least(1), help="network evaluations for the sample grids (<= N)")
    p.add_argument("--num-workers", type=int_at_least(0), default=0)
    p.add_argument("--accelerator", default="auto", help="cpu, gpu, auto")
    p.add_argument("--devices", default="1")
    p.add_argument("--strategy", default="auto", help="auto, ddp, …")
    p.add_argument("--num-nodes", type=int_at_least(1), default=1)
    p.add_argument("--precision", default="32-true", help="32-true (the papers) or bf16-mixed")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue from <out>/<name>/last.ckpt (must exist)")
    start.add_argument("--overwrite", action="store_true",
                       help="start over in an existing run folder (its last.ckpt and metrics.csv are removed)")
    p.add_argument("--quick", action="store_true", help="a few steps only (smoke test)")


def add_data_args(p: argparse.ArgumentParser, size: int) -> None:
    p.add_argument("--data", default="digits", help="embedded name (digits, photos, photos-gray) or a folder")
    p.add_argument("--size", type=int_at_least(1), default=size)


def _clear_errors(kind, err, tb, _default=sys.excepthook) -> None:
    """A refused run prints one line and exits 1; other errors keep their traceback."""
    if issubclass(kind, (ConfigError, RunDirError, CheckpointError, LMDBError)):
        print(f"error: {err}", file=sys.stderr)
        return
    _default(kind, err, tb)


sys.excepthook = _clear_errors  # recipes only: the library never touches process state


def data_channels(spec: str) -> int:
    """1 for the grayscale embedded sets, else 3."""
    return 1 if spec in ("digits", "photos-gray") else 3


def model_dict(args, channels: int, default: str = "small") -> dict:
    """The chosen UNet preset sized for ``--size`` and ``channels``, as a config dict."""
    m = MODELS[args.model or default]
    return asdict(replace(m, image_size=args.size, in_channels=channels, out_channels=channels))


# The embedded CPU demo: sized so 2 cores finish in minutes (issue 5's measurements).
DEMO_TRAIN = TrainConfig(steps=2000, batch_size=64, lr=1e-3, ema_decay=0.999, log_every=25,
                         ckpt_every=500, sample_every=0, sample_n=64)


def train_config(args, base: TrainConfig) -> TrainConfig:
    """``base`` with the command line's overrides (and ``--quick``'s shortening) applied."""
    over = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "ema_decay": args.ema_decay,
            "ckpt_every": args.ckpt_every, "sample_every": args.sample_every, "sample_steps": args.sample_steps}
    t = replace(base, seed=args.seed, num_workers=args.num_workers, **{k: v for k, v in over.items() if v is not None})
    if args.quick:
        t = replace(t, steps=min(t.steps, 20), ckpt_every=10, sample_n=16, log_every=5)
    return t


def fabric_config(args) -> FabricConfig:
    devices = int(args.devices) if str(args.devices).isdigit() else args.devices
    return FabricConfig(args.accelerator, devices, args.strategy, args.num_nodes, args.precision)


def check_run(config: RunConfig) -> None:
    """Build the run's diffusion once before any work, so a bad schedule or basis flag (e.g. a
    d_min of 0) fails here with the component's config named instead of deep in training."""
    try:
        build_diffusion(config)
    except (ValueError, ZeroDivisionError, OverflowError, TypeError) as e:
        raise ConfigError(f"invalid run {config.name!r}: schedule {config.schedule} with basis "
                          f"{config.basis.get('name', config.basis)}: {type(e).__name__}: {e}") from e


def _launching_rank() -> bool:
    """True in the process that starts a run (rank 0 before Fabric launches, or a single process).

    Fabric's subprocess launcher and torchrun start the other ranks with RANK/LOCAL_RANK/NODE_RANK
    set; those must neither check nor lock the folder rank 0 already holds.
    """
    return all(os.environ.get(v, "0") == "0" for v in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def claim(config: RunConfig, args) -> RunLock | None:
    """Lock ``<out>/<name>`` and check it fits --resume/--overwrite; None on the other ranks."""
    if not _launching_rank():
        return None
    run_dir = Path(config.out_dir) / config.name
    existed = run_dir.exists()
    lock = RunLock(run_dir).acquire()
    try:
        claim_run_dir(run_dir, resume=args.resume, overwrite=getattr(args, "overwrite", False))
    except BaseException:
        lock.release()
        if not existed:  # do not leave behind the folder the lock created
            lock.path.unlink(missing_ok=True)
            run_dir.rmdir()
        raise
    return lock


def run(config: RunConfig, args, full_size_hint: str | None = None) -> Path | None:
    """Train (resuming if asked), then draw the trajectory and the sample grid; print where all went.

    Before any work: the run is checked (:func:`check_run`), its folder locked and claimed (an
    existing run needs --resume or --overwrite; --resume needs a checkpoint).
    """
    check_run(config)
    lock = claim(config, args)
    try:
        return _train(config, args, full_size_hint)
    finally:
        if lock is not None:
            lock.release()


def _train(config: RunConfig, args, full_size_hint: str | None) -> Path | None:
    trainer = Trainer(config)
    trainer.setup()
    if args.resume and trainer.resume():
        print(f"resumed {trainer.run_dir / 'last.ckpt'} at step {trainer.step}")
    t0 = time.time()
    ckpt = trainer.fit()
    if trainer.interrupted:
        raise SystemExit(f"stopped by a signal at step {trainer.step}; checkpoint {ckpt}; continue with: "
                         f"python {sys.argv[0]} {' '.join(a for a in sys.argv[1:] if a != '--resume')} --resume")
    if not trainer.fabric.is_global_zero:
        return None
    d, t = config.data, config.train
    print(f"trained {trainer.step} steps in {time.time() - t0:.0f} s; sampling with {t.sampler} …")
    ema = trainer.ema.module.eval()
    g = torch.Generator(trainer.fabric.device).manual_seed(t.seed)
    trajectory(trainer.diffusion, ema, (8, d.channels, d.size, d.size), trainer.run_dir / "trajectory.png",
               value_range=d.value_range, generator=g, sampler=t.sampler, steps=sampler_steps(t.sampler, t.sample_steps),
               device=trainer.fabric.device, prior=trainer.prior, clip_x0=sample_clip(config))
    trainer.sample_grid(n=t.sample_n)
    report(trainer.run_dir, ckpt, full_size_hint)
    return trainer.run_dir


def report(run_dir: Path, ckpt: Path, full_size_hint: str | None) -> None:
    print(f"\nrun folder: {run_dir}")
    for name, what in [("samples.png", "EMA samples"), ("forward.png", "the forward process x_0 … x_N"),
                       ("trajectory.png", "predicted x̂_0 along the reverse process (last column: the sample)"),
                       (ckpt.name, "resumable checkpoint (model, EMA, optimizer, step, RNG, config)"),
                       ("config.json", "the full run configuration"), ("metrics.csv", "training loss log")]:
        print(f"  {run_dir / name}: {what}")
    print(f"\nmore samples: python recipes/sample.py --ckpt {ckpt} --n 64")
    if full_size_hint:
        print(full_size_hint)
