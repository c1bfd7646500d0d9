"""gendiff: diffusion in a rotated coordinate system (docs/math.md).

    from gendiff import Diffusion, GaussianBlurBasis
    from gendiff.schedules import VPBlurSchedule
"""
from gendiff.bases import (BASES, ColourBasis, DCTBasis, FourierBasis, GaussianBlurBasis, IdentityBasis,
                           OrthoBasis, WaveletBasis, build_basis)

__all__ = ["BASES", "OrthoBasis", "IdentityBasis", "DCTBasis", "FourierBasis", "GaussianBlurBasis",
           "WaveletBasis", "ColourBasis", "build_basis"]
__version__ = "0.1.0"
from gendiff.registry import Registry  # noqa: E402
from gendiff.diffusion import Diffusion  # noqa: E402
from gendiff.parameterization import EpsPrediction, ResidualMeanPrediction  # noqa: E402
from gendiff.priors import BlurredDataPrior, gaussian_prior  # noqa: E402

__all__ += ["Registry", "Diffusion", "EpsPrediction", "ResidualMeanPrediction", "BlurredDataPrior", "gaussian_prior"]
