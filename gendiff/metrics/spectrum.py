"""Radially averaged power spectra and a spectral error between samples and data.

Natural images have a power spectrum falling roughly as 1/f^2 (van der Schaaf & van Hateren,
"Modelling the power spectra of natural images", Vision Research 1996).  Generative models
tend to get the low frequencies right and miss the high ones (too smooth) or add spurious
energy there (noise, checkerboards; Durall et al., "Watch your up-convolution", CVPR 2020;
Dzanic et al., "Fourier spectrum discrepancies in deep network generated images",
NeurIPS 2020).  Comparing the radial spectra of samples and data band by band shows which.
The log-ratio is exactly what a linear filter does: a Gaussian blur of width sigma (pixels)
multiplies the power by exp(-sigma^2 omega^2), omega = 2 pi f in radians per pixel.
"""
from __future__ import annotations

import numpy as np
import torch

from gendiff.files import write_atomic
from gendiff.value_range import map_range

__all__ = ["radial_spectrum", "signal_spectrum", "spectrum_error", "signal_spectrum_error", "plot_spectra",
           "require_images"]

KINDS = {3: "signals (N, C, L)", 4: "images (N, C, H, W)", 5: "volumes (N, C, D, H, W)"}


def require_images(x, metric: str, min_side: int = 1) -> None:
    """ValueError unless ``x`` is a batch of 2-D images (N, C, H, W) with sides ≥ ``min_side``:
    the metrics defined only for images refuse other shapes with this message, never a NaN."""
    shape = tuple(x.shape)
    if len(shape) != 4:
        kind = KINDS.get(len(shape), f"{len(shape)}-axis data")
        hint = "; for signals use signal_spectrum_error" if len(shape) == 3 else ""
        raise ValueError(f"{metric} is defined for 2-D images (N, C, H, W), got {kind} of shape {shape}{hint}")
    if min(shape[-2:]) < min_side:
        raise ValueError(f"{metric} needs images of at least {min_side}×{min_side} pixels, got {shape[-2]}×{shape[-1]}"
                         f"{'; a 1×L image is a signal: use signal_spectrum_error' if min(shape[-2:]) == 1 else ''}")


def _radius_bins(h: int, w: int) -> tuple[torch.Tensor, int]:
    """Integer radius of every FFT bin, in units of 1/min(H, W) cycles per pixel."""
    s = min(h, w)
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.fftfreq(w)[None, :]
    radius = torch.round(torch.sqrt(fy**2 + fx**2) * s).long()
    return radius, s // 2


