"""Datasets: float32 ``(C, H, W)`` tensors with pixel values mapped linearly to ``value_range``.

``build_dataset(spec)`` picks one from a string:

* an embedded name -- "digits", "photos", "photos-gray" (shipped inside installed packages,
  see ``gendiff.data.embedded``);
* a folder containing ``data.mdb`` (or that file itself) -- ``LSUNDataset`` (official LMDB);
* any other folder -- ``ImageFolderDataset`` (recursive).

Datasets with classes (``classes``, ``labels``) give (image, label) pairs through ``Labelled``.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from gendiff.data.embedded import (EMBEDDED, DigitsDataset, PhotoCropsDataset,
                                   embedded_dataset)
from gendiff.data.folder import IMAGE_EXTENSIONS, ImageFolderDataset
from gendiff.data.labels import Labelled, class_labels
from gendiff.data.lsun import LSUNDataset

__all__ = ["EMBEDDED", "IMAGE_EXTENSIONS", "DigitsDataset", "PhotoCropsDataset",
           "ImageFolderDataset", "LSUNDataset", "Labelled", "build_dataset", "class_labels", "embedded_dataset"]

DEFAULT_PATH_SIZE = 64


def _is_lmdb(path: Path) -> bool:
    return (path.is_dir() and (path / "data.mdb").is_file()) or \
        (path.name == "data.mdb" and path.is_file())


def build_dataset(spec: str | os.PathLike, split: str = "train", size: int | None = None,
                  value_range: tuple[float, float] = (-1.0, 1.0),
                  channels: int = 3) -> torch.utils.data.Dataset:
    """Build a dataset from an embedded name or a path.

    Args:
        spec: "digits", "photos", "photos-gray", an LSUN LMDB folder (holds ``data.mdb``) or an
            image folder.
        split: "train" or "test" for embedded datasets. A folder or LMDB is a single split: only
            "train" is accepted for paths (pass the held-out folder as its own ``spec``), so an
            evaluation never silently runs on training images.
        size: output height/width; None means the dataset's default (16 digits, 32 photos,
            64 for paths).
        value_range: ``(lo, hi)`` that pixel values in [0, 1] are mapped to.
        channels: 3 (RGB) or 1 (grayscale), image folders only; LSUN is always RGB and the
            embedded datasets fix their own channel count.

    Raises:
        FileNotFoundError: ``spec`` is neither an embedded name nor an existing path.
        ValueError: bad ``split``.
    """
    name = str(spec)
    if name in EMBEDDED:
        if Path(name).exists():  # a folder of the user's named like an embedded set: say which is meant
            raise ValueError(f"dataset {name!r} is both an embedded dataset and a path here; pass ./{name} for "
                             f"the path, or run elsewhere for the embedded {name!r}")
        return embedded_dataset(name, split=split, size=size, value_range=value_range)
    path = Path(name).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"dataset {name!r} is neither an embedded dataset "
                                f"({', '.join(EMBEDDED)}) nor an existing path")
    if split != "train":
        raise ValueError(f"split={split!r}: the folder/LMDB {name!r} has no splits; "
                         f"use split='train' and give held-out data as its own path")
    size = DEFAULT_PATH_SIZE if size is None else size
    if _is_lmdb(path):
        if channels != 3:
            raise ValueError(f"LSUN is RGB only, got channels={channels!r}")
        return LSUNDataset(path, size=size, value_range=value_range)
    return ImageFolderDataset(path, size=size, channels=channels, value_range=value_range)
