"""The discrete-time variational bound in bits/dim, for any orthonormal basis (docs/math.md,
"Likelihood (bits/dim)").

Per coordinate of x̄ = Uᵀx the forward process is a scalar Gaussian chain, so every term of

    −log p(x_0) ≤ KL(q(x̄_N|x̄_0) ‖ N(0, s_N²))
                  + Σ_{i=2..N} E KL(q(x̄_{i−1}|x̄_i, x̄_0) ‖ p_θ(x̄_{i−1}|x̄_i)) − E log p(x_0|x_1)

is a closed-form Gaussian KL summed over coordinates. The reverse model's mean is, by default,
the posterior mean of q(x̄_{i−1} | x̄_i, x̂̄_0) with the network's prediction, formed in the
parameterization's own form (``Prediction.posterior_mean``; DDPM's model); ``mean="reverse"``
is Eq. 19–20 with the index fixed, (2 − r_i) x̄_i − (σ_i²/s_i) ε̂̄. The variance is σ_i² (or the
posterior variance as an option). Only the public pieces are used: ``basis.forward/inverse/rates``,
``schedule.log_a/s2``, the parameterization's ``predict`` and ``model(x_i, i)``; all scalar math
is float64.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from gendiff.checks import call_model, check_data
from gendiff.guidance import Condition, check_condition, conditioned
from gendiff.parameterization import Prediction
from gendiff.randomness import check_generator

# The Gaussian prior N(0, s_N²) assumes q(x̄_N | x̄_0) has forgotten the data; a larger
# a_N/s_N (e.g. heat dissipation, whose mean colour is never noised away) is refused.
MAX_PRIOR_SNR = 0.1
LN2 = math.log(2.0)
# The reverse model's mean: the posterior mean with the prediction (default), or Eq. 19–20's.
MEANS = ("posterior", "reverse")


@dataclass(frozen=True)
class NLL:
    """The bound on held-out data, in bits per dimension (d = C·H·W per image).

    Attributes:
        bpd: the bound, mean over images (an unbiased estimate when steps are sampled).
        stderr: its standard error over images (covers the data, the x_i draws and the step draws).
        prior, diffusion, decoder: the three terms (bits/dim, means); they sum to ``bpd``.
        n: images; steps: network evaluations per image (N − 1 when exact).
        exact: all N − 1 KL terms summed (True) or an importance-sampled estimate (False).
        per_image: the bound per image, bits/dim, float64 (n,).
        mean: the reverse model's mean, ``"posterior"`` or ``"reverse"`` (Eq. 19–20).
    """

    bpd: float
    stderr: float
    prior: float
    diffusion: float
    decoder: float
    n: int
    steps: int
    exact: bool
    per_image: Tensor
    mean: str = "posterior"

    def __str__(self) -> str:
        how = "exact sum" if self.exact else f"{self.steps} sampled steps"
        return (f"{self.bpd:.4f} ± {self.stderr:.4f} bits/dim ({how}, n={self.n}, {self.mean} mean; "
                f"prior {self.prior:.4f}, "
                f"diffusion {self.diffusion:.4f}, decoder {self.decoder:.4f})")


def _coefs(schedule, rates: Tensor, i: Tensor):
    """(log a_{i−1}, s_{i−1}², log a_i, s_i², r_i, σ_i²) per coordinate, float64, (B, *basis.coef_shape)."""
    la_p, la = schedule.log_a(i - 1, rates), schedule.log_a(i, rates)
    s2_p, s2 = schedule.s2(i - 1, rates), schedule.s2(i, rates)
    r = torch.exp(la - la_p)
    return la_p, s2_p, la, s2, r, s2 - r ** 2 * s2_p


def _prediction(diffusion, out: Tensor, x_bar: Tensor, step: int, coef) -> Prediction:
    """The parameterization's reading of the network output at one step, or a clear refusal."""
    p = diffusion.parameterization
    pred = p.predict(out, x_bar, step, coef)
    if not isinstance(pred, Prediction):
        raise TypeError(f"nll forms the reverse model's mean from the parameterization's Prediction (ε̂, x̂_0 or "
                        f"a mean); {type(p).__name__}.predict returned {type(pred).__name__}, so the network's "
                        "output cannot be read (it is never taken as ε)")
    return pred


