"""Sample from a checkpoint: a grid and numbered PNGs (for FID), in batches.

    python recipes/sample.py --ckpt runs/demo-digits/last.ckpt --sampler dpm++2m --steps 50 --n 64
    python recipes/sample.py --ckpt runs/demo-digits-classes/last.ckpt --class 7 --guidance 2.0   # a conditional run

The folder (default ``<run>/samples-<sampler>-<evaluations>``) holds one sampling: it is locked
while this runs, and ``--overwrite`` removes only the files an earlier sample.py wrote there.
"""
from __future__ import annotations

from pathlib import Path

import cli
import torch
from gendiff.samplers import SAMPLERS
from gendiff.training import check_device, open_run
from gendiff.training.run import run_sampling
from gendiff.training.samples import write_samples


def parse_args(argv=None):
    p = cli.RecipeParser(__doc__)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--sampler", type=cli.component(SAMPLERS, "sampler"),
                   help=f"one of {SAMPLERS.names()} or package.module:name (default: the run's, config.train.sampler)")
    p.add_argument("--sampler-args", type=cli.json_object, default={}, metavar="JSON",
                   help="the sampler's options, e.g. '{\"eta\": 0.5}' (ddim), '{\"quiet_steps\": 0}' (reverse), "
                        "'{\"delta_scale\": 1.0}' (ihdm); an option the sampler does not take is refused")
    p.add_argument("--steps", type=cli.int_at_least(1),
                   help="network evaluations, 1..N (default: the sampler's); refused for samplers that always "
                        "take all N steps (reverse, ihdm)")
    p.add_argument("--eta", type=cli.float_in(0.0), help="DDIM's η, as --sampler-args '{\"eta\": η}'")
    p.add_argument("--class", dest="cls", type=cli.int_at_least(0), metavar="K",
                   help="a class-conditional run: sample class K only (default: every class in turn)")
    p.add_argument("--guidance", type=cli.float_in(-1e4, 1e4), metavar="W",
                   help="a class-conditional run: classifier-free guidance weight, 1 the conditional model, "
                        "0 the unconditional one (default: the run's, config.cond.guidance)")
    p.add_argument("--n", type=cli.int_at_least(1), default=64)
    p.add_argument("--batch-size", type=cli.int_at_least(1), default=64)
    p.add_argument("--seed", type=cli.int_at_least(0), default=0)
    p.add_argument("--out", help="output folder (default: <run>/samples-<sampler>-<network evaluations>)")
    p.add_argument("--no-clip", action="store_true", help="do not clamp x̂_0 to the data range (if the run does)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the samples this script wrote earlier in the output folder (no other file is touched)")
    p.add_argument("--trust-code", action="store_true",
                   help="import the custom components (package.module:Name) the checkpoint names; only for files you trust")
    p.add_argument("--threads", type=cli.int_at_least(1), help="torch CPU threads (default: the cores the load leaves free)")
    return p.parse_args(argv)


def main(argv=None) -> Path:
    args = parse_args(argv)
    if not Path(args.ckpt).is_file():
        raise SystemExit(f"error: no checkpoint at {args.ckpt}")
    try:
        check_device(args.device)
    except ValueError as e:
        raise SystemExit(f"error: --device: {e}") from None
    if torch.device(args.device).type == "cpu":
        cli.set_threads(args.threads)
    run = open_run(args.ckpt, args.device, trust_code=args.trust_code)
    if args.guidance is not None and run.config.cond.kind == "none":
        raise SystemExit(f"error: --guidance: run {run.config.name!r} is unconditional (cond.kind 'none')")
    options = args.sampler_args | ({} if args.eta is None else {"eta": args.eta})
    with cli.refusals(sampling="--sampler / --steps / --sampler-args", out="--out", classes="--class"):
        sampling = run_sampling(run.config, args.sampler, args.steps, options, clip=not args.no_clip,
                                guidance=args.guidance)
        out, n, nfe = write_samples(run, sampling, args.n, args.out, home=Path(args.ckpt).parent,
                                    batch_size=args.batch_size, seed=args.seed, device=args.device,
                                    overwrite=args.overwrite, requested=args.steps is not None, classes=args.cls)
    print(f"{n} samples in {out} ({sampling.sampler}, {nfe} network evaluations each); grid: {out / 'grid.png'}")
    return out


if __name__ == "__main__":
    cli.entry(main)
