"""Noise schedules as log ᾱ_i, i = 0..N, in float64 (log ᾱ_0 = 0)."""
from __future__ import annotations

import math

import numpy as np

from gendiff.registry import Registry


def linear(N: int, beta_1: float = 1e-4, beta_N: float = 0.02) -> np.ndarray:
    """DDPM's linear β_i from beta_1 to beta_N (Ho et al. 2020); log ᾱ_i = Σ_{j≤i} log(1 − β_j)."""
    betas = np.linspace(beta_1, beta_N, N, dtype=np.float64)
    return np.concatenate([[0.0], np.cumsum(np.log1p(-betas))])


def cosine(N: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """iDDPM's cosine schedule (Nichol & Dhariwal 2021), β clipped at max_beta as they do."""
    t = np.arange(N + 1, dtype=np.float64) / N
    f = np.cos((t + s) / (1 + s) * np.pi / 2) ** 2
    betas = np.minimum(1 - f[1:] / f[:-1], max_beta)
    return np.concatenate([[0.0], np.cumsum(np.log1p(-betas))])


def logsnr_cosine_t(t: np.ndarray, logsnr_max: float = 10.0, logsnr_min: float = -10.0) -> np.ndarray:
    """logsnr(t) = −2 log tan(t (atan(e^{−min/2}) − atan(e^{−max/2})) + atan(e^{−max/2}))."""
    b = math.atan(math.exp(-0.5 * logsnr_max))
    a = math.atan(math.exp(-0.5 * logsnr_min)) - b
    return -2.0 * np.log(np.tan(a * np.asarray(t, np.float64) + b))


def logsnr_cosine(N: int, logsnr_max: float = 10.0, logsnr_min: float = -10.0) -> np.ndarray:
    """Variance-preserving log ᾱ_i = log sigmoid(logsnr(i/N)) for i ≥ 1 (Hoogeboom & Salimans)."""
    logsnr = logsnr_cosine_t(np.arange(1, N + 1) / N, logsnr_max, logsnr_min)
    return np.concatenate([[0.0], -np.logaddexp(0.0, -logsnr)])


# An entry is a function (N, **kwargs) -> log ᾱ_i, i = 0..N; register custom ones with
# ``@NOISE.register("name")`` or pass an import path.
NOISE = Registry("noise schedule")
NOISE.register("linear", linear)
NOISE.register("cosine", cosine)
NOISE.register("logsnr-cosine", logsnr_cosine)


def log_alpha_bar(name: str, N: int, **kwargs) -> np.ndarray:
    """log ᾱ_i, i = 0..N, of the noise schedule ``name`` (registered name or import path)."""
    return NOISE.resolve(name)(N, **kwargs)
