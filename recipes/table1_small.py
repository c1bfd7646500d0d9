"""A small-scale Table 1 on the CPU: the paper's rows on two embedded datasets, evaluated.

    python recipes/table1_small.py                              # both datasets, every row
    python recipes/table1_small.py --datasets photos-gray --threads 1
    python recipes/table1_small.py --quick                      # a smoke run (minutes)

Rows, datasets and scores are gendiff/experiments/table1_small.py (docs/results.md). Writes
<out>/<name>/<dataset>/<row>/ (run, samples, trajectory, eval.json) and <dataset>/results.json,
assembled from every row's eval.json found there — so rows may run in separate processes
(``--rows``), and ``--report`` re-assembles the table without training.
"""
from __future__ import annotations

import time
from pathlib import Path

import cli
import torch
from gendiff.experiments.paper import DEMO_TRAIN
from gendiff.experiments.table1_small import (DATASETS, ROWS, assemble, markdown_tables, references, rescore,
                                              row_run, score_row)


def parse_args(argv=None):
    p = cli.RecipeParser(__doc__)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--eval-seeds", type=cli.int_at_least(0), nargs="+", default=[0, 1])
    p.add_argument("--eval-n", type=cli.int_at_least(1), help="samples per seed (default: the dataset's)")
    p.add_argument("--report", action="store_true", help="only assemble results.json from the rows' eval.json")
    p.add_argument("--rescore", action="store_true",
                   help="with --report: rescore the bits/dim of rows scored before both means were (needs last.ckpt)")
    per_set = {f: ", ".join(f"{getattr(s, f)} on {d}" for d, s in DATASETS.items()) for f in ("train_steps",
                                                                                           "batch_size")}
    cli.add_run_args(p, DEMO_TRAIN, name="table1-small, the table's folder under --out",
                     shown={"steps": per_set["train_steps"], "batch_size": per_set["batch_size"]})
    args = p.parse_args(argv)
    fixed = [f"--{f}" for f in ("size", "channels", "config") if getattr(args, f, None) is not None]
    if fixed:  # the rows' data shape is the table's, per dataset
        p.error(f"{', '.join(fixed)}: the table fixes each dataset's size and channels "
                f"({', '.join(f'{d}: {s.size}×{s.size}, 1 channel' for d, s in DATASETS.items())}); "
                "train other shapes with lsun_blur.py")
    args.table = Path(args.out, args.name or "table1-small")  # a folder of runs, one per row
    args.out = args.name = None  # each row's run says where it goes
    return args


def run_dataset(args, data: str) -> dict:
    n = args.eval_n or (32 if args.quick else DATASETS[data].eval_n)
    refs = references(data, quick=args.quick)
    if args.report and args.rescore:
        rescore(args.table, data, refs)
    for row in [] if args.report else args.rows:
        t0 = time.time()
        print(f"== {data} / {row}", flush=True)
        run_dir = cli.train(lambda a: row_run(data, row, args.table), args)
        if run_dir is None:  # not rank 0 of a multi-process run: rank 0 evaluates
            return {}
        score_row(run_dir, data, refs, args.eval_seeds, n, t0)
    results = assemble(args.table, data, refs, args.eval_seeds, n)
    print(f"\n{data}\n\n{markdown_tables(results)}")
    return results


def main(argv=None):
    args = parse_args(argv)
    cli.set_threads(args.threads)
    t0 = time.time()
    out = {data: run_dataset(args, data) for data in args.datasets}
    print(f"\ntotal wall time {time.time() - t0:.0f} s on {torch.get_num_threads()} torch thread(s)")
    return out


if __name__ == "__main__":
    cli.entry(main)
