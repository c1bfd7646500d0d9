"""A real orthonormal Fourier basis: the eigenbasis of every circular (periodic) convolution."""
from __future__ import annotations

from .base import basis_shape
from .separable import SeparableBasis, fourier_frequencies, fourier_matrix


class FourierBasis(SeparableBasis):
    """Real Fourier basis per axis (DC, cos/sin pairs, Nyquist for even sizes), any H and W.

    Rates ρ[k, l] = ω_H[k]² + ω_W[l]² with ω = 2πk/n, the continuous heat-equation rate at the
    discrete frequency (same convention as :class:`DCTBasis`): exactly 0 at DC and π² per axis
    at Nyquist, for even and odd sizes.

    Args:
        shape: (H, W).
    """

    name = "fourier"

    def __init__(self, shape):
        h, w = basis_shape(shape)
        super().__init__(shape, fourier_matrix(h), fourier_matrix(w),
                         fourier_frequencies(h) ** 2, fourier_frequencies(w) ** 2)
