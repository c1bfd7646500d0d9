"""Orthonormal bases U: the pluggable coordinate systems diffusion runs in (docs/math.md, Notation and Conventions)."""
from .base import BASES, OrthoBasis, build_basis
from .blur import Blur1D, Blur3D, GaussianBlurBasis
from .colour import ColourBasis
from .dct import DCT1D, DCT3D, DCTBasis
from .fourier import Fourier1D, Fourier3D, FourierBasis
from .identity import Identity1D, Identity3D, IdentityBasis
from .separable import SeparableBasis
from .wavelet import WaveletBasis

__all__ = ["BASES", "OrthoBasis", "SeparableBasis", "build_basis", "IdentityBasis", "DCTBasis",
           "FourierBasis", "GaussianBlurBasis", "WaveletBasis", "ColourBasis", "DCT1D", "DCT3D",
           "Fourier1D", "Fourier3D", "Blur1D", "Blur3D", "Identity1D", "Identity3D"]
