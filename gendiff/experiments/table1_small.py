"""A small-scale Table 1 on the CPU: the paper's rows on two embedded datasets, as run configs,
and their scoring (docs/results.md; ``recipes/table1_small.py`` is its command line).

Datasets: scikit-learn's digits at 16×16, and 32×32 grayscale crops of the photographs bundled
with scikit-image (training and held-out crops come from different photographs). Rows: no blur;
quartic with f(N) scaled so the final blur std σ√F(N) keeps the paper's ratio to the image side
(2.1 px of 64); quartic at the paper's absolute f(N); log scaled the same way (9.1 px of 64);
and the fine-to-coarse ablation. Each row is scored with the bound in bits/dim on the held-out
set with both reverse means (and its paired difference to the no-blur row), SWD per pyramid
level against the held-out and the training set, and the spectrum error; the row "data" scores
training images like samples: the floor of the sample metrics.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from gendiff.data import build_dataset
from gendiff.evaluation import bits_per_dim, draw_samples, sample_metrics, summarize
from gendiff.files import write_text_atomic
from gendiff.models import PRESETS as MODELS
from gendiff.schedules import SpeedSchedule
from gendiff.training import DataConfig, FabricConfig, RunConfig, open_run
from gendiff.training.run import sampling_config

from .paper import DEMO_TRAIN

N, SIGMA, PAPER_SIZE, PAPER_QUARTIC, PAPER_LOG = 1000, 0.4, 64, 0.140625, 0.6
# row: (blur speed, the paper's f(N), scaled to the image side, fine-to-coarse)
ROWS = {"no-blur": ("none", 0.0, False, False), "quartic": ("quartic", PAPER_QUARTIC, True, False),
        "quartic-abs": ("quartic", PAPER_QUARTIC, False, False), "log": ("log", PAPER_LOG, True, False),
        "fine-to-coarse": ("quartic", PAPER_QUARTIC, True, True)}


@dataclass(frozen=True)
class DataSetup:
    """What one dataset's rows share: the steps fit about 50 minutes per dataset on one idle core
    (docs/results.md), so the two datasets run side by side on 2 cores."""

    size: int
    train_steps: int
    batch_size: int
    eval_n: int          # samples per sampling seed
    sample_steps: int    # DPM-Solver++ steps for the evaluation samples
    nll_steps: int       # sampled steps per held-out image for bits/dim
    nll_every: int = 1   # bits/dim on every k-th held-out image (a subset spread over all photos)


DATASETS = {"digits": DataSetup(16, 1500, 64, 256, 20, 8),
            "photos-gray": DataSetup(32, 700, 32, 128, 20, 4, nll_every=2)}


def scaled_f_N(kind: str, f_N: float, size: int) -> float:
    """f(N) giving the same final blur std relative to the image side as the paper's at 64 px."""
    if f_N == 0:
        return 0.0
    F_paper = SpeedSchedule(kind, f_N).cumulative(N)[N]
    F_target = F_paper * (size / PAPER_SIZE) ** 2  # blur std ∝ √F, so F scales with size²
    return float(f_N * F_target / F_paper)


def row_schedule(row: str, size: int) -> dict:
    """The row's schedule as config data (the run builds it once, gendiff.training.build_run)."""
    kind, f_N, scaled, f2c = ROWS[row]
    return {"name": "vp_blur", "f_type": kind, "f_N": scaled_f_N(kind, f_N, size) if scaled else f_N, "N": N,
            "fine_to_coarse": f2c}


def row_run(data: str, row: str, out_dir: str | Path) -> RunConfig:
    """The run of one row on one dataset (the flags of the command line are applied on top)."""
    s = DATASETS[data]
    train = replace(DEMO_TRAIN, steps=s.train_steps, batch_size=s.batch_size, sample_steps=s.sample_steps)
    model = replace(MODELS["small"], image_size=s.size, in_channels=1, out_channels=1)
    return RunConfig(row, {"name": "blur", "shape": [s.size, s.size], "sigma": SIGMA}, row_schedule(row, s.size),
                     asdict(model), DataConfig(data, s.size, 1), train, FabricConfig(), str(Path(out_dir, data)))


