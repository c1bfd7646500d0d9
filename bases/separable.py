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
    """``Uᵀx = U_1ᵀ ⊗ … ⊗ U_nᵀ x`` over the basis's n = 1, 2 or 3 axes, with 1-D orthonormal U_k and
    additive rates ρ = ρ_1[k_1] + … + ρ_n[k_n].

    Additive rates are what a separable blur gives: D = d_1 ⊗ … ⊗ d_n, so −log D is a sum. In 2-D
    the transform is the two matrix products U_Hᵀ x U_W, as before n axes were allowed.

    Args:
        shape: the sizes (n_1, …, n_n) (``axes`` of them).
        mats: one float64 array per axis (n_k × n_k) whose columns are orthonormal basis vectors.
        rhos: one 1-D rate array per axis (length n_k), ≥ 0.
    """

    def __init__(self, shape, mats, rhos):
        super().__init__(shape)
        mats, rhos = list(mats), list(rhos)
        want = [((n, n), (n,)) for n in self.shape]
        got = [(np.shape(u), np.shape(r)) for u, r in zip(mats, rhos)]
        if len(mats) != len(self.shape) or len(rhos) != len(self.shape) or got != want:
            raise ValueError(f"{type(self).__name__}{self.shape} needs one n×n matrix and one (n,) rate "
                             f"array per axis, {want}; got {[np.shape(u) for u in mats]} and "
                             f"{[np.shape(r) for r in rhos]}")
        self.mats = tuple(torch.as_tensor(u, dtype=torch.float64) for u in mats)
        rho = np.zeros(())
        for r in rhos:
            rho = np.add.outer(rho, np.asarray(r, np.float64))
        self._rho = torch.as_tensor(np.maximum(rho, 0.0))[None]

    @property
    def u_h(self) -> Tensor:
        """The matrix of the second-to-last axis (2-D bases: H)."""
        return self.mats[-2]

    @property
    def u_w(self) -> Tensor:
        """The matrix of the last axis (W, or L of a 1-D basis)."""
        return self.mats[-1]

    def constants(self) -> tuple[Tensor, ...]:
        return self.mats

    def _forward(self, x: Tensor, *mats: Tensor) -> Tensor:
        return along_axes(x, [u.mT for u in mats])

    def _inverse(self, c: Tensor, *mats: Tensor) -> Tensor:
        return along_axes(c, list(mats))

    def _rates(self) -> Tensor:
        return self._rho


def along_axes(x: Tensor, ops: list[Tensor]) -> Tensor:
    """Apply ops[k] (n_k × n_k, acting on column vectors) along the k-th of the last len(ops) axes.

    The last axis is one right product (x @ opᵀ); every other axis a left product on the view
    (…, n_k, n_{k+1}·…·n_last), so 2-D is exactly op_H @ x @ op_Wᵀ and nothing is transposed in memory.
    """
    x = x @ ops[-1].mT
    n = len(ops)
    for k in range(n - 2, -1, -1):
        shape = x.shape
        tail = shape[len(shape) - n + k + 1:].numel()
        x = (ops[k] @ x.reshape(*shape[:len(shape) - n + k + 1], tail)).reshape(shape)
    return x
