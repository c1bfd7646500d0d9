"""What the network predicts: its loss, and how its output becomes the data prediction x̂̄_0.

The engine and the samplers only ever see x̂̄_0 (coefficient space), so a new parameterization
is a new class here, not a branch in the engine.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor

from gendiff.registry import Registry
from gendiff.samplers.common import StepCoefficients, cast

PARAMETERIZATIONS = Registry("parameterization")


class Parameterization(ABC):
    """Subclass with a ``name``, a :meth:`loss` and a :meth:`denoise`."""

    name: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            PARAMETERIZATIONS.register(cls.name, cls)

    @abstractmethod
    def loss(self, diffusion, model, x0: Tensor, i: Tensor, generator=None) -> Tensor:
        """The training loss for data ``x0`` at steps ``i`` (LongTensor (B,), 1..N)."""

    @abstractmethod
    def denoise(self, out: Tensor, x: Tensor, i: int, coef: StepCoefficients) -> Tensor:
        """x̂̄_0 from the model output ``out`` and the state ``x`` (both coefficient space)."""

    def config(self) -> dict[str, Any]:
        return {"name": PARAMETERIZATIONS.name_of(type(self))}


class EpsPrediction(Parameterization):
    """The network predicts ε (pixel space) — the paper's choice, Eq. 16–18.

    Args:
        weighting: ``"eps"`` — ‖ε_θ − ε‖² (Eq. 18, the paper's default) — or ``"score"`` —
            ‖U diag(1/s_i) Uᵀ(ε_θ − ε)‖² (Eq. 17, the score-matching weighting).
    """

    name = "eps"

    def __init__(self, weighting: str = "eps"):
        if weighting not in ("eps", "score"):
            raise ValueError(f"unknown weighting {weighting!r}; valid: ['eps', 'score']")
        self.weighting = weighting

    def loss(self, diffusion, model, x0, i, generator=None):
        x_i, eps = diffusion.q_sample(x0, i, generator=generator)
        err = model(x_i, i) - eps
        if self.weighting == "score":
            err = diffusion.basis.forward(err) / diffusion.marginal(i)[1].to(x0.dtype)
        return err.pow(2).mean()

    def denoise(self, out, x, i, coef):
        """x̂̄_0 = (x̄ − s ε̂̄)/a, with 1/a floored to 0 where a/s < SNR_FLOOR (see ``common``)."""
        m, m_out = coef.memo(("eps", i, x.dtype), lambda: (
            cast(coef.inv_a(i), x), cast(-coef.inv_a(i) * coef.s(i), x)))
        return torch.addcmul(m * x, m_out, out)

    def config(self):
        return {"name": self.name, "weighting": self.weighting}


class ResidualMeanPrediction(Parameterization):
    """Inverse heat dissipation's parameterization (Rissanen et al. 2023, docs/math.md, Conventions).

    The network's output f is a residual: μ_θ = u_k + f_θ(u_k, k) predicts the less-blurred
    image F(t_{k−1}) u_0 = U a_{k−1} Uᵀ u_0, and the loss is ‖μ_θ − F(t_{k−1}) u_0‖².
    """

    name = "residual_mean"

    def loss(self, diffusion, model, x0, i, generator=None):
        x_i, _ = diffusion.q_sample(x0, i, generator=generator)
        a_prev = diffusion.marginal(i - 1)[0].to(x0.dtype)
        target = diffusion.basis.inverse(a_prev * diffusion.basis.forward(x0))
        return (x_i + model(x_i, i) - target).pow(2).mean()

    def denoise(self, out, x, i, coef):
        """x̂̄_0 = μ̄/a_{k−1}: μ̄ estimates a_{k−1} x̄_0 (1/a floored as in ``common``)."""
        (m,) = coef.memo(("residual_mean", i, x.dtype), lambda: (cast(coef.inv_a(i - 1), x),))
        return m * (x + out)


def build_parameterization(config: dict[str, Any] | None) -> Parameterization:
    """From ``parameterization.config()``; ``None`` gives the default ε-prediction."""
    return PARAMETERIZATIONS.build(config or {"name": "eps"})
