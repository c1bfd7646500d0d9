"""What sample.py and evaluate.py compute about a run's samples, for data of any event shape.

The metrics that exist for the data's shape, and a reason for those that do not:

=========================  ========================================  ==============================
data                       sample metrics                            not defined here
=========================  ========================================  ==============================
images (N, C, H, W)        SWD per pyramid level, radial spectrum    —
                           bands, FID/KID (local Inception weights)
signals (N, C, L)          1-D power-spectrum bands                  SWD, FID/KID
volumes (N, C, D, H, W)    —                                         SWD, spectra, FID/KID
=========================  ========================================  ==============================

bits/dim (gendiff.likelihood) takes every shape; a refused metric is reported by its reason
(``"<metric>_unavailable"``), never as a NaN.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gendiff.data import EMBEDDED, build_dataset
from gendiff.figures import save_grid
from gendiff.files import write_atomic
from gendiff.metrics import (MissingWeightsError, fid, kid, plot_spectra, require_images, signal_spectrum_error,
                             spectrum_error, swd)
from gendiff.metrics.fid import WeightsHashError

__all__ = ["held_out", "sample_metrics", "fid_kid", "spectrum_figure", "save_array"]


def held_out(data, spec: str | None = None, limit: int = 10_000) -> Tensor:
    """The reference examples of a run's data (a :class:`~gendiff.training.config.DataConfig`)
    as one (n, C, *sides) tensor: the ``test`` split of an embedded set, else the data whole
    (folders, arrays and plug-ins have no split; pass held-out data as ``spec``), at most
    ``limit`` examples evenly spread over it. ``spec`` replaces the run's own (its ``args``
    then do not apply)."""
    spec = str(spec or data.spec)
    args = data.args if spec == data.spec else {}
    ref = build_dataset(spec, "test" if spec in EMBEDDED else "train", data.sides, data.value_range, data.channels,
                        args=args)
    idx = range(len(ref)) if len(ref) <= limit else np.linspace(0, len(ref) - 1, limit).round().astype(int)
    return torch.stack([ref[int(k)] for k in idx])


def sample_metrics(samples: Tensor, ref: Tensor, value_range, *, swd_min_size: int = 8, seed: int = 0) -> dict:
    """The sample-quality numbers that fit the event shape (module table): ``swd_<level>``,
    ``swd_mean`` for images; ``spec_low``/``spec_mid``/``spec_high``/``spec_mean_abs`` (the log
    power ratio of samples to data per band) for images and signals; ``{}`` for volumes."""
    if samples.ndim == 4:
        s = swd(samples, ref, value_range=value_range, min_size=swd_min_size,
                generator=torch.Generator().manual_seed(seed))
        spec = spectrum_error(samples, ref, value_range=value_range)
        return {**{f"swd_{k}": v for k, v in s.items()}, **_bands(spec)}
    if samples.ndim == 3:
        return _bands(signal_spectrum_error(samples, ref, value_range=value_range))
    return {}


def _bands(spec: dict) -> dict:
    return {f"spec_{k}": spec[k] for k in ("low", "mid", "high", "mean_abs")}


def fid_kid(samples: Tensor, ref: Tensor, value_range, inception: str | None) -> dict:
    """FID/KID with clean-fid, or ``{"fid_unavailable": reason}``: the Inception weights are not
    local, or the data are not 2-D images (an Inception network sees pictures)."""
    try:
        require_images(samples, "FID/KID")
    except ValueError as e:
        return {"fid_unavailable": str(e)}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folders = Path(tmp, "samples"), Path(tmp, "reference")
            for folder, x in zip(folders, (samples, ref)):
                folder.mkdir()
                for k, img in enumerate(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x):
                    save_grid(img[None], folder / f"{k:06d}.png", value_range, nrow=1)
            a, b = map(str, folders)
            return {"fid": fid(a, b, inception_path=inception), "kid": kid(a, b, inception_path=inception)}
    except (MissingWeightsError, WeightsHashError) as e:
        return {"fid_unavailable": str(e).splitlines()[0]}


def spectrum_figure(sets: dict[str, Tensor], path, value_range) -> Path | None:
    """The power spectra of ``sets`` (name -> batch) as a PNG for images and signals; None for
    volumes, which have no spectrum here."""
    first = next(iter(sets.values()))
    return plot_spectra(sets, path, value_range) if first.ndim in (3, 4) else None


def save_array(x: Tensor, path) -> Path:
    """Samples of any shape as one ``.npy`` (float32, the data's value range), atomically:
    what sample.py writes beside its PNGs, and ``--data``/``--samples`` read back."""
    arr = x.detach().cpu().float().numpy()
    return write_atomic(Path(path), lambda f: np.save(f, arr, allow_pickle=False), sync=False)
