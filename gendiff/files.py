"""Writing files in folders that hold a user's runs: never through a symlink, atomically.

A symlink planted at ``config.json``, ``.lock`` or a temporary checkpoint name would otherwise make
a write truncate whatever it points at. Every file gendiff writes in a run or sample folder goes
through here: a new file is created with ``O_EXCL | O_NOFOLLOW`` under a temporary name, filled,
synced and renamed over the destination (``os.replace`` replaces a symlink itself, never its
target), so a reader sees the old file or the new one, and a kill leaves no half file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
SAMPLES_MANIFEST = ".gendiff-samples.json"  # the files recipes/sample.py wrote in a folder  # Windows has none; its symlinks need privileges to make


def _clear(path: Path) -> None:
    """Remove what sits at ``path`` if it is a file or a symlink (a link is removed, not followed)."""
    if os.path.lexists(path) and not path.is_dir() or path.is_symlink():
        path.unlink()


def open_new(path: str | Path) -> BinaryIO:
    """``path`` created afresh for writing (whatever was there removed first, a symlink included)."""
    path = Path(path)
    _clear(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o644)
    return os.fdopen(fd, "wb")


def open_append(path: str | Path) -> BinaryIO:
    """``path`` opened for appending; OSError (ELOOP) when it is a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NOFOLLOW, 0o644)
    return os.fdopen(fd, "ab")


def write_atomic(path: str | Path, write: Callable[[BinaryIO], object], *, sync: bool = True) -> Path:
    """Call ``write(f)`` on a fresh temporary file beside ``path``, then rename it over ``path``.

    Raises whatever ``write`` or the file system raises; the temporary file is removed then and
    ``path`` is untouched.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open_new(tmp) as f:
            write(f)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            try:
                tmp.unlink()
            except OSError:
                pass
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda f: f.write(text.encode()))


def save_array(x, path: str | Path) -> Path:
    """A tensor as one ``.npy`` (float32), atomically: samples of any shape, which
    ``gendiff.data.ArrayDataset`` (``--data``, ``evaluate.py --samples``) reads back."""
    import numpy as np

    arr = x.detach().cpu().float().numpy()
    return write_atomic(Path(path), lambda f: np.save(f, arr, allow_pickle=False), sync=False)
