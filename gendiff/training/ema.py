"""EMA of the weights through torch.optim.swa_utils.AveragedModel, with a decay warm-up."""
from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel


def ema_decay(decay: float, n: float, warmup: bool = True) -> float:
    """The decay applied at the (n+1)-th average: min(decay, (1 + n)/(10 + n)) with ``warmup``."""
    return min(decay, (1.0 + float(n)) / (10.0 + float(n))) if warmup else decay


def ema_model(model: nn.Module, decay: float, warmup: bool = True) -> AveragedModel:
    """An AveragedModel whose decay ramps as :func:`ema_decay` when ``warmup``.

    With the paper's 0.9999 and no warm-up, a run of a few thousand steps would sample from
    weights that are still mostly the initialisation. The counter n is AveragedModel's own
    ``n_averaged`` buffer, so it is saved and restored with the state dict.
    """
    def avg(ema_p, p, n):
        d = ema_decay(decay, n, warmup)
        return d * ema_p + (1.0 - d) * p

    return AveragedModel(model, avg_fn=avg, use_buffers=True)
