"""Data given as a NumPy array file: ``.npy`` or ``.npz`` holding a (B, C, *sides) array.

Any number of spatial axes (1: signals (B, C, L); 2: images (B, C, H, W); 3: volumes
(B, C, D, H, W)), any sides. Files are read with ``allow_pickle=False``: an array file holds
numbers only, never code. Values:

* unsigned integers (uint8 pixels, uint16 scans) are read as fractions of their type's
  maximum and mapped linearly from [0, 1] to ``value_range``;
* floats are taken as they are and must already lie in ``value_range`` (a scale is not
  guessed: rescale them before saving);
* signed integers and booleans are refused (no range to assume).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from gendiff.value_range import check_range, map_range

ARRAY_SUFFIXES = (".npy", ".npz")
MAX_AXES = 3


def load_array(path: str | os.PathLike, key: str | None = None) -> np.ndarray:
    """The array in ``path``: a ``.npy`` file, or the array ``key`` of a ``.npz`` (the only one
    when ``key`` is None). ValueError naming the keys when the choice is ambiguous."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        if key is not None:
            raise ValueError(f"{str(path)!r} is a .npy file holding one array; 'key' ({key!r}) is for .npz files")
        return np.load(path, allow_pickle=False)
    with np.load(path, allow_pickle=False) as z:
        names = list(z.files)
        if key is None and len(names) != 1:
            raise ValueError(f"{str(path)!r} holds the arrays {names}; name one with the data argument "
                             "key (--data-args '{\"key\": ...}')")
        if key is not None and key not in names:
            raise ValueError(f"{str(path)!r} has no array {key!r}; it holds {names}")
        return z[key if key is not None else names[0]]


def array_to_tensor(arr: np.ndarray, value_range=(-1.0, 1.0), where: str = "array") -> torch.Tensor:
    """A (B, C, *sides) array as float32 in ``value_range`` (see the module doc for the rules)."""
    if not 3 <= arr.ndim <= 2 + MAX_AXES:
        raise ValueError(f"{where} must have shape (B, C, *sides) with 1 to {MAX_AXES} spatial axes, e.g. (B, 1, 64) "
                         f"or (B, 3, 24, 16), got shape {arr.shape}")
    if 0 in arr.shape:
        raise ValueError(f"{where} holds no data: shape {arr.shape}")
    lo, hi = check_range(value_range)
    if arr.dtype.kind == "u":
        x = torch.from_numpy(arr.astype(np.float64) / np.iinfo(arr.dtype).max)
        return map_range(x, (0.0, 1.0), (lo, hi)).float()
    if arr.dtype.kind != "f":
        raise ValueError(f"{where} holds {arr.dtype} values; give unsigned integers (read as fractions of their "
                         f"maximum) or floats in value_range {(lo, hi)}")
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{where} holds NaN/Inf values")
    a, b = float(x.min()), float(x.max())
    if a < lo - 1e-6 * (hi - lo) or b > hi + 1e-6 * (hi - lo):
        raise ValueError(f"{where} holds values in [{a:.4g}, {b:.4g}], outside the data's value_range {(lo, hi)}; "
                         "rescale the array, or set the run's value_range to the data's")
    return x


class ArrayDataset(torch.utils.data.Dataset):
    """The examples of a ``.npy``/``.npz`` file: ``dataset[k]`` is ``array[k]``, float32 (C, *sides).

    Args:
        path: the file.
        value_range: ``(lo, hi)`` of the data (see the module doc).
        key: the array of an ``.npz`` holding several.

    Attributes:
        data: the whole array as one float32 tensor (held in memory).
    """

    def __init__(self, path: str | os.PathLike, value_range=(-1.0, 1.0), key: str | None = None):
        self.path = Path(path).expanduser()
        self.data = array_to_tensor(load_array(self.path, key), value_range, where=str(self.path))
        self.value_range = tuple(float(v) for v in value_range)
        self.spec, self.args = str(path), ({} if key is None else {"key": key})

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.data[index]

    def __repr__(self) -> str:
        return f"ArrayDataset({str(self.path)!r}, n={len(self)}, shape={tuple(self.data.shape[1:])})"
