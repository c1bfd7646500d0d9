"""A basis that mixes channels: an orthonormal colour rotation times a per-channel spatial basis.

U = M ⊗ U_s on the event (C, *spatial): x̄ = U_sᵀ applied to every row of Mᵀx, where M is an
orthogonal C×C matrix whose columns are the new colour axes (luma first). The rates are per
channel, ρ[k] = speed_k · ρ_s: with speeds (1, 2, 2) the two chroma axes blur twice as fast as
luma (docs/math.md, "Bases over any event shape").
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from .base import OrthoBasis, build_basis

# BT.601 YCbCr rows (Y, Cb, Cr) for RGB; orthonormalised in that order below.
YCBCR = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
ORTHO_ATOL = 1e-10


def opponent_matrix() -> np.ndarray:
    """Columns: luma (1, 1, 1)/√3, red–green (1, −1, 0)/√2, yellow–blue (1, 1, −2)/√6."""
    return np.stack([np.array([1.0, 1, 1]) / np.sqrt(3), np.array([1.0, -1, 0]) / np.sqrt(2),
                     np.array([1.0, 1, -2]) / np.sqrt(6)], axis=1)


def ycbcr_matrix() -> np.ndarray:
    """The YCbCr axes made orthonormal by Gram–Schmidt in the order Y, Cb, Cr (columns), signs kept."""
    q, r = np.linalg.qr(np.array(YCBCR).T)
    return q * np.sign(np.diag(r))


ROTATIONS = {"opponent": opponent_matrix, "ycbcr": ycbcr_matrix}


def rotation_matrix(rotation: str | Sequence[Sequence[float]], channels: int | None) -> np.ndarray:
    """The C×C orthogonal matrix named (``"opponent"``, ``"ycbcr"`` for C = 3, ``"identity"``) or given."""
    if isinstance(rotation, str):
        if rotation == "identity":
            return np.eye(3 if channels is None else int(channels))
        if rotation not in ROTATIONS:
            raise ValueError(f"unknown colour rotation {rotation!r}; valid: {['identity', *ROTATIONS]} "
                             "or a C×C orthogonal matrix")
        if channels not in (None, 3):
            raise ValueError(f"rotation {rotation!r} is for 3 channels, got channels={channels}")
        return ROTATIONS[rotation]()
    m = np.asarray(rotation, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or (channels is not None and m.shape[0] != channels):
        raise ValueError(f"rotation must be a C×C matrix{'' if channels is None else f' with C={channels}'}, "
                         f"got shape {m.shape}")
    err = float(np.abs(m.T @ m - np.eye(len(m))).max())
    if not err <= ORTHO_ATOL:
        raise ValueError(f"rotation must be orthogonal (MᵀM = I), it is off by {err:.3g}")
    return m


class ColourBasis(OrthoBasis):
    """U = M ⊗ U_s over (C, *spatial), with per-channel speeds: ρ[k] = speeds[k] · ρ_s.

    Args:
        spatial: the per-channel basis, a config (``{"name": "dct", "shape": [16, 16]}``), a
            built :class:`OrthoBasis` acting on 1, 2 or 3 axes, or a registered name (``"dct"``,
            ``"blur1d"``) built at ``shape``.
        rotation: ``"opponent"`` (luma, red–green, yellow–blue), ``"ycbcr"`` (BT.601 made
            orthonormal), ``"identity"`` (no mixing: per-channel speeds only) or a C×C orthogonal
            matrix (rows: input channels, columns: the new axes).
        channels: C (default: the matrix's, 3 for the named rotations).
        speeds: one factor ≥ 0 per colour axis (default all 1); (1, 2, 2) blurs chroma twice as fast.
        shape: the spatial sides, needed with a ``spatial`` name (a command line's ``--basis colour``
            passes the data's); with a config or a basis it must be theirs.
    """

    name = "colour"
    axes = None
    joint_channels = True

    def __init__(self, spatial: dict[str, Any] | OrthoBasis | str, rotation: str | Sequence = "opponent",
                 channels: int | None = None, speeds: Sequence[float] | None = None,
                 shape: Sequence[int] | None = None):
        if isinstance(spatial, str):
            if shape is None:
                raise ValueError(f"ColourBasis(spatial={spatial!r}) needs shape=, the spatial sides")
            spatial = {"name": spatial, "shape": list(shape)}
        self.spatial = spatial if isinstance(spatial, OrthoBasis) else build_basis(spatial)
        if shape is not None and tuple(shape) != self.spatial.shape:
            raise ValueError(f"ColourBasis: shape {tuple(shape)} is not the spatial basis's {self.spatial.shape}")
        if self.spatial.joint_channels:
            raise ValueError(f"ColourBasis needs a per-channel spatial basis, got {type(self.spatial).__name__}, "
                             "which mixes channels itself")
        self.rotation = rotation if isinstance(rotation, str) else [list(map(float, r)) for r in rotation]
        self.matrix = torch.as_tensor(rotation_matrix(rotation, channels))
        C = len(self.matrix)
        speeds = [1.0] * C if speeds is None else [float(s) for s in speeds]
        if len(speeds) != C or not all(np.isfinite(s) and s >= 0 for s in speeds):
            raise ValueError(f"speeds must be {C} finite numbers ≥ 0 (one per colour axis), got {speeds}")
        self.speeds = speeds
        super().__init__((C, *self.spatial.shape))

    def constants(self) -> tuple[Tensor]:
        return (self.matrix,)

    def _mix(self, x: Tensor, m: Tensor) -> Tensor:
        """m applied to the channel axis: (m @ x viewed (…, C, prod(spatial)))."""
        return (m @ x.reshape(*x.shape[:-len(self.spatial.shape)], -1)).reshape(x.shape)

    def _forward(self, x: Tensor, m: Tensor) -> Tensor:
        return self.spatial.forward(self._mix(x, m.mT))

    def _inverse(self, c: Tensor, m: Tensor) -> Tensor:
        return self._mix(self.spatial.inverse(c), m)

    def _rates(self) -> Tensor:
        speeds = torch.tensor(self.speeds, dtype=torch.float64).reshape(-1, *[1] * len(self.spatial.shape))
        return speeds * self.spatial.rates[0]

    def config_args(self) -> dict[str, Any]:
        return {"spatial": self.spatial.config(), "rotation": self.rotation, "channels": len(self.matrix),
                "speeds": list(self.speeds)}
