"""Run folders that a run never destroys: checked names, no silent overwrite, one process at a time.

* :func:`check_run_name` — a run name is one folder name under ``out``: not empty, no path
  separator, not ``.`` or ``..``, so ``--name ''`` or ``--name ../../x`` cannot write elsewhere.
* :func:`claim_run_dir` — an existing run is refused unless the caller resumes it or asks to
  overwrite it; resuming needs something to resume.
* :class:`RunLock` — a locked file naming the owner's pid keeps a second process out; the lock of
  a process that is gone (a killed run) is taken over.
* :func:`hold_run_dir` — what ``Trainer.fit``, the one owner of a run folder, does before it
  writes anything, for recipes and Python alike.
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from pathlib import Path

from gendiff.files import NOFOLLOW

from .config import ConfigError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

RUN_FILES = ("last.ckpt", "config.json", "metrics.csv")  # what makes a folder a run
LOCK_NAME = ".lock"
BACKUP_PREFIX = "replaced-"  # where --overwrite moves the previous run
MAX_NAME = 200  # characters in a run name (RunConfig's schema says the same)
FAILED_PREFIX = "failed-"  # where a new run's files go when it failed before its first checkpoint


class RunDirError(RuntimeError):
    """The run folder cannot be used as asked (exists, nothing to resume, or in use)."""


def check_run_name(name) -> str:
    """``name`` if it is a single folder name; ConfigError (a ValueError) naming it otherwise."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"run name must be a non-empty folder name, got {name!r}")
    bad = [c for c in ("/", "\\", os.sep, "\0") if c in name]
    if bad or name in (".", "..") or (os.altsep and os.altsep in name):
        raise ConfigError(f"run name must be one folder name (no '/', '\\', NUL, not '.' or '..'), got {name!r}")
    if len(name) > MAX_NAME:  # file systems refuse names over 255 bytes; sample folders append to it
        raise ConfigError(f"run name must be at most {MAX_NAME} characters, got {len(name)}: {name[:40]!r}…")
    return name


def claim_run_dir(run_dir: str | Path, *, resume: bool, overwrite: bool = False) -> Path | None:
    """Decide what a run may do with ``run_dir`` before any work; returns the checkpoint to resume.

    Args:
        resume: continue from ``run_dir/last.ckpt`` (which must exist).
        overwrite: allow starting over in a folder that holds a run (:func:`hold_run_dir` then
            moves the old run aside, and back if the new one fails before its first checkpoint).

    Raises:
        RunDirError: an existing run without ``resume``/``overwrite`` (the message says how to
            continue or start over), ``resume`` with nothing to resume, or both flags at once.
    """
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite exclude each other: resume continues the run, "
                          "overwrite starts it over")
    ckpt = run_dir / "last.ckpt"
    existing = [f for f in RUN_FILES if (run_dir / f).exists()]
    if resume:
        if not ckpt.is_file():
            what = "the run stopped before its first checkpoint" if existing else "no run there"
            raise RunDirError(f"nothing to resume in {run_dir}: no last.ckpt ({what}); drop --resume to "
                              f"start a new run{' (with --overwrite, since the folder exists)' if existing else ''}")
        return ckpt
    if existing and not overwrite:
        raise RunDirError(f"run folder {run_dir} already holds a run ({', '.join(existing)}); refusing to "
                          "overwrite it. Continue it with --resume (Trainer.resume()), start it over with "
                          "--overwrite (Trainer(..., overwrite=True)), or pick another --name or --out")
    return None


def set_aside(run_dir: Path, prefix: str = BACKUP_PREFIX) -> Path:
    """Move everything in ``run_dir`` but its lock and earlier backups into a new
    ``<prefix><time>`` folder there; returns that folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = run_dir / f"{prefix}{stamp}"
    k = 1
    while os.path.lexists(backup):
        backup, k = run_dir / f"{prefix}{stamp}-{k}", k + 1
    backup.mkdir()
    for entry in sorted(run_dir.iterdir()):
        if entry.name != LOCK_NAME and not entry.name.startswith((BACKUP_PREFIX, FAILED_PREFIX)):
            os.replace(entry, backup / entry.name)  # a rename: a symlink moves as a link
    return backup


def put_back(run_dir: Path, backup: Path) -> Path:
    """Undo :func:`set_aside` after a new run failed before its first checkpoint: its files go
    to ``failed-<time>/`` and the old run's come back from ``backup``; returns the former."""
    failed = set_aside(run_dir, FAILED_PREFIX)
    for entry in sorted(backup.iterdir()):
        os.replace(entry, run_dir / entry.name)
    backup.rmdir()
    return failed


