"""Sample-quality metrics.

- :func:`swd`: sliced Wasserstein distance per Laplacian-pyramid level (Karras et al. 2018),
  coarse and fine structure separately.
- :func:`radial_spectrum`, :func:`spectrum_error`, :func:`plot_spectra`: radially averaged
  power spectra and the per-band log power ratio of samples to data;
  :func:`signal_spectrum`, :func:`signal_spectrum_error`: the same for 1-D signals (N, C, L).
- :func:`fid`, :func:`kid`: FID / KID through clean-fid, from local weights only
  (:class:`MissingWeightsError` says what to fetch and where to put it).

Images are (N, C, H, W) tensors, float in ``value_range`` (default (-1, 1)) or uint8. The
image metrics (SWD, the radial spectrum, FID/KID) refuse other shapes with a message
(:func:`require_images`); bits/dim (gendiff.likelihood) takes every shape.
"""
from gendiff.metrics.fid import MissingWeightsError, fid, fid_from_features, kid, kid_from_features
from gendiff.metrics.spectrum import (plot_spectra, radial_spectrum, require_images, signal_spectrum,
                                      signal_spectrum_error, spectrum_error, spectrum_of)
from gendiff.metrics.swd import laplacian_pyramid, swd

__all__ = ["swd", "laplacian_pyramid", "radial_spectrum", "spectrum_error", "plot_spectra", "signal_spectrum",
           "signal_spectrum_error", "spectrum_of", "require_images",
           "fid", "kid", "fid_from_features", "kid_from_features", "MissingWeightsError"]
