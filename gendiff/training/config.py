"""Run configuration as small frozen dataclasses, serialised to ``config.json`` and checkpoints."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping (DESIGN §3 defaults: Adam 5e-5, batch 16, EMA 0.9999).

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


@dataclass(frozen=True)
class FabricConfig:
    """Lightning Fabric's device arguments, straight from a recipe's flags."""

    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"


@dataclass(frozen=True)
class DataConfig:
    """Args: spec (embedded name or path), size, channels, value_range ((−1, 1) or (0, 1))."""

    spec: str = "digits"
    size: int = 16
    channels: int = 1
    value_range: tuple[float, float] = (-1.0, 1.0)

    def __post_init__(self):
        object.__setattr__(self, "value_range", tuple(float(v) for v in self.value_range))


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        nested = {"data": DataConfig, "train": TrainConfig, "fabric": FabricConfig}
        known = {f.name for f in fields(cls)}
        return cls(**{k: nested[k](**v) if k in nested else v for k, v in d.items() if k in known})
