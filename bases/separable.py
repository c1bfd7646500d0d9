"""Separable bases U = U_H ⊗ U_W and the 1-D orthonormal matrices they are built from.

Every separable basis here is applied as two matrix products. Measured against torch.fft and
torch-dct in ``benchmarks/bases.py`` (recorded in docs/benchmarks.md): at 64² and 128² the
matrix products are the fastest correct option on the CPU, and at 256² they stay within a small
factor, while one code path serves DCT, Fourier and all three blur boundaries in any dtype.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .base import OrthoBasis


def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II as an n×n matrix whose *columns* are the basis vectors (U, not Uᵀ).

    ``U.T @ v`` equals ``scipy.fft.dct(v, norm="ortho")``.
    """
    j = np.arange(n)
    k = np.arange(n)[:, None]
    c = np.sqrt(2.0 / n) * np.cos(np.pi * k * (2 * j + 1) / (2 * n))
    c[0] /= np.sqrt(2.0)
    return c.T.copy()


def dct_frequencies(n: int) -> np.ndarray:
    """Angular frequency πk/n of DCT-II coordinate k (Neumann eigenfunctions)."""
    return np.pi * np.arange(n) / n


def fourier_matrix(n: int) -> np.ndarray:
    """A real orthonormal Fourier basis, columns ordered DC, cos 1, sin 1, cos 2, sin 2, …, Nyquist.

    The Nyquist column (−1)^j/√n exists only for even n; for odd n every frequency 1..(n−1)/2
    has its cosine and sine pair. Both cases are exactly orthonormal.
    """
    j = np.arange(n)
    cols = [np.full(n, 1.0 / np.sqrt(n))]
    for k in range(1, (n - 1) // 2 + 1):
        w = 2 * np.pi * k * j / n
        cols += [np.sqrt(2.0 / n) * np.cos(w), np.sqrt(2.0 / n) * np.sin(w)]
    if n % 2 == 0:
        cols.append((-1.0) ** j / np.sqrt(n))
    return np.stack(cols, axis=1)


def fourier_frequencies(n: int) -> np.ndarray:
    """Angular frequency 2πk/n of each column of :func:`fourier_matrix` (π at Nyquist)."""
    k = np.concatenate([[0], np.repeat(np.arange(1, (n - 1) // 2 + 1), 2)])
    if n % 2 == 0:
        k = np.append(k, n // 2)
    return 2 * np.pi * k / n


class SeparableBasis(OrthoBasis):
    """``Uᵀx = U_Hᵀ x U_W`` with 1-D orthonormal U_H, U_W and additive rates ρ = ρ_H[k] + ρ_W[l].

    Additive rates are what a separable blur gives: D = outer(d_H, d_W) so −log D is a sum.

    Args:
        shape: (H, W).
        u_h, u_w: float64 arrays (H×H, W×W) whose columns are orthonormal basis vectors.
        rho_h, rho_w: 1-D rates (length H, W), ≥ 0.
    """

    def __init__(self, shape, u_h: np.ndarray, u_w: np.ndarray, rho_h: np.ndarray, rho_w: np.ndarray):
        super().__init__(shape)
        h, w = self.shape
        if np.shape(u_h) != (h, h) or np.shape(u_w) != (w, w) or np.shape(rho_h) != (h,) or np.shape(rho_w) != (w,):
            raise ValueError(f"SeparableBasis{self.shape} needs u_h {h}×{h}, u_w {w}×{w}, rho_h ({h},), "
                             f"rho_w ({w},); got {np.shape(u_h)}, {np.shape(u_w)}, {np.shape(rho_h)}, "
                             f"{np.shape(rho_w)}")
        self.u_h = torch.as_tensor(u_h, dtype=torch.float64)
        self.u_w = torch.as_tensor(u_w, dtype=torch.float64)
        rho = np.add.outer(np.asarray(rho_h, np.float64), np.asarray(rho_w, np.float64))
        self._rho = torch.as_tensor(np.maximum(rho, 0.0))[None]

    def constants(self) -> tuple[Tensor, Tensor]:
        return self.u_h, self.u_w

    def _forward(self, x: Tensor, uh: Tensor, uw: Tensor) -> Tensor:
        return uh.mT @ (x @ uw)

    def _inverse(self, c: Tensor, uh: Tensor, uw: Tensor) -> Tensor:
        return uh @ (c @ uw.mT)

    def _rates(self) -> Tensor:
        return self._rho

