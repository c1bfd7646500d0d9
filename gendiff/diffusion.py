"""The generalized diffusion engine: one process, any basis, any schedule (docs/math.md).

With x̄ = Uᵀx every coordinate is an independent scalar Gaussian process:
q(x̄_i | x̄_0) = N(a_i x̄_0, s_i²) (Eq. 7). The engine knows the basis only through
``forward``/``inverse``/``rates`` and the schedule only through ``log_a``/``s2``.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import torch
from torch import Tensor

from gendiff.bases import OrthoBasis
from gendiff.checks import (call_model, check_step_count, check_data, check_finite,
                            check_shape, check_step_range, check_steps)
from gendiff.coefficients import Coefficients
from gendiff.guidance import Branches, Condition, Guidance, branches, check_condition, conditioned, drop_condition
from gendiff.parameterization import EpsPrediction, Parameterization, Prediction
from gendiff.precision import caller_autocast, full_precision
from gendiff.priors import natural_prior
from gendiff.randomness import Generators, check_generator, generator_device, randint, randn
from gendiff.samplers import SAMPLERS, check_grid, make_grid
from gendiff.schedules import Schedule

Model = Callable[[Tensor, Tensor], Tensor]
# Exact Gaussian benchmark, reverse sampler (issue 11): KL/dim 1.3e-3 in bfloat16 vs 2.2e-4 in float32.
LOW_PRECISION_COST = "KL/dim 1.3e-3 in bfloat16 vs 2.2e-4 in float32 on the exact Gaussian benchmark"


class Diffusion:
    """A diffusion process diagonal in ``basis`` with per-coordinate marginals from ``schedule``.

    Args:
        basis: an :class:`OrthoBasis` (acts on the trailing axes ``basis.shape`` of (B, *event);
            its orthonormality is probed on its whole coefficient shape, every channel it mixes).
        schedule: a :class:`Schedule` giving (a_i, s_i) from the basis rates.
        parameterization: what the network predicts (default :class:`EpsPrediction`, the paper's
            ε with the Eq. 18 loss).
        check_basis: verify orthonormality on random probes at construction (skip for very
            large custom bases whose transform is slow).
        validate: check that the schedule is a valid process (σ_i² ≥ 0) for these rates.
        last_train_step: the model is trained on steps 1..``last_train_step`` (default N; the
            official blur-diffusion code trains on 1..N − 1). ``loss`` draws steps there, the
            default grids start there, and ``sample`` warns when a grid leaves that range.
        check_finite: raise on NaN/Inf in the data, the noise and, while sampling, the model's
            output (one reduction per tensor; set False to skip it). In ``loss`` a diverging
            network is left to show as a non-finite loss (the trainer's NaN stop).
    """

    def __init__(self, basis: OrthoBasis, schedule: Schedule, *,
                 parameterization: Parameterization | None = None, check_basis: bool = True,
                 validate: bool = True, last_train_step: int | None = None, check_finite: bool = True):
        if not isinstance(basis, OrthoBasis):
            raise TypeError(f"basis must be an OrthoBasis, got {type(basis).__name__}")
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
        if check_basis:
            basis.check_orthonormal()
        self.basis, self.schedule = basis, schedule
        if parameterization is not None and not isinstance(parameterization, Parameterization):
            raise TypeError(f"parameterization must be a gendiff Parameterization (e.g. EpsPrediction()), got "
                            f"{type(parameterization).__name__}")
        self.parameterization = EpsPrediction() if parameterization is None else parameterization
        self.last_train_step = int(check_step_range(schedule.N if last_train_step is None else last_train_step,
                                                    1, schedule.N, "last_train_step"))
        self.check_finite = bool(check_finite)
        self._rates = basis.rates.to(torch.float64)
        if validate:
            schedule.validate(self._rates)
        self._coefs: dict[tuple[torch.device, torch.dtype], Coefficients] = {}
        self._grids: dict[tuple[str, int, int], list[int]] = {}  # a log-SNR grid reads all N steps

    @property
    def N(self) -> int:
        return self.schedule.N

    def coefficients(self, device=None, dtype: torch.dtype = torch.float64) -> Coefficients:
        """Per-step float64 coefficients on ``device``, multipliers cached in ``dtype``.

        One object per (device, dtype), shared by every call; its cache keys hold every input of
        a multiplier, so no call reads another's stale entry (see gendiff.coefficients).
        """
        key = (torch.device(device or "cpu"), dtype)
        if key not in self._coefs:
            self._coefs[key] = Coefficients(self.schedule, self._rates, key[0], dtype)
        return self._coefs[key]

    def to_basis(self, x: Tensor) -> Tensor:
        """x̄ = Uᵀx in x's dtype, computed in float32 or wider even under autocast (the
        :class:`OrthoBasis` contract guards every transform)."""
        return self.basis.forward(x)

    def from_basis(self, c: Tensor) -> Tensor:
        """x = Uc in c's dtype, computed in float32 or wider even under autocast."""
        return self.basis.inverse(c)

    def marginal(self, i: Tensor) -> tuple[Tensor, Tensor]:
        """(a_i, s_i), float64, shape (B, *basis.coef_shape) ((B, 1, H, W) per channel) for i of shape (B,) (Eq. 7)."""
        i = check_step_range(i, 0, self.N, "marginal")
        return self.schedule.marginal(i, self._rates.to(torch.as_tensor(i).device))

    def log_snr(self, i: Tensor) -> Tensor:
        """λ_i = log(a_i/s_i) per coordinate, float64, shape (B, *basis.coef_shape) for i of shape (B,);
        from log a, so finite where a_i underflows (+∞ at i = 0). Step grids placed by the
        schedule read it (``gendiff.samplers.grids``)."""
        i = check_step_range(i, 0, self.N, "log_snr")
        rates = self._rates.to(torch.as_tensor(i).device)
        return self.schedule.log_a(i, rates) - 0.5 * self.schedule.s2(i, rates).clamp_min(0).log()

    def transition(self, i: Tensor) -> tuple[Tensor, Tensor]:
        """(r_i, σ_i²) of q(x̄_i | x̄_{i−1}) = N(r_i x̄_{i−1}, σ_i²), float64, for i ≥ 1.

        σ_i² is the variance, as everywhere in gendiff (gendiff.coefficients).
        """
        i = check_step_range(i, 1, self.N, "transition")
        r, var = self.schedule.transition(i, self._rates.to(torch.as_tensor(i).device))
        return r, var.clamp_min(0)

    def _cast_marginal(self, i: Tensor, like: Tensor, lo: int = 0, what: str = "steps") -> tuple[Tensor, Tensor]:
        a, s = self.marginal(check_steps(i, like, self.N, lo, what))
        return a.to(like.dtype), s.to(like.dtype)

    def q_sample(self, x0: Tensor, i: Tensor, noise: Tensor | None = None,
                 generator: Generators = None) -> tuple[Tensor, Tensor]:
        """x_i = U(a_i ⊙ Uᵀx_0 + s_i ⊙ Uᵀε) (Eq. 8); returns (x_i, ε) with ε in pixel space.

        Args:
            x0: data, (B, *event): (B, C, H, W), (B, C, L), (B, C, D, H, W), …
            i: steps, LongTensor (B,).
            noise: pixel-space ε; drawn (with ``generator``) when omitted.
        """
        check_data(x0, self.basis)
        check_generator(generator, x0.device, x0.shape[0])
        check_finite(x0, "x0", self.check_finite)
        a, s = self._cast_marginal(i, x0)
        if noise is None:
            eps_bar = randn(x0.shape, generator, x0.dtype, x0.device)
            noise = self.from_basis(eps_bar)
        else:
            if not isinstance(noise, Tensor) or noise.shape != x0.shape:
                got = tuple(noise.shape) if isinstance(noise, Tensor) else type(noise).__name__
                raise ValueError(f"noise must have x0's shape {tuple(x0.shape)}, got {got}")
            check_finite(noise, "noise", self.check_finite)
            eps_bar = self.to_basis(noise.to(x0))
        return self.from_basis(a * self.to_basis(x0) + s * eps_bar), noise

    def loss(self, model: Model, x0: Tensor, *, i: Tensor | None = None, cond: Condition = None,
             p_uncond: float = 0.0, generator: Generators = None) -> Tensor:
        """The parameterization's training loss (Eq. 18 by default), a scalar.

        Args:
            model: ``model(x_i, i)`` in pixel space, or ``model(x_i, i, cond)`` with ``cond``.
            x0: a non-empty data batch.
            i: steps to use (1..N); default uniform on 1..``last_train_step``.
            cond: the condition, one row per example (class labels, LongTensor (B,), or any
                tensor); None trains the unconditional network (``gendiff.guidance``).
            p_uncond: each row's condition is replaced by the null condition with this
                probability, drawn after the steps with ``generator`` (classifier-free guidance).
            generator: for the steps, the dropped conditions and the noise.
        """
        check_data(x0, self.basis)
        if x0.shape[0] == 0:
            raise ValueError("loss needs a non-empty batch, got x0 of shape "
                             f"{tuple(x0.shape)} (the mean over 0 elements is NaN)")
        check_generator(generator, x0.device, x0.shape[0])
        if i is None:
            i = randint(1, self.last_train_step + 1, x0.shape[0], generator, x0.device)
        i = check_steps(i, x0, self.N, 1, "loss")
        cond = check_condition(cond, x0.shape[0], x0.device)
        if cond is None and p_uncond:
            raise ValueError("p_uncond drops a condition: pass cond= (class labels or a tensor) with it")
        net = conditioned(model, None if cond is None else drop_condition(cond, p_uncond, generator))
        amp = caller_autocast(x0.device)

        def checked(x: Tensor, steps: Tensor) -> Tensor:
            with amp():  # only the network runs under the caller's autocast
                # a diverging network shows as a non-finite loss, which the trainer stops on
                return call_model(net, x, steps, finite=False)

        with full_precision(x0.device):
            return self.parameterization.loss(self, checked, x0, i, generator=generator)

    def score(self, x_i: Tensor, i: Tensor, eps: Tensor) -> Tensor:
        """∇ log q(x_i | x_0) = −U(Uᵀε / s_i), i ≥ 1 (Eq. 15–16 with the exponent −1/2, docs/math.md)."""
        return -self.from_basis(self.to_basis(eps) / self._cast_marginal(i, x_i, 1, "score")[1])

    def eps_to_x0(self, x_i: Tensor, i: Tensor, eps: Tensor) -> Tensor:
        """x̂_0 = U((Uᵀx_i − s_i Uᵀε)/a_i). Unstable where a_i underflows; for display."""
        a, s = self._cast_marginal(i, x_i)
        return self.from_basis((self.to_basis(x_i) - s * self.to_basis(eps)) / a)

    def x0_to_eps(self, x_i: Tensor, i: Tensor, x0: Tensor) -> Tensor:
        """ε = U((Uᵀx_i − a_i Uᵀx_0)/s_i), for i ≥ 1."""
        a, s = self._cast_marginal(i, x_i, 1, "x0_to_eps")
        return self.from_basis((self.to_basis(x_i) - a * self.to_basis(x0)) / s)

    def grid(self, sampler: str = "dpm++2m", steps: int | None = None,
             timesteps: Sequence[int] | None = None, start: int | None = None) -> list[int]:
        """The step grid ``sample`` would use: explicit ``timesteps``, or the sampler's default
        grid with ``steps`` intervals from ``start`` (default ``last_train_step``) down to 0."""
        spec = self._sampler(sampler)
        if timesteps is not None:
            return check_grid(timesteps, self.N)
        start = self.last_train_step if start is None else int(check_step_range(start, 1, self.N, "start"))
        if steps is not None:
            check_step_count(steps, start)
        key = (spec.grid, start, steps or spec.steps or start)
        if key not in self._grids:
            self._grids[key] = make_grid(*key[1:], key[0], self.log_snr)
        return list(self._grids[key])

    def _sampler(self, name: str):
        """The registered :class:`Sampler` ``name``, or the one at the import path ``name``."""
        return SAMPLERS.resolve(name)

    @torch.no_grad()
    def sample(self, model: Model, shape: Sequence[int], *, sampler: str = "dpm++2m",
               steps: int | None = None, timesteps: Sequence[int] | None = None, start: int | None = None,
               generator: Generators = None, callback: Callable | None = None,
               progress: bool = True, prior: Callable | None = None,
               clip_x0: tuple[float, float] | None = None, dtype: torch.dtype = torch.float32,
               device=None, cond: Condition = None, guidance: Guidance = None, **sampler_kwargs) -> Tensor:
        """Draw samples x_0 (pixel space) by running ``sampler`` from the prior.

        Args:
            model: ``model(x_i, i)`` (ε̂ for the default parameterization), x_i (B, *event),
                i LongTensor (B,); ``model(x_i, i, cond)`` when ``cond`` is given.
            shape: (B, *event), e.g. (B, C, H, W); ``basis.event_shape(C)`` gives the event.
            sampler: ``"reverse"`` (Eq. 20 on all steps; ``quiet_steps=`` final steps without
                noise), ``"ancestral"``, ``"ddim"`` (``eta=``), ``"dpm++2m"`` (the fast default)
                or ``"ihdm"`` (``delta_scale=``).
            steps: number of network evaluations (≥ 1) on the sampler's default grid.
            timesteps: an explicit strictly decreasing grid ending in 0 (overrides ``steps``).
            start: the default grid's first step (default ``last_train_step``: N, or N − 1 as the
                official loop, which trains on 1..N − 1 and starts sampling at N − 1).
            generator: makes the samples reproducible.
            callback: called per step with ``{"i", "x", "x0"}`` in pixel space.
            progress: show a progress bar.
            prior: ``prior(diffusion, shape, t0, generator, dtype, device) -> x̄_{t0}``; default
                the schedule's natural prior (``schedule.prior``), see ``gendiff.priors``.
            clip_x0: clamp every x̂_0 to this pixel range (lo < hi; e.g. the data range), as
                DDPM's clip_denoised; samplers that read ε̂ or the residual mean get the forms
                consistent with the clamped x̂_0. Off by default: not part of the math, one more
                round trip per step, and it biases the exact answers (docs/math.md).
            dtype, device: of the samples (default float32 on the generator's or CPU device);
                float16/bfloat16 warn with their measured cost.
            cond: the condition, one row per sample (class labels, LongTensor (B,), an int for
                the whole batch, or any tensor); None samples the unconditional network.
            guidance: classifier-free guidance weight w (Eq. G1, docs/math.md): None or 1 the
                conditional model, 0 the unconditional one, else one batched network call on
                both branches per step, combined per basis coordinate. A number, a tensor of
                the coefficient shape (C, H, W) or a rule ``rule(a_i, s_i) -> w`` such as
                :class:`gendiff.guidance.SNRGate`.
        """
        spec = self._sampler(sampler)
        grid = self.grid(sampler, steps, timesteps, start)
        shape = check_shape(shape, dtype, self.basis)
        device = torch.device(device) if device is not None else (
            generator_device(generator) or torch.device("cpu"))
        check_generator(generator, device, shape[0])
        check_sampling(self, grid, clip_x0, dtype)
        prior = natural_prior(self.schedule) if prior is None else prior
        coef = self.coefficients(device, dtype)
        net = branches(model, cond, guidance, shape[0], device, shape[1:])
        denoise = denoiser(self, net, shape[0], coef, clip_x0)
        cb = None if callback is None else (lambda d: callback(
            {"i": d["i"], "x": self.from_basis(d["x"]), "x0": self.from_basis(d["x0"])}))
        with full_precision(device):
            x = prior(self, shape, grid[0], generator, dtype, device)
            x = spec.fn(denoise, x, grid, coef, generator=generator, callback=cb, disable=not progress,
                        **sampler_kwargs)
            return self.from_basis(x)

    def nll(self, model: Model, x0: Tensor, **kwargs):
        """The variational bound in bits/dim (docs/math.md, "Likelihood"); see gendiff.likelihood.nll
        (``cond=`` for a conditional network)."""
        from gendiff.likelihood import nll  # imported here: the engine does not depend on it
        return nll(self, model, x0, **kwargs)

    def __repr__(self) -> str:
        return f"Diffusion({self.basis!r}, {type(self.schedule).__name__}(N={self.N}))"