def _mean(pred: Prediction, kind: str, x_bar: Tensor, step: int, c) -> Tensor:
    """The reverse model's mean at x̄_i: the posterior mean, or Eq. 19–20's (2 − r)x̄_i − σ²/s ε̂̄."""
    if kind == "posterior":
        try:
            return pred.posterior_mean(step - 1)
        except NotImplementedError as e:
            raise ValueError(f"nll: a {pred.form!r} prediction cannot give the posterior mean ({e}); "
                             "pass mean='reverse' if it gives ε̂") from e
    *_, s2, r, var = c
    return (2 - r) * x_bar - var / s2.sqrt() * pred.eps


def model_means(diffusion, model, x_bar: Tensor, i: Tensor, c, means, dtype) -> dict[str, Tensor]:
    """The reverse model's mean at x̄_i for each kind in ``means``, from one network call.

    The network sees pixels in the data's dtype; its output is read through the diffusion's
    parameterization (``Prediction``) per distinct step, in float64. ``c``: :func:`_coefs` at i.
    """
    out = diffusion.basis.forward(call_model(model, diffusion.basis.inverse(x_bar.to(dtype)), i)).to(torch.float64)
    coef = diffusion.coefficients(x_bar.device)
    steps = i.unique().tolist()
    if len(steps) == 1:  # the exact sum: one step for the whole batch, no gather
        pred = _prediction(diffusion, out, x_bar, steps[0], coef)
        return {m: _mean(pred, m, x_bar, steps[0], c) for m in means}
    mus = {m: torch.empty_like(x_bar) for m in means}
    for step in steps:
        k = i == step
        pred = _prediction(diffusion, out[k], x_bar[k], step, coef)
        for m in means:
            mus[m][k] = _mean(pred, m, x_bar[k], step, [v[k] for v in c])
    return mus


def _forward_draw(diffusion, x0_bar: Tensor, i: Tensor, noise_bar: Tensor):
    """(x̄_i ~ q(x̄_i | x̄_0), the coefficients of :func:`_coefs` at i)."""
    rates = diffusion.basis.rates.to(device=x0_bar.device, dtype=torch.float64)
    c = _coefs(diffusion.schedule, rates, i)
    return c[2].exp() * x0_bar + c[3].sqrt() * noise_bar, c


def step_kl(diffusion, model, x0_bar: Tensor, i: Tensor, noise_bar: Tensor, variance: str,
            dtype, means=MEANS) -> dict[str, Tensor]:
    """KL(q(x̄_{i−1}|x̄_i, x̄_0) ‖ p_θ(x̄_{i−1}|x̄_i)) summed over coordinates, nats (B,), i ≥ 2,
    for each reverse mean in ``means`` (one network call).

    q's mean is (a_{i−1}σ²/s_i²) x̄_0 + (r s_{i−1}²/s_i²) x̄_i, its variance σ̃² = σ² s_{i−1}²/s_i².
    """
    x_bar, c = _forward_draw(diffusion, x0_bar, i, noise_bar)
    la_p, s2_p, la, s2, r, var = c
    mu_q = (la_p.exp() * var / s2) * x0_bar + (r * s2_p / s2) * x_bar
    v_q = var * s2_p / s2
    v_p = var if variance == "transition" else v_q
    out = {}
    for m, mu in model_means(diffusion, model, x_bar, i, c, means, dtype).items():
        kl = 0.5 * (torch.log(v_p / v_q) + (v_q + (mu_q - mu) ** 2) / v_p - 1)
        out[m] = kl.flatten(1).sum(1)
    return out


def _log_bin_prob(lo: Tensor, hi: Tensor) -> Tensor:
    """log(Φ(hi) − Φ(lo)) for lo < hi, accurate in both tails (mirrored where lo > 0)."""
    flip = lo > 0
    a, b = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
    lb, la = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return lb + torch.log(-torch.expm1(la - lb))


def decoder_nll(diffusion, model, x0: Tensor, x0_bar: Tensor, noise_bar: Tensor, kind: str,
                value_range, bits: int, means=MEANS) -> dict[str, Tensor]:
    """−log p(x_0 | x_1) in nats (B,) per reverse mean, p Gaussian with that mean and variance σ_1².

    ``"discrete"``: a discretised Gaussian per pixel on the 2^bits-level grid (Ho et al. 2020),
    with the pixel-space mean Uμ̄ and per-pixel variance the channel's mean σ_1² over coordinates
    (exactly U diag(σ_1²) Uᵀ's diagonal when σ_1 is uniform, as with f(1) = 0; see docs/math.md).
    ``"continuous"``: the Gaussian density N(x̄_0; μ̄, diag(σ_1²)), for continuous data.
    """
    i = torch.ones(x0.shape[0], dtype=torch.long, device=x0.device)
    x_bar, c = _forward_draw(diffusion, x0_bar, i, noise_bar)
    var = c[-1]
    return {m: _decoder_term(diffusion, x0, x0_bar, mu, var, kind, value_range, bits)
            for m, mu in model_means(diffusion, model, x_bar, i, c, means, x0.dtype).items()}


