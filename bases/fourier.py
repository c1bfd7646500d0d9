"""A real orthonormal Fourier basis: the eigenbasis of every circular (periodic) convolution."""
from __future__ import annotations

from .base import basis_shape
from .separable import SeparableBasis, fourier_frequencies, fourier_matrix


class FourierBasis(SeparableBasis):
    """Real Fourier basis per axis (DC, cos/sin pairs, Nyquist for even sizes), any H and W.

    Rates ρ[k, l] = ω_H[k]² + ω_W[l]² with ω = 2πk/n, the continuous heat-equation rate at the
    discrete frequency (same convention as :class:`DCTBasis`): exactly 0 at DC and π² per axis
    at Nyquist, for even and odd sizes. :class:`Fourier1D` and :class:`Fourier3D` are the same
    over 1 and 3 axes.

    Args:
        shape: (H, W) (``(L,)``, ``(D, H, W)`` for the 1-D and 3-D forms), or one side for all axes.
    """

    name = "fourier"

    def __init__(self, shape):
        sides = basis_shape(shape, self.axes)
        super().__init__(shape, [fourier_matrix(n) for n in sides], [fourier_frequencies(n) ** 2 for n in sides])


class Fourier1D(FourierBasis):
    """:class:`FourierBasis` of signals (C, L)."""

    name, axes = "fourier1d", 1


class Fourier3D(FourierBasis):
    """:class:`FourierBasis` of volumes (C, D, H, W)."""

    name, axes = "fourier3d", 3
