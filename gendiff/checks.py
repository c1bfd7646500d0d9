"""Input checks for the engine: each error names the expected and the given value."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor


def check_steps(i: Tensor, like: Tensor, N: int) -> Tensor:
    """Steps as a LongTensor (B,) or (1,) in 0..N on ``like``'s device."""
    # Steps on another device than the data are moved to it (they are B integers).
    i = torch.as_tensor(i, device=like.device)
    if i.dtype not in (torch.int64, torch.int32) or i.dim() != 1:
        raise TypeError(f"steps must be a LongTensor of shape (B,), got {i.dtype} {tuple(i.shape)}")
    if i.shape[0] not in (1, like.shape[0]):
        raise ValueError(f"steps must have one entry per batch element, shape ({like.shape[0]},) "
                         f"(or (1,) for all), got shape {tuple(i.shape)}")
    if bool(((i < 0) | (i > N)).any()):
        raise ValueError(f"steps must be in 0..N={N}, got min {int(i.min())}, max {int(i.max())}")
    return i


def check_step_range(i, lo: int, hi: int, what: str) -> Tensor:
    """``i`` as an integer tensor with every entry in lo..hi, or a ValueError saying so."""
    i = torch.as_tensor(i)
    if i.is_floating_point() or i.is_complex():
        raise TypeError(f"{what} takes integer steps, got {i.dtype}")
    if i.numel() and bool(((i < lo) | (i > hi)).any()):
        raise ValueError(f"{what} is defined for steps {lo}..{hi}, got min {int(i.min())}, max {int(i.max())}")
    return i


def check_data(x: Tensor, basis, name: str = "x0") -> None:
    """Raise TypeError/ValueError naming the expected and the given value for a bad batch."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float32, float64, bfloat16 or "
                        f"float16), got {x.dtype}; convert integer images with .float() and scale them")
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W) = (B, C, {basis.shape[0]}, "
                         f"{basis.shape[1]}), got shape {tuple(x.shape)}")
    basis.check_input(x)


def check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    # torch's own error ("Expected a 'cpu' device type for generator") does not say which
    # tensor is where or what to do about it.
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"generator is on {generator.device} but the data are on {device}; "
                         f"use torch.Generator({str(device)!r})")


def call_model(model: Callable, x: Tensor, i: Tensor) -> Tensor:
    """``model(x, i)``, checked to be a float tensor of x's shape and device, cast to x's dtype.

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
    return out.to(x.dtype)


def check_shape(shape: Sequence[int], dtype: torch.dtype, basis) -> tuple[int, ...]:
    """``shape`` as a tuple, or a clear error when it is not (B, C, H, W) for this basis."""
    shape = tuple(int(n) for n in shape)
    h, w = basis.shape
    if len(shape) != 4 or shape[2:] != (h, w) or min(shape) < 1:
        raise ValueError(f"shape must be (B, C, {h}, {w}) for {type(basis).__name__}{basis.shape}, "
                         f"got {shape}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point dtype (e.g. torch.float32), got {dtype}")
    return shape
