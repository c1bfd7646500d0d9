"""What every sampler shares: the step loop, the callback schema and the linear step.

A sampler is a plain function (k-diffusion style)::

    sampler(denoise, x, timesteps, coef, *, generator=None, callback=None, disable=False, **opts)

- ``denoise(x̄, i) -> Prediction``: the network's prediction at step i in coefficient space
  (:class:`gendiff.parameterization.Prediction`); the sampler reads the form its update is
  written in — ``.eps`` (ε̂̄), ``.x0`` (x̂̄_0) or ``.signal(u)`` (the prediction of a_u x̄_0) —
  so nothing is divided by a_i where the update does not divide by it;
- ``x``: x̄ at ``timesteps[0]``, in coefficient space; the sampler returns x̄ at step 0;
- ``coef``: a :class:`gendiff.coefficients.Coefficients` — float64 per-step values and the
  cached multipliers of this call;
- ``callback({"i": i, "x": x̄_i, "x0": x̂̄_0})`` once per step, in coefficient space.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from gendiff.randomness import Generators, randn


def linear_step(coef, x: Tensor, v: Tensor, generator, multipliers: Callable[..., tuple], *args) -> Tensor:
    """x̄_u = A ⊙ x̄_t + B ⊙ v + C ⊙ z̄, the form of every first-order step here.

    ``multipliers(*args)`` returns float64 (A, B, C) for the step (A or C may be None); they are
    cast to the sample dtype once per call (:meth:`Coefficients.cached`).
    """
    a, b, c = coef.cached(multipliers, *args)
    out = b * v if a is None else torch.addcmul(a * x, b, v)
    return out if c is None else torch.addcmul(out, c, noise_like(x, generator))


def noise_like(x: Tensor, generator: Generators) -> Tensor:
    """Fresh white noise, drawn directly in coefficient space (it is basis-invariant); one
    generator per sample when ``generator`` is a list (``gendiff.randomness``)."""
    return randn(x.shape, generator, x.dtype, x.device)


def step_pairs(timesteps: list[int], disable: bool, desc: str):
    """(t, u) for consecutive grid points, with a progress bar unless disabled."""
    return tqdm(list(zip(timesteps[:-1], timesteps[1:])), desc=desc, disable=disable, leave=False)


def report(callback, i: int, x: Tensor, pred) -> None:
    """The one callback schema; x̂̄_0 is formed only when someone listens."""
    if callback is not None:
        callback({"i": i, "x": x, "x0": pred.x0})


def check_option(name: str, value, lo: float = 0.0, integer: bool = False):
    """A sampler option as a finite number ≥ ``lo`` (an int when ``integer``), or a clear error."""
    ok = isinstance(value, int) and not isinstance(value, bool) if integer else \
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < lo:
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"{name} must be {kind} ≥ {lo:g}, got {value!r}")
    return value
