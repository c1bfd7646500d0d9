"""Sample from a checkpoint: a grid and numbered PNGs (for FID), in batches.

    python recipes/sample.py --ckpt runs/demo-digits/last.ckpt --sampler dpm++2m --steps 50 --n 64
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import threads  # noqa: F401  before torch: it may set OMP_WAIT_POLICY (recipes/threads.py)
import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import HelpFormatter, component, float_in, int_at_least, json_object, set_threads  # noqa: E402

from gendiff.figures import save_grid  # noqa: E402
from gendiff.value_range import map_range  # noqa: E402
from gendiff.files import SAMPLES_MANIFEST, write_text_atomic  # noqa: E402
from gendiff.samplers import SAMPLERS  # noqa: E402
from gendiff.training import RunDirError, RunLock, check_device, open_run  # noqa: E402
from gendiff.training.run import planned_steps, run_sampling, sample_run  # noqa: E402

MANIFEST = SAMPLES_MANIFEST  # the files this script wrote in a folder: all --overwrite removes


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--sampler", type=component(SAMPLERS, "sampler"),
                   help=f"one of {SAMPLERS.names()} or package.module:name (default: the run's, config.train.sampler)")
    p.add_argument("--sampler-args", type=json_object, default={}, metavar="JSON",
                   help="the sampler's options, e.g. '{\"eta\": 0.5}' (ddim), '{\"quiet_steps\": 0}' (reverse), "
                        "'{\"delta_scale\": 1.0}' (ihdm); an option the sampler does not take is refused")
    p.add_argument("--steps", type=int_at_least(1),
                   help="network evaluations, 1..N (default: the sampler's); refused for samplers that always "
                        "take all N steps (reverse, ihdm)")
    p.add_argument("--eta", type=float_in(0.0), help="DDIM's η, as --sampler-args '{\"eta\": η}' (0: deterministic)")
    p.add_argument("--n", type=int_at_least(1), default=64)
    p.add_argument("--batch-size", type=int_at_least(1), default=64)
    p.add_argument("--seed", type=int_at_least(0), default=0)
    p.add_argument("--out", help="output folder (default: <run>/samples-<sampler>-<network evaluations>)")
    p.add_argument("--no-clip", action="store_true", help="do not clamp x̂_0 to the data range (if the run does)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the samples this script wrote earlier in the output folder (no other file is touched)")
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
    run = open_run(args.ckpt, args.device, trust_code=args.trust_code)
    config = run.config
    opts = dict(args.sampler_args) | ({} if args.eta is None else {"eta": args.eta})
    sampling = run_sampling(config, args.sampler, args.steps, opts, clip=not args.no_clip)
    sampler = sampling.sampler
    try:
        steps = planned_steps(run.diffusion, sampling, requested=args.steps is not None)
    except ValueError as e:
        raise SystemExit(f"error: --sampler {sampler} --steps {sampling.steps} --sampler-args "
                         f"{json.dumps(sampling.options)}: {e}") from None
    out = Path(args.out or Path(args.ckpt).parent / folder_name(sampler, steps, run.diffusion.last_train_step))
    try:
        lock = RunLock(out).acquire()  # two sample.py into one folder would lose one's seed
    except RunDirError as e:
        raise SystemExit(f"error: {e}") from None
    try:
        claim_folder(out, args.overwrite)
        model = Counted(run.model)
        g = torch.Generator(args.device).manual_seed(args.seed)
        batches, written = [], []
        for start in tqdm(range(0, args.n, args.batch_size), desc="batches"):
            x = sample_run(run, min(args.batch_size, args.n - start), sampling, model=model, generator=g,
                           device=args.device, requested=args.steps is not None)
            for img in map_range(x, config.data.value_range, clamp=True):
                written.append(f"{len(written):06d}.png")
                write_manifest(out, written)  # before the file: a kill in between leaves nothing unlisted
                save_grid(img[None], out / written[-1], (0.0, 1.0), nrow=1)
            batches.append(x)
        grid = save_grid(torch.cat(batches)[:256], out / "grid.png", config.data.value_range)
        write_manifest(out, written + ["grid.png"])
    finally:
        lock.release()
    nfe = model.calls // max(1, len(batches))
    print(f"{len(written)} samples in {out} ({sampler}, {nfe} network evaluations each); grid: {grid}")
    return out


class Counted:
    """The network, counting its calls: the evaluations reported are the ones made."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, *a, **k):
        self.calls += 1
        return self.model(*a, **k)


def folder_name(sampler: str, steps: int | None, start: int) -> str:
    """``samples-<sampler>-<steps>``, one folder name whatever the sampler's name (an import path's
    ':' and '/' become '.')."""
    taken = start if steps is None else steps  # the grid starts at the last trained step
    return f"samples-{sampler.replace(':', '.').replace('/', '.')}-{taken}"


def claim_folder(out: Path, overwrite: bool) -> None:
    """Refuse a folder holding samples unless --overwrite, and PNGs this script did not write
    always (an FID folder must hold one sampling only); with --overwrite remove only our own."""
    ours = read_manifest(out)
    pngs = {p.name for p in out.glob("*.png")} if out.is_dir() else set()
    foreign = sorted(pngs - ours)
    if foreign:
        raise SystemExit(f"error: {out} holds PNGs that sample.py did not write ({', '.join(foreign[:5])}"
                         f"{', …' if len(foreign) > 5 else ''}); samples go to a folder of their own: choose another --out")
    if ours and not overwrite:
        raise SystemExit(f"error: {out} already holds samples; pass --overwrite to replace them, or --out another folder")
    for name in ours:
        if (out / name).is_file():
            (out / name).unlink()
    (out / MANIFEST).unlink(missing_ok=True)


def read_manifest(out: Path) -> set[str]:
    """The sample files a manifest lists; only names this script writes are believed."""
    try:
        names = json.loads((out / MANIFEST).read_text()) if (out / MANIFEST).is_file() else []
    except (OSError, ValueError):
        names = []
    return {n for n in names if isinstance(n, str) and re.fullmatch(r"\d{6}\.png|grid\.png", n)} \
        if isinstance(names, list) else set()


def write_manifest(out: Path, names: list[str]) -> None:
    write_text_atomic(out / MANIFEST, json.dumps(names))


if __name__ == "__main__":
    main()
