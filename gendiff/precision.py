"""Autocast control: the engine's own math in float32 or wider, only the network under autocast."""
from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Callable, Iterator

import torch


@contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """Autocast off for the engine's own math on ``device``.

    Why: autocast runs every matmul in bf16/fp16 — and a separable basis transform is two
    matmuls — which costs ~1e-2 in a round trip. Basis math must stay float32 or wider.
    """
    if torch.amp.is_autocast_available(device.type):
        with torch.autocast(device_type=device.type, enabled=False):
            yield
    else:  # e.g. "meta": there is no autocast to turn off
        yield


def caller_autocast(device: torch.device) -> Callable[[], AbstractContextManager]:
    """A factory of contexts that restore the caller's autocast state, captured now.

    The engine turns autocast off for its own math; the network alone runs under the caller's
    autocast, as the caller asked.
    """
    kind = device.type
    if not (torch.amp.is_autocast_available(kind) and torch.is_autocast_enabled(kind)):
        return nullcontext
    dtype = torch.get_autocast_dtype(kind)
    return lambda: torch.autocast(device_type=kind, dtype=dtype)
