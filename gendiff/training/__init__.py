"""Training on Lightning Fabric: config dataclasses, EMA, atomic checkpoints, the loop."""
from .checkpoint import latest_checkpoint, save_atomic
from .config import DataConfig, FabricConfig, RunConfig, TrainConfig
from .ema import ema_model
from .trainer import NonFiniteLossError, StepBatches, Trainer, build_diffusion, load_prior, load_run, sample_clip, step_seed

__all__ = ["DataConfig", "FabricConfig", "RunConfig", "TrainConfig", "Trainer", "StepBatches",
           "NonFiniteLossError", "ema_model", "latest_checkpoint", "save_atomic", "load_run", "load_prior", "build_diffusion", "sample_clip", "step_seed"]