def check_run_place(run_dir: str | Path) -> Path:
    """``run_dir`` if a run can be written there: every existing part of the path a folder (not
    a file, not a symlink to elsewhere at the run itself), the nearest existing one writable.

    Raises:
        RunDirError: saying which part is wrong, before anything is created.
    """
    run_dir = Path(run_dir)
    if run_dir.is_symlink():
        raise RunDirError(f"run folder {run_dir} is a symbolic link; give the real folder (--out) instead")
    for part in (run_dir, *run_dir.parents):
        if os.path.lexists(part):
            if not part.is_dir():
                raise RunDirError(f"cannot make run folder {run_dir}: {part} exists and is not a folder "
                                  "(check --out and --name)")
            if not os.access(part, os.W_OK | os.X_OK):
                raise RunDirError(f"cannot make run folder {run_dir}: {part} is not writable (choose another --out)")
            return run_dir
    return run_dir


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """``run_dir/.lock`` held while a process trains in ``run_dir``; it records ``"<pid> <host>"``.

    The lock is an exclusive ``flock`` on that file: the kernel drops it when its process dies,
    so a lock left by a killed run is stale and simply taken over, and two processes can never
    both hold it (no pid-reuse or check-then-write race). The pid is only for the message.
    Where ``fcntl`` is missing (Windows) the pid in the file is checked instead.
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None
        self.backup: Path | None = None  # where hold_run_dir moved the run this one replaces

    def acquire(self) -> "RunLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # under /proc, a read-only mount, a name the file system refuses
            raise RunDirError(f"cannot make run folder {self.path.parent}: {e.strerror or e} (check --out and "
                              "--name)") from None
        try:  # O_NOFOLLOW: a symlink planted at .lock must not make us truncate its target
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR | NOFOLLOW, 0o644)
        except OSError as e:
            if not self.path.is_symlink():
                raise
            raise RunDirError(f"{self.path} is a symbolic link; refusing to write through it. Remove it "
                              "(a run's lock is a plain file)") from e
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                self._refuse_if_alive(os.read(fd, 200).decode(errors="replace"))
        except BlockingIOError:
            owner = os.read(fd, 200).decode(errors="replace")
            os.close(fd)
            self._refuse(owner)
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def _refuse(self, owner: str) -> None:
        pid, _, host = owner.strip().partition(" ")
        raise RunDirError(f"run folder {self.path.parent} is in use by process {pid or '?'} on {host or '?'} "
                          f"(lock {self.path}); wait for that run to finish, or stop it, before starting "
                          "another one here")

    def _refuse_if_alive(self, owner: str) -> None:
        pid_s, _, host = owner.strip().partition(" ")
        if pid_s.isdigit() and int(pid_s) != os.getpid() and (host != socket.gethostname() or _alive(int(pid_s))):
            self._refuse(owner)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (unlinking it would race)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def hold_run_dir(run_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
                 check: bool = True) -> RunLock | None:
    """Lock ``run_dir`` for training and check it with :func:`claim_run_dir`, before any writing.

    ``Trainer.fit`` calls it — the one owner of a run folder, for recipes and Python alike.

    Args:
        run_dir: the run folder; it and its missing parents are created for the lock file and
            removed again when the check refuses.
        resume, overwrite: as in :func:`claim_run_dir`.
        check: False only locks (a trainer continuing the run it loaded from this folder).

    Returns:
        the lock taken (release it when training ends); with ``overwrite``, ``lock.backup`` is
        where the old run went (:func:`put_back` restores it).
    """
    run_dir = check_run_place(run_dir)
    made = [p for p in (run_dir, *run_dir.parents) if not p.exists()]  # deepest first
    lock = RunLock(run_dir).acquire()
    try:
        if check:
            claim_run_dir(run_dir, resume=resume, overwrite=overwrite)
        if check and overwrite and any((run_dir / f).exists() for f in RUN_FILES):
            lock.backup = set_aside(run_dir)
            print(f"--overwrite: the previous run in {run_dir} was moved to {lock.backup} (it comes back if the "
                  "new run fails before its first checkpoint)", file=sys.stderr)
    except BaseException:
        lock.release()
        with contextlib.suppress(OSError):  # the refusal is the error to report, not a cleanup's
            if made:
                lock.path.unlink(missing_ok=True)
            for p in made:
                p.rmdir()
        raise
    return lock