@torch.no_grad()
def radial_spectrum(x, value_range=(-1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of an image batch.

    Each image and channel has its mean removed; |FFT|^2 / (H W) is averaged over images
    and channels, then over the FFT bins of each integer radius.  Corners beyond the
    Nyquist circle are dropped so that every bin is a full annulus.

    Args:
        x: images (N, C, H, W), float in ``value_range`` or uint8 (power is that of [0, 1]
            intensities, so sets given in different ranges compare correctly).
        value_range: range of float input.

    Returns:
        (freqs, power): numpy arrays of length min(H, W) // 2; freqs in cycles per pixel
        (1/S ... 0.5), the DC bin omitted because the mean is removed.

    Raises:
        ValueError: ``x`` is not (N, C, H, W) with both sides ≥ 2 (no frequency bin otherwise).
    """
    require_images(x, "the radial power spectrum", min_side=2)
    x = map_range(x, value_range).double()
    h, w = x.shape[-2:]
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    power = (torch.fft.fft2(x).abs() ** 2).mean(dim=(0, 1)) / (h * w)
    radius, r_max = _radius_bins(h, w)
    keep = radius <= r_max
    sums = torch.bincount(radius[keep], weights=power[keep], minlength=r_max + 1)
    counts = torch.bincount(radius[keep], minlength=r_max + 1)
    freqs = torch.arange(1, r_max + 1, dtype=torch.float64) / min(h, w)
    return freqs.numpy(), (sums[1:] / counts[1:]).numpy()


@torch.no_grad()
def signal_spectrum(x, value_range=(-1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Power spectrum of a batch of 1-D signals (N, C, L): each signal and channel has its mean
    removed, |rFFT|² / L is averaged over signals and channels.

    Returns:
        (freqs, power): numpy arrays of length L // 2, freqs in cycles per sample (1/L ... 0.5),
        the DC bin omitted.
    """
    if x.ndim != 3 or x.shape[-1] < 2:
        raise ValueError(f"signal_spectrum takes signals (N, C, L) with L ≥ 2, got shape {tuple(x.shape)}")
    x = map_range(x, value_range).double()
    n = x.shape[-1]
    x = x - x.mean(dim=-1, keepdim=True)
    power = (torch.fft.rfft(x).abs() ** 2).mean(dim=(0, 1)) / n
    return (torch.arange(1, n // 2 + 1, dtype=torch.float64) / n).numpy(), power[1:n // 2 + 1].numpy()


def _band_names(n_bands: int) -> list[str]:
    return ["low", "mid", "high"] if n_bands == 3 else [f"band{i}" for i in range(n_bands)]


def spectrum_error(samples, data, n_bands: int = 3, value_range=(-1.0, 1.0),
                   eps: float = 1e-20) -> dict:
    """Log power ratio log(P_samples / P_data) per frequency band.

    Args:
        samples, data: image batches (N, C, H, W) of the same H x W (counts may differ).
        n_bands: contiguous, equally wide bands over the radial frequency bins; with 3 they
            are named "low", "mid", "high", otherwise "band0" ... "band{n-1}".
        value_range: range of float inputs.
        eps: floor on the power, so that an all-constant set gives a finite log.

    Returns:
        dict with one float per band (mean log-ratio over its bins; < 0 means the samples
        lack energy there, e.g. too smooth), "mean_abs" (mean |log-ratio| over all bins, a
        single score, 0 for identical spectra), "freqs" and "log_ratio" (the full curves,
        numpy arrays).
    """
    return _band_errors(radial_spectrum, samples, data, n_bands, value_range, eps)


def signal_spectrum_error(samples, data, n_bands: int = 3, value_range=(-1.0, 1.0), eps: float = 1e-20) -> dict:
    """:func:`spectrum_error` for 1-D signals (N, C, L): the log power ratio of samples to data
    per frequency band of :func:`signal_spectrum`; the same keys."""
    return _band_errors(signal_spectrum, samples, data, n_bands, value_range, eps)


def _band_errors(spectrum, samples, data, n_bands, value_range, eps) -> dict:
    freqs, ps = spectrum(samples, value_range)
    freqs_d, pd = spectrum(data, value_range)
    if len(freqs) != len(freqs_d):
        raise ValueError(f"samples and data have different sizes: {tuple(samples.shape[2:])} vs {tuple(data.shape[2:])}")
    if len(freqs) < n_bands:  # an empty band would be a NaN
        raise ValueError(f"{len(freqs)} frequency bins cannot fill {n_bands} bands: the data are too small "
                         f"({tuple(samples.shape[2:])})")
    log_ratio = np.log(np.maximum(ps, eps)) - np.log(np.maximum(pd, eps))
    out = {name: float(band.mean()) for name, band in
           zip(_band_names(n_bands), np.array_split(log_ratio, n_bands))}
    out["mean_abs"] = float(np.abs(log_ratio).mean())
    out["freqs"], out["log_ratio"] = freqs, log_ratio
    return out


def spectrum_of(x, value_range=(-1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """The spectrum that fits ``x``'s shape: :func:`signal_spectrum` for signals (N, C, L),
    :func:`radial_spectrum` for images (N, C, H, W); ValueError for anything else."""
    return (signal_spectrum if x.ndim == 3 else radial_spectrum)(x, value_range)


def plot_spectra(images: dict, path, value_range=(-1.0, 1.0), title: str | None = None):
    """Write a PNG of log power against frequency, one curve per set.

    Args:
        images: name -> image batch (N, C, H, W) or signal batch (N, C, L).
        path: output file (PNG).
        value_range: range of float inputs (uint8 sets are read as [0, 255]).
        title: optional figure title.

    Returns:
        ``path``.
    """
    # The object API with the Agg canvas leaves pyplot's global state (and backend) alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, x in images.items():
        freqs, power = spectrum_of(x, value_range)
        ax.loglog(freqs, power, label=name)
    ax.set_xlabel("frequency (cycles / sample)" if next(iter(images.values())).ndim == 3 else
                  "frequency (cycles / pixel)")
    ax.set_ylabel("power")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format="png"), sync=False)
    return path
