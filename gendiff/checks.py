"""Input checks for the engine: each error names the expected and the given value."""
from __future__ import annotations

import numbers
from typing import Callable, Sequence

import torch
from torch import Tensor


def check_steps(i: Tensor, like: Tensor, N: int, lo: int = 0, what: str = "steps") -> Tensor:
    """Steps as a LongTensor (B,) or (1,) in lo..N on ``like``'s device; a scalar (an int or a
    0-d tensor) is the same step for the whole batch, returned as (B,)."""
    # Steps on another device than the data are moved to it (they are B integers).
    i = torch.as_tensor(i, device=like.device)
    if i.dim() == 0 and i.dtype in (torch.int64, torch.int32):
        i = i.to(torch.long).expand(like.shape[0])
    if i.dtype not in (torch.int64, torch.int32) or i.dim() != 1:
        raise TypeError(f"steps must be a LongTensor of shape (B,), got {i.dtype} {tuple(i.shape)}")
    if i.shape[0] not in (1, like.shape[0]):
        raise ValueError(f"steps must have one entry per batch element, shape ({like.shape[0]},) "
                         f"(or (1,) for all), got shape {tuple(i.shape)}")
    if i.numel() and bool(((i < lo) | (i > N)).any()):
        why = " (step 0 is the data itself: s_0 = 0)" if lo == 1 else ""
        where = "" if what == "steps" else f"{what}: "
        raise ValueError(f"{where}steps must be in {lo}..N={N}{why}, got min {int(i.min())}, max {int(i.max())}")
    return i


def check_step_count(steps, limit: int) -> int:
    """A number of sampler steps as an int in 1..limit, or a clear error."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise TypeError(f"steps must be an integer in 1..{limit}, got {steps!r}")
    if not 1 <= int(steps) <= limit:
        raise ValueError(f"steps must be in 1..{limit} (the grid's first step), got {int(steps)}")
    return int(steps)


def check_finite(x: Tensor, name: str, enabled: bool = True) -> None:
    """Raise ValueError when ``x`` holds NaN or Inf (one reduction; skipped when not enabled)."""
    # A sum is one cheap pass and is NaN/Inf whenever an entry is; only then count (an overflowing
    # sum of finite values falls through to the exact count and passes).
    if enabled and x.numel() and not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} holds {bad} NaN/Inf value(s) of {x.numel()}; "
                         "(Diffusion(check_finite=False) turns this check off)")


def check_step_range(i, lo: int, hi: int, what: str) -> Tensor:
    """``i`` as an integer tensor with every entry in lo..hi, or a ValueError saying so."""
    i = torch.as_tensor(i)
    if i.is_floating_point() or i.is_complex():
        raise TypeError(f"{what} takes integer steps, got {i.dtype}")
    if i.numel() and bool(((i < lo) | (i > hi)).any()):
        raise ValueError(f"{what} is defined for steps {lo}..{hi}, got min {int(i.min())}, max {int(i.max())}")
    return i


def _event(basis, channels: str = "C") -> tuple[str, str]:
    """('(B, C, H, W)', '(B, C, 8, 8)'): the batch shape a basis takes, in letters and in sizes
    (the channel count is the basis's own when it mixes channels)."""
    from gendiff.bases.base import axis_names
    spatial = basis.spatial_shape
    c = str(basis.shape[0]) if basis.joint_channels else channels
    letters = ", ".join(("B", "C", *axis_names(len(spatial))))
    return f"({letters})", f"(B, {c}, {', '.join(map(str, spatial))})"


def check_data(x: Tensor, basis, name: str = "x0") -> None:
    """Raise TypeError/ValueError naming the expected and the given value for a bad batch."""
    letters, sizes = _event(basis)
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {letters}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float32, float64, bfloat16 or "
                        f"float16), got {x.dtype}; convert integer images with .float() and scale them")
    if x.dim() != 1 + len(basis.coef_shape):
        raise ValueError(f"{name} must have shape {letters} = {sizes}, got shape {tuple(x.shape)}")
    basis.check_input(x)


def call_model(model: Callable, x: Tensor, i: Tensor, finite: bool = True) -> Tensor:
    """``model(x, i)``, checked to be a finite float tensor of x's shape and device, in x's dtype.

    The cast is why a float64 (or autocast bf16) output works with float32 samples.
    """
    out = model(x, i)
    if not isinstance(out, Tensor) or not out.is_floating_point():
        got = out.dtype if isinstance(out, Tensor) else type(out).__name__
        raise TypeError(f"model(x_i, i) must return a floating-point tensor like x_i ({x.dtype}), got {got}")
    if out.shape != x.shape:
        raise ValueError(f"model(x_i, i) must return the shape of x_i {tuple(x.shape)}, "
                         f"got {tuple(out.shape)}")
    if out.device != x.device:
        raise ValueError(f"model(x_i, i) must return a tensor on x_i's device {x.device}, got {out.device}")
    check_finite(out, f"model(x_i, i) at step {int(i[0])}", finite)
    return out.to(x.dtype)


def check_shape(shape: Sequence[int], dtype: torch.dtype, basis) -> tuple[int, ...]:
    """``shape`` as a tuple, or a clear error when it is not (B, *event) for this basis."""
    letters, sizes = _event(basis)
    if not all(isinstance(n, int) and not isinstance(n, bool) or torch.is_tensor(n) and n.dtype in
               (torch.int32, torch.int64) and n.numel() == 1 for n in shape):
        raise TypeError(f"shape must be integers {letters}, got {tuple(shape)}")
    shape = tuple(int(n) for n in shape)
    n = len(basis.shape)
    if len(shape) != 1 + len(basis.coef_shape) or shape[-n:] != tuple(basis.shape) or min(shape) < 1:
        raise ValueError(f"shape must be {sizes} for {type(basis).__name__}{basis.shape}, got {shape}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point dtype (e.g. torch.float32), got {dtype}")
    return shape
