"""Atomic checkpoints: write to a temporary file, fsync, then rename over the old one.

A kill at any moment — including during a save — leaves either the previous checkpoint or the
new one, never a truncated file (os.replace is atomic on POSIX and Windows).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def save_atomic(fabric, path: str | Path, state: dict[str, Any]) -> Path:
    """``fabric.save`` to ``path`` atomically (rank 0 writes; all ranks wait)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fabric.save(tmp, state)
    if fabric.is_global_zero:
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    fabric.barrier()
    return path


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """``run_dir/last.ckpt`` if it exists."""
    p = Path(run_dir) / "last.ckpt"
    return p if p.is_file() else None
