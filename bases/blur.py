"""The eigenbasis of a separable Gaussian blur, with three boundary conditions (docs/math.md, Conventions)."""
from __future__ import annotations

import numpy as np

from .base import basis_shape
from .separable import SeparableBasis, dct_frequencies, dct_matrix, fourier_frequencies, fourier_matrix

BOUNDARIES = ("zero", "circular", "reflect")


def gaussian_kernel(n: int, sigma: float) -> np.ndarray:
    """The official 1-D kernel: length 2n−1, centred, exp(−m²/2σ²), normalised to sum 1."""
    m = np.arange(-(n - 1), n, dtype=np.float64)
    g = np.exp(-0.5 * (m / sigma) ** 2)
    return g / g.sum()


def toeplitz_blur(n: int, sigma: float) -> np.ndarray:
    """The official n×n blur matrix: Toeplitz with zero padding, T[i, j] = g[i − j]."""
    g = gaussian_kernel(n, sigma)
    idx = np.arange(n)
    return g[idx[:, None] - idx[None, :] + n - 1]


def _zero_eig(n: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    # T is symmetric positive definite for the kernels of interest, so its SVD (the official
    # code's) and its eigendecomposition coincide; eigh is exact to float64 and cheaper.
    d, v = np.linalg.eigh(toeplitz_blur(n, sigma))
    order = np.argsort(-d, kind="stable")
    d, v = d[order], v[:, order]
    if d.min() <= 0:
        raise ValueError(f"zero-boundary blur with sigma={sigma} at n={n} is not invertible "
                         f"(smallest eigenvalue {d.min():.3g}); use a smaller sigma")
    # Fix each vector's sign so the basis is the same on every machine.
    v = v * np.sign(v[np.argmax(np.abs(v), axis=0), np.arange(n)])
    return v, d


def _eig_1d(n: int, sigma: float, boundary: str) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvectors (columns) and eigenvalues D of the 1-D blur operator on n samples."""
    if boundary == "zero":
        return _zero_eig(n, sigma)
    g = gaussian_kernel(n, sigma)
    m = np.arange(-(n - 1), n)
    if boundary == "circular":
        # Circulant blur: eigenvalue at frequency ω is the kernel's cosine transform Σ g[m] cos(ωm).
        u, w = fourier_matrix(n), fourier_frequencies(n)
    else:
        # Half-sample-symmetric ("reflect") extension is 2n-periodic and even, so DCT-II
        # vectors are exact eigenvectors for any kernel no longer than 2n−1.
        u, w = dct_matrix(n), dct_frequencies(n)
    d = np.cos(np.outer(w, m)) @ g
    if d.min() <= 0:
        raise ValueError(f"{boundary} blur with sigma={sigma} on n={n} pixels is not invertible "
                         f"(eigenvalue {d.min():.3g} ≤ 0: the kernel is too wide for the image); "
                         "use a smaller sigma")
    return u, d


class GaussianBlurBasis(SeparableBasis):
    """Eigenbasis U of the separable Gaussian blur W = U diag(D) Uᵀ, rates ρ = −log D.

    The same operator acts on every channel (the official code's RGB eigenvalue layout is a
    defect we do not copy, docs/math.md, Errata). One unit of "blur time" multiplies coordinate k
    by D[k]. :class:`Blur1D` and :class:`Blur3D` blur 1 and 3 axes with the same 1-D kernel on
    each (D = d_1 ⊗ … ⊗ d_n).

    Args:
        shape: (H, W) of the images (``(L,)``, ``(D, H, W)`` for the 1-D and 3-D forms).
        sigma: std of the Gaussian kernel in pixels (0.4 in the paper).
        boundary: ``"zero"`` — the official implementation's operator (eigenvectors of the
            zero-padded Toeplitz matrix, coordinates ordered from low to high frequency);
            ``"circular"`` — periodic convolution, the paper's text (real Fourier basis);
            ``"reflect"`` — half-sample symmetric boundary (DCT-II basis).
    """

    name = "blur"

    def __init__(self, shape, sigma: float = 0.4, boundary: str = "zero"):
        if boundary not in BOUNDARIES:
            raise ValueError(f"unknown boundary {boundary!r}; valid: {list(BOUNDARIES)}")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        eig = [_eig_1d(n, sigma, boundary) for n in basis_shape(shape, self.axes)]
        self.sigma, self.boundary = float(sigma), boundary
        self.eigenvalues_1d = tuple(d for _, d in eig)
        super().__init__(shape, [u for u, _ in eig], [-np.log(d) for _, d in eig])

    def config_args(self):
        return {**super().config_args(), "sigma": self.sigma, "boundary": self.boundary}


class Blur1D(GaussianBlurBasis):
    """:class:`GaussianBlurBasis` of signals (C, L)."""

    name, axes = "blur1d", 1


class Blur3D(GaussianBlurBasis):
    """:class:`GaussianBlurBasis` of volumes (C, D, H, W)."""

    name, axes = "blur3d", 3
