"""The blur speed f(i): how many units of blur step i applies (docs/math.md, Conventions)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import numpy as np

from gendiff.registry import Registry

# A speed form: f(i, N, f_N, f_1) on the float64 array i = 1..N.
SpeedFn = Callable[[np.ndarray, int, float, float], np.ndarray]

SPEEDS = Registry("blur speed")
"""Blur speed forms by name. A custom form registers with a decorator and is saved by name::

    @SPEEDS.register("cosine")
    def cosine_speed(i, N, f_N, f_1):
        return f_1 + (f_N - f_1) * (1 - np.cos(np.pi * i / N)) / 2

    VPBlurSchedule(f_type="cosine", f_N=0.5)   # config records "package.module:cosine_speed"
"""


def _linear(i, N, f_N, f_1):
    return (f_N - f_1) * (i - 1) / (N - 1) + f_1


def _triangular(i, N, f_N, f_1):
    # The official code: linear for i < N/2, then the linear ramp read backwards from N − i.
    return np.where(i < N / 2, _linear(i, N, f_N, f_1), _linear(N - i, N, f_N, f_1))


SPEEDS.register("linear", _linear)
SPEEDS.register("log", lambda i, N, f_N, f_1: f_1 + (f_N - f_1) * np.log(i) / np.log(N))
SPEEDS.register("quadratic", lambda i, N, f_N, f_1: (f_N - f_1) * (i ** 2 - 1) / (N ** 2 - 1) + f_1)
SPEEDS.register("cubic", lambda i, N, f_N, f_1: (f_N - f_1) * (i / N) ** 3 + f_1)
SPEEDS.register("quartic", lambda i, N, f_N, f_1: (f_N - f_1) * (i / N) ** 4 + f_1)
SPEEDS.register("triangular", _triangular)
SPEEDS.register("none", lambda i, N, f_N, f_1: np.zeros_like(i))
FORMS = SPEEDS  # the former name


@dataclass(frozen=True)
class SpeedSchedule:
    """f(i) for i = 1..N with f_N = (σ_max/σ)², f_1 = (σ_min/σ)² (the paper's f_type and f(N)).

    The effective blur std after step i is σ·√F(i), F(i) = Σ_{j≤i} f(j).

    Args:
        kind: a name in :data:`SPEEDS` (``linear, log, quadratic, cubic, quartic, triangular,
            none`` or a registered custom form), an import path ``"package.module:fn"``, or a
            form ``f(i, N, f_N, f_1) -> array`` itself (i = 1..N, float64); a config records
            it with :meth:`kind_name`. ``triangular`` is the official
            code's: the linear ramp for i < N/2, then the same ramp read at N − i (so it peaks
            near f_N/2 and ends slightly below f_1; kept so that row reproduces).
        f_N: f at the last step (0.140625 for the paper's σ_max = 0.15 with σ = 0.4), except
            for ``triangular`` (see above).
        f_1: f at the first step (0 in the paper).
    """

    kind: Union[str, SpeedFn] = "linear"
    f_N: float = 0.0
    f_1: float = 0.0

    def __post_init__(self):
        if not callable(self.kind):
            SPEEDS.resolve(self.kind)  # an unknown name fails here, listing the valid ones

    def form(self) -> SpeedFn:
        """The function f(i, N, f_N, f_1) this speed evaluates."""
        return self.kind if callable(self.kind) else SPEEDS.resolve(self.kind)

    def kind_name(self) -> str:
        """What a config records: a built-in's name, else the form's import path (TypeError
        for a lambda or local function: register it with ``@SPEEDS.register("name")`` in an
        importable module)."""
        return SPEEDS.name_of(self.form())

    @classmethod
    def from_sigmas(cls, kind, sigma_max: float, sigma_min: float = 0.0, sigma: float = 0.4):
        """Build from the official code's σ_max, σ_min and kernel σ."""
        return cls(kind, (sigma_max / sigma) ** 2, (sigma_min / sigma) ** 2)

    def values(self, N: int) -> np.ndarray:
        """f(i) for i = 0..N as float64 (f(0) = 0: step 0 is the data)."""
        if N < 2 and self.kind in ("linear", "log", "quadratic", "triangular"):
            raise ValueError(f"the {self.kind!r} blur speed interpolates f_1 → f_N and needs N ≥ 2, got N={N}")
        i = np.arange(1, N + 1, dtype=np.float64)
        f = self.form()(i, N, self.f_N, self.f_1)
        return np.concatenate([[0.0], np.broadcast_to(np.asarray(f, np.float64), i.shape)])

    def cumulative(self, N: int) -> np.ndarray:
        """F(i) = Σ_{j=1}^{i} f(j), i = 0..N."""
        return np.cumsum(self.values(N))
