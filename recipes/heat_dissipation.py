"""Inverse heat dissipation (Rissanen et al., ICLR 2023) with gendiff's engine.

    python recipes/heat_dissipation.py                       # embedded digits at 32×32, CPU
    python recipes/heat_dissipation.py --data /path/to/images --size 32 --accelerator gpu

Published defaults for 32×32: K = 200 levels, σ_B from 0.5 to 24, σ = 0.01, δ = 1.25σ, data in
[0, 1], the residual parameterization μ = u + f(u, k) and a prior of blurred training images.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, replace

from common import DEMO_TRAIN, MODELS, add_run_args, fabric_config, run, train_config

from gendiff import DCTBasis
from gendiff.schedules import HeatDissipationSchedule
from gendiff.training import DataConfig, RunConfig


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="digits", help="embedded name (digits, photos, photos-gray) or a folder")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--K", type=int, default=200)
    p.add_argument("--sigma-B-max", type=float, default=24.0)
    p.add_argument("--sigma", type=float, default=0.01)
    p.add_argument("--delta-scale", type=float, default=1.25)
    add_run_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    channels = 1 if args.data in ("digits", "photos-gray") else 3
    model = replace(MODELS[args.model or "small"], image_size=args.size, in_channels=channels, out_channels=channels)
    config = RunConfig(
        args.name or f"ihdm-{args.data}", DCTBasis((args.size, args.size)).config(),
        HeatDissipationSchedule(args.K, args.sigma_B_max, sigma=args.sigma).config(), asdict(model),
        DataConfig(args.data, args.size, channels, (0.0, 1.0)), train_config(args, DEMO_TRAIN),
        fabric_config(args), args.out, parameterization={"name": "residual_mean"},
        prior={"name": "blurred_data", "delta_scale": args.delta_scale})
    return run(config, args, "ihdm")


if __name__ == "__main__":
    main()
