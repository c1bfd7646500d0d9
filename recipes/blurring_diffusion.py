"""Blurring Diffusion Models (Hoogeboom & Salimans, ICLR 2023) with gendiff's engine.

    python recipes/blurring_diffusion.py                     # embedded digits at 32×32, CPU
    python recipes/blurring_diffusion.py --data /path/to/images --accelerator gpu

Published defaults for 32×32: σ_B,max = 20, d_min = 0.001, the log-SNR cosine noise schedule,
ε-prediction, and the per-coordinate ancestral sampler.
"""
from __future__ import annotations

import argparse
from dataclasses import replace

from common import (DEMO_TRAIN, add_data_args, add_run_args, data_channels, fabric_config, flag_errors, float_in,
                    int_at_least, model_dict, run, train_config)

from gendiff import DCTBasis
from gendiff.schedules import BlurringDiffusionSchedule
from gendiff.training import DataConfig, RunConfig


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p, size=32)
    p.add_argument("--N", type=int_at_least(1), default=1000, help="diffusion steps")
    p.add_argument("--sigma-B-max", type=float_in(0.0, open_lo=True), default=20.0,
                   help="final blur std in pixels")
    p.add_argument("--d-min", type=float_in(0.0, 0.999, open_lo=True), default=0.001,
                   help="smallest frequency scaling d_min, in (0, 1)")
    add_run_args(p, replace(DEMO_TRAIN, sampler="ancestral"), name="blurring-<data>")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    channels = data_channels(args.data)
    with flag_errors("--N, --sigma-B-max, --d-min"):
        schedule = BlurringDiffusionSchedule(args.N, args.sigma_B_max, args.d_min)
    config = RunConfig(
        args.name or f"blurring-{args.data}", DCTBasis((args.size, args.size)).config(),
        schedule.config(), model_dict(args, channels),
        DataConfig(args.data, args.size, channels), train_config(args, replace(DEMO_TRAIN, sampler="ancestral")),
        fabric_config(args), args.out)
    return run(config, args)


if __name__ == "__main__":
    main()
