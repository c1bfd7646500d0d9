"""Orthonormal DCT-II per channel: the eigenbasis of the Laplacian with Neumann boundaries."""
from __future__ import annotations

from .base import basis_shape
from .separable import SeparableBasis, dct_frequencies, dct_matrix


class DCTBasis(SeparableBasis):
    """DCT-II (``scipy.fft.dctn(norm="ortho")`` on the last two axes), any H and W.

    Rates are the heat-equation eigenvalues ρ[k, l] = (πk/H)² + (πl/W)², the λ of inverse heat
    dissipation and Blurring Diffusion (docs/math.md, Conventions): exp(−ρ t) is the heat equation run for time t.

    Args:
        shape: (H, W).
    """

    name = "dct"

    def __init__(self, shape):
        super().__init__(shape, *_parts(shape))


def _parts(shape):
    h, w = basis_shape(shape)
    return dct_matrix(h), dct_matrix(w), dct_frequencies(h) ** 2, dct_frequencies(w) ** 2