def _decoder_term(diffusion, x0, x0_bar, mu, var, kind, value_range, bits) -> Tensor:
    if kind == "continuous":
        out = 0.5 * (torch.log(2 * math.pi * var) + (x0_bar - mu) ** 2 / var)
        return out.flatten(1).sum(1)
    mean = diffusion.basis.inverse(mu)
    # one variance for every pixel: the mean over the coefficients of the whole event
    std = var.flatten(1).mean(1).reshape(-1, *[1] * (var.dim() - 1)).sqrt()
    lo, hi = value_range
    half = (hi - lo) / (2 * (2 ** bits - 1))
    x = x0.to(torch.float64)
    upper = torch.where(x >= hi - half, math.inf, (x + half - mean) / std)
    lower = torch.where(x <= lo + half, -math.inf, (x - half - mean) / std)
    return _log_bin_prob(lower, upper).neg().flatten(1).sum(1)


def prior_kl(diffusion, x0_bar: Tensor) -> Tensor:
    """KL(q(x̄_N | x̄_0) ‖ N(0, s_N²)) = Σ_k a_N² x̄_0² / (2 s_N²), nats (B,)."""
    rates = diffusion.basis.rates.to(device=x0_bar.device, dtype=torch.float64)
    N = torch.tensor([diffusion.N])
    snr = torch.exp(2 * diffusion.schedule.log_a(N, rates)) / diffusion.schedule.s2(N, rates)
    return (0.5 * snr * x0_bar ** 2).flatten(1).sum(1)


def check_gaussian_prior(diffusion) -> None:
    """Raise ValueError unless a_N/s_N ≤ MAX_PRIOR_SNR for every coordinate (a VP-type end)."""
    rates = diffusion.basis.rates.to(torch.float64)
    N = torch.tensor([diffusion.N])
    ratio = (diffusion.schedule.log_a(N, rates).exp() / diffusion.schedule.s2(N, rates).sqrt()).flatten()
    k = int(ratio.argmax())
    if not float(ratio[k]) <= MAX_PRIOR_SNR:
        raise ValueError(
            f"nll needs a Gaussian-prior (VP-type) schedule whose step N forgets the data, "
            f"a_N/s_N ≤ {MAX_PRIOR_SNR} for every coordinate; {type(diffusion.schedule).__name__} "
            f"has a_N/s_N = {float(ratio[k]):.4g} at coordinate {k} (ρ = {float(rates.flatten()[k]):.4g}). "
            "Its prior is not N(0, s_N²) (heat dissipation keeps the mean colour and samples its "
            "prior from blurred data), so this bound does not apply")


def step_proposal(diffusion, proposal) -> Tensor:
    """Probabilities p(i) over i = 2..N (float64, length N − 1).

    ``"uniform"``; ``"snr"``: p(i) ∝ mean_k σ_i²/s_i², the weight an ε error gets in the KL term
    ((σ_i²/s_i)² ε² / (2σ_i²)), which concentrates draws on the low-noise steps; or any
    non-negative tensor of N − 1 weights.
    """
    n = diffusion.N - 1
    if isinstance(proposal, Tensor):
        w = proposal.to(torch.float64).flatten()
    elif proposal == "uniform":
        w = torch.ones(n, dtype=torch.float64)
    elif proposal == "snr":
        rates = diffusion.basis.rates.to(torch.float64)
        *_, s2, _, var = _coefs(diffusion.schedule, rates, torch.arange(2, diffusion.N + 1))
        w = (var / s2).flatten(1).mean(1)
    else:
        raise ValueError(f"proposal must be 'uniform', 'snr' or a tensor of N − 1 = {n} weights, got {proposal!r}")
    if w.shape != (n,) or not bool((w >= 0).all()) or not float(w.sum()) > 0:
        raise ValueError(f"proposal weights must be {n} non-negative numbers with a positive sum, "
                         f"got shape {tuple(w.shape)}")
    return w / w.sum()


def _quantize(x0: Tensor, value_range, bits: int) -> Tensor:
    lo, hi = value_range
    delta = (hi - lo) / (2 ** bits - 1)
    if float(x0.min()) < lo - delta / 2 or float(x0.max()) > hi + delta / 2:
        raise ValueError(f"x0 must lie in value_range {tuple(value_range)}, got "
                         f"[{float(x0.min()):.4g}, {float(x0.max()):.4g}]")
    return (lo + torch.round((x0 - lo) / delta) * delta).clamp(lo, hi)