def denoiser(d: Diffusion, net: Branches, batch: int, coef: Coefficients,
             clip_x0) -> Callable[[Tensor, int], Prediction]:
    """``denoise(x̄, i) -> Prediction``: one inverse, the network (under the caller's autocast; one
    call for both branches of a guided model), one forward, the guided combination (Eq. G1)."""
    amp = caller_autocast(coef.rates.device)
    clip = None if clip_x0 is None else (lambda x0: d.to_basis(d.from_basis(x0).clamp(*clip_x0)))

    def denoise(x_bar: Tensor, i: int) -> Prediction:
        i_b = torch.full((batch,), i, dtype=torch.long, device=x_bar.device)
        x, steps = net.inputs(d.from_basis(x_bar), i_b)
        with amp():
            out = call_model(net.net, x, steps, d.check_finite)
        pred = d.parameterization.predict(net.combine(d.to_basis(out), coef, i), x_bar, i, coef)
        pred.clip = clip
        return pred
    return denoise


def check_sampling(d: Diffusion, grid: list[int], clip_x0, dtype: torch.dtype) -> None:
    """Refuse a reversed clamp range; warn on low precision and on steps the model never saw."""
    if clip_x0 is not None:
        if not (isinstance(clip_x0, (tuple, list)) and len(clip_x0) == 2):
            raise TypeError(f"clip_x0 must be a range (lo, hi), e.g. (-1.0, 1.0), or None; got {clip_x0!r}")
        lo, hi = (float(v) for v in clip_x0)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"clip_x0 must be a finite range (lo, hi) with lo < hi, got {tuple(clip_x0)}")
    if dtype in (torch.float16, torch.bfloat16):
        warnings.warn(f"sampling in {dtype} costs accuracy ({LOW_PRECISION_COST}); sample in "
                      "float32 and cast the result", stacklevel=3)
    if grid[0] > d.last_train_step:
        warnings.warn(f"the grid starts at step {grid[0]} but the model is trained on steps "
                      f"1..{d.last_train_step}; pass start={d.last_train_step} (or timesteps)", stacklevel=3)
