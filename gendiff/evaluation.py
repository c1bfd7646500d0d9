"""Scoring a run: a checkpoint's samples (or a folder of images, or an array of samples) against
held-out data.

What ``recipes/evaluate.py`` and ``recipes/table1_small.py`` report, as functions: the variational
bound in bits/dim with both reverse means from the same network calls (docs/math.md,
"Likelihood"), the sliced Wasserstein distance per Laplacian level, the spectrum's log power
ratio per band, and FID/KID through clean-fid where the Inception weights are local. Errors are
:class:`~gendiff.training.config.ConfigError` naming what was asked (``field``: the argument).

The metrics that exist for the data's shape, and a reason for those that do not:

=========================  ========================================  ==============================
data                       sample metrics                            not defined here
=========================  ========================================  ==============================
images (N, C, H, W)        SWD per pyramid level, radial spectrum    —
                           bands, FID/KID (local Inception weights)
signals (N, C, L)          1-D power-spectrum bands                  SWD, FID/KID
volumes (N, C, D, H, W)    —                                         SWD, spectra, FID/KID
=========================  ========================================  ==============================

bits/dim takes every shape; a refused metric is reported by its reason
(``"fid_unavailable"``), never as a NaN.
"""
from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from gendiff.data import ARRAY_SUFFIXES, EMBEDDED, ArrayDataset, build_dataset
from gendiff.data.folder import decode_image, pil_to_tensor
from gendiff.figures import save_grid
from gendiff.files import SAMPLES_MANIFEST as MANIFEST, write_text_atomic
from gendiff.likelihood import bounds, check_gaussian_prior
from gendiff.metrics import (MissingWeightsError, fid, kid, plot_spectra, require_images, signal_spectrum_error,
                             spectrum_error, swd)
from gendiff.metrics.fid import WeightsHashError
from gendiff.training import open_run, steps_taken
from gendiff.training.config import ConfigError
from gendiff.training.rundir import RunDirError, check_run_place
from gendiff.training.run import SamplingConfig, planned_steps, run_sampling, sample_run
from gendiff.training.samples import folder_name
from gendiff.value_range import map_range

__all__ = ["evaluate_checkpoint", "evaluate_folder", "format_table", "bits_per_dim", "sample_metrics", "draw_samples",
           "held_out", "summarize", "fid_kid", "spectrum_figure"]


@torch.no_grad()
def draw_samples(run, n: int, seed: int, sampling: SamplingConfig, batch_size: int, requested: bool = False):
    """``n`` samples of the built ``run`` from seed ``seed`` (the one sampling path, sample_run)."""
    g = torch.Generator().manual_seed(seed)
    out = [sample_run(run, min(batch_size, n - k), sampling, generator=g, requested=requested)
           for k in tqdm(range(0, n, batch_size), desc=f"sampling seed {seed}", leave=False)]
    return torch.cat(out).clamp(*run.config.data.value_range)


def sample_metrics(samples: torch.Tensor, ref: torch.Tensor, value_range, swd_min_size: int = 8,
                   seed: int = 0) -> dict:
    """The sample-quality numbers that fit the event shape (module table): ``swd_<level>``,
    ``swd_mean`` for images; ``spec_low``/``spec_mid``/``spec_high``/``spec_mean_abs`` (the log
    power ratio of samples to data per band) for images and signals; ``{}`` for volumes."""
    if samples.ndim == 4:
        s = swd(samples, ref, value_range=value_range, min_size=swd_min_size,
                generator=torch.Generator().manual_seed(seed))
        return {**{f"swd_{k}": v for k, v in s.items()}, **_bands(spectrum_error(samples, ref, value_range=value_range))}
    if samples.ndim == 3:
        return _bands(signal_spectrum_error(samples, ref, value_range=value_range))
    return {}


def _bands(spec: dict) -> dict:
    return {f"spec_{k}": spec[k] for k in ("low", "mid", "high", "mean_abs")}


def fid_kid(samples: torch.Tensor, ref: torch.Tensor, value_range, inception: str | None) -> dict:
    """FID/KID with clean-fid, or ``{"fid_unavailable": reason}``: the Inception weights are not
    local, or the data are not 2-D images (an Inception network sees pictures)."""
    try:
        require_images(samples, "FID/KID")
    except ValueError as e:
        return {"fid_unavailable": str(e)}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            a, b = Path(tmp, "a"), Path(tmp, "b")
            for folder, x in ((a, samples), (b, ref)):
                folder.mkdir()
                for k, img in enumerate(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x):
                    save_grid(img[None], folder / f"{k:06d}.png", value_range, nrow=1)
            return {"fid": fid(str(a), str(b), inception_path=inception),
                    "kid": kid(str(a), str(b), inception_path=inception)}
    except (MissingWeightsError, WeightsHashError) as e:
        return {"fid_unavailable": str(e).splitlines()[0]}


