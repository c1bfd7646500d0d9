"""U = I: standard (pixel-space) diffusion, ρ = 0 everywhere."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import OrthoBasis


class IdentityBasis(OrthoBasis):
    """The pixel basis. With it every schedule reduces to its pure-noise (DDPM) form.

    Args:
        shape: (H, W) of the images (``(L,)``, ``(D, H, W)`` for Identity1D, Identity3D).
    """

    name = "identity"

    def _forward(self, x: Tensor) -> Tensor:
        return x

    def _inverse(self, c: Tensor) -> Tensor:
        return c

    def _rates(self) -> Tensor:
        return torch.zeros(self.coef_shape, dtype=torch.float64)


class Identity1D(IdentityBasis):
    """:class:`IdentityBasis` of signals (C, L)."""

    name, axes = "identity1d", 1


class Identity3D(IdentityBasis):
    """:class:`IdentityBasis` of volumes (C, D, H, W)."""

    name, axes = "identity3d", 3
