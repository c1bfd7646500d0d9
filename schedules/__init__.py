"""Schedules: per-coordinate (a_i, s_i) from the basis rates (docs/math.md, Notation and Conventions)."""
from . import noise
from .base import SCHEDULES, Schedule, ScheduleError, build_schedule
from .blurring import BlurringDiffusionSchedule
from .data_snr import DataSNRSchedule
from .heat import HeatDissipationSchedule
from .speed import SpeedSchedule
from .vp_blur import VPBlurSchedule, fine_to_coarse_rates

__all__ = ["BlurringDiffusionSchedule", "DataSNRSchedule", "HeatDissipationSchedule", "SCHEDULES", "Schedule", "ScheduleError", "SpeedSchedule", "VPBlurSchedule",
           "build_schedule", "fine_to_coarse_rates", "noise"]