def bits_per_dim(diffusion, model, ref: torch.Tensor, value_range, steps=16, seed: int = 0,
                 proposal: str = "snr") -> dict:
    """The bound on the held-out images, bits/dim ± its standard error and its three terms, for
    each reverse mean: ``{"posterior": {...}, "reverse": {...}}`` (docs/math.md, "Likelihood").

    Both come from the same network calls, images, noise and steps, so their per-image
    difference is exact. ``proposal="snr"`` gave a 6× smaller standard error than uniform steps
    on the digits model of docs/results.md; ``"uniform"`` lets two models share their step draws
    (paired differences).
    """
    rs = bounds(diffusion, model, ref, steps=steps, proposal=proposal, value_range=value_range,
                generator=torch.Generator().manual_seed(seed), progress=False)
    return {mean: {"bpd": r.bpd, "bpd_se": r.stderr, "bpd_prior": r.prior, "bpd_diffusion": r.diffusion,
                   "bpd_decoder": r.decoder, "bpd_steps": r.steps, "bpd_per_image": r.per_image.tolist()}
            for mean, r in rs.items()}


MEAN_LABELS = {"posterior": "posterior mean", "reverse": "Eq. 19–20 mean"}


def held_out(spec, size: int | tuple[int, ...], value_range, channels: int, limit: int = 10_000,
             args: dict | None = None) -> torch.Tensor:
    """The reference examples as one (n, C, *sides) tensor: the ``test`` split of an embedded set,
    or a folder, LMDB, array or plug-in (which have no splits) whole, at most ``limit`` examples
    evenly spread over it (LSUN bedroom's 3M images would not fit in memory). ``size``: a side or
    the sides (a run's ``data.sides``); ``args``: the data's (``data.args``)."""
    try:
        ref = build_dataset(spec, "test" if str(spec) in EMBEDDED else "train", size, value_range, channels, args=args)
    except (FileNotFoundError, ValueError, ImportError) as e:
        raise ConfigError(str(e), field="ref") from None
    idx = range(len(ref)) if len(ref) <= limit else np.linspace(0, len(ref) - 1, limit).round().astype(int)
    return torch.stack([ref[int(k)] for k in idx])


def summarize(per_seed: list[dict]) -> dict:
    """Mean and standard deviation over sampling seeds for every numeric metric."""
    keys = [k for k in per_seed[0] if isinstance(per_seed[0][k], float)]
    return {k: {"mean": float(np.mean([r[k] for r in per_seed])), "std": float(np.std([r[k] for r in per_seed]))}
            for k in keys}


def report_folder(out: str | Path) -> Path:
    """``out``, made, if a report can be written there (checked before any sampling: a file or an
    unwritable path is a one-line ConfigError, not a traceback after minutes of work)."""
    out = Path(out)
    try:
        check_run_place(out)
        out.mkdir(parents=True, exist_ok=True)
    except (RunDirError, OSError) as e:
        raise ConfigError(f"cannot write the report to {out}: {e}", "out") from None
    return out


def evaluate_checkpoint(ckpt, *, n=None, seeds=(0, 1, 2), sampler=None, steps=None, batch_size=128,
                        swd_min_size=8, inception=None, out=None, ref_spec=None, nll_steps=16,
                        nll_proposal="snr", trust_code: bool = False, ref_limit: int = 10_000,
                        sampler_options: dict | None = None) -> dict:
    run = open_run(ckpt, trust_code=trust_code)  # built once for every seed
    config, diffusion, model = run.config, run.diffusion, run.model
    asked = steps is not None
    sampling = run_sampling(config, sampler, steps, sampler_options)  # the run's own, unless asked otherwise
    d, sampler = config.data, sampling.sampler
    try:  # checked before any sampling: a step count this sampler would ignore is refused
        steps_run = steps_taken(planned_steps(diffusion, sampling, requested=asked), diffusion.last_train_step)
    except ValueError as e:
        raise ConfigError(str(e), field="steps") from None
    if ref_spec is None and str(d.spec) not in EMBEDDED:
        print(f"note: the run's data {d.spec} has no held-out split, so the reference is its training images "
              "(as LSUN FID usually is); pass --ref for held-out images")
    ref = held_out(ref_spec or d.spec, d.sides, d.value_range, d.channels, ref_limit, None if ref_spec else d.args)
    n = n or len(ref)
    out = report_folder(out or Path(ckpt).parent / folder_name(sampler, steps_run, steps_run, prefix="eval"))
    per_seed, first = [], None
    for seed in seeds:
        x = draw_samples(run, n, seed, sampling, batch_size, requested=asked)
        first = x if first is None else first
        per_seed.append({"seed": seed, **sample_metrics(x, ref, d.value_range, swd_min_size, seed)})
    per_seed[0].update(fid_kid(first, ref, d.value_range, inception))
    save_grid(first[:64], out / "samples.png", d.value_range)
    spectrum_figure({"samples": first, "held-out data": ref}, out / "spectrum.png", d.value_range)
    result = {"ckpt": str(ckpt), "n": n, "sampler": sampler, "steps": steps_run, "per_seed": per_seed,
              "summary": summarize(per_seed)}
    if nll_steps:
        try:
            check_gaussian_prior(diffusion)
        except ValueError as e:  # e.g. heat dissipation: the bound needs a Gaussian prior
            result["nll_unavailable"] = str(e)
        else:
            result["nll"] = bits_per_dim(diffusion, model, ref, d.value_range, nll_steps, proposal=nll_proposal)
    write_text_atomic(out / "metrics.json", json.dumps(result, indent=2))
    return result