def _diffusion_terms(diffusion, model, x0_bar, steps, probs, variance, dtype, generator, bar,
                     means) -> dict[str, Tensor]:
    """Σ_{i=2..N} KL_i per image (nats) per mean, exactly (steps None) or as (1/K)Σ_k KL_{i_k}/p(i_k)."""
    B, dev = x0_bar.shape[0], x0_bar.device
    total = {m: torch.zeros(B, dtype=torch.float64, device=dev) for m in means}
    probs = None if probs is None else probs.to(dev)
    for k in range(2, diffusion.N + 1) if steps is None else range(steps):
        pixel_noise = torch.randn(x0_bar.shape, generator=generator, dtype=torch.float64, device=dev)
        if steps is None:
            i, w = torch.full((B,), k, dtype=torch.long, device=dev), 1.0
        else:
            j = torch.multinomial(probs, B, replacement=True, generator=generator)
            i, w = j + 2, 1.0 / (steps * probs[j])
        kls = step_kl(diffusion, model, x0_bar, i, diffusion.basis.forward(pixel_noise), variance, dtype, means)
        for m in means:
            total[m] += w * kls[m]
        bar.update(1)
    return {m: t.cpu() for m, t in total.items()}


def _positive_int(name: str, value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int ({what}), got {value!r}")
    return value


def _check_args(diffusion, x0, steps, means, variance, decoder, value_range, bits, batch_size, generator):
    """Every argument of :func:`bounds` checked before any work, each error naming what it got."""
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be None, 'all' or a positive int, got {steps!r}")
    if isinstance(means, str) or not means or len(set(means)) != len(means) or not set(means) <= set(MEANS):
        raise ValueError(f"mean must be one of {MEANS} (means: a tuple of distinct ones), got {means!r}")
    for name, val, ok in (("variance", variance, ("transition", "posterior")),
                          ("decoder", decoder, ("discrete", "continuous"))):
        if val not in ok:
            raise ValueError(f"{name} must be one of {ok}, got {val!r}")
    _positive_int("bits", bits, "the data's bit depth, 8 for 8-bit images")
    _positive_int("batch_size", batch_size, "images per network call")
    lo, hi = (float(v) for v in value_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"value_range must be a finite (lo, hi) with lo < hi, got {tuple(value_range)}")
    check_data(x0, diffusion.basis)
    if x0.shape[0] == 0:
        raise ValueError(f"nll needs at least one image, got x0 of shape {tuple(x0.shape)}")
    if not bool(torch.isfinite(x0).all()):
        raise ValueError(f"x0 holds {int((~torch.isfinite(x0)).sum())} NaN/Inf value(s) of {x0.numel()}: "
                         "the likelihood of non-finite data is undefined")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"nll takes one torch.Generator (its steps and noise are drawn per batch), got "
                        f"{type(generator).__name__}")
    check_generator(generator, x0.device)
    check_gaussian_prior(diffusion)


@torch.no_grad()
def nll(diffusion, model: Callable[[Tensor, Tensor], Tensor], x0: Tensor, *, mean: str = "posterior",
        **kwargs) -> NLL:
    """The variational bound on −log p(x_0) in bits/dim (docs/math.md, "Likelihood (bits/dim)").

    Args:
        diffusion: a ``Diffusion`` with a Gaussian-prior (VP-type) schedule; others are refused.
            Its parameterization reads the network's output (ε̂, a residual mean, …).
        model: ``model(x_i, i)`` in pixel space (eval mode is the caller's business), or
            ``model(x_i, i, cond)`` with ``cond``.
        x0: held-out data (B, C, H, W) in ``value_range``.
        mean: the reverse model's mean: ``"posterior"`` (default), the posterior mean of
            q(x̄_{i−1} | x̄_i, x̂̄_0) with the network's prediction, formed without dividing by
            a_i; or ``"reverse"``, Eq. 19–20's (2 − r_i) x̄_i − (σ_i²/s_i) ε̂̄, which is wrong even
            with the exact ε where one step blurs a coordinate strongly (docs/math.md).
        kwargs: ``cond``, ``steps``, ``proposal``, ``variance``, ``decoder``, ``value_range``,
            ``bits``, ``batch_size``, ``generator``, ``progress``, as in :func:`bounds`.
    """
    return bounds(diffusion, model, x0, means=(mean,), **kwargs)[mean]


