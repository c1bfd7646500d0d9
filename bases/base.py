"""The basis interface: an orthonormal U acting on each channel's H×W plane (DESIGN §2).

A basis is a small object with three things: ``forward(x) = Uᵀx``, ``inverse(c) = Uc`` and
``rates`` ρ ≥ 0, the per-coordinate decay rate ("one unit of blur multiplies coordinate k by
exp(−ρ[k])"). Everything else in gendiff (schedules, engine, samplers) sees only these.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor

from gendiff.registry import Registry


class OrthoBasis(ABC):
    """An orthonormal basis of R^{H×W}, applied to every channel of a (B, C, H, W) batch.

    Subclass it, set a class attribute ``name`` to make it constructible from a config, and
    implement ``forward``, ``inverse``, ``rates`` and ``config_args``. Nothing else in the
    library needs to change.

    Args:
        shape: ``(H, W)``, the image plane this basis acts on.
    """

    name: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            BASES.register(cls.name, cls)

    def __init__(self, shape: tuple[int, int] | int):
        if isinstance(shape, int):
            shape = (shape, shape)
        shape = tuple(int(n) for n in shape)
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"basis shape must be (H, W) with positive sides, got {shape}")
        self.shape: tuple[int, int] = shape

    @abstractmethod
    def forward(self, x: Tensor) -> Tensor:
        """Coefficients ``x̄ = Uᵀx`` of a (B, C, H, W) batch, same shape, dtype and device."""

    @abstractmethod
    def inverse(self, c: Tensor) -> Tensor:
        """Pixels ``x = Uc`` from coefficients, same shape, dtype and device."""

    @property
    @abstractmethod
    def rates(self) -> Tensor:
        """ρ ≥ 0 as a float64 tensor of shape (1, H, W) (broadcastable to (C, H, W))."""

    def config_args(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this basis (recorded in checkpoints)."""
        return {"shape": list(self.shape)}

    def config(self) -> dict[str, Any]:
        """``{"name": ..., **args}``: enough to rebuild the basis with :func:`build_basis`.

        ``name`` is the registered name of a built-in basis, else the class's import path
        ``"package.module:Class"``, so a fresh process can rebuild a custom basis.
        """
        return {"name": BASES.name_of(type(self)), **self.config_args()}

    def check_input(self, x: Tensor) -> None:
        """Raise a ValueError naming the expected shape when ``x`` does not fit this basis."""
        if x.dim() < 2 or tuple(x.shape[-2:]) != self.shape:
            raise ValueError(f"{type(self).__name__} expects images of shape (..., {self.shape[0]}, "
                             f"{self.shape[1]}), got a tensor of shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__} needs a floating-point tensor, got {x.dtype}")

    def check_orthonormal(self, probes: int = 4, atol: float = 1e-8, seed: int = 0) -> None:
        """Check ``UᵀU = I`` and ``UUᵀ = I`` on random float64 probes; raise ValueError if not.

        Cheap (a few transforms), so the engine runs it on every custom basis it is given.
        """
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(probes, 1, *self.shape, generator=g, dtype=torch.float64)
        y = torch.randn(probes, 1, *self.shape, generator=g, dtype=torch.float64)
        fx, fy = self.forward(x), self.forward(y)
        checks = {
            "inverse(forward(x)) == x": (self.inverse(fx) - x).abs().max(),
            "forward(inverse(x)) == x": (self.forward(self.inverse(x)) - x).abs().max(),
            "<Uᵀx, Uᵀy> == <x, y>": ((fx * fy).sum((-1, -2)) - (x * y).sum((-1, -2))).abs().max()
            / x[0].numel(),
        }
        bad = {k: float(v) for k, v in checks.items() if not v <= atol * max(1.0, x[0].numel() ** 0.5)}
        if bad:
            raise ValueError(f"{type(self).__name__} is not orthonormal: " + ", ".join(
                f"{k} fails by {v:.3g}" for k, v in bad.items()) + " (pass check_basis=False to skip)")
        rho = self.rates
        if tuple(rho.shape[-2:]) != self.shape or not bool((rho >= 0).all()):
            raise ValueError(f"{type(self).__name__}.rates must be ≥ 0 with trailing shape "
                             f"{self.shape}, got shape {tuple(rho.shape)}, min {float(rho.min()):.3g}")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config_args().items())
        return f"{type(self).__name__}({args})"


BASES = Registry("basis", base=OrthoBasis)


def build_basis(config: dict[str, Any]) -> OrthoBasis:
    """Rebuild a basis from ``basis.config()``, e.g. ``{"name": "blur", "shape": [64, 64]}`` or
    ``{"name": "mylab.bases:PCABasis", "shape": [16, 16]}``."""
    return BASES.build(config)
