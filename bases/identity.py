"""U = I: standard (pixel-space) diffusion, ρ = 0 everywhere."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import OrthoBasis


class IdentityBasis(OrthoBasis):
    """The pixel basis. With it every schedule reduces to its pure-noise (DDPM) form.

    Args:
        shape: (H, W) of the images.
    """

    name = "identity"

    def _forward(self, x: Tensor) -> Tensor:
        return x

    def _inverse(self, c: Tensor) -> Tensor:
        return c

    def _rates(self) -> Tensor:
        return torch.zeros(1, *self.shape, dtype=torch.float64)
