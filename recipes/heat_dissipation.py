"""Inverse heat dissipation (Rissanen et al., ICLR 2023) with gendiff's engine.

    python recipes/heat_dissipation.py                       # embedded digits at 32×32, CPU
    python recipes/heat_dissipation.py --data /path/to/images --size 32 --accelerator gpu

Published defaults for 32×32: K = 200 levels, σ_B from 0.5 to 24, σ = 0.01, δ = 1.25σ, data in
[0, 1], the residual parameterization μ = u + f(u, k) and a prior of blurred training images.
As the reference code: the loss is summed over pixels (mean over the batch) with a gradient
clip of 1, training levels are 1..K − 1, and the prior adds no δ noise. Sampling starts at the
last trained level K − 1 (the reference evaluates the network at K, a level it never trains on;
docs/family.md).
"""
from __future__ import annotations

import argparse
from dataclasses import replace

from common import (DEMO_TRAIN, add_data_args, add_run_args, data_channels, fabric_config, flag_errors, float_in,
                    int_at_least, model_dict, run, train_config)

from gendiff import DCTBasis
from gendiff.schedules import HeatDissipationSchedule
from gendiff.training import DataConfig, RunConfig


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p, size=32)
    p.add_argument("--K", type=int_at_least(2), default=200, help="blur levels (trained on 1..K − 1)")
    p.add_argument("--sigma-B-max", type=float_in(0.0, open_lo=True), default=24.0,
                   help="largest blur std in pixels (> σ_B,min = 0.5)")
    p.add_argument("--sigma", type=float_in(0.0, open_lo=True), default=0.01, help="training noise std σ")
    p.add_argument("--delta-scale", type=float_in(0.0), default=0.0,
                   help="noise on the prior draw, in units of σ (the reference code adds none)")
    add_run_args(p, DEMO_TRAIN, name="ihdm-<data>")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    channels = data_channels(args.data)
    # IHDM samples with its own sampler and no x̂_0 clamp, as the reference implementation does.
    train = train_config(args, replace(DEMO_TRAIN, sampler="ihdm", clip_x0=False, grad_clip=1.0,
                                       last_train_step=args.K - 1))
    with flag_errors("--K, --sigma-B-max, --sigma"):
        schedule = HeatDissipationSchedule(args.K, args.sigma_B_max, sigma=args.sigma)
    config = RunConfig(
        args.name or f"ihdm-{args.data}", DCTBasis((args.size, args.size)).config(),
        schedule.config(), model_dict(args, channels),
        DataConfig(args.data, args.size, channels, (0.0, 1.0)), train, fabric_config(args), args.out,
        parameterization={"name": "residual_mean", "reduction": "sum"}, prior={"name": "blurred_data", "delta_scale": args.delta_scale})
    return run(config, args)


if __name__ == "__main__":
    main()