@torch.no_grad()
def bounds(diffusion, model: Callable[[Tensor, Tensor], Tensor], x0: Tensor, *, means=MEANS,
           steps: None | str | int = None, proposal: str | Tensor = "snr", variance: str = "transition",
           decoder: str = "discrete", value_range: tuple[float, float] = (-1.0, 1.0), bits: int = 8,
           batch_size: int = 256, generator: torch.Generator | None = None,
           progress: bool = True, cond: Condition = None) -> dict[str, NLL]:
    """The bound for each reverse mean in ``means``, from the same network calls, images, noise
    and steps: their per-image difference is exact, not an estimate of two estimates.

    Args:
        diffusion, model, x0: as in :func:`nll`; for the discrete decoder x0 is rounded to the
            2^bits-level grid first (the bound is that of the rounded data).
        means: a tuple of distinct kinds of :data:`MEANS` (see :func:`nll`'s ``mean``).
        steps: ``None`` or ``"all"``: the exact sum over i = 2..N (N − 1 network calls per image);
            an int K: an unbiased estimate from K steps per image drawn from ``proposal``.
        proposal: ``"snr"``, ``"uniform"`` or weights over i = 2..N (see :func:`step_proposal`);
            uniform draws can give heavy-tailed, low-biased estimates with few steps (docs/math.md).
        variance: ``"transition"`` (σ_i², Eq. 19–20) or ``"posterior"`` (σ_i² s_{i−1}²/s_i²).
        decoder: ``"discrete"`` (8-bit data) or ``"continuous"`` (a density, for real-valued data).
        value_range: the data's (lo, hi), for the discrete decoder's grid.
        bits: the data's bit depth (a positive int).
        batch_size: images per network call (a positive int).
        generator: for the forward noise and the step draws (CPU or x0's device).
        progress: show a progress bar.
        cond: the condition of each image (class labels or a tensor, one row per image): the
            bound of the conditional model p(x_0 | cond); None for an unconditional network.
    Returns:
        ``{mean: NLL}``.
    """
    if steps == "all":
        steps = None
    means = tuple(means) if not isinstance(means, str) else means
    _check_args(diffusion, x0, steps, means, variance, decoder, value_range, bits, batch_size, generator)
    cond = check_condition(cond, len(x0), x0.device)
    conds = [None] * math.ceil(len(x0) / batch_size) if cond is None else cond.split(batch_size)
    if diffusion.last_train_step < diffusion.N:
        warnings.warn(f"the bound sums over steps 2..N={diffusion.N}, but the model was trained on "
                      f"1..{diffusion.last_train_step}: the terms above it score steps the model never saw",
                      stacklevel=3)
    if decoder == "discrete":
        x0 = _quantize(x0, value_range, bits)
    probs = step_proposal(diffusion, proposal) if steps is not None and diffusion.N > 1 else None
    n_steps = (diffusion.N - 1 if steps is None else steps) if diffusion.N > 1 else 0
    terms = {m: [] for m in means}
    with tqdm(total=n_steps * math.ceil(len(x0) / batch_size), desc="nll", disable=not progress) as bar:
        for x, c in zip(x0.split(batch_size), conds):
            net = conditioned(model, c)
            x0_bar = diffusion.basis.forward(x.to(torch.float64))
            pixel_noise = torch.randn(x.shape, generator=generator, dtype=torch.float64, device=x.device)
            noise1 = diffusion.basis.forward(pixel_noise)
            zero = torch.zeros(len(x), dtype=torch.float64)
            kl = (_diffusion_terms(diffusion, net, x0_bar, steps, probs, variance, x.dtype, generator, bar, means)
                  if n_steps else {m: zero for m in means})
            dec = decoder_nll(diffusion, net, x, x0_bar, noise1, decoder, value_range, bits, means)
            prior = prior_kl(diffusion, x0_bar).cpu()
            for m in means:
                terms[m].append(torch.stack([prior, kl[m], dec[m].cpu()], 1))
    return {m: _summary(torch.cat(t) / (x0[0].numel() * LN2), n_steps, steps is None, m) for m, t in terms.items()}


def _summary(t: Tensor, n_steps: int, exact: bool, mean: str) -> NLL:
    """The NLL of per-image terms (n, 3) in bits/dim: prior, diffusion, decoder."""
    per_image = t.sum(1)
    se = float(per_image.std() / math.sqrt(len(per_image))) if len(per_image) > 1 else math.nan
    return NLL(float(per_image.mean()), se, *(float(v) for v in t.mean(0)), len(per_image), n_steps,
               exact, per_image, mean)
