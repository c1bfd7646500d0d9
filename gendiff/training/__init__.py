"""Training on Lightning Fabric: config dataclasses, EMA, safe checkpoints and run folders, the loop."""
from .checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_atomic
from .config import DataConfig, FabricConfig, RunConfig, TrainConfig
from .ema import ema_model
from .rundir import RunDirError, RunLock, check_run_name, claim_run_dir
from .trainer import (NonFiniteLossError, StepBatches, Trainer, build_diffusion, check_device, load_prior, load_run,
                      sample_clip, step_seed)

__all__ = ["DataConfig", "FabricConfig", "RunConfig", "TrainConfig", "Trainer", "StepBatches",
           "NonFiniteLossError", "CheckpointError", "RunDirError", "RunLock", "check_run_name", "claim_run_dir",
           "ema_model", "latest_checkpoint", "load_checkpoint", "save_atomic", "load_run", "load_prior",
           "build_diffusion", "check_device", "sample_clip", "step_seed"]
