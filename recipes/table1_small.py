"""A small-scale Table 1 on the CPU: no blur vs quartic vs log, same network, steps and seeds.

    python recipes/table1_small.py                 # digits 16×16, 3 × 3000 steps (~1 h on 2 cores)
    python recipes/table1_small.py --quick         # a smoke run

The paper's f(N) values are for 64×64 images. Here f(N) is scaled so that the final blur std
σ√F(N) keeps the paper's ratio to the image side (2.1 px of 64 for quartic 0.14, 9.1 px of 64
for log 0.6). Every run is then sampled with DPM-Solver++ (50 steps) on a held-out-sized set for
several seeds and scored with SWD per pyramid level and the spectrum error (results.json, and
a markdown table on stdout).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from common import (
    DEMO_TRAIN,
    add_data_args,
    add_run_args,
    data_channels,
    fabric_config,
    model_dict,
    run,
    train_config,
)
from evaluate import evaluate_checkpoint, image_metrics, summarize
from gendiff.schedules import SpeedSchedule, VPBlurSchedule

from gendiff import GaussianBlurBasis
from gendiff.data import build_dataset
from gendiff.training import DataConfig, RunConfig

N, SIGMA, PAPER_SIZE = 1000, 0.4, 64
PAPER_ROWS = {"no-blur": ("none", 0.0), "quartic": ("quartic", 0.140625), "log": ("log", 0.6)}


def scaled_f_N(kind: str, f_N: float, size: int) -> float:
    """f(N) giving the same final blur std relative to the image side as the paper's at 64 px."""
    if f_N == 0:
        return 0.0
    F_paper = SpeedSchedule(kind, f_N).cumulative(N)[N]
    F_target = F_paper * (size / PAPER_SIZE) ** 2  # blur std ∝ √F, so F scales with size²
    return float(f_N * F_target / F_paper)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p, size=16)
    p.add_argument("--rows", nargs="+", default=list(PAPER_ROWS), choices=list(PAPER_ROWS))
    p.add_argument("--eval-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--eval-n", type=int, help="samples per seed (default: held-out size)")
    add_run_args(p)
    args = p.parse_args(argv)
    args.out = args.out if args.out != "runs" else "runs/table1-small"
    return args


def row_config(args, row: str) -> RunConfig:
    kind, f_N = PAPER_ROWS[row]
    channels = data_channels(args.data)
    schedule = VPBlurSchedule(kind, scaled_f_N(kind, f_N, args.size), N=N)
    return RunConfig(row, GaussianBlurBasis((args.size, args.size), sigma=SIGMA).config(), schedule.config(),
                     model_dict(args, channels), DataConfig(args.data, args.size, channels),
                     train_config(args, replace(DEMO_TRAIN, steps=3000)), fabric_config(args), args.out)


def main(argv=None):
    args = parse_args(argv)
    results = {}
    for row in args.rows:
        config = row_config(args, row)
        print(f"== {row}: {config.schedule}")
        run_dir = run(config, args)
        if run_dir is None:  # not rank 0 of a multi-process run: rank 0 evaluates
            return None
        res = evaluate_checkpoint(run_dir / "last.ckpt", n=args.eval_n or (32 if args.quick else None),
                                  seeds=args.eval_seeds, out=run_dir / "eval")
        results[row] = {"schedule": config.schedule, "summary": res["summary"]}
    results["data"] = {"schedule": {"f_N": float("nan")}, "summary": data_reference(args)}
    Path(args.out, "results.json").write_text(json.dumps(results, indent=2))
    print_table(results)
    return results


def data_reference(args) -> dict:
    """The metrics of training images against the held-out set: the floor a model can reach."""
    channels = data_channels(args.data)
    test = build_dataset(args.data, "test", args.size, (-1.0, 1.0), channels)
    train = build_dataset(args.data, "train", args.size, (-1.0, 1.0), channels)
    ref = torch.stack([test[k] for k in range(len(test))])
    n = args.eval_n or len(ref)
    per_seed = []
    for seed in args.eval_seeds:
        idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
        x = torch.stack([train[int(k)] for k in idx])
        per_seed.append(image_metrics(x, ref, (-1.0, 1.0), 8, seed))
    return summarize(per_seed)


def print_table(results: dict) -> None:
    keys = [k for k in next(iter(results.values()))["summary"] if k.startswith(("swd", "spec"))]
    print("| row | f(N) | " + " | ".join(keys) + " |")  # row "data": training images, the floor
    print("| --- | --- | " + " | ".join("---" for _ in keys) + " |")
    for row, r in results.items():
        s = r["summary"]
        cells = [f"{s[k]['mean']:.3g} ± {s[k]['std']:.2g}" for k in keys]
        print(f"| {row} | {r['schedule']['f_N']:.4g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
