"""Reproduce Lee et al. (2022), Table 1: blur diffusion on LSUN bedroom/church at 64×64.

    python recipes/lsun_blur.py                          # --preset demo: the embedded CPU demo (~6 min on 2 cores)
    python recipes/lsun_blur.py --preset church-quartic0.14 --data /data/church_outdoor_train_lmdb \\
        --accelerator gpu --devices 8 --strategy ddp     # the paper's run
    python recipes/lsun_blur.py --preset church-quartic0.14 --resume   # continue an interrupted run

``--preset demo`` (the default) runs the whole pipeline — data, training, EMA, checkpoint, UniPC
sampling, figures — on scikit-learn's digits at 16×16 (``--data``: other data, same protocol) with
a 0.7M-parameter UNet, so it finishes on 2 CPU cores; it keeps the paper's schedule (f(N) =
0.140625, σ = 0.4 px), which blurs a digit to a blob by step N. A Table 1 preset needs its LSUN
LMDB (``--data``, or under ``--lsun-root``) and is refused without it: naming data never switches
the protocol, only ``--preset`` does. The presets follow the official code's protocol (data in
[0, 1], training steps 1..N − 1, its reverse loop without a clamp; gendiff/experiments/paper.py);
``--fast`` samples with UniPC at 20 evaluations and the x̂_0 clamp instead (docs/benchmarks.md).
Evaluate with ``python recipes/evaluate.py --ckpt runs/church-quartic0.14/last.ckpt --n 10000``.
"""
from __future__ import annotations

import os

import cli
from gendiff.experiments.paper import DEMO_TRAIN, PAPER_STEPS, PRESETS, preset_run
from gendiff.training import TrainConfig

HINT = ("full-size experiment (LSUN 64×64, the paper's 121M UNet; put the LMDB folders under ./data or pass --data):\n"
        "  python recipes/lsun_blur.py --preset bedroom-quartic0.14 --data /path/to/bedroom_train_lmdb "
        "--accelerator gpu --devices 1")


def parse_args(argv=None):
    p = cli.RecipeParser(__doc__)
    p.add_argument("--preset", default="demo", choices=sorted(PRESETS),
                   help="demo: the embedded CPU demo protocol; the others: Table 1's rows on LSUN")
    p.add_argument("--data", field="data.spec",
                   help="demo: an embedded name (digits, photos, photos-gray) or an image folder (default: digits); "
                        "a Table 1 preset: its LSUN LMDB folder (default: under --lsun-root)")
    p.add_argument("--lsun-root", default=os.environ.get("LSUN_ROOT", "data"))
    p.add_argument("--value-range", choices=["-1,1", "0,1"], field="data.value_range",
                   help="data range (default: 0,1 for the Table 1 presets, as the official runs; -1,1 for the demo)")
    p.add_argument("--fast", action="store_true",
                   help="sample with UniPC (20 evaluations) and the x̂_0 clamp instead of the official reverse loop")
    lsun = TrainConfig()
    cli.add_run_args(p, DEMO_TRAIN, name="demo-digits, or the preset's name on LSUN",
                     shown={"steps": f"{DEMO_TRAIN.steps} in the demo, the paper's {PAPER_STEPS['bedroom']}/"
                                     f"{PAPER_STEPS['church']} for bedroom/church",
                            **{f: f"{getattr(DEMO_TRAIN, f)} in the demo, {getattr(lsun, f)} for LSUN"
                               for f in ("batch_size", "lr", "ema_decay", "ckpt_every", "sample_every")}})
    return p.parse_args(argv)


def build_config(args):
    vr = tuple(float(v) for v in args.value_range.split(",")) if args.value_range else None
    return preset_run(args.preset, data=args.data, lsun_root=args.lsun_root, value_range=vr, fast=args.fast)


def main(argv=None):
    args = parse_args(argv)
    return cli.train(build_config, args, HINT if args.preset == "demo" else None)


if __name__ == "__main__":
    cli.entry(main)
