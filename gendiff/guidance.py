"""Conditioning and classifier-free guidance in the basis (docs/math.md, "Guidance per coordinate").

A conditional network is called ``model(x_i, i, cond)``; an unconditional one keeps
``model(x_i, i)``. The engine tells them apart by the call alone: ``cond=None`` (the default of
``loss``/``sample``/``nll``) is the two-argument call, so nothing changes for existing networks.

``cond`` holds one row per example: class labels (LongTensor (B,)) or any tensor (B, …), which
passes through to the network untouched. The unconditional branch — a row dropped by
``p_uncond`` in training, the second half of a guided batch — is the *null condition*: the label
:data:`NULL_CLASS` (−1) for class labels, zeros for other tensors; a whole unconditional call
passes ``cond=None``. A conditional network maps both to its unconditional prediction (the UNet's
null class embedding).

Guidance combines the two branches in the basis coordinates, one weight per coordinate:
ō = ō_u + w ⊙ (ō_c − ō_u) (Eq. G1), w a number, a tensor of the coefficient shape or a rule
``rule(a_i, s_i)`` of the step's per-coordinate marginal (:class:`SNRGate`). ``w = 1`` is the
conditional model (diffusers' convention), ``w = 0`` the unconditional one.
"""
from __future__ import annotations

import inspect
import math
import numbers
from dataclasses import dataclass
from typing import Callable, Union

import torch
from torch import Tensor

from gendiff.randomness import Generators, rand

NULL_CLASS = -1
Condition = Union[Tensor, int, None]
Guidance = Union[float, Tensor, Callable[[Tensor, Tensor], Tensor], None]


def check_condition(cond: Condition, batch: int, device) -> Tensor | None:
    """``cond`` as a tensor with one row per example on ``device``, or a clear error.

    An int (or a 0-d integer tensor) is that class for the whole batch; integer tensors become
    LongTensor and must hold labels ≥ −1 (−1: the null class).
    """
    if cond is None:
        return None
    if isinstance(cond, numbers.Integral) and not isinstance(cond, bool):
        cond = torch.tensor(int(cond))
    if not isinstance(cond, Tensor):
        raise TypeError(f"cond must be class labels (a LongTensor (B,) or an int) or a tensor with one row per "
                        f"example, got {type(cond).__name__}")
    integer = not (cond.is_floating_point() or cond.is_complex() or cond.dtype == torch.bool)
    if cond.dim() == 0 and integer:
        cond = cond.expand(batch)
    if cond.dim() == 0 or cond.shape[0] != batch:
        raise ValueError(f"cond must have one row per example, {batch}, got shape {tuple(cond.shape)}")
    cond = cond.to(device=device, dtype=torch.long if integer else cond.dtype)
    if integer and cond.numel() and int(cond.min()) < NULL_CLASS:
        raise ValueError(f"class labels must be ≥ 0 (or {NULL_CLASS}, the null class), got {int(cond.min())}")
    return cond


def null_condition(cond: Tensor) -> Tensor:
    """The unconditional branch's condition: label −1 for class labels, zeros for other tensors."""
    if cond.is_floating_point() or cond.is_complex():
        return torch.zeros_like(cond)
    return torch.full_like(cond, NULL_CLASS)


def drop_condition(cond: Tensor, p_uncond: float, generator: Generators = None) -> Tensor:
    """``cond`` with each row replaced by the null condition with probability ``p_uncond``
    (classifier-free guidance's training, Ho & Salimans 2022); one uniform per row from ``generator``."""
    p_uncond = float(p_uncond)
    if not 0.0 <= p_uncond <= 1.0:
        raise ValueError(f"p_uncond must be a probability in [0, 1], got {p_uncond}")
    if p_uncond == 0.0:
        return cond
    drop = rand(cond.shape[0], generator, cond.device) < p_uncond
    return torch.where(drop.view(-1, *[1] * (cond.dim() - 1)), null_condition(cond), cond)


