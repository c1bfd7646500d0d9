"""Orthonormal 2-D discrete wavelet transform (Mallat layout) from PyWavelets filters."""
from __future__ import annotations

import numpy as np
import pywt
import torch
from torch import Tensor

from .base import OrthoBasis


def analysis_matrix(n: int, wavelet: str) -> np.ndarray:
    """One level of ``pywt.dwt(mode="periodization")`` on length n as an n×n matrix [cA; cD]."""
    eye = np.eye(n)
    return np.stack([np.concatenate(pywt.dwt(eye[j], wavelet, mode="periodization"))
                     for j in range(n)], axis=1)


def _axis_level(n: int, levels: int) -> np.ndarray:
    """Per index along one axis: its level (1 = finest, levels+1 = approximation)."""
    level = np.full(n, levels + 1)
    for j in range(levels, 0, -1):
        level[n >> j: n >> (j - 1)] = j
    return level


class WaveletBasis(OrthoBasis):
    """``pywt.wavedec2(mode="periodization")`` as an orthonormal basis, coefficients laid out as
    ``pywt.coeffs_to_array`` does (approximation top-left, then (H, V, D) details per level).

    Rates: finer scales decay faster. A detail coefficient at level j (1 = finest) gets, per
    axis, the centre of its band's angular frequency — 3π/2^{j+1} along an axis where it is a
    detail, π/2^{j+1} along an axis where it is an approximation — and ρ = ω_H² + ω_W², the same
    heat-equation convention as :class:`DCTBasis`. The coarsest approximation block gets ρ = 0:
    it carries the image mean and behaves like DC under blur.

    Args:
        shape: (H, W); both must be divisible by 2**levels (periodization of an odd length adds
            a coefficient, which is not orthonormal).
        wavelet: an orthogonal PyWavelets wavelet ("haar", "db2", "sym4", "coif1", …);
            biorthogonal ones are rejected.
        levels: decomposition depth; default: as deep as the sizes allow (down to 1 pixel or an
            odd side), at most ``pywt.dwt_max_level`` for the filter length.
    """

    name = "wavelet"

    def __init__(self, shape, wavelet: str = "haar", levels: int | None = None):
        super().__init__(shape)
        w = pywt.Wavelet(wavelet)
        if not w.orthogonal:
            raise ValueError(f"wavelet {wavelet!r} is not orthogonal; use haar, dbN, symN or coifN")
        h, wd = self.shape
        if min(_twos(h), _twos(wd)) < 1:
            raise ValueError(f"WaveletBasis needs even H and W (one level halves both), got {self.shape}")
        if levels is None:
            levels = min(_twos(h), _twos(wd), max(pywt.dwt_max_level(min(h, wd), w.dec_len), 1))
        if levels < 1 or h % (1 << levels) or wd % (1 << levels):
            raise ValueError(f"WaveletBasis with levels={levels} needs H and W divisible by "
                             f"{1 << levels}, got {self.shape}")
        self.wavelet, self.levels = wavelet, int(levels)
        # Per level j: the row and the column analysis matrices of the top-left (H/2^j, W/2^j) block.
        self._level_mats = tuple(torch.as_tensor(analysis_matrix(n >> j, wavelet))
                                 for j in range(levels) for n in (h, wd))
        self._rho = torch.as_tensor(_wavelet_rates(h, wd, levels))[None]

    def constants(self) -> tuple[Tensor, ...]:
        return self._level_mats

    def _forward(self, x: Tensor, *mats: Tensor) -> Tensor:
        c = x.clone()
        for ah, aw in zip(mats[0::2], mats[1::2]):
            _apply_block(c, ah, aw)
        return c

    def _inverse(self, c: Tensor, *mats: Tensor) -> Tensor:
        x = c.clone()
        for ah, aw in reversed(list(zip(mats[0::2], mats[1::2]))):
            _apply_block(x, ah.mT, aw.mT)
        return x

    def _rates(self) -> Tensor:
        return self._rho

    def config_args(self):
        return {**super().config_args(), "wavelet": self.wavelet, "levels": self.levels}


def _apply_block(c: Tensor, mh: Tensor, mw: Tensor) -> None:
    """Apply mh on rows and mw on columns of the top-left block of ``c``, in place.

    Writing the block into a clone is 1.4–1.7× faster than assembling it with torch.cat
    (benchmarks/bases.py), and autograd handles it since the constant matrices need no grad.
    """
    h, w = mh.shape[0], mw.shape[0]
    c[..., :h, :w] = mh @ c[..., :h, :w] @ mw.mT


def _twos(n: int) -> int:
    k = 0
    while n % 2 == 0 and n > 1:
        n //= 2
        k += 1
    return k


def _wavelet_rates(h: int, w: int, levels: int) -> np.ndarray:
    lh, lw = _axis_level(h, levels), _axis_level(w, levels)
    # A coefficient belongs to the finer of its two per-axis levels (Mallat layout).
    j = np.minimum.outer(lh, lw)
    detail_h = lh[:, None] == j
    detail_w = lw[None, :] == j
    band = np.pi / 2.0 ** (j + 1)
    om_h = np.where(detail_h, 3 * band, band)
    om_w = np.where(detail_w, 3 * band, band)
    rho = om_h ** 2 + om_w ** 2
    rho[j == levels + 1] = 0.0
    return rho
