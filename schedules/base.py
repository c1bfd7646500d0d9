"""The schedule interface: per-coordinate marginal coefficients (a_i, s_i) from the rates ρ.

A schedule is two primitive functions of the step i and the basis rates ρ — log a_i(ρ) and
s_i(ρ)² — from which the engine derives everything else (the transition r_i, σ_i², the
log-SNR, the prior). It stores O(N) scalars, never an (N+1)×d table (docs/math.md, Notation).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
import numbers
from typing import Any, ClassVar

import torch
from torch import Tensor

from gendiff.registry import Registry


class ScheduleError(ValueError):
    """A schedule that does not define a valid forward process (σ_i² < 0 somewhere)."""


def broadcast_step(i: Tensor, rates: Tensor) -> Tensor:
    """View a (B,) step tensor as (B, 1, …, 1) against rates of any coefficient shape ((1, H, W), (C, L), …)."""
    i = torch.as_tensor(i)
    return i.reshape(-1, *([1] * rates.dim()))


def distinct_rates(rates: Tensor) -> Tensor:
    """Every distinct ρ once, shape (1, 1, R): enough to validate a schedule that is a function
    of ρ alone (not of a coordinate's position)."""
    return torch.unique(rates).reshape(1, 1, -1)


class Schedule(ABC):
    """Per-coordinate Gaussian marginals q(x̄_i | x̄_0) = N(a_i x̄_0, s_i²), i = 0..N (Eq. 7).

    Subclasses implement :meth:`log_a` and :meth:`s2` (float64 in, float64 out) and set
    ``name`` to be constructible from a config. Conventions: a_0 = 1 and s_0 = 0 (x_0 is data).

    Args:
        N: number of steps.
    """

    name: ClassVar[str | None] = None
    # The prior ``Diffusion.sample`` starts from when none is passed (a name in gendiff.priors).
    prior: ClassVar[str] = "gaussian"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            SCHEDULES.register(cls.name, cls)

    def __init__(self, N: int):
        if isinstance(N, bool) or not isinstance(N, numbers.Integral) or N < 1:
            raise ValueError(f"N must be an integer ≥ 1, got {N!r}")
        self.N = int(N)

    @abstractmethod
    def log_a(self, i: Tensor, rates: Tensor) -> Tensor:
        """log a_i(ρ), shape (B, *rates.shape) for i of shape (B,); float64."""

    @abstractmethod
    def s2(self, i: Tensor, rates: Tensor) -> Tensor:
        """s_i(ρ)², same shape as :meth:`log_a`; float64."""

    def marginal(self, i: Tensor, rates: Tensor) -> tuple[Tensor, Tensor]:
        """(a_i, s_i) (Eq. 7–8)."""
        return self.log_a(i, rates).exp(), self.s2(i, rates).clamp_min(0).sqrt()

    def transition(self, i: Tensor, rates: Tensor) -> tuple[Tensor, Tensor]:
        """(r_i, σ_i²) of q(x̄_i | x̄_{i−1}) = N(r_i x̄_{i−1}, σ_i²), for i ≥ 1.

        r_i = a_i / a_{i−1} is taken as a difference of logs so that it stays finite where a_i
        itself underflows; σ_i² = s_i² − r_i² s_{i−1}² (docs/math.md, Notation).
        """
        i = torch.as_tensor(i)
        log_r = self.log_a(i, rates) - self.log_a(i - 1, rates)
        return log_r.exp(), self.s2(i, rates) - torch.exp(2 * log_r) * self.s2(i - 1, rates)

    def validate(self, rates: Tensor, chunk: int = 64, rtol: float = 1e-9) -> None:
        """Raise ScheduleError naming the first step where σ_i² < 0 or a value is not finite.

        ``rates``: the basis's rates tensor (``Diffusion`` passes ``basis.rates``).

        Runs over all steps and the rates of :meth:`validation_rates`, in chunks of steps, so
        memory stays O(chunk × d).
        """
        rates = self.validation_rates(rates.to(torch.float64))
        for start in range(1, self.N + 1, chunk):
            i = torch.arange(start, min(start + chunk, self.N + 1))
            r, var = self.transition(i, rates)
            s2 = self.s2(i, rates)
            bad = ~torch.isfinite(var) | ~torch.isfinite(r) | (var < -rtol * s2.abs().clamp_min(1e-300))
            bad |= ~(s2 > 0)
            if bool(bad.any()):
                k = int(bad.flatten(1).any(1).nonzero()[0])
                flat = bad[k].flatten().nonzero()[0].item()
                raise ScheduleError(
                    f"{type(self).__name__} is not a valid diffusion at step i={start + k}: "
                    f"σ_i² = s_i² − r_i² s_(i−1)² = {var[k].flatten()[flat].item():.4g} and "
                    f"s_i² = {s2[k].flatten()[flat].item():.4g} at coordinate {flat} "
                    f"(ρ = {rates.flatten()[flat].item():.4g}); both must be > 0 "
                    "(σ² may be 0) — the signal may not grow faster than the noise allows")

    def validation_rates(self, rates: Tensor) -> Tensor:
        """The rates :meth:`validate` must check: the basis's real rates tensor by default (its
        coefficient shape, so a schedule that reads a per-coordinate table by position is checked
        as it runs; ``gendiff.testing.check_schedule`` probes the same tensor).

        A schedule that is a function of ρ alone may return :func:`distinct_rates`, and one whose
        log a_i and s_i² are monotone in ρ just the extremes.
        """
        return rates

    def config(self) -> dict[str, Any]:
        """``{"name": ..., **args}``, enough to rebuild with :func:`build_schedule`; ``name`` is
        the registered name of a built-in schedule, else the class's import path."""
        return {"name": SCHEDULES.name_of(type(self)), **self.config_args()}

    def config_args(self) -> dict[str, Any]:
        return {"N": self.N}


SCHEDULES = Registry("schedule", base=Schedule)


def build_schedule(config: dict[str, Any]) -> Schedule:
    """Rebuild a schedule from ``schedule.config()`` (a registered name or an import path)."""
    return SCHEDULES.build(config)
