"""Explicit randomness: one ``torch.Generator`` for a batch, or one per sample.

A list of B generators (diffusers' convention) draws sample k's noise from generator k alone,
so sample k is the same whatever the batch it is drawn in: a batch of 4 seeded [0, 1, 2, 3]
holds the sample that a batch of 1 seeded [2] gives. Every random draw of the engine, the
priors and the samplers goes through :func:`randn`, :func:`randint` and :func:`rand`.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor

Generators = Union[torch.Generator, Sequence[torch.Generator], None]


def _per_sample(generator: Generators) -> bool:
    return generator is not None and not isinstance(generator, torch.Generator)


def randn(shape: Sequence[int], generator: Generators, dtype: torch.dtype, device) -> Tensor:
    """Standard normal noise of ``shape`` (B, …); row k from ``generator[k]`` when a list is given."""
    if not _per_sample(generator):
        return torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device)
    return torch.stack([torch.randn(tuple(shape[1:]), generator=g, dtype=dtype, device=device)
                        for g in generator])


def randint(low: int, high: int, n: int, generator: Generators, device) -> Tensor:
    """``n`` integers uniform on low..high − 1; entry k from ``generator[k]`` when a list is given."""
    if not _per_sample(generator):
        return torch.randint(low, high, (n,), generator=generator, device=device)
    return torch.cat([torch.randint(low, high, (1,), generator=g, device=device) for g in generator])


def generator_device(generator: Generators) -> torch.device | None:
    """The device the generator(s) draw on (None without one)."""
    if generator is None:
        return None
    _check_kind(generator)
    return (generator if isinstance(generator, torch.Generator) else generator[0]).device


def _check_kind(generator) -> None:
    if isinstance(generator, torch.Generator):
        return
    if not isinstance(generator, (list, tuple)) or not generator:
        raise TypeError("generator must be a torch.Generator or a non-empty list of them (one per sample), e.g. "
                        f"torch.Generator().manual_seed(0); got {type(generator).__name__} {generator!r:.40}")


def check_generator(generator: Generators, device: torch.device, batch: int | None = None) -> None:
    """A generator on ``device``'s type, or a list of ``batch`` of them; else a clear error.

    torch's own error ("Expected a 'cpu' device type for generator") does not say which tensor
    is where or what to do about it.
    """
    if generator is None:
        return
    _check_kind(generator)
    gens = [generator] if isinstance(generator, torch.Generator) else list(generator)
    if not all(isinstance(g, torch.Generator) for g in gens):
        raise TypeError("generator must be a torch.Generator or a list of them (one per sample), got "
                        f"{[type(g).__name__ for g in gens][:4]}")
    if _per_sample(generator) and batch is not None and len(gens) != batch:
        raise ValueError(f"a list of generators needs one per sample: batch size {batch}, got {len(gens)}")
    for g in gens:
        if g.device.type != device.type:
            raise ValueError(f"generator is on {g.device} but the data are on {device}; "
                             f"use torch.Generator({str(device)!r})")


def rand(n: int, generator: Generators, device) -> Tensor:
    """``n`` floats uniform on [0, 1), float64; entry k from ``generator[k]`` when a list is given."""
    if not _per_sample(generator):
        return torch.rand((n,), generator=generator, dtype=torch.float64, device=device)
    return torch.cat([torch.rand((1,), generator=g, dtype=torch.float64, device=device) for g in generator])
