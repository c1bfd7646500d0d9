"""Training on Lightning Fabric: config dataclasses, EMA, safe checkpoints and run folders, the
loop (trainer), rebuilding a run from a checkpoint (loading) and the logs."""
from .checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_atomic
from .config import CondConfig, DataConfig, FabricConfig, RunConfig, TrainConfig
from .ema import ema_model
from .loading import (build_diffusion, build_network, check_device, load_run, network_config,
                      open_run, sampling_steps, steps_taken)
from .run import Run, SamplingConfig, build_run, event_shape, sample_run, sampling_config
from .rundir import RunDirError, RunLock, check_run_name, claim_run_dir, hold_run_dir
from .trainer import NonFiniteLossError, StepBatches, Trainer, data_config, step_seed

__all__ = ["CondConfig", "DataConfig", "FabricConfig", "RunConfig", "TrainConfig", "Trainer", "Run", "build_run",
           "open_run", "SamplingConfig", "sample_run", "sampling_config", "StepBatches", "event_shape", "data_config",
           "NonFiniteLossError", "CheckpointError", "RunDirError", "RunLock", "check_run_name", "claim_run_dir",
           "hold_run_dir", "ema_model", "latest_checkpoint", "load_checkpoint", "save_atomic", "load_run",
           "build_diffusion", "build_network", "network_config", "check_device",
           "sampling_steps", "steps_taken", "step_seed"]
