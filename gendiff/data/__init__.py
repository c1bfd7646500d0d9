"""Datasets: float32 ``(C, *sides)`` tensors with values mapped linearly to ``value_range``.

``build_dataset(spec)`` picks one from a string:

* an import path ``package.module:Name`` (any string with ``':'``) -- a dataset plug-in: the
  class or function ``Name``, called with the data's ``args``; it is code, so a run naming it
  needs trust (gendiff.training.trust);
* an embedded name -- "digits", "photos", "photos-gray" (shipped inside installed packages),
  "signals" (1-D, generated; see ``gendiff.data.embedded``);
* a ``.npy``/``.npz`` file -- ``ArrayDataset``: a (B, C, *sides) array of any shape;
* a folder containing ``data.mdb`` (or that file itself) -- ``LSUNDataset`` (official LMDB);
* any other folder -- ``ImageFolderDataset`` (recursive).

A dataset records itself by a ``spec`` attribute (and ``args``) when a run is trained on it from
Python (``Trainer(dataset=...)``); a plug-in without one is recorded by its class's import path
and its ``config()`` (its constructor arguments) when it defines it.
Datasets with classes (``classes``, ``labels``) give (image, label) pairs through ``Labelled``.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path

import torch

from gendiff.data.arrays import ARRAY_SUFFIXES, ArrayDataset
from gendiff.data.embedded import (EMBEDDED, DigitsDataset, PhotoCropsDataset, SignalsDataset,
                                   embedded_dataset)
from gendiff.data.folder import IMAGE_EXTENSIONS, ImageFolderDataset
from gendiff.data.labels import Labelled, class_labels
from gendiff.data.lsun import LSUNDataset
from gendiff.registry import import_object

__all__ = ["EMBEDDED", "IMAGE_EXTENSIONS", "ARRAY_SUFFIXES", "DigitsDataset", "PhotoCropsDataset",
           "SignalsDataset", "ArrayDataset", "ImageFolderDataset", "LSUNDataset", "Labelled", "build_dataset",
           "class_labels", "embedded_dataset", "plugin_dataset"]

DEFAULT_PATH_SIZE = 64


def _is_lmdb(path: Path) -> bool:
    return (path.is_dir() and (path / "data.mdb").is_file()) or \
        (path.name == "data.mdb" and path.is_file())


def build_dataset(spec: str | os.PathLike, split: str = "train", size: int | tuple[int, ...] | None = None,
                  value_range: tuple[float, float] = (-1.0, 1.0),
                  channels: int = 3, args: dict | None = None) -> torch.utils.data.Dataset:
    """Build a dataset from an import path, an embedded name or a path.

    Args:
        spec: ``package.module:Name`` (a plug-in), "digits", "photos", "photos-gray",
            "signals", a ``.npy``/``.npz`` file, an LSUN LMDB folder (holds ``data.mdb``) or an
            image folder.
        split: "train" or "test" for embedded datasets (and plug-ins taking ``split``). A path
            is a single split: only "train" is accepted for paths (pass the held-out data as
            its own ``spec``), so an evaluation never silently runs on training images.
        size: output side(s): an int, or one per spatial axis (``(H, W)`` for image folders,
            ``(L,)`` for signals); None means the dataset's default (16 digits, 32 photos, 64
            signals, 64 for image paths). Arrays and plug-ins keep their own shape (the run
            checks it against its data config).
        value_range: ``(lo, hi)`` that values in [0, 1] are mapped to.
        channels: 3 (RGB) or 1 (grayscale), image folders only; LSUN is always RGB and the
            embedded datasets fix their own channel count.
        args: keyword arguments: a plug-in's, an embedded dataset's (e.g. ``n``), or ``key``
            for an ``.npz``.

    Raises:
        FileNotFoundError: ``spec`` is neither an import path, an embedded name nor an
            existing path.
        ImportError: a plug-in's module cannot be imported.
        ValueError: bad ``split``, ``size`` or ``args``.
    """
    name, args = str(spec), dict(args or {})
    if ":" in name:  # the one rule of gendiff.training.trust: a string with ':' is code
        return plugin_dataset(name, split, args)
    if name in EMBEDDED:
        if Path(name).exists():  # a folder of the user's named like an embedded set: say which is meant
            raise ValueError(f"dataset {name!r} is both an embedded dataset and a path here; pass ./{name} for "
                             f"the path, or run elsewhere for the embedded {name!r}")
        return embedded_dataset(name, split=split, size=size, value_range=value_range, **args)
    path = Path(name).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"dataset {name!r} is neither an embedded dataset "
                                f"({', '.join(EMBEDDED)}), an import path package.module:Name, nor an existing path")
    if split != "train":
        raise ValueError(f"split={split!r}: the path {name!r} has no splits; "
                         f"use split='train' and give held-out data as its own path")
    if path.suffix.lower() in ARRAY_SUFFIXES:
        return ArrayDataset(path, value_range=value_range, **_only(args, {"key"}, name))
    _only(args, set(), name)
    size = DEFAULT_PATH_SIZE if size is None else size
    if _is_lmdb(path):
        if channels != 3:
            raise ValueError(f"LSUN is RGB only, got channels={channels!r}")
        return LSUNDataset(path, size=size, value_range=value_range)
    return ImageFolderDataset(path, size=size, channels=channels, value_range=value_range)


def plugin_dataset(path: str, split: str = "train", args: dict | None = None) -> torch.utils.data.Dataset:
    """The dataset a plug-in ``package.module:Name`` builds: ``Name(**args)``, plus ``split``
    when ``Name`` takes one (otherwise it is a single split, like a folder). Its items are
    float (C, *sides) tensors in the run's value_range; the run checks the first one."""
    obj = import_object(path, "dataset")
    if not callable(obj):
        raise ValueError(f"dataset {path!r} is a {type(obj).__name__}, not a class or function")
    args = dict(args or {})
    try:
        takes_split = "split" in inspect.signature(obj).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        takes_split = False
    if takes_split:
        args.setdefault("split", split)
    elif split != "train":
        raise ValueError(f"split={split!r}: the dataset {path!r} takes no split; give held-out data as its own spec")
    try:
        dataset = obj(**args)
    except TypeError as e:
        raise ValueError(f"dataset {path!r} could not be built from its arguments {args}: {e} "
                         "(pass them as data args, --data-args)") from e
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise ValueError(f"dataset {path!r} returned a {type(dataset).__name__}, which has no __getitem__ and __len__")
    return dataset


def _only(args: dict, allowed: set[str], name: str) -> dict:
    extra = sorted(set(args) - allowed)
    if extra:
        raise ValueError(f"dataset {name!r} takes {sorted(allowed) or 'no'} data arguments, got {extra}")
    return args
