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

from dataclasses import asdict, replace
from pathlib import Path

import cli
from gendiff.experiments.paper import DEMO_TRAIN, data_channels
from gendiff.models import PRESETS as MODELS
from gendiff.training import DataConfig, FabricConfig, RunConfig


def parse_args(argv=None):
    p = cli.RecipeParser(__doc__)
    cli.add_data_args(p, size=32)
    p.add_argument("--K", type=cli.int_at_least(2), default=200, field="schedule.K",
                   help="blur levels (trained on 1..K − 1)")
    p.add_argument("--sigma-B-max", type=cli.float_in(0.0, open_lo=True), default=24.0, field="schedule.sigma_B_max",
                   help="largest blur std in pixels (> σ_B,min = 0.5)")
    p.add_argument("--sigma", type=cli.float_in(0.0, open_lo=True), default=0.01, field="schedule.sigma",
                   help="training noise std σ")
    p.add_argument("--delta-scale", type=cli.float_in(0.0), default=0.0, field="prior.delta_scale",
                   help="noise on the prior draw, in units of σ (the reference code adds none)")
    cli.add_run_args(p, DEMO_TRAIN, name="ihdm-<data>")
    return p.parse_args(argv)


def build_config(args) -> RunConfig:
    # IHDM samples with its own sampler and no x̂_0 clamp, as the reference implementation does.
    train = replace(DEMO_TRAIN, sampler="ihdm", clip_x0=False, grad_clip=1.0, last_train_step=args.K - 1)
    channels = data_channels(args.data)
    return RunConfig(
        f"ihdm-{Path(args.data).name or 'data'}", {"name": "dct", "shape": [args.size, args.size]},
        {"name": "heat", "K": args.K, "sigma_B_max": args.sigma_B_max, "sigma_B_min": 0.5, "sigma": args.sigma},
        asdict(replace(MODELS["small"], in_channels=channels, out_channels=channels)),
        DataConfig(args.data, args.size, channels, (0.0, 1.0)), train, FabricConfig(), "runs",
        parameterization={"name": "residual_mean", "reduction": "sum"},
        prior={"name": "blurred_data", "delta_scale": args.delta_scale})


def main(argv=None):
    return cli.train(build_config, parse_args(argv))


if __name__ == "__main__":
    cli.entry(main)
