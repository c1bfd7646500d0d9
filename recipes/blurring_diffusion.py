"""Blurring Diffusion Models (Hoogeboom & Salimans, ICLR 2023) with gendiff's engine.

    python recipes/blurring_diffusion.py                     # embedded digits at 32×32, CPU
    python recipes/blurring_diffusion.py --data /path/to/images --accelerator gpu

Published defaults for 32×32: σ_B,max = 20, d_min = 0.001, the log-SNR cosine noise schedule,
ε-prediction, and the per-coordinate ancestral sampler.
"""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import cli
from gendiff.experiments.paper import DEMO_TRAIN, data_channels
from gendiff.models import PRESETS as MODELS
from gendiff.training import DataConfig, FabricConfig, RunConfig

TRAIN = replace(DEMO_TRAIN, sampler="ancestral")


def parse_args(argv=None):
    p = cli.RecipeParser(__doc__)
    cli.add_data_args(p, size=32)
    p.add_argument("--N", type=cli.int_at_least(1), default=1000, field="schedule.N", help="diffusion steps")
    p.add_argument("--sigma-B-max", type=cli.float_in(0.0, open_lo=True), default=20.0, field="schedule.sigma_B_max",
                   help="final blur std in pixels")
    p.add_argument("--d-min", type=cli.float_in(0.0, 0.999, open_lo=True), default=0.001, field="schedule.d_min",
                   help="smallest frequency scaling d_min, in (0, 1)")
    cli.add_run_args(p, TRAIN, name="blurring-<data>")
    return p.parse_args(argv)


def build_config(args) -> RunConfig:
    channels = data_channels(args.data)
    return RunConfig(
        f"blurring-{Path(args.data).name or 'data'}", {"name": "dct", "shape": [args.size, args.size]},
        {"name": "blurring", "N": args.N, "sigma_B_max": args.sigma_B_max, "d_min": args.d_min},
        asdict(replace(MODELS["small"], in_channels=channels, out_channels=channels)),
        DataConfig(args.data, args.size, channels), TRAIN, FabricConfig(), "runs")


def main(argv=None):
    return cli.train(build_config, parse_args(argv))


if __name__ == "__main__":
    cli.entry(main)
