"""Blurring Diffusion Models (Hoogeboom & Salimans, ICLR 2023) with gendiff's engine.

    python recipes/blurring_diffusion.py                     # embedded digits at 32×32, CPU
    python recipes/blurring_diffusion.py --data /path/to/images --accelerator gpu

Published defaults for 32×32: σ_B,max = 20, d_min = 0.001, the log-SNR cosine noise schedule,
ε-prediction, and the per-coordinate ancestral sampler.
"""
from __future__ import annotations

import argparse
from dataclasses import replace

from common import (DEMO_TRAIN, add_data_args, add_run_args, data_channels, fabric_config, float_in, model_dict, run,
                    train_config)

from gendiff import DCTBasis
from gendiff.schedules import BlurringDiffusionSchedule
from gendiff.training import DataConfig, RunConfig


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p, size=32)
    p.add_argument("--N", type=int, default=1000)
    p.add_argument("--sigma-B-max", type=float, default=20.0)
    p.add_argument("--d-min", type=float_in(0.0, 0.999, open_lo=True), default=0.001,
                   help="smallest frequency scaling d_min, in (0, 1)")
    p.add_argument("--sampler", default="ancestral", choices=["ancestral", "ddim", "dpm++2m"])
    add_run_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    channels = data_channels(args.data)
    config = RunConfig(
        args.name or f"blurring-{args.data}", DCTBasis((args.size, args.size)).config(),
        BlurringDiffusionSchedule(args.N, args.sigma_B_max, args.d_min).config(), model_dict(args, channels),
        DataConfig(args.data, args.size, channels), train_config(args, replace(DEMO_TRAIN, sampler=args.sampler)),
        fabric_config(args), args.out)
    return run(config, args)


if __name__ == "__main__":
    main()
