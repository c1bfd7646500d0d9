"""Training logs through Lightning Fabric's loggers: CSV always, TensorBoard when installed.

Scalars (loss, learning rate, gradient norm, EMA decay, images/s) go to every logger and to the
run's own ``metrics.csv`` (:class:`CSVLog`, which survives a resume). Sample grids go to
TensorBoard as images when it is installed and always to ``<run>/samples/step-<k>.png``.
"""
from __future__ import annotations

import time
from pathlib import Path

from lightning_fabric.loggers import CSVLogger

from gendiff.figures import grid_image, save_grid

from .csvlog import CSVLog


def fabric_loggers(run_dir: Path) -> list:
    """Fabric's CSVLogger (``<run>/logs/version_<k>``: a new version per start, so a resumed run
    never deletes the history of the previous one) and TensorBoardLogger (``<run>/tb``) when
    ``tensorboard`` is installed."""
    loggers = [CSVLogger(run_dir, name="logs")]
    try:
        import tensorboard  # noqa: F401
        from lightning_fabric.loggers import TensorBoardLogger
    except ImportError:
        return loggers
    return loggers + [TensorBoardLogger(run_dir, name="tb")]


class RunLog:
    """What the trainer logs, on rank 0 only (``fabric`` and ``csv`` None elsewhere).

    Args:
        fabric: the run's Fabric (its ``loggers`` receive every record).
        run_dir: the run folder.
        start_step: the step training (re)starts from (see :class:`CSVLog`).
        images_per_step: images consumed by one optimizer step on all ranks together.
    """

    def __init__(self, fabric, run_dir: Path, start_step: int, images_per_step: int):
        self.fabric, self.run_dir = fabric, Path(run_dir)
        self.csv = CSVLog(self.run_dir / "metrics.csv", start_step)
        self.images_per_step = images_per_step
        self._t, self._step = time.perf_counter(), start_step

    def scalars(self, metrics: dict[str, float], step: int) -> None:
        """Log ``metrics`` plus the throughput since the previous call."""
        now = time.perf_counter()
        rate = (step - self._step) * self.images_per_step / max(now - self._t, 1e-9)
        self._t, self._step = now, step
        metrics = {**metrics, "images_per_s": rate}
        self.fabric.log_dict(metrics, step=step)
        self.csv.log(metrics, step)

    def images(self, tag: str, x, value_range, step: int) -> Path:
        """A sample grid: to TensorBoard when present, and as a PNG under ``<run>/samples``."""
        from lightning_fabric.loggers import TensorBoardLogger

        grid = grid_image(x, value_range)
        for logger in self.fabric.loggers:
            if isinstance(logger, TensorBoardLogger):  # its experiment is a SummaryWriter
                logger.experiment.add_image(tag, grid, step)
        return save_grid(x, self.run_dir / "samples" / f"step-{step:07d}.png", value_range)

    def close(self) -> None:
        for logger in self.fabric.loggers:
            logger.finalize("success")
