"""Lee et al. (2022), Table 1 on LSUN 64×64, and the embedded CPU demo of the same model, as run
configs (data only: :func:`gendiff.training.build_run` builds them).

Table 1's rows (docs/math.md, Conventions): f(N) = 0.140625 is σ_max = 0.15 with σ = 0.4. The
presets follow the official code's protocol: data in [0, 1], training steps 1..N − 1, samples
from its reverse loop (Eq. 20 from step N − 1, no noise on the last two steps, no x̂_0 clamp).
The demo keeps the paper's schedule on embedded data at 16×16 with a small UNet, and samples on
the fast path (UniPC at 20 evaluations, x̂_0 clamped: docs/benchmarks.md), because 1000
evaluations per grid would dominate a run of minutes on 2 CPU cores.
"""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

from gendiff.models import PRESETS as MODELS
from gendiff.training.config import ConfigError, DataConfig, FabricConfig, RunConfig, TrainConfig

__all__ = ["DEMO_TRAIN", "ROWS", "PRESETS", "PAPER_STEPS", "PAPER_PROTOCOL", "FAST_PATH", "preset_run",
           "data_channels", "lsun_data"]

# The embedded CPU demo: sized so 2 cores finish in minutes (issue 5's measurements).
DEMO_TRAIN = TrainConfig(steps=2000, batch_size=64, lr=1e-3, ema_decay=0.999, log_every=25,
                         ckpt_every=500, sample_every=0, sample_n=64)
ROWS = {"none": ("none", 0.0), "log0.6": ("log", 0.6), "quartic0.14": ("quartic", 0.140625)}
PRESETS = {"demo": {"category": None, "row": "quartic0.14"}}
PRESETS |= {f"{cat}-{row}": {"category": cat, "row": row} for cat in ("bedroom", "church") for row in ROWS}
PRESETS["bedroom-quartic0.14-f2c"] = {"category": "bedroom", "row": "quartic0.14", "fine_to_coarse": True}
PAPER_STEPS = {"bedroom": 450_000, "church": 600_000}
PAPER_PROTOCOL = {"last_train_step": 999, "sampler": "reverse", "clip_x0": False}
FAST_PATH = {"sampler": "unipc", "sample_steps": None, "clip_x0": True}  # 20 evaluations
LSUN_FOLDERS = {"bedroom": "bedroom_train_lmdb", "church": "church_outdoor_train_lmdb"}


def data_channels(spec: str) -> int:
    """1 for the grayscale embedded sets, else 3."""
    return 1 if spec in ("digits", "photos-gray") else 3


def lsun_data(preset: str, data: str | None, lsun_root: str | Path) -> str:
    """The preset's LSUN LMDB: ``data``, else the category's folder under ``lsun_root``; a
    ConfigError (field ``data.spec``) when neither holds it: no data never falls back to the demo."""
    category = PRESETS[preset]["category"]
    if data:
        return data
    candidate = Path(lsun_root) / LSUN_FOLDERS[category]
    if not (candidate / "data.mdb").is_file():
        raise ConfigError(f"preset {preset} trains on LSUN {category}: give its LMDB folder as the data, or put it "
                          f"at {candidate}; the demo preset runs on embedded data", "data.spec")
    return str(candidate)


def preset_run(preset: str = "demo", *, data: str | None = None, lsun_root: str | Path = "data",
               value_range: tuple[float, float] | None = None, fast: bool = False) -> RunConfig:
    """The run of ``preset`` ("demo" or "<bedroom|church>-<row>").

    Args:
        data: the demo's data (an embedded name or an image folder; default digits), or the
            preset's LSUN LMDB folder (default found under ``lsun_root``).
        value_range: default (0, 1) for the Table 1 presets, as the official runs, (−1, 1) for the demo.
        fast: sample on the fast path instead of the official reverse loop.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; valid: {sorted(PRESETS)}", "preset")
    p = PRESETS[preset]
    f_type, f_N = ROWS[p["row"]]
    demo = p["category"] is None
    spec = (data or "digits") if demo else lsun_data(preset, data, lsun_root)
    channels, size = (data_channels(spec), 16) if demo else (3, 64)
    vr = tuple(value_range or ((-1.0, 1.0) if demo else (0.0, 1.0)))
    if demo:
        train = replace(DEMO_TRAIN, **FAST_PATH)
        name = "demo-digits" if spec == "digits" else f"demo-{Path(spec).name or 'data'}"
    else:
        train, name = TrainConfig(steps=PAPER_STEPS[p["category"]], **PAPER_PROTOCOL), preset
    if fast:
        train = replace(train, **FAST_PATH)
    model = replace(MODELS["small" if demo else "paper64"], image_size=size, in_channels=channels,
                    out_channels=channels)
    basis = {"name": "blur", "shape": [size, size], "sigma": 0.4}
    schedule = {"name": "vp_blur", "f_type": f_type, "f_N": f_N, "N": 1000,
                "fine_to_coarse": p.get("fine_to_coarse", False)}
    return RunConfig(name, basis, schedule, asdict(model), DataConfig(spec, size, channels, vr), train,
                     FabricConfig(), "runs")
