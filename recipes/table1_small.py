"""A small-scale Table 1 on the CPU: the paper's rows on two embedded datasets, evaluated.

    python recipes/table1_small.py                              # both datasets, every row
    python recipes/table1_small.py --datasets photos-gray --threads 1
    python recipes/table1_small.py --quick                      # a smoke run (minutes)

Datasets: scikit-learn's digits at 16×16, and 32×32 grayscale crops of the photographs bundled
with scikit-image (training and held-out crops come from different photographs, see
gendiff/data/embedded.py). Rows: no blur; quartic with f(N) scaled so the final blur std σ√F(N)
keeps the paper's ratio to the image side (2.1 px of 64); quartic at the paper's absolute
f(N) = 0.140625 (2.1 px whatever the size); log scaled the same way (9.1 px of 64); and the
fine-to-coarse ablation (quartic, scaled, D → I − D). Every row has the same network, steps and
seeds. Each is scored with the variational bound in bits/dim on the held-out set with both
reverse means — the posterior mean (the library's default) and Eq. 19–20's, from the same
network calls — (its standard error, and the paired difference to the no-blur row on the same
images and noise), SWD per
pyramid level against the held-out set and against the training set, and the spectrum error.
The row "data" is training images scored like samples: the floor of the sample metrics.
Writes <out>/<dataset>/<row>/ (run, samples, trajectory, eval.json) and <out>/<dataset>/results.json,
assembled from every row's eval.json found there — so rows may run in separate processes
(``--rows``), and ``--report`` re-assembles the table without training.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import threads  # noqa: F401  before torch: it may set OMP_WAIT_POLICY (recipes/threads.py)
import torch
from common import DEMO_TRAIN, add_run_args, fabric_config, model_dict, run, set_threads, train_config
from evaluate import bits_per_dim, draw_samples, image_metrics, summarize

from gendiff.data import build_dataset
from gendiff.schedules import SpeedSchedule
from gendiff.files import write_text_atomic
from gendiff.training import DataConfig, RunConfig, open_run
from gendiff.training.run import sampling_config

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


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--eval-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--eval-n", type=int, help="samples per seed (default: the dataset's)")
    p.add_argument("--report", action="store_true", help="only assemble results.json from the rows' eval.json")
    p.add_argument("--rescore", action="store_true",
                   help="with --report: rescore the bits/dim of rows scored before both means were (needs last.ckpt)")
    per_set = {f: ", ".join(f"{getattr(s, f)} on {d}" for d, s in DATASETS.items())
               for f in ("train_steps", "batch_size")}
    add_run_args(p, DEMO_TRAIN, name="table1-small, the table's folder under --out",
                 shown={"steps": per_set["train_steps"], "batch_size": per_set["batch_size"]})
    args = p.parse_args(argv)
    fixed = [f"--{f}" for f in ("size", "channels", "config") if getattr(args, f, None) is not None]
    if fixed:  # the rows' data shape is the table's, per dataset
        p.error(f"{', '.join(fixed)}: the table fixes each dataset's size and channels "
                f"({', '.join(f'{d}: {s.size}×{s.size}, 1 channel' for d, s in DATASETS.items())}); "
                "train other shapes with lsun_blur.py")
    # the table is a folder of runs: --out/--name names it (default runs/table1-small)
    args.out = str(Path(args.out, args.name or "table1-small"))
    return args


def row_config(args, data: str, row: str) -> RunConfig:
    s = DATASETS[data]
    args.size = s.size  # model_dict reads it
    base = replace(DEMO_TRAIN, steps=s.train_steps, batch_size=s.batch_size, sample_steps=s.sample_steps)
    return RunConfig(row, {"name": "blur", "shape": [s.size, s.size], "sigma": SIGMA}, row_schedule(row, s.size),
                     model_dict(args, 1), DataConfig(data, s.size, 1), train_config(args, base),
                     fabric_config(args), str(Path(args.out, data)))


def load_split(data: str, split: str, size: int) -> torch.Tensor:
    ds = build_dataset(data, split, size, (-1.0, 1.0), 1)
    return torch.stack([ds[k] for k in range(len(ds))])


def sample_metrics(x: torch.Tensor, refs: dict, seed: int) -> dict:
    """SWD and spectrum against the held-out set, and SWD against the training set."""
    m = image_metrics(x, refs["test"], (-1.0, 1.0), 8, seed)
    m.update({f"train_{k}": v for k, v in image_metrics(x, refs["train"], (-1.0, 1.0), 8, seed).items()
              if k.startswith("swd")})
    return m


def evaluate_row(ckpt: Path, refs: dict, args, s: DataSetup) -> dict:
    run = open_run(ckpt)
    sampling = replace(sampling_config(run.config), steps=s.sample_steps)
    per_seed = [{"seed": seed, **sample_metrics(draw_samples(run, args.n, seed, sampling, 128), refs, seed)}
                for seed in args.eval_seeds]
    return {"summary": summarize(per_seed), **score_nll(run, refs, s)}


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


def rescore(args, data: str, refs: dict) -> None:
    """Rescore the bits/dim of rows scored before both means were (both proposals, both means)."""
    for row in ROWS:
        path = Path(args.out, data, row, "eval.json")
        if path.exists() and "posterior" not in by_mean(res := json.loads(path.read_text())).get("nll", {}):
            print(f"rescoring {data} / {row}", flush=True)
            res.update(score_nll(open_run(path.parent / "last.ckpt"), refs, DATASETS[data]))
            write_text_atomic(path, json.dumps(res))


def data_reference(refs: dict, args) -> dict:
    """Training images scored as if they were samples (against the rest of the training set)."""
    per_seed = []
    for seed in args.eval_seeds:
        perm = torch.randperm(len(refs["train"]), generator=torch.Generator().manual_seed(seed))
        x, rest = refs["train"][perm[:args.n]], refs["train"][perm[args.n:]]
        per_seed.append({"seed": seed, **sample_metrics(x, {"test": refs["test"], "train": rest}, seed)})
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


def run_dataset(args, data: str) -> dict:
    s = DATASETS[data]
    args.n = args.eval_n or (32 if args.quick else s.eval_n)
    refs = {split: load_split(data, split, s.size) for split in ("train", "test")}
    if args.quick:
        refs["test"] = refs["test"][:64]
    if args.report and args.rescore:
        rescore(args, data, refs)
    for row in [] if args.report else args.rows:
        config = row_config(args, data, row)
        print(f"== {data} / {row}: {config.schedule}", flush=True)
        t0 = time.time()
        run_dir = run(config, args)
        if run_dir is None:  # not rank 0 of a multi-process run: rank 0 evaluates
            return {}
        res = {"schedule": config.schedule, "train_seconds": time.time() - t0,
               **evaluate_row(run_dir / "last.ckpt", refs, args, s)}
        res["total_seconds"] = time.time() - t0
        write_text_atomic(run_dir / "eval.json", json.dumps(res))
    results = {row: by_mean(json.loads(Path(args.out, data, row, "eval.json").read_text()))
               for row in ROWS if Path(args.out, data, row, "eval.json").exists()}
    results["data"] = data_reference(refs, args)
    paired_difference(results)
    write_text_atomic(Path(args.out, data, "results.json"), json.dumps(results, indent=1))
    print(f"\n{data}\n\n{markdown_tables(results)}")
    return results


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


def main(argv=None):
    args = parse_args(argv)
    set_threads(args.threads)
    t0 = time.time()
    out = {data: run_dataset(args, data) for data in args.datasets}
    print(f"\ntotal wall time {time.time() - t0:.0f} s on {torch.get_num_threads()} torch thread(s)")
    return out


if __name__ == "__main__":
    main()
