"""What the network predicts: its loss, and the :class:`Prediction` samplers read.

The network's output reaches each sampler in its native form — ε̂̄ for ε-prediction, the
residual mean μ̄ = ū + f̄ for IHDM — and is converted only when a sampler asks for another form
(docs/math.md, "Other samplers"). So a sampler whose update is written in ε̂̄ (Eq. 20) never sees
a division by a_i, and a new parameterization is a new class here, not a branch in the engine.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor

from gendiff.registry import Registry
from gendiff.coefficients import Coefficients

PARAMETERIZATIONS = Registry("parameterization")


def _eps_to_x0(coef: Coefficients, i: int):
    inv_a = coef.inv_a(i)
    return inv_a, -inv_a * coef.s(i)


def _mean_to_x0(coef: Coefficients, i: int):
    return (coef.inv_a(i - 1),)


def _x0_to_eps(coef: Coefficients, i: int):
    s = coef.s(i)
    return 1 / s, -coef.a(i) / s


def _mean_to_eps(coef: Coefficients, i: int):
    s = coef.s(i)
    return 1 / s, -torch.exp(coef.log_a(i) - coef.log_a(i - 1)) / s


def _eps_shift(coef: Coefficients, i: int):
    return (-coef.a(i) / coef.s(i),)


def _mean_to_signal(coef: Coefficients, i: int, u: int):
    return (torch.exp(coef.log_a(u) - coef.log_a(i - 1)),)


def _a(coef: Coefficients, u: int):
    return (coef.a(u),)


def _posterior_from_eps(coef: Coefficients, t: int, u: int):
    # 1/r = a_u/a_t as a difference of logs: one step's r never underflows, only a_t can
    inv_r = torch.exp(coef.log_a(u) - coef.log_a(t))
    return inv_r, -inv_r * coef.transition(t, u)[1] / coef.s(t)


def _posterior_from_signal(coef: Coefficients, t: int, u: int):
    r, var = coef.transition(t, u)
    s_t2 = coef.s2(t)
    return r * coef.s2(u) / s_t2, var / s_t2


class Prediction:
    """The network's prediction at step i ≥ 1 in coefficient space, with lazy conversions.

    Each sampler reads the form its update is written in: :attr:`eps` (ε̂̄), :attr:`x0` (x̂̄_0)
    or :meth:`signal` (the prediction of a_u x̄_0). The native form is returned as is; the others
    are formed from it with float64 multipliers, and only x̂̄_0 divides by a (floored where
    a/s < SNR_FLOOR, see :meth:`Coefficients.inv_a`).

    Args:
        form: ``"eps"`` (ε̂̄), ``"mean"`` (μ̄, IHDM's prediction of a_{i−1} x̄_0) or ``"x0"``.
        value: the prediction in that form.
        x: the state x̄_i; ``i``: its step; ``coef``: the call's :class:`Coefficients`.
        clip: ``clip(x̂̄_0) -> x̂̄_0`` (the pixel-range clamp); every form read afterwards is the
            one consistent with the clipped x̂̄_0 (ε̂̄ − (a/s)Δ, μ̄ + a Δ, Δ the clamp's change).
    """

    FORMS = ("eps", "mean", "x0")

    def __init__(self, form: str, value: Tensor, x: Tensor, i: int, coef: Coefficients,
                 clip: Callable[[Tensor], Tensor] | None = None):
        if form not in self.FORMS:
            raise ValueError(f"unknown prediction form {form!r}; valid: {list(self.FORMS)}")
        self.form, self.value, self.x, self.i, self.coef, self.clip = form, value, x, int(i), coef, clip
        self._x0: Tensor | None = None
        self._shift: Tensor | None = None

    @property
    def x0(self) -> Tensor:
        """x̂̄_0 (clipped when a clip was given)."""
        if self._x0 is None:
            if self.form == "x0":
                raw = self.value
            elif self.form == "eps":
                m, m_eps = self.coef.cached(_eps_to_x0, self.coef, self.i)
                raw = torch.addcmul(m * self.x, m_eps, self.value)
            else:
                (m,) = self.coef.cached(_mean_to_x0, self.coef, self.i)
                raw = m * self.value
            self._x0 = raw if self.clip is None else self.clip(raw)
            self._shift = None if self.clip is None else self._x0 - raw
        return self._x0

    @property
    def eps(self) -> Tensor:
        """ε̂̄; for ε-prediction the network's own output, never formed through x̂̄_0."""
        if self.form == "x0":
            m, m_x0 = self.coef.cached(_x0_to_eps, self.coef, self.i)
            return torch.addcmul(m * self.x, m_x0, self.x0)
        if self.form == "eps":
            eps = self.value
        else:
            m, m_mean = self.coef.cached(_mean_to_eps, self.coef, self.i)
            eps = torch.addcmul(m * self.x, m_mean, self.value)
        return eps if self.clip is None else self._shifted(eps, _eps_shift, self.i)

    def signal(self, u: int) -> Tensor:
        """The prediction of a_u x̄_0; for the residual mean at u = i − 1 it is μ̄ itself."""
        if self.form != "mean":
            (a_u,) = self.coef.cached(_a, self.coef, u)
            return a_u * self.x0
        (m,) = self.coef.cached(_mean_to_signal, self.coef, self.i, u)
        mean = self.value if u == self.i - 1 else m * self.value
        return mean if self.clip is None else self._shifted(mean, _a, u)

    def posterior_mean(self, u: int) -> Tensor:
        """The mean of q(x̄_u | x̄_i, x̂̄_0) with this prediction (Ho et al. 2020, Eq. 7), u < i.

        (a_u σ²/s_i²) x̂̄_0 + (r s_u²/s_i²) x̄_i, with (r, σ²) the transition i ← u, formed from
        the native form without dividing by a: from ε̂̄ it is (x̄_i − (σ²/s_i) ε̂̄)/r, from the
        prediction of a_u x̄_0 (:meth:`signal`) (σ²/s_i²) signal + (r s_u²/s_i²) x̄_i. The
        reverse model of ``gendiff.likelihood.nll`` (docs/math.md, "Likelihood").
        """
        if self.form == "eps":
            m, m_eps = self.coef.cached(_posterior_from_eps, self.coef, self.i, u)
            return torch.addcmul(m * self.x, m_eps, self.eps)
        m, m_signal = self.coef.cached(_posterior_from_signal, self.coef, self.i, u)
        return torch.addcmul(m * self.x, m_signal, self.signal(u))

    def _shifted(self, v: Tensor, fn, *args) -> Tensor:
        self.x0  # forms the clamp's change Δ
        (m,) = self.coef.cached(fn, self.coef, *args)
        return torch.addcmul(v, m, self._shift)


class Parameterization(ABC):
    """Subclass with a ``name``, a :meth:`loss` and a :meth:`predict`."""

    name: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            PARAMETERIZATIONS.register(cls.name, cls)

    @abstractmethod
    def loss(self, diffusion, model, x0: Tensor, i: Tensor, generator=None) -> Tensor:
        """The training loss for data ``x0`` at steps ``i`` (LongTensor (B,), 1..N)."""

    @abstractmethod
    def predict(self, out: Tensor, x: Tensor, i: int, coef: Coefficients) -> Prediction:
        """The :class:`Prediction` for the model output ``out`` at the state ``x`` (both coefficient space)."""

    def config(self) -> dict[str, Any]:
        return {"name": PARAMETERIZATIONS.name_of(type(self))}


# Set once the base exists: a component by import path must be a Parameterization, so
# `--parameterization collections:OrderedDict` is refused instead of training with ε.
PARAMETERIZATIONS.base = Parameterization


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
            err = diffusion.to_basis(err) / diffusion.marginal(i)[1].to(x0.dtype)
        return err.pow(2).mean()

    def predict(self, out, x, i, coef):
        return Prediction("eps", out, x, i, coef)

    def config(self):
        return {"name": self.name, "weighting": self.weighting}


class ResidualMeanPrediction(Parameterization):
    """Inverse heat dissipation's parameterization (Rissanen et al. 2023, docs/math.md, Conventions).

    The network's output f is a residual: μ_θ = u_k + f_θ(u_k, k) predicts the less-blurred
    image F(t_{k−1}) u_0 = U a_{k−1} Uᵀ u_0, and the loss is ‖μ_θ − F(t_{k−1}) u_0‖².

    Args:
        reduction: ``"mean"`` over every pixel, or ``"sum"`` over the pixels of each image and
            mean over the batch — the reference code's, which sets the scale its gradient
            clip of 1 acts on (docs/family.md).
    """

    name = "residual_mean"

    def __init__(self, reduction: str = "mean"):
        if reduction not in ("mean", "sum"):
            raise ValueError(f"unknown reduction {reduction!r}; valid: ['mean', 'sum']")
        self.reduction = reduction

    def loss(self, diffusion, model, x0, i, generator=None):
        x_i, _ = diffusion.q_sample(x0, i, generator=generator)
        a_prev = diffusion.marginal(i - 1)[0].to(x0.dtype)
        target = diffusion.from_basis(a_prev * diffusion.to_basis(x0))
        err = (x_i + model(x_i, i) - target).pow(2)
        return err.mean() if self.reduction == "mean" else err.flatten(1).sum(1).mean()

    def predict(self, out, x, i, coef):
        return Prediction("mean", x + out, x, i, coef)

    def config(self):
        return {"name": self.name, "reduction": self.reduction}


def build_parameterization(config: dict[str, Any] | None) -> Parameterization:
    """From ``parameterization.config()``; ``None`` gives the default ε-prediction."""
    return PARAMETERIZATIONS.build(config or {"name": "eps"})
