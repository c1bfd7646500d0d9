"""Orthonormal DCT-II per channel: the eigenbasis of the Laplacian with Neumann boundaries."""
from __future__ import annotations

from .base import basis_shape
from .separable import SeparableBasis, dct_frequencies, dct_matrix


class DCTBasis(SeparableBasis):
    """DCT-II (``scipy.fft.dctn(norm="ortho")`` on the last two axes), any H and W.

    Rates are the heat-equation eigenvalues ρ[k, l] = (πk/H)² + (πl/W)², the λ of inverse heat
    dissipation and Blurring Diffusion (docs/math.md, Conventions): exp(−ρ t) is the heat equation
    run for time t. :class:`DCT1D` and :class:`DCT3D` are the same over 1 and 3 axes (ρ the sum of
    the per-axis (πk/n)²).

    Args:
        shape: (H, W) (``(L,)`` for DCT1D, ``(D, H, W)`` for DCT3D), or one side for all axes.
    """

    name = "dct"

    def __init__(self, shape):
        super().__init__(shape, *_parts(shape, self.axes))


class DCT1D(DCTBasis):
    """:class:`DCTBasis` of signals (C, L): ``DCT1D((64,))`` or ``DCT1D(64)``."""

    name, axes = "dct1d", 1


class DCT3D(DCTBasis):
    """:class:`DCTBasis` of volumes (C, D, H, W): ``DCT3D((8, 8, 8))`` or ``DCT3D(8)``."""

    name, axes = "dct3d", 3


def _parts(shape, axes):
    sides = basis_shape(shape, axes)
    return [dct_matrix(n) for n in sides], [dct_frequencies(n) ** 2 for n in sides]
