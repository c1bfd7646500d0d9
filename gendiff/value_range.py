"""The one value-range mapper: images from one pixel range to another, linearly.

Data load as [0, 1] and are mapped to the model's ``value_range`` ((−1, 1) or (0, 1));
metrics and figures map samples back to [0, 1]. Both directions are :func:`map_range`.
"""
from __future__ import annotations

import torch
from torch import Tensor

Range = tuple[float, float]


def check_range(value_range: Range, what: str = "value_range") -> Range:
    """``(lo, hi)`` as floats with lo < hi, or a ValueError naming the value."""
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be (lo, hi) with lo < hi, got {value_range!r}") from None
    if not hi > lo:
        raise ValueError(f"{what} must be (lo, hi) with lo < hi, got {value_range!r}")
    return lo, hi


def map_range(x, src: Range = (-1.0, 1.0), dst: Range = (0.0, 1.0), *, clamp: bool = False) -> Tensor:
    """Map ``x`` linearly from ``src = (lo, hi)`` onto ``dst``, as float32.

    Args:
        x: a tensor or array; uint8 is read as [0, 255] whatever ``src``.
        src: the range of float input, e.g. a dataset's ``value_range``.
        dst: the range to map onto; [0, 1] by default (what images are saved and measured in).
        clamp: clamp the result to ``dst`` (for saving images; metrics keep out-of-range values).
    """
    x = torch.as_tensor(x)
    if x.dtype == torch.uint8:
        src = (0.0, 255.0)
    elif not x.is_floating_point():
        raise TypeError(f"map_range needs uint8 or floating-point images, got {x.dtype}")
    (lo, hi), (a, b) = check_range(src, "src"), check_range(dst, "dst")
    y = (x.float() - lo) * ((b - a) / (hi - lo)) + a
    return y.clamp(a, b) if clamp else y
