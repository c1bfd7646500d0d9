"""Samples of a run written to a folder: numbered PNGs (for FID) and a grid, safely. Samples that
are not 2-D images (signals, volumes) go to one array, ``samples.npy`` (values in [0, 1], like
the PNGs'), with the grid drawn for their shape (line plots, middle slices).

One folder holds one sampling: a lock keeps a second writer out (two would lose one's seed), a
manifest lists every file written here (``--overwrite`` removes those and nothing else), and the
manifest is written before each file, so a kill in between leaves nothing unlisted.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from tqdm.auto import tqdm

from gendiff.figures import save_grid
from gendiff.files import SAMPLES_MANIFEST as MANIFEST, save_array, write_text_atomic
from gendiff.value_range import map_range

from .config import ConfigError
from .run import Run, SamplingConfig, planned_steps, sample_run
from .rundir import RunLock

ARRAY = "samples.npy"  # the samples of a run whose examples are not 2-D images
__all__ = ["write_samples", "folder_name", "claim_folder", "read_manifest", "Counted"]


class Counted:
    """The network, counting its calls: the evaluations reported are the ones made."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, *a, **k):
        self.calls += 1
        return self.model(*a, **k)


def folder_name(sampler: str, steps: int | None, start: int, prefix: str = "samples") -> str:
    """``<prefix>-<sampler>-<steps>``, one folder name whatever the sampler's name (an import path's
    ':' and '/' become '.'); ``steps`` None means all steps from ``start``."""
    return f"{prefix}-{sampler.replace(':', '.').replace('/', '.')}-{start if steps is None else steps}"


def write_samples(run: Run, sampling: SamplingConfig, n: int, out: str | Path | None = None, *,
                  home: str | Path | None = None, batch_size: int = 64, seed: int = 0, device="cpu", overwrite: bool = False,
                  requested: bool = False, classes: int | None = None) -> tuple[Path, int, int]:
    """Draw ``n`` samples of ``run`` into ``out`` (default ``<home>/samples-<sampler>-<steps>``, ``home``
    the checkpoint's folder, else the run's).

    Args:
        run, sampling: the built run and how to sample it (:func:`~gendiff.training.run.sample_run`).
        n, batch_size, seed, device: how many, per network call, from which seed, where.
        out: the folder; one holding PNGs not written here is refused (an FID folder holds one
            sampling only), one holding earlier samples needs ``overwrite``.
        requested: ``sampling.steps`` was asked for (a walk-every-step sampler refuses another count).
        classes: a class-conditional run's class for every sample (default folder
            ``…-class<k>``); None: every class in turn (:meth:`~gendiff.training.run.Run.labels`).

    Returns:
        (folder, samples written, network evaluations per sample as counted from the calls).
    """
    try:
        steps = planned_steps(run.diffusion, sampling, requested=requested)
    except ValueError as e:
        raise ConfigError(f"sampler {sampling.sampler!r}, steps {sampling.steps}, options "
                          f"{json.dumps(sampling.options)}: {e}", "sampling") from None
    try:
        run.labels(1, classes)  # a class the run has, or no class for an unconditional run: before the folder
    except ValueError as e:
        raise ConfigError(str(e), "classes") from None
    start = run.diffusion.last_train_step
    home = Path(home or Path(run.config.out_dir, run.config.name))
    tag = "" if classes is None else f"-class{classes}"
    out = Path(out or home / (folder_name(sampling.sampler, steps, start) + tag))
    lock = RunLock(out).acquire()
    try:
        claim_folder(out, overwrite)
        model, g = Counted(run.model), torch.Generator(device).manual_seed(seed)
        batches, written = [], []
        images = len(run.event_shape) == 3
        for k in tqdm(range(0, n, batch_size), desc="batches"):
            x = sample_run(run, min(batch_size, n - k), sampling, model=model, generator=g, device=device,
                           requested=requested, classes=classes)
            for img in map_range(x, run.config.data.value_range, clamp=True) if images else ():
                written.append(f"{len(written):06d}.png")
                _write_manifest(out, written)  # before the file: a kill in between leaves nothing unlisted
                save_grid(img[None], out / written[-1], (0.0, 1.0), nrow=1)
            batches.append(x)
        if not images:
            written = [ARRAY]
            _write_manifest(out, written)
            save_array(map_range(torch.cat(batches), run.config.data.value_range, clamp=True), out / ARRAY)
        save_grid(torch.cat(batches)[:256], out / "grid.png", run.config.data.value_range)
        _write_manifest(out, written + ["grid.png"])
    finally:
        lock.release()
    return out, n, model.calls // max(1, len(batches))


def claim_folder(out: Path, overwrite: bool) -> None:
    """Refuse a folder holding samples unless ``overwrite``, and PNGs written elsewhere always;
    with ``overwrite`` remove only the files the manifest lists."""
    ours = read_manifest(out)
    pngs = {p.name for p in out.glob("*.png")} if out.is_dir() else set()
    foreign = sorted(pngs - ours)
    if foreign:
        raise ConfigError(f"{out} holds PNGs that sample.py did not write ({', '.join(foreign[:5])}"
                          f"{', …' if len(foreign) > 5 else ''}); samples go to a folder of their own: choose "
                          "another folder", "out")
    if ours and not overwrite:
        raise ConfigError(f"{out} already holds samples; pass --overwrite to replace them, or another folder", "out")
    for name in ours:
        if (out / name).is_file():
            (out / name).unlink()
    (out / MANIFEST).unlink(missing_ok=True)


def read_manifest(out: Path) -> set[str]:
    """The sample files a manifest lists; only names this module writes are believed."""
    try:
        names = json.loads((out / MANIFEST).read_text()) if (out / MANIFEST).is_file() else []
    except (OSError, ValueError):
        names = []
    return {n for n in names if isinstance(n, str) and re.fullmatch(r"\d{6}\.png|grid\.png|samples\.npy", n)} \
        if isinstance(names, list) else set()


def _write_manifest(out: Path, names: list[str]) -> None:
    write_text_atomic(out / MANIFEST, json.dumps(names))
