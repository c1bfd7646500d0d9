"""Scoring a run: a checkpoint's samples (or a folder of images) against held-out data.

What ``recipes/evaluate.py`` and ``recipes/table1_small.py`` report, as functions: the variational
bound in bits/dim with both reverse means from the same network calls (docs/math.md,
"Likelihood"), the sliced Wasserstein distance per Laplacian level, the spectrum's log power
ratio per band, and FID/KID through clean-fid where the Inception weights are local. Errors are
:class:`~gendiff.training.config.ConfigError` naming what was asked (``field``: the argument).
"""
from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from gendiff.data import EMBEDDED, build_dataset
from gendiff.data.folder import decode_image, pil_to_tensor
from gendiff.figures import save_grid
from gendiff.files import SAMPLES_MANIFEST as MANIFEST, write_text_atomic
from gendiff.likelihood import bounds, check_gaussian_prior
from gendiff.metrics import MissingWeightsError, fid, kid, plot_spectra, spectrum_error, swd
from gendiff.metrics.fid import WeightsHashError
from gendiff.training import open_run, steps_taken
from gendiff.training.config import ConfigError
from gendiff.training.run import SamplingConfig, planned_steps, run_sampling, sample_run

__all__ = ["evaluate_checkpoint", "evaluate_folder", "format_table", "bits_per_dim", "image_metrics", "draw_samples",
           "held_out", "summarize"]


@torch.no_grad()
def draw_samples(run, n: int, seed: int, sampling: SamplingConfig, batch_size: int, requested: bool = False):
    """``n`` samples of the built ``run`` from seed ``seed`` (the one sampling path, sample_run)."""
    g = torch.Generator().manual_seed(seed)
    out = [sample_run(run, min(batch_size, n - k), sampling, generator=g, requested=requested)
           for k in tqdm(range(0, n, batch_size), desc=f"sampling seed {seed}", leave=False)]
    return torch.cat(out).clamp(*run.config.data.value_range)


def image_metrics(samples: torch.Tensor, ref: torch.Tensor, value_range, swd_min_size: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    s = swd(samples, ref, value_range=value_range, min_size=swd_min_size, generator=g)
    spec = spectrum_error(samples, ref, value_range=value_range)
    return {**{f"swd_{k}": v for k, v in s.items()},
            **{f"spec_{k}": spec[k] for k in ("low", "mid", "high", "mean_abs")}}


def fid_kid(samples: torch.Tensor, ref: torch.Tensor, value_range, inception: str | None) -> dict:
    """FID/KID with clean-fid, or the reason they are unavailable."""
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


def held_out(spec, size: int, value_range, channels: int, limit: int = 10_000) -> torch.Tensor:
    """The reference images as one tensor: the ``test`` split of an embedded set, or a folder or
    LMDB (which have no splits) whole, at most ``limit`` images evenly spread over it (LSUN
    bedroom's 3M images would not fit in memory)."""
    try:
        ref = build_dataset(spec, "test" if str(spec) in EMBEDDED else "train", size, value_range, channels)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(str(e), field="ref") from None
    idx = range(len(ref)) if len(ref) <= limit else np.linspace(0, len(ref) - 1, limit).round().astype(int)
    return torch.stack([ref[int(k)] for k in idx])


def summarize(per_seed: list[dict]) -> dict:
    """Mean and standard deviation over sampling seeds for every numeric metric."""
    keys = [k for k in per_seed[0] if isinstance(per_seed[0][k], float)]
    return {k: {"mean": float(np.mean([r[k] for r in per_seed])), "std": float(np.std([r[k] for r in per_seed]))}
            for k in keys}


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
    ref = held_out(ref_spec or d.spec, d.size, d.value_range, d.channels, ref_limit)
    n = n or len(ref)
    out = Path(out or Path(ckpt).parent / f"eval-{sampler.replace(':', '.').replace('/', '.')}-{steps_run}")
    out.mkdir(parents=True, exist_ok=True)
    per_seed, first = [], None
    for seed in seeds:
        x = draw_samples(run, n, seed, sampling, batch_size, requested=asked)
        first = x if first is None else first
        per_seed.append({"seed": seed, **image_metrics(x, ref, d.value_range, swd_min_size, seed)})
    per_seed[0].update(fid_kid(first, ref, d.value_range, inception))
    save_grid(first[:64], out / "samples.png", d.value_range)
    plot_spectra({"samples": first, "held-out data": ref}, out / "spectrum.png", d.value_range)
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
    """Score a folder of sample images; the report goes to ``out`` (default the folder itself)."""
    vr = (-1.0, 1.0)
    if not Path(folder).is_dir():
        raise ConfigError(f"no folder {folder}", field="samples")
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if (Path(folder) / MANIFEST).is_file():  # sample.py's folder: its numbered samples, not grid.png
        files = [p for p in files if re.fullmatch(r"\d{6}\.png", p.name)]
    if not files:
        raise ConfigError(f"no PNG/JPEG images in {folder}", field="samples")
    x = torch.stack([pil_to_tensor(decode_image(p), size, channels, vr) for p in files])
    ref = held_out(ref_spec, size, vr, channels, ref_limit)
    per_seed = [{"seed": 0, **image_metrics(x, ref, vr, swd_min_size, 0), **fid_kid(x, ref, vr, inception)}]
    out = Path(out or Path(folder).parent / f"eval-{Path(folder).name}")  # not among the samples
    out.mkdir(parents=True, exist_ok=True)
    plot_spectra({"samples": x, "held-out data": ref}, out / "spectrum.png", vr)
    result = {"samples": str(folder), "n": len(x), "per_seed": per_seed, "summary": summarize(per_seed)}
    write_text_atomic(out / "metrics.json", json.dumps(result, indent=2))
    return result
