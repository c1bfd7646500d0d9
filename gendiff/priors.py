"""Priors: where sampling starts, x̄ at the grid's first step t_0, in coefficient space.

A prior is a callable ``prior(diffusion, shape, t0, generator, dtype, device) -> x̄_{t0}``.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from gendiff.registry import Registry


def gaussian_prior(diffusion, shape, t0: int, generator, dtype, device) -> Tensor:
    """x̄_{t0} ~ N(0, diag(s_{t0}²)): the marginal with the data's contribution a_{t0} x̄_0 dropped
    (docs/math.md, Conventions; exact in the limit a → 0)."""
    s = diffusion.coefficients(device).s(t0)
    return s.to(dtype) * torch.randn(shape, generator=generator, dtype=dtype, device=device)


class BlurredDataPrior:
    """IHDM's prior: a training image taken to level t_0, plus δ = ``delta_scale`` · s_{t0} noise.

    A kernel density estimate of q(x_K) (Rissanen et al. 2023): with a blur so strong that only
    the mean colour survives, it samples the data's low frequencies exactly.

    Args:
        data: a dataset or tensor of training images (C, H, W) in the model's value range.
        delta_scale: the noise added, in units of s_{t0} (IHDM uses δ = 1.25σ).
    """

    def __init__(self, data, delta_scale: float = 1.25):
        self.data, self.delta_scale = data, float(delta_scale)

    def __call__(self, diffusion, shape, t0: int, generator, dtype, device) -> Tensor:
        dev = generator.device if generator is not None else torch.device("cpu")
        idx = torch.randint(len(self.data), (shape[0],), generator=generator, device=dev).tolist()
        x0 = torch.stack([torch.as_tensor(self.data[k]) for k in idx]).to(device=device, dtype=dtype)
        coef = diffusion.coefficients(device)
        noise = torch.randn(shape, generator=generator, dtype=dtype, device=device)
        x0_bar = diffusion.basis.forward(x0)
        return coef.log_a(t0).exp().to(dtype) * x0_bar + (self.delta_scale * coef.s(t0)).to(dtype) * noise


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
