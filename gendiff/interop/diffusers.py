"""diffusers interop: a ``UNet2DModel`` as a gendiff network, and the step correspondence.

Steps. gendiff counts i = 0..N with x_0 the data and i = 1..N the noisy steps; diffusers counts
t = 0..N−1 for the same N noisy steps. So **i = t + 1**: gendiff's ᾱ_i is diffusers'
``alphas_cumprod[i − 1]``, a network trained by diffusers at t is called by gendiff at i = t + 1,
and a diffusers grid [t_0, …, t_{K−1}] (which ends at the data implicitly) is the gendiff grid
[t_0 + 1, …, t_{K−1} + 1, 0].

Schedules. DDPMScheduler / DPMSolverMultistepScheduler with ``beta_schedule="linear"`` (β from
``beta_start`` to ``beta_end`` over ``num_train_timesteps``) is ``VPBlurSchedule`` with f ≡ 0
and ``noise="linear"``; ``"squaredcos_cap_v2"`` is ``noise="cosine"``. On the identity basis
(or with f ≡ 0 on any basis) gendiff is then the same process (tests/test_diffusers_interop.py).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from gendiff.schedules import VPBlurSchedule


def step_to_timestep(i: Tensor) -> Tensor:
    """gendiff step i ∈ 1..N → diffusers timestep t = i − 1 ∈ 0..N−1."""
    return i - 1


def timesteps_to_grid(timesteps: Sequence[int]) -> list[int]:
    """A diffusers timestep list [t_0, …, t_{K−1}] → the gendiff grid [t_0 + 1, …, t_{K−1} + 1, 0]."""
    return [int(t) + 1 for t in timesteps] + [0]


class DiffusersUNet(nn.Module):
    """A diffusers ``UNet2DModel`` predicting ε, as gendiff's ``model(x_i, i) -> ε̂``, or
    ``model(x_i, i, cond) -> ε̂`` for a class-conditional one (``num_class_embeds`` set).

    gendiff passes i ∈ 1..N; the UNet is called at t = i − 1 and its ``.sample`` returned.
    The parameters are the UNet's own (``state_dict`` keys start with ``unet.``). Class labels
    go to the UNet's ``class_labels``; the unconditional branch (label −1, or ``cond=None`` for
    a conditional UNet) is the class ``null_class``.

    Args:
        unet: a ``UNet2DModel`` (or anything called as ``unet(x, t)`` returning an object with
            ``.sample`` or a tuple) whose output has the input's shape: ε-prediction with
            ``out_channels == in_channels`` (a learned-variance UNet is refused).
        null_class: the class embedding row of the unconditional branch; default the last,
            ``num_class_embeds − 1`` (train such a UNet with ``num_class_embeds`` = classes + 1).
    """

    def __init__(self, unet: nn.Module, null_class: int | None = None):
        super().__init__()
        config = getattr(unet, "config", None)
        c_in, c_out = getattr(config, "in_channels", None), getattr(config, "out_channels", None)
        if c_in is not None and c_out is not None and c_in != c_out:
            raise ValueError(f"DiffusersUNet needs an ε-predicting UNet with out_channels == in_channels, "
                             f"got in_channels={c_in}, out_channels={c_out} (learned variance is not supported)")
        self.unet = unet
        n = getattr(config, "num_class_embeds", None)
        self.null_class = null_class if null_class is not None or n is None else n - 1

    def forward(self, x: Tensor, i: Tensor, cond: Tensor | None = None) -> Tensor:
        if self.null_class is None:
            if cond is not None:
                raise ValueError("this diffusers UNet has no class embedding (num_class_embeds=None) and takes "
                                 "no condition")
            out = self.unet(x, step_to_timestep(i))
        else:
            labels = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device) if cond is None else cond
            out = self.unet(x, step_to_timestep(i), class_labels=torch.where(labels < 0, self.null_class, labels))
        return out.sample if hasattr(out, "sample") else out[0]


# diffusers beta_schedule → gendiff noise schedule
NOISE = {"linear": "linear", "squaredcos_cap_v2": "cosine"}


def schedule_from_scheduler(scheduler) -> VPBlurSchedule:
    """The ``VPBlurSchedule`` (f ≡ 0) with the same ᾱ as a diffusers scheduler's config.

    Args:
        scheduler: a diffusers scheduler (or its ``config``) with ``num_train_timesteps``,
            ``beta_schedule`` ("linear" or "squaredcos_cap_v2"), ``beta_start``, ``beta_end``.
    """
    cfg = getattr(scheduler, "config", scheduler)
    get = cfg.get if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
    kind = get("beta_schedule")
    if kind not in NOISE or get("trained_betas") is not None or get("rescale_betas_zero_snr", False):
        raise ValueError(f"no gendiff noise schedule matches beta_schedule={kind!r} (with trained_betas="
                         f"{get('trained_betas')!r}, rescale_betas_zero_snr={get('rescale_betas_zero_snr', False)}); "
                         f"supported: {sorted(NOISE)} without trained betas or zero-SNR rescaling")
    kwargs = {"beta_1": float(get("beta_start")), "beta_N": float(get("beta_end"))} if kind == "linear" else {}
    return VPBlurSchedule("none", N=int(get("num_train_timesteps")), noise=NOISE[kind], noise_kwargs=kwargs)


def alphas_cumprod(schedule) -> Tensor:
    """ᾱ_1 … ᾱ_N of a schedule at ρ = 0 (float64), indexed like diffusers' ``alphas_cumprod``."""
    rho = torch.zeros(1, 1, 1, dtype=torch.float64)
    return (2 * schedule.log_a(torch.arange(1, schedule.N + 1), rho)).exp().flatten()