def references(data: str, quick: bool = False) -> dict:
    """The dataset's training and held-out images (``quick``: 64 held-out ones)."""
    s = DATASETS[data]
    refs = {split: load_split(data, split, s.size) for split in ("train", "test")}
    if quick:
        refs["test"] = refs["test"][:64]
    return refs


def score_row(run_dir: Path, data: str, refs: dict, eval_seeds, n: int, started: float) -> dict:
    """Evaluate a trained row and write its eval.json (the table is assembled from these)."""
    res = {"train_seconds": time.time() - started,
           **evaluate_row(run_dir / "last.ckpt", refs, eval_seeds, n, DATASETS[data])}
    res["total_seconds"] = time.time() - started
    write_text_atomic(run_dir / "eval.json", json.dumps(res))
    return res


def assemble(out_dir: str | Path, data: str, refs: dict, eval_seeds, n: int) -> dict:
    """results.json of one dataset from every row's eval.json found under ``out_dir/data``."""
    folder = Path(out_dir, data)
    results = {row: by_mean(json.loads((folder / row / "eval.json").read_text()))
               for row in ROWS if (folder / row / "eval.json").exists()}
    results["data"] = data_reference(refs, eval_seeds, n)
    paired_difference(results)
    write_text_atomic(folder / "results.json", json.dumps(results, indent=1))
    return results


def load_split(data: str, split: str, size: int) -> torch.Tensor:
    ds = build_dataset(data, split, size, (-1.0, 1.0), 1)
    return torch.stack([ds[k] for k in range(len(ds))])


def row_metrics(x: torch.Tensor, refs: dict, seed: int) -> dict:
    """SWD and spectrum against the held-out set, and SWD against the training set."""
    m = sample_metrics(x, refs["test"], (-1.0, 1.0), 8, seed)
    m.update({f"train_{k}": v for k, v in sample_metrics(x, refs["train"], (-1.0, 1.0), 8, seed).items()
              if k.startswith("swd")})
    return m


def evaluate_row(ckpt: Path, refs: dict, eval_seeds, n: int, s: DataSetup) -> dict:
    run = open_run(ckpt)
    sampling = replace(sampling_config(run.config), steps=s.sample_steps)
    per_seed = [{"seed": seed, **row_metrics(draw_samples(run, n, seed, sampling, 128), refs, seed)}
                for seed in eval_seeds]
    return {"schedule": run.config.schedule, "summary": summarize(per_seed), **score_nll(run, refs, s)}


def score_nll(run, refs: dict, s: DataSetup, proposals=("snr", "uniform")) -> dict:
    """bits/dim with the snr proposal ("nll", the estimate) and uniform steps ("nll_uniform"), each
    ``{"posterior": …, "reverse": …}`` (the two reverse means from the same network calls).

    Every row uses the same generator seed, so rows share the forward noise of each image (and,
    with uniform steps, the steps too): paired differences have small standard errors. Uniform
    steps alone are not enough: their per-image estimates are heavy-tailed (rare draws at small i
    carry most of the bound), so with a few steps they usually come out low, SE included
    (docs/results.md).
    """
    diffusion, model = run.diffusion, run.model
    out = {}
    for proposal in proposals:
        t0 = time.time()
        b = bits_per_dim(diffusion, model, refs["test"][::s.nll_every], (-1.0, 1.0), s.nll_steps, proposal=proposal)
        key = "nll" if proposal == "snr" else "nll_" + proposal
        out[key], out[key + "_seconds"] = b, time.time() - t0
    return out


def by_mean(res: dict) -> dict:
    """A row's eval.json with every bits/dim entry keyed by mean; a row scored before both means
    were has the Eq. 19–20 mean alone, under "nll" directly."""
    return {k: ({"reverse": v} if k.startswith("nll") and isinstance(v, dict) and "bpd" in v else v)
            for k, v in res.items()}


