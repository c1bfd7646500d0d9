"""Checkpoints that load without running code, carry a content hash, and are written atomically.

Format (``FORMAT`` = 2): one ``torch.save`` file holding only tensors and plain Python values
(dict, list, tuple, str, int, float, bool, None), so ``torch.load(weights_only=True)`` reads it
and loading never executes code. The dict carries ``"format"`` and ``"sha256"``: the SHA-256
of everything else (:func:`content_hash`), checked on every load, so a flipped bit in a weight
is found even where the zip container would still read.

Saves are atomic: write ``.<name>.tmp``, fsync, rename over the old file, fsync the folder. A
kill at any moment leaves the previous checkpoint or the new one; a failed write (disk full,
read-only folder) removes the temporary file and leaves the previous checkpoint untouched.
"""
from __future__ import annotations

import errno
import hashlib
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from gendiff.files import open_new, write_text_atomic

FORMAT = 2
# What torch.load raises on a truncated, empty or foreign file (and on a state that does not fit).
READ_ERRORS = (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, KeyError, OSError,
               zipfile.BadZipFile, AttributeError, TypeError, IndexError)


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be read, fails its hash, or does not fit the run;
    or a checkpoint could not be written."""


def unreadable(path: str | Path, err: BaseException) -> CheckpointError:
    """The error to raise when the checkpoint at ``path`` failed with ``err``."""
    return CheckpointError(
        f"cannot load checkpoint {path}: {type(err).__name__}: {err}. Expected a checkpoint "
        "written by gendiff for this run's model; delete or move the file to start over")


def content_hash(state: dict[str, Any]) -> str:
    """SHA-256 over every value of ``state`` except its ``"sha256"`` entry.

    Walks dicts in sorted-key order; a tensor contributes its dtype, shape and raw bytes, a plain
    value its type and repr, so the hash is the same before saving and after loading on any device.
    """
    h = hashlib.sha256()

    def walk(v):
        if torch.is_tensor(v):
            t = v.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{t.dtype}{tuple(v.shape)}".encode())
            h.update(memoryview(t.view(torch.uint8).numpy()) if t.numel() else b"")
        elif isinstance(v, dict):
            h.update(f"D{len(v)}".encode())
            for k in sorted(v, key=repr):
                h.update(f"K{k!r}".encode())
                walk(v[k])
        elif isinstance(v, (list, tuple)):
            h.update(f"{type(v).__name__[0].upper()}{len(v)}".encode())
            for x in v:
                walk(x)
        elif v is None or isinstance(v, (bool, int, float, str)):
            h.update(f"{type(v).__name__}:{v!r};".encode())
        else:
            raise TypeError(f"checkpoint values must be tensors or plain Python values (so that "
                            f"loading runs no code), got {type(v).__name__}")

    walk({k: v for k, v in state.items() if k != "sha256"})
    return h.hexdigest()


def save_atomic(fabric, path: str | Path, state: dict[str, Any], beside: dict[str, str] | None = None) -> Path:
    """Write ``state`` (plus its format and hash) to ``path`` atomically (rank 0 writes; all wait).

    Args:
        beside: text files to write next to the checkpoint after it (``{"config.json": …}``), under
            the same error handling.

    Raises:
        CheckpointError: the write failed (disk full, read-only folder, …); the temporary file is
            removed and the previous ``path`` is untouched. Every rank raises.
    """
    path = Path(path)
    error = None
    if fabric.is_global_zero:
        error = _write_atomic(path, state)
        for name, text in (beside or {}).items():
            error = error or _write_text(path.parent / name, text)
    if getattr(fabric, "world_size", 1) > 1:
        error = fabric.broadcast(error, src=0)
    if error is not None:
        raise CheckpointError(error)
    fabric.barrier()
    return path


def _write_atomic(path: Path, state: dict[str, Any]) -> str | None:
    """Write on this process; None on success, else the message every rank raises."""
    tmp = path.with_name(f".{path.name}.tmp")
    full = {**state, "format": FORMAT}
    full["sha256"] = content_hash(full)
    try:
        with open_new(tmp) as f:  # never through a symlink planted at the temporary name
            torch.save(full, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        _remove(tmp)
        why = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
               errno.EROFS: "the file system is read-only",
               errno.EACCES: "the run folder is not writable"}.get(e.errno, e.strerror or str(e))
        kept = f"{path} still holds the previous checkpoint" if path.is_file() else f"no checkpoint at {path} yet"
        return (f"cannot write checkpoint {path}: {why} ({type(e).__name__} errno {e.errno}). "
                f"No partial file was left; {kept}. Free space or fix the folder, then continue with --resume")
    except BaseException:  # a KeyboardInterrupt mid-write: do not leave half a file behind
        _remove(tmp)
        raise
    return None


def _write_text(path: Path, text: str) -> str | None:
    try:
        write_text_atomic(path, text)
    except OSError as e:
        return (f"cannot write {path}: {e.strerror or e} ({type(e).__name__} errno {e.errno}); the checkpoint "
                f"{path.parent / 'last.ckpt'} was saved. Fix the folder, then continue with --resume")
    return None


def _remove(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:  # a read-only folder never got the file
        pass


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


def load_checkpoint(path: str | Path, map_location="cpu") -> dict[str, Any]:
    """The verified state saved at ``path``: read with ``weights_only=True``, hash checked.

    Raises:
        CheckpointError: naming ``path``, if the file is missing, truncated or foreign, holds
            objects that need code to load (a pickle payload, or a format-1 checkpoint with
            NumPy RNG state), or its content does not match the hash it was saved with.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = _torch_reason(str(e))
        if "GLOBAL" in reason.upper():  # a class or function the file asks to import and call
            raise CheckpointError(
                f"refusing to load checkpoint {path}: it holds objects that need code to run to be loaded "
                f"({reason}). gendiff checkpoints (format {FORMAT}) hold only tensors and plain values; this "
                "file is not from gendiff, was tampered with, or predates checkpoint format 2. "
                "Nothing in it was executed") from e
        raise unreadable(path, type(e)(reason)) from e
    except READ_ERRORS as e:  # torch's message does not name the file or say what to do
        raise unreadable(path, e) from e
    if not isinstance(state, dict) or state.get("format") != FORMAT or "sha256" not in state:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"cannot load checkpoint {path}: not a gendiff format-{FORMAT} checkpoint "
                              f"(format {got!r}); delete or move the file to start over")
    if content_hash(state) != state["sha256"]:
        raise CheckpointError(f"checkpoint {path} is corrupt: its content does not match the SHA-256 "
                              "it was saved with (a flipped bit or a partial copy); restore it from a "
                              "backup, or delete or move it to start over")
    return state


def _torch_reason(message: str) -> str:
    """The specific line of torch's weights-only error, without its preamble and advice."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    skip = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)")
    specific = [ln for ln in lines if "GLOBAL" in ln] or [ln for ln in lines if not ln.startswith(skip)]
    text = " ".join(specific).replace("WeightsUnpickler error: ", "").split(" Please use ")[0]
    return text[:300] or (lines[0][:300] if lines else "")


def verified(path: str | Path) -> bool:
    """True when ``path`` loads and matches its hash (what "last good" means)."""
    try:
        load_checkpoint(path)
    except CheckpointError:
        return False
    return True


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """``run_dir/last.ckpt`` if it exists."""
    p = Path(run_dir) / "last.ckpt"
    return p if p.is_file() else None
