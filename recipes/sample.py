"""Sample from a checkpoint: a grid and numbered PNGs (for FID), in batches.

    python recipes/sample.py --ckpt runs/demo-digits/last.ckpt --sampler dpm++2m --steps 50 --n 64
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import HelpFormatter, float_in, int_at_least, set_threads  # noqa: E402

from gendiff.figures import save_grid  # noqa: E402
from gendiff.value_range import map_range  # noqa: E402
from gendiff.samplers import SAMPLERS  # noqa: E402
from gendiff.training import check_device, load_prior, load_run, sample_clip, sampling_steps, steps_taken  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--sampler", choices=sorted(SAMPLERS), help="default: the run's (config.train.sampler)")
    p.add_argument("--steps", type=int_at_least(1),
                   help="network evaluations, 1..N (default: the sampler's); refused for samplers that always "
                        "take all N steps (reverse, ihdm)")
    p.add_argument("--eta", type=float_in(0.0), default=0.0, help="DDIM only (0: deterministic, 1: DDPM-like)")
    p.add_argument("--n", type=int_at_least(1), default=64)
    p.add_argument("--batch-size", type=int_at_least(1), default=64)
    p.add_argument("--seed", type=int_at_least(0), default=0)
    p.add_argument("--out", help="output folder (default: <run>/samples-<sampler>-<network evaluations>)")
    p.add_argument("--no-clip", action="store_true", help="do not clamp x̂_0 to the data range (if the run does)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--overwrite", action="store_true", help="replace the PNGs already in the output folder")
    p.add_argument("--trust-code", action="store_true",
                   help="import the custom components (package.module:Name) the checkpoint names; only for files you trust")
    p.add_argument("--threads", type=int_at_least(1), help="torch CPU threads (default: the cores the load leaves free)")
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
        set_threads(args.threads)
    config, diffusion, model = load_run(args.ckpt, args.device, trust_code=args.trust_code)
    args.sampler = args.sampler or config.train.sampler
    try:
        steps = sampling_steps(args.sampler, args.steps, diffusion.last_train_step, requested=args.steps is not None)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    d, prior = config.data, load_prior(config)
    taken = steps_taken(steps, diffusion.last_train_step)  # the grid starts at the last trained step
    out = Path(args.out or Path(args.ckpt).parent / f"samples-{args.sampler}-{taken}")
    if out.is_dir() and any(out.glob("*.png")) and not args.overwrite:
        # a folder of numbered PNGs is what FID reads: mixing two samplings would corrupt it
        raise SystemExit(f"error: {out} already holds samples; pass --overwrite to replace them, or --out "
                         "another folder")
    for old in out.glob("*.png") if out.is_dir() else ():
        old.unlink()
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator(args.device).manual_seed(args.seed)
    opts = {"eta": args.eta} if args.sampler == "ddim" else {}
    batches, k = [], 0
    for start in tqdm(range(0, args.n, args.batch_size), desc="batches"):
        b = min(args.batch_size, args.n - start)
        x = diffusion.sample(model, (b, d.channels, d.size, d.size), sampler=args.sampler, steps=steps,
                             generator=g, device=args.device, progress=False, prior=prior,
                             clip_x0=None if args.no_clip else sample_clip(config), **opts).cpu()
        for img in map_range(x, d.value_range, clamp=True):
            save_grid(img[None], out / f"{k:06d}.png", (0.0, 1.0), nrow=1)
            k += 1
        batches.append(x)
    grid = save_grid(torch.cat(batches)[:256], out / "grid.png", d.value_range)
    print(f"{k} samples in {out} ({args.sampler}, {taken} network evaluations each); "
          f"grid: {grid}")
    return out


if __name__ == "__main__":
    main()
