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

__all__ = ["radial_spectrum", "spectrum_error", "plot_spectra"]


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
    """
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
    freqs, ps = radial_spectrum(samples, value_range)
    freqs_d, pd = radial_spectrum(data, value_range)
    if len(freqs) != len(freqs_d):
        raise ValueError("samples and data have different image sizes")
    log_ratio = np.log(np.maximum(ps, eps)) - np.log(np.maximum(pd, eps))
    out = {name: float(band.mean()) for name, band in
           zip(_band_names(n_bands), np.array_split(log_ratio, n_bands))}
    out["mean_abs"] = float(np.abs(log_ratio).mean())
    out["freqs"], out["log_ratio"] = freqs, log_ratio
    return out


def plot_spectra(images: dict, path, value_range=(-1.0, 1.0), title: str | None = None):
    """Write a PNG of log power against frequency, one curve per image set.

    Args:
        images: name -> image batch (N, C, H, W).
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
        freqs, power = radial_spectrum(x, value_range)
        ax.loglog(freqs, power, label=name)
    ax.set_xlabel("frequency (cycles / pixel)")
    ax.set_ylabel("power")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format="png"), sync=False)
    return path
