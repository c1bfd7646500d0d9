"""Run configuration as small frozen dataclasses, serialised to ``config.json`` and checkpoints."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any


class ConfigError(ValueError):
    """A configuration value outside its valid range (the message names both)."""


def _check_int(owner: str, name: str, value, lo: int, hi: int | None = None, flag: str | None = None) -> None:
    """ValueError naming ``owner.name`` (and its command-line flag), the value and the valid range."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= lo and (hi is None or value <= hi)
    if not ok:
        rng = f"an integer in {lo}..{hi}" if hi is not None else f"an integer >= {lo}"
        where = f"{owner}.{name}" + (f" (--{flag})" if flag else f" (--{name.replace('_', '-')})")
        raise ConfigError(f"{where} must be {rng}, got {value!r}")


def _check_float(owner: str, name: str, value, lo: float, hi: float | None = None, *, open_lo=False,
                 flag: str | None = None) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > lo if open_lo else value >= lo) and (hi is None or value <= hi)
    if not ok:
        left = "(" if open_lo else "["
        rng = f"a number in {left}{lo}, {hi}]" if hi is not None else f"a finite number {'>' if open_lo else '>='} {lo}"
        where = f"{owner}.{name}" + (f" (--{flag})" if flag else f" (--{name.replace('_', '-')})")
        raise ConfigError(f"{where} must be {rng}, got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping (docs/math.md, Conventions: Adam 5e-5, batch 16, EMA 0.9999).

    Args:
        steps: total optimizer steps.
        batch_size: per device.
        lr: Adam learning rate.
        ema_decay: the EMA's final decay.
        ema_warmup: ramp the decay as min(decay, (1 + n)/(10 + n)) so short runs sample from
            trained weights rather than from the initialisation.
        grad_clip: max gradient norm, ``None`` for none (the paper uses none).
        seed: seeds the model initialisation, the batches and the diffusion noise.
        log_every, ckpt_every, sample_every: intervals in steps (0 disables sampling).
        sample_n, sample_steps, sampler: what the sample grids use (also the default of
            recipes/sample.py and recipes/evaluate.py for this run).
        clip_x0: clamp x̂_0 to the data range while sampling (DDPM's clip_denoised).
        last_train_step: train on steps 1..this (None: N; the official blur-diffusion and IHDM
            code: N − 1); the default sampling grids start there (``Diffusion``).
        num_workers: DataLoader workers.
    """

    steps: int = 450_000
    batch_size: int = 16
    lr: float = 5e-5
    ema_decay: float = 0.9999
    ema_warmup: bool = True
    grad_clip: float | None = None
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 5_000
    sample_every: int = 10_000
    sample_n: int = 64
    sample_steps: int = 50
    sampler: str = "dpm++2m"
    clip_x0: bool = True
    last_train_step: int | None = None
    num_workers: int = 0

    def __post_init__(self):
        """Every field checked at construction, so a bad flag fails before any work starts."""
        from gendiff.samplers import SAMPLERS

        c = "TrainConfig"
        for name, lo in (("steps", 1), ("batch_size", 1), ("log_every", 1), ("ckpt_every", 1),
                         ("sample_every", 0), ("sample_n", 1), ("num_workers", 0)):
            _check_int(c, name, getattr(self, name), lo)
        _check_int(c, "seed", self.seed, 0, 2**63 - 1)
        if self.sample_steps is not None:
            _check_int(c, "sample_steps", self.sample_steps, 1)
        _check_float(c, "lr", self.lr, 0.0, open_lo=True)
        _check_float(c, "ema_decay", self.ema_decay, 0.0, 1.0)
        if self.grad_clip is not None:
            _check_float(c, "grad_clip", self.grad_clip, 0.0, open_lo=True)
        try:  # a registered name or an import path, as Diffusion.sample takes it
            SAMPLERS.resolve(self.sampler)
        except (ImportError, ValueError, TypeError) as e:
            raise ConfigError(f"TrainConfig.sampler: {e}") from None


@dataclass(frozen=True)
class FabricConfig:
    """Lightning Fabric's device arguments, straight from a recipe's flags."""

    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"

    def __post_init__(self):
        if isinstance(self.devices, int) or (isinstance(self.devices, str) and self.devices.isdigit()):
            if int(self.devices) != -1:  # Lightning's -1: every device
                _check_int("FabricConfig", "devices", int(self.devices), 1)
        _check_int("FabricConfig", "num_nodes", self.num_nodes, 1)


@dataclass(frozen=True)
class DataConfig:
    """Args: spec (embedded name or path), size, channels, value_range ((−1, 1) or (0, 1))."""

    spec: str = "digits"
    size: int = 16
    channels: int = 1
    value_range: tuple[float, float] = (-1.0, 1.0)

    def __post_init__(self):
        object.__setattr__(self, "value_range", tuple(float(v) for v in self.value_range))
        if not isinstance(self.spec, str) or not self.spec:
            raise ConfigError(f"DataConfig.spec (--data) must be an embedded name or a path, got {self.spec!r}")
        _check_int("DataConfig", "size", self.size, 1)
        _check_int("DataConfig", "channels", self.channels, 1, flag="channels")
        lo, hi = self.value_range
        if not (len(self.value_range) == 2 and math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ConfigError(f"DataConfig.value_range must be (lo, hi) with finite lo < hi, got {self.value_range}")


@dataclass(frozen=True)
class RunConfig:
    """Everything needed to rebuild a run: basis, schedule, model, parameterization and prior
    configs (each ``{"name": ..., **args}``) plus the dataclasses above."""

    name: str
    basis: dict[str, Any]
    schedule: dict[str, Any]
    model: dict[str, Any]
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    fabric: FabricConfig = field(default_factory=FabricConfig)
    out_dir: str = "runs"
    parameterization: dict[str, Any] = field(default_factory=lambda: {"name": "eps", "weighting": "eps"})
    prior: dict[str, Any] = field(default_factory=lambda: {"name": "gaussian"})

    def __post_init__(self):
        """The name is one folder name; the sample grid's step budget fits the schedule's N."""
        from gendiff.samplers import SAMPLERS
        from gendiff.schedules import build_schedule

        from .rundir import check_run_name

        check_run_name(self.name)
        for k in ("basis", "schedule", "model", "parameterization", "prior"):
            if not isinstance(getattr(self, k), dict):
                raise ConfigError(f"RunConfig.{k} must be a config dict, got {getattr(self, k)!r}")
        t = self.train
        recorded = "unrecorded" not in self.schedule  # a ready component that has no config
        if t.sample_steps is not None and SAMPLERS.resolve(t.sampler).steps is not None and recorded:
            N = build_schedule(self.schedule).N
            if t.sample_steps > N:
                raise ConfigError(f"TrainConfig.sample_steps (--sample-steps) must be in 1..N={N} (the schedule's "
                                 f"steps) for sampler {t.sampler!r}, got {t.sample_steps}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        nested = {"data": DataConfig, "train": TrainConfig, "fabric": FabricConfig}
        known = {f.name for f in fields(cls)}
        return cls(**{k: nested[k](**v) if k in nested else v for k, v in d.items() if k in known})
