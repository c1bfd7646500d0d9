"""The basis interface: an orthonormal U acting on each channel's H×W plane (docs/math.md, Notation).

A basis is a small object with three things: ``forward(x) = Uᵀx``, ``inverse(c) = Uc`` and
``rates`` ρ ≥ 0, the per-coordinate decay rate ("one unit of blur multiplies coordinate k by
exp(−ρ[k])"). Everything else in gendiff (schedules, engine, samplers) sees only these.

The contract lives here, once: the public ``forward``/``inverse`` check the input and handle
its dtype, ``rates`` is checked to be (1, H, W), finite and ≥ 0; a subclass implements only
the transform (``_forward``/``_inverse``) and the rates (``_rates``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor

from gendiff.precision import full_precision
from gendiff.registry import Registry

WIDE = (torch.float32, torch.float64)


def basis_shape(shape: tuple[int, int] | int) -> tuple[int, int]:
    """``(H, W)`` from ``(H, W)`` or a side ``n`` (square), or a ValueError naming the value."""
    if isinstance(shape, int):
        shape = (shape, shape)
    try:
        shape = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise ValueError(f"basis shape must be (H, W) or an int, got {shape!r}") from None
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"basis shape must be (H, W) with positive sides, got {shape}")
    return shape


class OrthoBasis(ABC):
    """An orthonormal basis of R^{H×W}, applied to every channel of a (B, C, H, W) batch.

    Subclass it and implement

    - ``_forward(x, *constants)``: Uᵀx on a (..., H, W) float32/float64 tensor;
    - ``_inverse(c, *constants)``: Uc, likewise;
    - ``_rates()``: ρ as a tensor of shape (1, H, W);
    - optionally ``constants()``: float64 tensors the transform uses (matrices); they reach
      the hooks cast to the input's dtype and device, cast once and cached;
    - ``config_args()`` when the constructor takes more than ``shape``.

    Set a class attribute ``name`` to register the basis under that name; without one, a
    config records the class's import path. Nothing else in the library needs to change.

    Args:
        shape: ``(H, W)`` or ``n`` for n×n, the image plane this basis acts on.
    """

    name: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        public = [m for m in ("forward", "inverse", "rates") if m in cls.__dict__]
        if public:
            raise TypeError(f"{cls.__name__} defines {', '.join(public)}; implement _forward, _inverse "
                            "and _rates instead (the public methods check the input and handle "
                            "its dtype for every basis)")
        if cls.__dict__.get("name"):
            BASES.register(cls.name, cls)

    def __init__(self, shape: tuple[int, int] | int):
        self.shape: tuple[int, int] = basis_shape(shape)

    # ---- what a subclass implements ---------------------------------------------------------

    @abstractmethod
    def _forward(self, x: Tensor, *constants: Tensor) -> Tensor:
        """Uᵀx for a checked (..., H, W) tensor in float32 or float64."""

    @abstractmethod
    def _inverse(self, c: Tensor, *constants: Tensor) -> Tensor:
        """Uc for a checked (..., H, W) tensor in float32 or float64."""

    @abstractmethod
    def _rates(self) -> Tensor:
        """ρ ≥ 0 of shape (1, H, W); called once, checked by :attr:`rates`."""

    def constants(self) -> tuple[Tensor, ...]:
        """Float64 tensors the transform needs, passed to the hooks in the input's dtype."""
        return ()

    def config_args(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this basis (recorded in checkpoints)."""
        return {"shape": list(self.shape)}

    # ---- the contract -----------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        """Coefficients ``x̄ = Uᵀx`` of a (..., H, W) batch, same shape, dtype and device."""
        return self._apply(self._forward, x)

    def inverse(self, c: Tensor) -> Tensor:
        """Pixels ``x = Uc`` from coefficients, same shape, dtype and device."""
        return self._apply(self._inverse, c)

    @property
    def rates(self) -> Tensor:
        """ρ ≥ 0, float64, shape (1, H, W): one rate per coordinate, shared by every channel."""
        rho = self.__dict__.get("_checked_rates")
        if rho is None:
            rho = self.__dict__["_checked_rates"] = self._check_rates()
        return rho

    def _apply(self, hook: Callable[..., Tensor], x: Tensor) -> Tensor:
        self.check_input(x)
        if x.dtype in WIDE and not torch.is_autocast_enabled(x.device.type):
            return hook(x, *self._constants_like(x))
        # Half precision (or autocast, which runs the matmuls in it) costs ~1e-2 in a round trip
        # (gendiff.precision): the transform runs in float32 and only the result is cast back.
        wide = x if x.dtype in WIDE else x.float()
        with full_precision(x.device):
            return hook(wide, *self._constants_like(wide)).to(x.dtype)

    def _constants_like(self, x: Tensor) -> tuple[Tensor, ...]:
        # One cache per (dtype, device): the float64 masters stay exact, the copies are reused.
        cache = self.__dict__.setdefault("_constant_cache", {})
        key = (x.dtype, x.device)
        if key not in cache:
            cache[key] = tuple(c.to(device=x.device, dtype=x.dtype) for c in self.constants())
        return cache[key]

    def check_input(self, x: Tensor) -> None:
        """Raise a ValueError/TypeError naming the expected shape or dtype when ``x`` does not fit."""
        if not isinstance(x, Tensor):
            raise TypeError(f"{type(self).__name__} expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() < 2 or tuple(x.shape[-2:]) != self.shape:
            raise ValueError(f"{type(self).__name__} expects images of shape (..., {self.shape[0]}, "
                             f"{self.shape[1]}), got a tensor of shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__} needs a floating-point tensor, got {x.dtype}")

    def _check_rates(self) -> Tensor:
        hook = self._rates
        if not callable(hook):
            raise TypeError(f"{type(self).__name__}._rates must be a method returning ρ, got a "
                            f"{type(hook).__name__}; store the tensor under another attribute name")
        rho = hook()
        want = (1, *self.shape)
        if not isinstance(rho, Tensor) or not rho.is_floating_point():
            raise TypeError(f"{type(self).__name__}.rates must be a floating-point tensor of shape "
                            f"{want}, got {getattr(rho, 'dtype', type(rho).__name__)}")
        if tuple(rho.shape) != want:
            hint = "; add the leading axis: rates[None]" if tuple(rho.shape) == self.shape else ""
            raise ValueError(f"{type(self).__name__}.rates must have shape (1, H, W) = {want} (one "
                             "rate per coordinate, shared by every channel; other shapes broadcast "
                             f"against the batch and give wrong marginals), got {tuple(rho.shape)}{hint}")
        rho = rho.detach().to(torch.float64)
        if not bool(torch.isfinite(rho).all()) or not bool((rho >= 0).all()):
            raise ValueError(f"{type(self).__name__}.rates must be finite and ≥ 0, got min "
                             f"{float(rho.min()):.3g}, max {float(rho.max()):.3g}")
        return rho

    def check_orthonormal(self, probes: int = 4, atol: float = 1e-8, seed: int = 0) -> None:
        """Check ``UᵀU = I`` and ``UUᵀ = I`` on random float64 probes, and the rates; raise
        ValueError if not.

        Cheap (a few transforms), so the engine runs it on every basis it is given.
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
        _ = self.rates  # raises for rates of the wrong shape or sign

    def config(self) -> dict[str, Any]:
        """``{"name": ..., **args}``: enough to rebuild the basis with :func:`build_basis`.

        ``name`` is the registered name of a built-in basis, else the class's import path
        ``"package.module:Class"``, so a fresh process can rebuild a custom basis.
        """
        return {"name": BASES.name_of(type(self)), **self.config_args()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config_args().items())
        return f"{type(self).__name__}({args})"


BASES = Registry("basis", base=OrthoBasis)


def build_basis(config: dict[str, Any]) -> OrthoBasis:
    """Rebuild a basis from ``basis.config()``, e.g. ``{"name": "blur", "shape": [64, 64]}`` or
    ``{"name": "mylab.bases:PCABasis", "shape": [16, 16]}``."""
    return BASES.build(config)
