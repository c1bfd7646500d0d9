"""Samplers: plain functions over a coefficient-space prediction and a step grid (see ``common``).

Register a new one with ``SAMPLERS.register("name", Sampler(fn, default_grid, default_steps))``
(a name already taken is refused), or pass its import path ``"package.module:my_sampler"``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from gendiff.registry import Registry

from .ddim import sample_ddim
from .dpm_solver import sample_dpmpp_2m, sample_dpmpp_3m
from .ihdm import sample_ihdm
from .grids import GRIDS, check_grid, logsnr_grid, make_grid, power_grid, uniform_grid
from .stochastic import sample_ancestral, sample_reverse
from .unipc import sample_unipc


@dataclass(frozen=True)
class Sampler:
    """A sampler function with its default grid.

    Args:
        fn: ``fn(denoise, x, timesteps, coef, *, generator, callback, disable, **opts)``.
        grid: default grid kind (see :data:`GRIDS`).
        steps: default number of network evaluations; ``None`` means all N steps.
    """

    fn: Callable
    grid: str = "uniform"
    steps: int | None = 50


SAMPLERS = Registry("sampler", base=Sampler)
SAMPLERS.register("reverse", Sampler(sample_reverse, "uniform", None))
SAMPLERS.register("ancestral", Sampler(sample_ancestral, "uniform", 100))
SAMPLERS.register("ddim", Sampler(sample_ddim, "uniform", 50))
# cubic measured best from 15 to 50 steps on every schedule in benchmarks/samplers.py
SAMPLERS.register("dpm++2m", Sampler(sample_dpmpp_2m, "cubic", 50))
SAMPLERS.register("dpm++3m", Sampler(sample_dpmpp_3m, "logsnr", 25))
# UniPC-3 on the schedule's log-SNR grid: the fewest evaluations on every schedule (docs/benchmarks.md)
SAMPLERS.register("unipc", Sampler(sample_unipc, "logsnr", 20))
SAMPLERS.register("ihdm", Sampler(sample_ihdm, "uniform", None))


def sampler_options(sampler: str) -> list[str]:
    """The keyword options ``sampler`` takes besides the common signature (e.g. ``eta``)."""
    common = {"denoise", "x", "timesteps", "coef", "generator", "callback", "disable"}
    params = inspect.signature(SAMPLERS.resolve(sampler).fn).parameters.values()
    return sorted(p.name for p in params if p.name not in common and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


def check_sampler_options(sampler: str, options: dict) -> dict:
    """``options`` if ``sampler`` takes every one of them; ValueError naming the ones it does not."""
    valid = sampler_options(sampler)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"sampler {sampler!r} takes no option {unknown}; its options: {valid or 'none'}")
    return options


__all__ = ["SAMPLERS", "Sampler", "sampler_options", "check_sampler_options", "GRIDS", "check_grid",
           "make_grid", "power_grid", "uniform_grid", "logsnr_grid", "sample_reverse", "sample_ancestral",
           "sample_ddim", "sample_dpmpp_2m", "sample_dpmpp_3m", "sample_unipc", "sample_ihdm"]
