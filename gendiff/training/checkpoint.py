"""Atomic checkpoints: write to a temporary file, fsync, then rename over the old one.

A kill at any moment — including during a save — leaves either the previous checkpoint or the
new one, never a truncated file (os.replace is atomic on POSIX and Windows).
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

# What torch.load raises on a truncated, empty or foreign file (and on a state that does not fit).
READ_ERRORS = (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, KeyError)


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be read or does not fit the run."""


def unreadable(path: str | Path, err: BaseException) -> CheckpointError:
    """The error to raise when the checkpoint at ``path`` failed with ``err``."""
    return CheckpointError(
        f"cannot load checkpoint {path}: {type(err).__name__}: {err}. Expected a checkpoint "
        "written by gendiff for this run's model; delete or move the file to start over")


def save_atomic(fabric, path: str | Path, state: dict[str, Any]) -> Path:
    """``fabric.save`` to ``path`` atomically (rank 0 writes; all ranks wait)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fabric.save(tmp, state)
    if fabric.is_global_zero:
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    fabric.barrier()
    return path


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable across a power loss or host crash.

    A killed process needs no fsync (the kernel completes its writes); a crashed machine can
    otherwise forget the rename and come back with the previous checkpoint.
    """
    if os.name != "posix":  # Windows cannot open a directory; os.replace is its best effort
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """``run_dir/last.ckpt`` if it exists."""
    p = Path(run_dir) / "last.ckpt"
    return p if p.is_file() else None