def conditioned(model: Callable, cond: Tensor | None) -> Callable[[Tensor, Tensor], Tensor]:
    """The network as a function of (x_i, i): ``model`` itself for ``cond=None`` (the
    unconditional call ``model(x_i, i)``), else ``model(x_i, i, cond)``."""
    if cond is None:
        return model
    try:
        inspect.signature(model).bind(None, None, None)
    except TypeError as e:
        raise TypeError(f"a conditional run calls model(x_i, i, cond), but {type(model).__name__} takes no "
                        f"condition ({e}); give it a third argument (docs/extending.md)") from e
    except ValueError:  # no signature to read (a builtin): let the call decide
        pass
    return lambda x, i: model(x, i, cond)


@dataclass(frozen=True)
class SNRGate:
    """Guidance where a coordinate still carries signal: ``weight`` where a_i/s_i ≥ ``min_snr``,
    ``otherwise`` (default 1, the plain conditional model) where the schedule has already
    destroyed it (docs/math.md, "Guidance per coordinate")."""

    weight: float
    min_snr: float
    otherwise: float = 1.0

    def __call__(self, a: Tensor, s: Tensor) -> Tensor:
        return torch.where(a >= self.min_snr * s, self.weight, self.otherwise).to(a.dtype)


def check_guidance(guidance: Guidance, cond: Tensor | None, coef_shape) -> Guidance:
    """A finite number, a tensor broadcastable to the coefficient shape (C, H, W), a rule
    ``rule(a, s)`` or None (no guidance); guidance needs a condition."""
    if guidance is None:
        return None
    if cond is None:
        raise ValueError("guidance needs a condition: pass cond= (class labels or a tensor) with guidance=")
    if isinstance(guidance, numbers.Real) and not isinstance(guidance, bool):
        if not math.isfinite(float(guidance)):
            raise ValueError(f"guidance must be finite, got {guidance}")
        return float(guidance)
    if isinstance(guidance, Tensor):
        if not guidance.is_floating_point() or torch.broadcast_shapes(guidance.shape, coef_shape) != coef_shape:
            raise ValueError(f"a guidance tensor must be floating point and broadcast to the coefficient shape "
                             f"{tuple(coef_shape)}, got {guidance.dtype} {tuple(guidance.shape)}")
        return guidance
    if callable(guidance):
        return guidance
    raise TypeError(f"guidance must be a number, a tensor of the coefficient shape or a rule(a, s), "
                    f"got {type(guidance).__name__}")


@dataclass(frozen=True)
class Branches:
    """How one sampling step calls the network: ``net(x, i)`` on the batch (doubled when
    ``weight`` guides: conditional rows first, then unconditional), and :meth:`combine`."""

    net: Callable[[Tensor, Tensor], Tensor]
    weight: Guidance = None

    @property
    def paired(self) -> bool:
        return self.weight is not None

    def inputs(self, x: Tensor, i: Tensor) -> tuple[Tensor, Tensor]:
        return (torch.cat([x, x]), torch.cat([i, i])) if self.paired else (x, i)

    def combine(self, out: Tensor, coef, step: int) -> Tensor:
        """Eq. G1 in coefficient space: ō_u + w ⊙ (ō_c − ō_u), w at ``step``."""
        if not self.paired:
            return out
        c, u = out.chunk(2)
        w = self.weight
        if callable(w) and not isinstance(w, Tensor):
            w = w(coef.a(step), coef.s(step))
        return torch.lerp(u, c, torch.as_tensor(w, dtype=out.dtype, device=out.device))


def branches(model: Callable, cond: Condition, guidance: Guidance, batch: int, device, coef_shape) -> Branches:
    """The step's network calls for ``cond`` and ``guidance`` (see the module docstring).

    ``guidance`` None or 1 is the conditional model and 0 the unconditional one, each one call
    on the batch; any other weight one call on both branches (2B rows).
    """
    cond = check_condition(cond, batch, device)
    guidance = check_guidance(guidance, cond, tuple(coef_shape))
    scalar = isinstance(guidance, float)
    if cond is None or guidance is None or scalar and guidance == 1.0:
        return Branches(conditioned(model, cond))
    if scalar and guidance == 0.0:
        conditioned(model, cond)  # the same refusal for a network that takes no condition
        return Branches(lambda x, i: model(x, i, None))
    return Branches(conditioned(model, torch.cat([cond, null_condition(cond)])), guidance)
