"""Priors: where sampling starts, x̄ at the grid's first step t_0, in coefficient space.

A prior is a callable ``prior(diffusion, shape, t0, generator, dtype, device) -> x̄_{t0}``.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from gendiff.randomness import generator_device, randint, randn
from gendiff.registry import Registry


def gaussian_prior(diffusion, shape, t0: int, generator, dtype, device) -> Tensor:
    """x̄_{t0} ~ N(0, diag(s_{t0}²)): the marginal with the data's contribution a_{t0} x̄_0 dropped
    (docs/math.md, Conventions; exact in the limit a → 0)."""
    s = diffusion.coefficients(device).s(t0)
    return s.to(dtype) * randn(shape, generator, dtype, device)


class BlurredDataPrior:
    """IHDM's prior: a training image taken to level t_0, plus δ = ``delta_scale`` · s_{t0} noise
    (none by default, as in the reference code's ``get_initial_sample``).

    A kernel density estimate of q(x_K) (Rissanen et al. 2023): with a blur so strong that only
    the mean colour survives, it samples the data's low frequencies exactly.

    Args:
        data: a dataset or tensor of training images (C, H, W) in the model's value range.
        delta_scale: the noise added, in units of s_{t0} (0: the reference code adds none).
    """

    def __init__(self, data, delta_scale: float = 0.0):
        if not (math.isfinite(float(delta_scale)) and delta_scale >= 0):
            raise ValueError(f"delta_scale must be a finite number ≥ 0, got {delta_scale!r}")
        self.data, self.delta_scale = data, float(delta_scale)

    def __call__(self, diffusion, shape, t0: int, generator, dtype, device) -> Tensor:
        idx = randint(0, len(self.data), shape[0], generator, generator_device(generator) or "cpu").tolist()
        x0 = torch.stack([torch.as_tensor(self.data[k]) for k in idx]).to(device=device, dtype=dtype)
        coef = diffusion.coefficients(device)
        noise = randn(shape, generator, dtype, device)
        return coef.a(t0).to(dtype) * diffusion.to_basis(x0) + (self.delta_scale * coef.s(t0)).to(dtype) * noise


def natural_prior(schedule) -> Callable:
    """The schedule's natural prior (``schedule.prior``); one that needs data cannot be built here."""
    name = getattr(schedule, "prior", "gaussian")
    if name == "gaussian":
        return gaussian_prior
    raise ValueError(f"{type(schedule).__name__}'s natural prior is {name!r}, which needs training data: "
                     f"pass prior=BlurredDataPrior(train_images) (gendiff.priors) to sample(), or "
                     f"build_prior({{'name': {name!r}}}, data=lambda: train_images)")


# An entry is a factory ``factory(data=<function returning the training data>, **args) -> prior``.
PRIORS = Registry("prior")
PRIORS.register("gaussian", lambda data: gaussian_prior)
PRIORS.register("blurred_data", lambda data, **kw: BlurredDataPrior(data(), **kw))


def build_prior(config: dict[str, Any] | None, data: Callable[[], Any] | None = None):
    """A prior from ``{"name": "gaussian"}`` or ``{"name": "blurred_data", "delta_scale": 1.25}``.

    Args:
        config: the prior's name and arguments.
        data: a function returning the training data, called only by priors that need it.
    """
    return PRIORS.build(config or {"name": "gaussian"}, data=data)
