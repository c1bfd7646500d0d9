"""A data-driven schedule: every coordinate's SNR crosses 1 at a time set by its rate (docs/math.md,
"The data-driven schedule").

With v_k the data's variance of coordinate k in the basis, the data SNR of coordinate k at time
t = i/N is SNR_k(t) = v_k a_k(t)²/s_k(t)². The schedule is variance preserving (s² = 1 − a²) with
per-coordinate log-SNR

    log(a_k²/s_k²)(t) = ℓ(t) − ℓ(τ_k) − log v_k,   so   SNR_k(t) = exp(ℓ(t) − ℓ(τ_k)),

ℓ the log-SNR-cosine curve (decreasing from ``logsnr_max`` at t = 0 to ``logsnr_min`` at t = 1)
and τ_k = t_hi − (t_hi − t_lo) √(ρ_k / max ρ): SNR_k = 1 exactly at t = τ_k, above before and
below after. The slowest coordinates (ρ = 0, the mean) cross last, at t_hi, the fastest first, at
t_lo; √ρ is the frequency for the DCT, Fourier and blur bases (ρ ∝ ω²), so crossings are spread
evenly in frequency. Each coordinate runs through the same curve shifted by its own amount, so its
"speed" is set by its variance: a coordinate with little power is drowned sooner.

The table v (the basis's coefficient shape) is part of the config, so a checkpoint rebuilds the
schedule without the data; :meth:`DataSNRSchedule.from_data` measures it once.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor

from .base import Schedule, broadcast_step


def logsnr_cosine_torch(t: Tensor, logsnr_max: float, logsnr_min: float) -> Tensor:
    """ℓ(t) = −2 log tan(t (atan e^{−min/2} − atan e^{−max/2}) + atan e^{−max/2}) (float64;
    ``noise.logsnr_cosine_t`` in torch)."""
    b = math.atan(math.exp(-0.5 * logsnr_max))
    a = math.atan(math.exp(-0.5 * logsnr_min)) - b
    return -2 * torch.log(torch.tan(t * a + b))


class DataSNRSchedule(Schedule):
    """Variance preserving, per-coordinate log-SNR ℓ(t) − ℓ(τ_k) − log v_k on t = i/N (module docstring).

    Args:
        variance: v, the data's per-coordinate variance in the basis, as nested lists (or a
            tensor) of the basis's coefficient shape (``basis.coef_shape``: (1, H, W) for a
            per-channel basis, whose channels share one value; (C, H, W) for a joint one).
        N: number of steps.
        crossing: (t_lo, t_hi) in (0, 1]: the times at which the fastest (largest ρ) and the
            slowest (ρ = 0) coordinates reach SNR 1.
        logsnr_max, logsnr_min: the range of the curve ℓ (that of Blurring Diffusion, ±10).
        min_variance: v is floored here (a coordinate the data never use would need log 0).
    """

    name = "data_snr"

    def __init__(self, variance: Sequence | Tensor, N: int = 1000, crossing: Sequence[float] = (0.25, 0.75),
                 logsnr_max: float = 10.0, logsnr_min: float = -10.0, min_variance: float = 1e-6):
        super().__init__(N)
        v = torch.as_tensor(variance, dtype=torch.float64)
        if v.dim() < 2 or not bool(torch.isfinite(v).all()) or not bool((v >= 0).all()):
            raise ValueError("variance must be finite values ≥ 0 of a basis's coefficient shape (1 or C, "
                             f"*spatial), got shape {tuple(v.shape)}")
        lo, hi = (float(t) for t in crossing)
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crossing must be (t_lo, t_hi) with 0 < t_lo ≤ t_hi ≤ 1, got {tuple(crossing)}")
        if not logsnr_min < logsnr_max or not min_variance > 0:
            raise ValueError(f"need logsnr_min < logsnr_max and min_variance > 0, got {logsnr_min}, "
                             f"{logsnr_max}, {min_variance}")
        self.variance, self.crossing = v, (lo, hi)
        self.logsnr_max, self.logsnr_min, self.min_variance = float(logsnr_max), float(logsnr_min), float(min_variance)
        self._log_v = v.clamp_min(self.min_variance).log()

    @classmethod
    def from_data(cls, basis, data: Tensor | Iterable, batch_size: int = 256, **kwargs) -> "DataSNRSchedule":
        """The schedule with v measured on ``data``: a tensor (n, *event) or an iterable of
        examples (an ``(x, label)`` pair counts as x), in the value range the model trains on.

        v is the variance over examples of each coordinate of ``basis.forward(x)``, in float64;
        for a per-channel basis also over channels (its coefficient shape has one channel).
        """
        total, total2, n = 0.0, 0.0, 0
        for batch in _batches(data, batch_size):
            c = basis.forward(batch.to(torch.float64))
            c = c.reshape(-1, *basis.coef_shape)  # a per-channel basis: channels count as examples
            total, total2, n = total + c.sum(0), total2 + (c * c).sum(0), n + len(c)
        if n < 2:
            raise ValueError(f"from_data needs at least 2 examples, got {n}")
        mean = total / n
        return cls((total2 / n - mean * mean).clamp_min(0) * n / (n - 1), **kwargs)

    def crossing_times(self, rates: Tensor) -> Tensor:
        """τ_k = t_hi − (t_hi − t_lo) √(ρ_k / max ρ): when coordinate k's SNR is 1."""
        lo, hi = self.crossing
        top = rates.max()
        frac = (rates / top).sqrt() if float(top) > 0 else torch.zeros_like(rates)
        return hi - (hi - lo) * frac

    def log_snr_t(self, t: Tensor, rates: Tensor) -> Tensor:
        """log(a²/s²) at continuous times t (broadcast against the rates), per coordinate."""
        if tuple(rates.shape) != tuple(self.variance.shape):
            raise ValueError(f"{type(self).__name__} was measured for coefficients of shape "
                             f"{tuple(self.variance.shape)}, got rates of shape {tuple(rates.shape)}")
        ell = lambda u: logsnr_cosine_torch(u, self.logsnr_max, self.logsnr_min)  # noqa: E731
        return ell(t) - ell(self.crossing_times(rates)) - self._log_v.to(rates.device)

    def _at(self, i: Tensor, rates: Tensor) -> tuple[Tensor, Tensor]:
        t = broadcast_step(i, rates).to(rates.device, torch.float64) / self.N
        return self.log_snr_t(t, rates), t > 0

    def log_a(self, i: Tensor, rates: Tensor) -> Tensor:
        lam, moved = self._at(i, rates)
        # a² = sigmoid(λ); a_0 = 1 exactly (x_0 is data)
        return torch.where(moved, -0.5 * torch.logaddexp(torch.zeros_like(lam), -lam), torch.zeros_like(lam))

    def s2(self, i: Tensor, rates: Tensor) -> Tensor:
        lam, moved = self._at(i, rates)
        return torch.where(moved, torch.sigmoid(-lam), torch.zeros_like(lam))

    def config_args(self) -> dict[str, Any]:
        return {"variance": self.variance.tolist(), "N": self.N, "crossing": list(self.crossing),
                "logsnr_max": self.logsnr_max, "logsnr_min": self.logsnr_min, "min_variance": self.min_variance}


def _batches(data, batch_size: int):
    if isinstance(data, Tensor):
        yield from data.split(batch_size)
        return
    buf = []
    for item in data:
        buf.append(item[0] if isinstance(item, (tuple, list)) else item)
        if len(buf) == batch_size:
            yield torch.stack(buf)
            buf = []
    if buf:
        yield torch.stack(buf)