def format_table(result: dict) -> str:
    """``result`` (of :func:`evaluate_checkpoint` or :func:`evaluate_folder`) as a markdown table
    and one line per FID/KID and bits/dim entry."""
    lines = [f"\n{result.get('ckpt', result.get('samples'))}: {result['n']} samples",
             "| metric | mean | std over seeds |\n| --- | --- | --- |"]
    lines += [f"| {k} | {v['mean']:.4g} | {v['std']:.2g} |" for k, v in result["summary"].items()]
    lines += [f"{k}: {v}" for k, v in result["per_seed"][0].items() if k.startswith(("fid", "kid"))]
    for mean, b in result.get("nll", {}).items():
        lines.append(f"bits/dim, {MEAN_LABELS[mean]} (reference images, {b['bpd_steps']} steps per image): "
                     f"{b['bpd']:.4f} ± {b['bpd_se']:.4f} (prior {b['bpd_prior']:.4f}, diffusion "
                     f"{b['bpd_diffusion']:.4f}, decoder {b['bpd_decoder']:.4f})")
    if "nll_unavailable" in result:
        lines.append(f"bits/dim: not available ({result['nll_unavailable']})")
    return "\n".join(lines)


def evaluate_folder(folder, ref_spec, size, channels, swd_min_size=8, inception=None, ref_limit=10_000,
                    out=None) -> dict:
    """Score a folder of sample images, or samples of any shape as an array (sample.py's
    ``samples.npy``, or a ``.npy``/``.npz`` file, values in [0, 1] like an image's); the report goes
    to ``out`` (default ``eval-<name>`` beside them). ``size``: a side or the sides of the data."""
    vr = (-1.0, 1.0)
    x = load_samples(folder, size, channels, vr)
    ref = held_out(ref_spec, size, vr, channels, ref_limit)
    per_seed = [{"seed": 0, **sample_metrics(x, ref, vr, swd_min_size, 0), **fid_kid(x, ref, vr, inception)}]
    out = report_folder(out or Path(folder).parent / f"eval-{Path(folder).name}")  # not among the samples
    spectrum_figure({"samples": x, "held-out data": ref}, out / "spectrum.png", vr)
    result = {"samples": str(folder), "n": len(x), "per_seed": per_seed, "summary": summarize(per_seed)}
    write_text_atomic(out / "metrics.json", json.dumps(result, indent=2))
    return result


def load_samples(path, size, channels: int, value_range=(-1.0, 1.0)) -> torch.Tensor:
    """Samples saved to ``path`` as a tensor in ``value_range``: an array file (or a folder holding
    sample.py's ``samples.npy``), values in [0, 1]; else a folder of PNG/JPEG images at ``size``."""
    path = Path(path)
    if path.is_dir() and (path / "samples.npy").is_file():
        path = path / "samples.npy"
    if path.suffix.lower() in ARRAY_SUFFIXES and path.is_file():
        try:
            return map_range(ArrayDataset(path, value_range=(0.0, 1.0)).data, (0.0, 1.0), value_range)
        except ValueError as e:
            raise ConfigError(str(e), field="samples") from None
    if not path.is_dir():
        raise ConfigError(f"no folder {path} (nor an array file of samples)", field="samples")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if (path / MANIFEST).is_file():  # sample.py's folder: its numbered samples, not grid.png
        files = [p for p in files if re.fullmatch(r"\d{6}\.png", p.name)]
    if not files:
        raise ConfigError(f"no PNG/JPEG images in {path}", field="samples")
    return torch.stack([pil_to_tensor(decode_image(p), size, channels, value_range) for p in files])


def spectrum_figure(sets: dict[str, torch.Tensor], path, value_range) -> Path | None:
    """The power spectra of ``sets`` (name -> batch) as a PNG for images and signals; None for
    volumes, which have no spectrum here."""
    first = next(iter(sets.values()))
    return plot_spectra(sets, path, value_range) if first.ndim in (3, 4) else None
