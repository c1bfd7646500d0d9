"""LSUN scenes from the official LMDB release (e.g. ``church_outdoor_train_lmdb/``).

Layout: ``root`` is the ``<category>_train_lmdb/`` folder holding ``data.mdb`` (and ``lock.mdb``).
Each record maps a key (a hex SHA-1 as bytes) to the encoded image: webp in the official
release, jpeg in some re-exports; both are decoded with PIL.

Choices, and why:

* The key list is read once (a full cursor walk takes minutes on the big categories) and cached
  OUTSIDE the data folder, because that folder is often read-only (shared storage), as an
  ``.npz`` of plain arrays (no pickle: reading it runs no code). Default location:
  ``$XDG_CACHE_HOME/gendiff/lsun_keys/<sha1 of abs path>.npz`` (``~/.cache`` when
  XDG_CACHE_HOME is unset); ``cache_dir`` overrides it. The cache is ignored and rebuilt when
  ``data.mdb`` changes size or modification time.
* Before the database is memory-mapped, its meta pages are read and the file's size checked
  against the last page they name (:func:`check_lmdb_file`): reading a page past the end of a
  truncated ``data.mdb`` through the map would kill the process with SIGBUS, with no message.
  A damaged page met while listing keys raises :class:`LMDBError` naming the path.
* The LMDB environment is opened lazily, once per process and shared by every dataset on the
  same folder (py-lmdb >= 3 refuses a second open in one process). An environment must not
  cross a ``fork``, so each DataLoader worker closes its inherited copy and opens its own on
  first use (``shared_env``).
* Images are resized to ``size x size`` WITHOUT cropping (aspect not preserved), as in the
  papers' LSUN setups. The official runs used ``value_range=(0, 1)``; pass it explicitly.
* Records that are missing or do not decode are skipped: ``__getitem__`` returns the next good
  record, counts the bad one in ``n_corrupt`` (per process) and warns once.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tempfile
import threading
import warnings
from pathlib import Path

import lmdb
import numpy as np
import torch

from gendiff.data.folder import SkipsBadRecords, _size, check_size_channels, decode_image
from gendiff.value_range import check_range

_CACHE_VERSION = 2
_MAGIC = 0xBEEFC0DE


class LMDBError(RuntimeError):
    """An LMDB database that cannot be read safely (truncated, damaged); the message names it."""


def check_lmdb_file(root: Path) -> None:
    """Refuse a ``data.mdb`` that is shorter than its own meta pages say, before it is mapped.

    LMDB's two meta pages (page 0 and 1; the newer one by txnid is current) record the page size
    and the last page in use; every page up to it must be in the file. Layout (LMDB 0.9, 64-bit):
    16-byte page header, then magic, version, address, mapsize, the free DB (whose first field
    is the page size), the main DB, last_pgno, txnid.
    """
    path = root / "data.mdb"
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(2 * 65536)
    metas = []
    psize = struct.unpack_from("<I", head, 40)[0] if len(head) >= 152 else 0
    for off in (0, psize) if 0 < psize <= 65536 else ():
        if off + 152 <= len(head) and struct.unpack_from("<I", head, off + 16)[0] == _MAGIC:
            last, txn = struct.unpack_from("<QQ", head, off + 136)
            metas.append((txn, last, psize))
    if not metas:
        raise LMDBError(f"LMDB file {str(path)!r} is damaged or not an LMDB database ({size} bytes, "
                        "no valid meta page); re-copy the dataset")
    _, last, psize = max(metas)
    need = (last + 1) * psize
    if size < need:
        raise LMDBError(f"LMDB file {str(path)!r} is truncated: {size} bytes, but its meta page names "
                        f"page {last} ({need} bytes needed); re-copy the dataset (an interrupted copy or "
                        "download?)")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/gendiff/lsun_keys`` (``~/.cache/...`` when the variable is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gendiff" / "lsun_keys"


def _open_env(root: Path, max_readers: int) -> lmdb.Environment:
    # Read-only and lock-free: the folder may be read-only, and we never write.
    # readahead=False because access is random; meminit=False skips zeroing unused buffers.
    check_lmdb_file(root)  # before the map: a page past the end of the file is a SIGBUS
    try:
        return lmdb.open(str(root), readonly=True, lock=False, readahead=False, meminit=False,
                         max_readers=max_readers)
    except lmdb.Error as e:
        raise LMDBError(f"cannot open LMDB {str(root)!r}: {type(e).__name__}: {e}") from e


_ENVS: dict[str, tuple[int, lmdb.Environment]] = {}  # root -> (pid that opened it, env)
_ENVS_LOCK = threading.Lock()


def shared_env(root: Path, max_readers: int = 126) -> lmdb.Environment:
    """This process's single read-only environment for ``root``, opened on first use.

    One per process and root, shared by all datasets on that root, because py-lmdb >= 3 refuses
    to open the same environment twice in one process. An environment inherited through
    ``fork`` (DataLoader workers) must not be used by the child: the child closes its copy (this
    unmaps only the child's memory; with ``lock=False`` no lock is shared with the parent) and
    opens its own.
    """
    key = str(root)
    with _ENVS_LOCK:
        pid, env = _ENVS.get(key, (None, None))
        if env is not None and pid != os.getpid():
            env.close()
            env = None
        if env is None:
            env = _open_env(root, max_readers)
            _ENVS[key] = (os.getpid(), env)
        return env


def _list_keys(root: Path, max_readers: int) -> list[bytes]:
    """Walk the whole database once for its keys (values are not read)."""
    try:
        with shared_env(root, max_readers).begin(write=False) as txn:
            return list(txn.cursor().iternext(keys=True, values=False))
    except lmdb.Error as e:  # a damaged branch or leaf page
        raise LMDBError(f"LMDB {str(root / 'data.mdb')!r} is damaged: {type(e).__name__}: {e}; "
                        "re-copy the dataset") from e


def _fingerprint(root: Path) -> dict:
    """What identifies this database's contents cheaply: path, size and mtime of data.mdb."""
    st = (root / "data.mdb").stat()
    return {"version": _CACHE_VERSION, "root": str(root), "bytes": st.st_size,
            "mtime_ns": st.st_mtime_ns}


def _read_cached_keys(path: Path, fingerprint: dict) -> list[bytes] | None:
    """Keys from the cache file, or None if it is absent, unreadable or stale (no pickle)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(bytes(z["fingerprint"]).decode()) != fingerprint:
                return None
            blob, ends = z["blob"].tobytes(), z["ends"].tolist()
    except Exception:  # absent, truncated, or from an incompatible version: rebuild
        return None
    starts = [0, *ends[:-1]]
    return [blob[a:b] for a, b in zip(starts, ends)]


def _write_cached_keys(path: Path, fingerprint: dict, keys: list[bytes]) -> None:
    """Write the cache atomically (temp file + rename) so concurrent jobs never see half a file.

    Plain arrays: the keys concatenated (uint8) and their end offsets, plus the fingerprint as
    JSON text; any key bytes survive exactly (a fixed-width "S" array would drop trailing NULs).
    """
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, fingerprint=np.frombuffer(json.dumps(fingerprint).encode(), np.uint8),
                     blob=np.frombuffer(b"".join(keys), np.uint8),
                     ends=np.cumsum([len(k) for k in keys], dtype=np.int64))
        os.replace(tmp, path)
    except OSError as err:  # a read-only home is not a reason to refuse to train
        warnings.warn(f"could not write the LSUN key cache {str(path)!r}: {err}", RuntimeWarning)
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def load_keys(root: Path, cache_dir: str | os.PathLike | None = None,
              max_readers: int = 126) -> tuple[list[bytes], Path]:
    """All record keys of the LMDB at ``root``, from the cache when fresh, and the cache path."""
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache = cache_dir / (hashlib.sha1(str(root).encode()).hexdigest() + ".npz")
    fingerprint = _fingerprint(root)
    keys = _read_cached_keys(cache, fingerprint)
    if keys is None:
        keys = _list_keys(root, max_readers)
        _write_cached_keys(cache, fingerprint, keys)
    return keys, cache


def resolve_lsun_root(root: str | os.PathLike) -> Path:
    """Absolute path of the LMDB folder; accepts the folder or its ``data.mdb`` file.

    Raises FileNotFoundError naming the path if there is no ``data.mdb``.
    """
    path = Path(root).expanduser().resolve()
    if path.name == "data.mdb" and path.is_file():
        path = path.parent
    if not (path / "data.mdb").is_file():
        raise FileNotFoundError(f"LSUN LMDB not found: {str(path)!r} has no data.mdb "
                                f"(expected the <category>_train_lmdb/ folder)")
    return path


class LSUNDataset(SkipsBadRecords):
    """One LSUN category read from its official LMDB, resized (not cropped) to ``size x size``.

    Args:
        root: the ``<category>_train_lmdb/`` folder (or its ``data.mdb``).
        size: output height and width in pixels.
        value_range: ``(lo, hi)`` that pixel values in [0, 1] are mapped to; the official runs
            used ``(0, 1)``.
        cache_dir: where the key-list cache goes; default ``~/.cache/gendiff/lsun_keys``.
        max_readers: passed to ``lmdb.open`` (how many read transactions one process may hold).

    Attributes:
        keys: record keys in database order.
        classes, labels: the category (the folder name without ``_train_lmdb``) as the one
            class, and label 0 for every record.
        key_cache: path of the key-list cache file.
        n_corrupt: how many distinct records failed to decode so far (in this process).
    """

    def __init__(self, root: str | os.PathLike, size: int | tuple[int, int] = 64,
                 value_range: tuple[float, float] = (-1.0, 1.0),
                 cache_dir: str | os.PathLike | None = None, max_readers: int = 126):
        super().__init__()
        check_size_channels(size, 3)
        check_range(value_range)  # validate early
        self.root = resolve_lsun_root(root)
        self.size, self.value_range, self.max_readers = _size(size), tuple(value_range), max_readers
        self.spec = str(root)
        self.keys, self.key_cache = load_keys(self.root, cache_dir, max_readers)
        if not self.keys:
            raise FileNotFoundError(f"LSUN LMDB {str(self.root)!r} holds no records")
        # one category per LMDB: a single class, label 0 everywhere (stride 0, no memory)
        self.classes = [re.sub(r"(_(train|val))?_lmdb$", "", self.root.name)]
        self.labels = torch.zeros((), dtype=torch.long).expand(len(self.keys))

    channels, what, bad_word = 3, "LSUN record", "corrupt"

    @property
    def n_corrupt(self) -> int:
        return self.n_bad

    def __len__(self) -> int:
        return len(self.keys)

    def _read(self, env: lmdb.Environment, i: int) -> bytes:
        with env.begin(write=False, buffers=False) as txn:
            data = txn.get(self.keys[i])
        if data is None:
            raise KeyError(f"key {self.keys[i]!r} has no value")
        return data

    def _source(self) -> lmdb.Environment:
        return shared_env(self.root, self.max_readers)

    def _decode(self, env: lmdb.Environment, i: int):
        # a damaged page (lmdb.Error) or undecodable bytes (PIL) both count as corrupt
        return decode_image(self._read(env, i))

    def _name(self, i: int) -> str:
        return repr(self.keys[i])

    def __repr__(self) -> str:
        return (f"LSUNDataset(root={str(self.root)!r}, n={len(self)}, size={self.size}, "
                f"value_range={self.value_range})")
