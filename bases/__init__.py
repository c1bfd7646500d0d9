"""Orthonormal bases U: the pluggable coordinate systems diffusion runs in (docs/math.md, Notation and Conventions)."""
from .base import BASES, OrthoBasis, build_basis
from .blur import GaussianBlurBasis
from .dct import DCTBasis
from .fourier import FourierBasis
from .identity import IdentityBasis
from .separable import SeparableBasis
from .wavelet import WaveletBasis

__all__ = ["BASES", "OrthoBasis", "SeparableBasis", "build_basis", "IdentityBasis", "DCTBasis",
           "FourierBasis", "GaussianBlurBasis", "WaveletBasis"]