def rescore(out_dir: str | Path, data: str, refs: dict) -> None:
    """Rescore the bits/dim of rows scored before both means were (both proposals, both means)."""
    for row in ROWS:
        path = Path(out_dir, data, row, "eval.json")
        if path.exists() and "posterior" not in by_mean(res := json.loads(path.read_text())).get("nll", {}):
            print(f"rescoring {data} / {row}", flush=True)
            res.update(score_nll(open_run(path.parent / "last.ckpt"), refs, DATASETS[data]))
            write_text_atomic(path, json.dumps(res))


def data_reference(refs: dict, eval_seeds, n: int) -> dict:
    """Training images scored as if they were samples (against the rest of the training set)."""
    per_seed = []
    for seed in eval_seeds:
        perm = torch.randperm(len(refs["train"]), generator=torch.Generator().manual_seed(seed))
        x, rest = refs["train"][perm[:n]], refs["train"][perm[n:]]
        per_seed.append({"seed": seed, **row_metrics(x, {"test": refs["test"], "train": rest}, seed)})
    return {"summary": summarize(per_seed)}


def paired_difference(results: dict, base: str = "no-blur") -> None:
    """bits/dim minus the base row's, on the same held-out images and noise draws, ± its SE, per
    proposal and mean."""
    for key in ("nll", "nll_uniform"):
        for mean, b in results.get(base, {}).get(key, {}).items():
            b = np.array(b["bpd_per_image"])
            for r in results.values():
                if mean in r.get(key, {}):
                    d = np.array(r[key][mean]["bpd_per_image"]) - b
                    r[key][mean]["diff_vs_" + base] = {"mean": float(d.mean()),
                                                       "se": float(d.std(ddof=1) / math.sqrt(len(d)))}


LABELS = {"no-blur": "no blur", "quartic": "quartic, scaled", "quartic-abs": "quartic, paper's f(N)",
          "log": "log, scaled", "fine-to-coarse": "fine-to-coarse", "data": "data (training images)"}


def markdown_tables(results: dict) -> str:
    """The two tables of docs/results.md (bits/dim; sample metrics) for one dataset's results."""
    def pm(v, se, signed=False):
        return f"{v:{'+' if signed else ''}.3f} ± {se:.3f}"

    def diff(nll):
        d = nll.get("diff_vs_no-blur")
        return "—" if d is None else "0" if d["se"] == 0 else pm(d["mean"], d["se"], signed=True)

    lines = ["#### Bits/dim", "", "| row | f(N) | bits/dim | Δ vs no blur (paired) | diffusion terms | decoder | "
             "Eq. 19–20 mean: bits/dim | Eq. 19–20: Δ vs no blur | uniform steps: bits/dim | "
             "uniform: Δ vs no blur |",
             "| --- " * 10 + "|"]
    for row, r in results.items():
        if "nll" not in r:
            continue
        post, rev, uni = r["nll"].get("posterior"), r["nll"].get("reverse"), r.get("nll_uniform", {}).get("posterior")
        cells = [LABELS[row], f"{r['schedule']['f_N']:.4g}"]
        cells += [pm(post["bpd"], post["bpd_se"]), diff(post), f"{post['bpd_diffusion']:.3f}",
                  f"{post['bpd_decoder']:.3f}"] if post else ["—"] * 4
        for b in (rev, uni):
            cells += [pm(b["bpd"], b["bpd_se"]), diff(b)] if b else ["—", "—"]
        lines.append("| " + " | ".join(cells) + " |")
    swd = [k for k in results["data"]["summary"] if k.startswith("swd_")]
    head = [f"SWD {k[4:]} px" if k[4:].isdigit() else "SWD mean" for k in swd]
    lines += ["", "#### Sample metrics", "", "| row | " + " | ".join(head) + " | SWD mean vs training set | "
              "spectrum high | spectrum mean abs |", "| --- " * (len(swd) + 4) + "|"]
    for row in ["data", *[r for r in results if r != "data"]]:
        m = results[row]["summary"]
        cells = [f"{m[k]['mean']:.3g} ± {m[k]['std']:.2g}" for k in swd + ["train_swd_mean"]]
        cells += [f"{m[k]['mean']:.3f} ± {m[k]['std']:.3f}" for k in ("spec_high", "spec_mean_abs")]
        lines.append(f"| {LABELS[row]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
