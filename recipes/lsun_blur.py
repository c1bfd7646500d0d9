"""Reproduce Lee et al. (2022), Table 1: blur diffusion on LSUN bedroom/church at 64×64.

    python recipes/lsun_blur.py                          # --preset demo: the embedded CPU demo (~10 min on 2 cores)
    python recipes/lsun_blur.py --preset church-quartic0.14 --data /data/church_outdoor_train_lmdb \\
        --accelerator gpu --devices 8 --strategy ddp     # the paper's run
    python recipes/lsun_blur.py --preset church-quartic0.14 --resume   # continue an interrupted run

The default ``--preset demo`` runs the whole pipeline — data, training, EMA, checkpoint,
UniPC sampling, figures — on scikit-learn's digits (16×16; ``--data`` picks other data
with the same demo protocol) with a 0.7M-parameter UNet, so it finishes on 2 CPU cores. A Table 1
preset needs its LSUN LMDB (``--data``, or found under ``--lsun-root``, default ``$LSUN_ROOT`` or
``./data``) and is refused without it: naming data never switches the protocol, only ``--preset``
does. The
demo keeps the paper's schedule (f(N) = 0.140625, σ = 0.4 px), which blurs a 16-px digit to a
blob by step N, so the coarse-to-fine trajectory is easy to see.

The Table 1 presets follow the paper's protocol by default, as the official code runs it: data in
[0, 1], training steps 1..N − 1, evaluation samples from the official reverse loop (Eq. 20 from
step N − 1, no noise on the last two steps, no x̂_0 clamp), and FID on 10k samples::

    python recipes/evaluate.py --ckpt runs/church-quartic0.14/last.ckpt --n 10000 --seeds 0

``--fast`` switches to the fast path instead: UniPC-3 on the schedule's log-SNR grid at 20
evaluations with x̂_0 clamped to the data range (50× fewer network evaluations; on the exact
oracle it matches the 1000-step loop from 12 evaluations on no blur and quartic, 18 on log 0.6:
docs/benchmarks.md).
The embedded demo keeps the fast path and [−1, 1]: it trains a small network for minutes on
2 CPU cores, where 1000 network evaluations per sample grid would dominate the run, and its
barely trained network leaves speckled digits without the clamp (docs/math.md, "Other samplers").
"""
from __future__ import annotations

import argparse
import os
from dataclasses import asdict, replace
from pathlib import Path

from common import DEMO_TRAIN, MODELS, add_run_args, data_channels, fabric_config, run, train_config

from gendiff.training import DataConfig, RunConfig, TrainConfig

# Table 1 rows (docs/math.md, Conventions): f(N) = 0.140625 is σ_max = 0.15 with σ = 0.4.
ROWS = {"none": ("none", 0.0), "log0.6": ("log", 0.6), "quartic0.14": ("quartic", 0.140625)}
PRESETS = {"demo": {"category": None, "row": "quartic0.14"}}
PRESETS |= {f"{cat}-{row}": {"category": cat, "row": row} for cat in ("bedroom", "church") for row in ROWS}
PRESETS["bedroom-quartic0.14-f2c"] = {"category": "bedroom", "row": "quartic0.14", "fine_to_coarse": True}
PAPER_STEPS = {"bedroom": 450_000, "church": 600_000}
# The official protocol: training steps 1..N − 1, samples from its reverse loop without a clamp.
PAPER_PROTOCOL = {"last_train_step": 999, "sampler": "reverse", "clip_x0": False}
FAST_PATH = {"sampler": "unipc", "sample_steps": None, "clip_x0": True}  # 20 evaluations, docs/benchmarks.md
LSUN_FOLDERS = {"bedroom": "bedroom_train_lmdb", "church": "church_outdoor_train_lmdb"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="demo", choices=sorted(PRESETS),
                   help="demo: the embedded CPU demo protocol; the others: Table 1's rows on LSUN (default: demo)")
    p.add_argument("--data", help="demo: an embedded name (digits, photos, photos-gray) or an image folder (default: "
                                  "digits); a Table 1 preset: its LSUN LMDB folder (default: under --lsun-root)")
    p.add_argument("--lsun-root", default=os.environ.get("LSUN_ROOT", "data"))
    p.add_argument("--value-range", choices=["-1,1", "0,1"],
                   help="data range (default: 0,1 for the Table 1 presets, as the official runs; -1,1 for the demo)")
    p.add_argument("--fast", action="store_true",
                   help="sample with UniPC (20 evaluations) and the x̂_0 clamp instead of the official reverse loop")
    add_run_args(p, DEMO_TRAIN, name="demo-digits, or the preset's name on LSUN",
                 shown={"steps": f"{DEMO_TRAIN.steps} in the embedded demo, the paper's "
                                 f"{PAPER_STEPS['bedroom']}/{PAPER_STEPS['church']} for bedroom/church",
                        **{f: f"{getattr(DEMO_TRAIN, f)} in the embedded demo, {getattr(TrainConfig(), f)} for LSUN"
                           for f in ("batch_size", "lr", "ema_decay", "ckpt_every", "sample_every")}})
    return p.parse_args(argv)


def find_data(args, category: str) -> str:
    """The preset's LSUN LMDB: ``--data``, else the category's folder under ``--lsun-root``."""
    if args.data:
        return args.data
    candidate = Path(args.lsun_root) / LSUN_FOLDERS[category]
    if not (candidate / "data.mdb").is_file():
        raise SystemExit(f"error: --preset {args.preset} trains on LSUN {category}: pass its LMDB folder with --data, "
                         f"or put it at {candidate} (--lsun-root); --preset demo runs on embedded data")
    return str(candidate)


def build_config(args) -> RunConfig:
    preset = PRESETS[args.preset]
    f_type, f_N = ROWS[preset["row"]]
    demo = preset["category"] is None
    data_path = args.data or "digits" if demo else find_data(args, preset["category"])
    vr = args.value_range or ("-1,1" if demo else "0,1")
    vr = tuple(float(v) for v in vr.split(","))
    if demo:
        channels = data_channels(data_path)
        size, data, train = 16, DataConfig(data_path, 16, channels, vr), replace(DEMO_TRAIN, **FAST_PATH)
        name = "demo-digits" if data_path == "digits" else f"demo-{Path(data_path).name or 'data'}"
        model = replace(MODELS[args.model or "small"], image_size=16, in_channels=channels, out_channels=channels)
    else:
        size, data, name = 64, DataConfig(data_path, 64, 3, vr), args.preset
        train, model = TrainConfig(steps=PAPER_STEPS[preset["category"]], **PAPER_PROTOCOL), MODELS[args.model or "paper64"]
    if args.fast:
        train = replace(train, **FAST_PATH)
    # Config data only: the run is built once, by check_run (gendiff.training.build_run).
    basis = {"name": "blur", "shape": [size, size], "sigma": 0.4}
    schedule = {"name": "vp_blur", "f_type": f_type, "f_N": f_N, "N": 1000,
                "fine_to_coarse": preset.get("fine_to_coarse", False)}
    return RunConfig(args.name or name, basis, schedule, asdict(model), data,
                     train_config(args, train), fabric_config(args), args.out)


def main(argv=None):
    args = parse_args(argv)
    config = build_config(args)
    hint = None
    if args.preset == "demo":
        hint = ("full-size experiment (LSUN 64×64, the paper's 121M UNet; put the LMDB folders under ./data "
                "or pass --data):\n  python recipes/lsun_blur.py --preset bedroom-quartic0.14 "
                "--data /path/to/bedroom_train_lmdb --accelerator gpu --devices 1")
    return run(config, args, hint)


if __name__ == "__main__":
    main()
