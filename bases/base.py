"""The basis interface: an orthonormal U acting on the trailing axes of the data (docs/math.md, Notation).

A basis is a small object with three things: ``forward(x) = Uᵀx``, ``inverse(c) = Uc`` and
``rates`` ρ ≥ 0, the per-coordinate decay rate ("one unit of blur multiplies coordinate k by
exp(−ρ[k])"). Everything else in gendiff (schedules, engine, samplers) sees only these.

**Event shape.** Data are ``(B, *event)`` with ``event = (C, *spatial)``: ``(C, L)`` signals,
``(C, H, W)`` images (H ≠ W allowed), ``(C, D, H, W)`` volumes. A basis declares the trailing
axes it acts on:

- ``shape``: the sizes of those axes — ``spatial`` for a per-channel basis (the default: the
  same U on every channel, any C), ``(C, *spatial)`` for a basis with ``joint_channels = True``
  (one U on the whole event, mixing channels, e.g. :class:`~gendiff.bases.ColourBasis`);
- ``axes`` (class attribute): how many entries ``shape`` has (2 by default: H, W; ``None``: any
  of 1..4), so ``DCTBasis`` stays the 2-D basis and ``DCT1D``/``DCT3D`` are its 1-D/3-D forms;
- ``coef_shape``: ``(1, *spatial)`` for a per-channel basis, ``shape`` for a joint one. ρ has
  exactly this shape (per-channel rates need a joint basis), so it broadcasts against a batch
  ``(B, C, *spatial)`` and never against the batch axis; the orthonormality probe runs on it.

The contract lives here, once: the public ``forward``/``inverse`` check the input and handle
its dtype, ``rates`` is checked to be ``coef_shape``, finite and ≥ 0; a subclass implements only
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
# The usual letters of 1, 2 and 3 trailing axes, for messages: (L), (H, W), (D, H, W).
AXIS_NAMES = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}
MAX_AXES = 4  # C, D, H, W


def axis_names(n: int, joint_channels: bool = False) -> tuple[str, ...]:
    """Letters for ``n`` trailing axes (``("C", "H", "W")`` for a joint 2-D basis)."""
    spatial = n - 1 if joint_channels else n
    names = AXIS_NAMES.get(spatial, tuple(f"N{k}" for k in range(spatial)))
    return ("C", *names) if joint_channels else names


def _symbolic(names: tuple[str, ...]) -> str:
    return f"({names[0]},)" if len(names) == 1 else f"({', '.join(names)})"


def basis_shape(shape, axes: int | None = 2) -> tuple[int, ...]:
    """The axes' sizes from a tuple, or from a side ``n`` (the same on every axis; 2 axes when
    ``axes`` is None), or a ValueError naming the value.

    ``axes``: the number of sizes required (2: ``(H, W)``), or None for any of 1..4.
    """
    want = _symbolic(AXIS_NAMES[axes]) if axes in AXIS_NAMES else f"{axes} sizes" if axes else "1 to 4 sizes"
    if isinstance(shape, int):
        shape = (shape,) * (axes or 2)
    try:
        shape = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise ValueError(f"basis shape must be {want} or an int, got {shape!r}") from None
    if (len(shape) != axes if axes else not 1 <= len(shape) <= MAX_AXES) or min(shape) < 1:
        raise ValueError(f"basis shape must be {want} with positive sides, got {shape}")
    return shape


class OrthoBasis(ABC):
    """An orthonormal basis of the trailing axes ``shape`` of a (B, *event) batch (module docstring).

    Subclass it and implement

    - ``_forward(x, *constants)``: Uᵀx on a (..., *shape) float32/float64 tensor;
    - ``_inverse(c, *constants)``: Uc, likewise;
    - ``_rates()``: ρ as a tensor of shape :attr:`coef_shape` ((1, H, W) for a 2-D basis);
    - optionally ``constants()``: float64 tensors the transform uses (matrices); they reach
      the hooks cast to the input's dtype and device, cast once and cached;
    - ``config_args()`` when the constructor takes more than ``shape``.

    Class attributes: ``axes`` — how many trailing axes the basis acts on (2: (H, W), the
    default; 1: (L,); 3: (D, H, W); None: any of 1..4); ``joint_channels`` — True when the first
    of them is the channel axis (U mixes channels, ρ may differ per channel). Set ``name`` to
    register the basis under that name; without one, a config records the class's import path.
    Nothing else in the library needs to change.

    Args:
        shape: the sizes of the ``axes`` trailing axes, e.g. ``(H, W)``, or ``n`` for n on every axis.
    """

    name: ClassVar[str | None] = None
    axes: ClassVar[int | None] = 2
    joint_channels: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        public = [m for m in ("forward", "inverse", "rates") if m in cls.__dict__]
        if public:
            raise TypeError(f"{cls.__name__} defines {', '.join(public)}; implement _forward, _inverse "
                            "and _rates instead (the public methods check the input and handle "
                            "its dtype for every basis)")
        if cls.__dict__.get("name"):
            BASES.register(cls.name, cls)

    def __init__(self, shape):
        self.shape: tuple[int, ...] = basis_shape(shape, self.axes)
        if self.joint_channels and len(self.shape) < 2:
            raise ValueError(f"{type(self).__name__} mixes channels: its shape is (C, *spatial), got {self.shape}")

    # ---- the event it acts on ---------------------------------------------------------------

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The spatial axes: ``shape`` without the channel axis of a joint basis."""
        return self.shape[1:] if self.joint_channels else self.shape

    @property
    def coef_shape(self) -> tuple[int, ...]:
        """The shape of ρ and of the orthonormality probe: (1, *spatial) per channel, else ``shape``."""
        return self.shape if self.joint_channels else (1, *self.shape)

    def event_shape(self, channels: int | None = None) -> tuple[int, ...]:
        """The per-example data shape (C, *spatial) this basis fits; ``channels`` defaults to the
        basis's own C (joint) or 1, and must equal it for a joint basis."""
        if self.joint_channels:
            if channels not in (None, self.shape[0]):
                raise ValueError(f"{type(self).__name__} mixes {self.shape[0]} channels, got channels={channels}")
            return self.shape
        return (1 if channels is None else int(channels), *self.shape)

    # ---- what a subclass implements ---------------------------------------------------------

    @abstractmethod
    def _forward(self, x: Tensor, *constants: Tensor) -> Tensor:
        """Uᵀx for a checked (..., *shape) tensor in float32 or float64."""

    @abstractmethod
    def _inverse(self, c: Tensor, *constants: Tensor) -> Tensor:
        """Uc for a checked (..., *shape) tensor in float32 or float64."""

    @abstractmethod
    def _rates(self) -> Tensor:
        """ρ ≥ 0 of shape :attr:`coef_shape`; called once, checked by :attr:`rates`."""

    def constants(self) -> tuple[Tensor, ...]:
        """Float64 tensors the transform needs, passed to the hooks in the input's dtype."""
        return ()

    def config_args(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this basis (recorded in checkpoints)."""
        return {"shape": list(self.shape)}

    # ---- the contract -----------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        """Coefficients ``x̄ = Uᵀx`` of a (..., *shape) batch, same shape, dtype and device."""
        return self._apply(self._forward, x)

    def inverse(self, c: Tensor) -> Tensor:
        """Pixels ``x = Uc`` from coefficients, same shape, dtype and device."""
        return self._apply(self._inverse, c)

    @property
    def rates(self) -> Tensor:
        """ρ ≥ 0, float64, shape :attr:`coef_shape`: one rate per coordinate ((1, H, W), shared by
        every channel, for a per-channel 2-D basis)."""
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
        n = len(self.shape)
        if x.dim() < n or tuple(x.shape[-n:]) != self.shape:
            what = "images" if len(self.spatial_shape) == 2 else "data"
            raise ValueError(f"{type(self).__name__} expects {what} of shape (..., "
                             f"{', '.join(map(str, self.shape))}), got a tensor of shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__} needs a floating-point tensor, got {x.dtype}")

    def _check_rates(self) -> Tensor:
        hook = self._rates
        if not callable(hook):
            raise TypeError(f"{type(self).__name__}._rates must be a method returning ρ, got a "
                            f"{type(hook).__name__}; store the tensor under another attribute name")
        rho = hook()
        want = self.coef_shape
        if not isinstance(rho, Tensor) or not rho.is_floating_point():
            raise TypeError(f"{type(self).__name__}.rates must be a floating-point tensor of shape "
                            f"{want}, got {getattr(rho, 'dtype', type(rho).__name__)}")
        if tuple(rho.shape) != want:
            names = ("1", *axis_names(len(self.shape))) if not self.joint_channels else \
                axis_names(len(self.shape), True)
            why = ("one rate per coordinate, shared by every channel" if not self.joint_channels else
                   "one rate per coordinate of the whole event")
            hint = "; add the leading axis: rates[None]" if tuple(rho.shape) == self.shape else ""
            raise ValueError(f"{type(self).__name__}.rates must have shape {_symbolic(names)} = {want} ({why}; "
                             "other shapes broadcast against the batch and give wrong marginals; "
                             f"per-channel rates need joint_channels = True), got {tuple(rho.shape)}{hint}")
        rho = rho.detach().to(torch.float64)
        if not bool(torch.isfinite(rho).all()) or not bool((rho >= 0).all()):
            raise ValueError(f"{type(self).__name__}.rates must be finite and ≥ 0, got min "
                             f"{float(rho.min()):.3g}, max {float(rho.max()):.3g}")
        return rho

    def check_orthonormal(self, probes: int = 4, atol: float = 1e-8, seed: int = 0) -> None:
        """Check ``UᵀU = I`` and ``UUᵀ = I`` on random float64 probes of the whole event
        (:attr:`coef_shape`: every channel a joint basis mixes), and the rates; raise ValueError
        if not.

        Cheap (a few transforms), so the engine runs it on every basis it is given.
        """
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(probes, *self.coef_shape, generator=g, dtype=torch.float64)
        y = torch.randn(probes, *self.coef_shape, generator=g, dtype=torch.float64)
        fx, fy = self.forward(x), self.forward(y)
        dot = lambda p, q: (p * q).flatten(1).sum(1)  # noqa: E731
        checks = {
            "inverse(forward(x)) == x": (self.inverse(fx) - x).abs().max(),
            "forward(inverse(x)) == x": (self.forward(self.inverse(x)) - x).abs().max(),
            "<Uᵀx, Uᵀy> == <x, y>": (dot(fx, fy) - dot(x, y)).abs().max() / x[0].numel(),
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
