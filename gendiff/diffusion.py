"""The generalized diffusion engine: one process, any basis, any schedule (DESIGN §2, §4).

With x̄ = Uᵀx every coordinate is an independent scalar Gaussian process:
q(x̄_i | x̄_0) = N(a_i x̄_0, s_i²) (Eq. 7). The engine knows the basis only through
``forward``/``inverse``/``rates`` and the schedule only through ``log_a``/``s2``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from gendiff.bases import OrthoBasis
from gendiff.checks import call_model, check_data, check_generator, check_shape, check_step_range, check_steps
from gendiff.parameterization import EpsPrediction, Parameterization
from gendiff.precision import caller_autocast, full_precision
from gendiff.priors import gaussian_prior
from gendiff.samplers import SAMPLERS, StepCoefficients, check_grid, make_grid
from gendiff.schedules import Schedule

Model = Callable[[Tensor, Tensor], Tensor]


class Diffusion:
    """A diffusion process diagonal in ``basis`` with per-coordinate marginals from ``schedule``.

    Args:
        basis: an :class:`OrthoBasis` (acts on the last two axes).
        schedule: a :class:`Schedule` giving (a_i, s_i) from the basis rates.
        parameterization: what the network predicts (default :class:`EpsPrediction`, the paper's
            ε with the Eq. 18 loss).
        check_basis: verify orthonormality on random probes at construction (skip for very
            large custom bases whose transform is slow).
        validate: check that the schedule is a valid process (σ_i² ≥ 0) for these rates.
    """

    def __init__(self, basis: OrthoBasis, schedule: Schedule, *,
                 parameterization: Parameterization | None = None, check_basis: bool = True,
                 validate: bool = True):
        if not isinstance(basis, OrthoBasis):
            raise TypeError(f"basis must be an OrthoBasis, got {type(basis).__name__}")
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
        if check_basis:
            basis.check_orthonormal()
        self.basis, self.schedule = basis, schedule
        self.parameterization = parameterization or EpsPrediction()
        self._rates = basis.rates.to(torch.float64)
        if validate:
            schedule.validate(self._rates)
        self._coefs: dict[torch.device, StepCoefficients] = {}

    @property
    def N(self) -> int:
        return self.schedule.N

    def coefficients(self, device=None) -> StepCoefficients:
        """Per-step float64 (log a_i, s_i) on ``device``, as samplers see them."""
        device = torch.device(device or "cpu")
        if device not in self._coefs:
            self._coefs[device] = StepCoefficients(self.schedule, self._rates, device)
        return self._coefs[device]

    def _transform(self, fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        """A basis transform ``fn(x)`` in float32 or wider with autocast off, in x's dtype."""
        wide = x if x.dtype in (torch.float32, torch.float64) else x.float()
        with full_precision(x.device):
            return fn(wide).to(x.dtype)

    def _to_basis(self, x: Tensor) -> Tensor:
        """x̄ = Uᵀx, computed in float32 or wider even under autocast."""
        return self._transform(self.basis.forward, x)

    def _from_basis(self, c: Tensor) -> Tensor:
        """x = Uc, computed in float32 or wider even under autocast."""
        return self._transform(self.basis.inverse, c)

    def marginal(self, i: Tensor) -> tuple[Tensor, Tensor]:
        """(a_i, s_i), float64, shape (B, 1, H, W) for i of shape (B,) (Eq. 7)."""
        i = check_step_range(i, 0, self.N, "marginal")
        rates = self.coefficients(torch.as_tensor(i).device).rates
        return self.schedule.marginal(i, rates)

    def transition(self, i: Tensor) -> tuple[Tensor, Tensor]:
        """(r_i, σ_i) of q(x̄_i | x̄_{i−1}) = N(r_i x̄_{i−1}, σ_i²), float64, for i ≥ 1."""
        i = check_step_range(i, 1, self.N, "transition")
        rates = self.coefficients(torch.as_tensor(i).device).rates
        r, var = self.schedule.transition(i, rates)
        return r, var.clamp_min(0).sqrt()

    def _cast_marginal(self, i: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        a, s = self.marginal(check_steps(i, like, self.N))
        return a.to(like.dtype), s.to(like.dtype)

    def q_sample(self, x0: Tensor, i: Tensor, noise: Tensor | None = None,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """x_i = U(a_i ⊙ Uᵀx_0 + s_i ⊙ Uᵀε) (Eq. 8); returns (x_i, ε) with ε in pixel space.

        Args:
            x0: data, (B, C, H, W).
            i: steps, LongTensor (B,).
            noise: pixel-space ε; drawn (with ``generator``) when omitted.
        """
        check_data(x0, self.basis)
        check_generator(generator, x0.device)
        a, s = self._cast_marginal(i, x0)
        if noise is None:
            eps_bar = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
            noise = self._from_basis(eps_bar)
        else:
            if not isinstance(noise, Tensor) or noise.shape != x0.shape:
                got = tuple(noise.shape) if isinstance(noise, Tensor) else type(noise).__name__
                raise ValueError(f"noise must have x0's shape {tuple(x0.shape)}, got {got}")
            eps_bar = self._to_basis(noise.to(x0))
        return self._from_basis(a * self._to_basis(x0) + s * eps_bar), noise

    def loss(self, model: Model, x0: Tensor, *, i: Tensor | None = None,
             generator: torch.Generator | None = None) -> Tensor:
        """The parameterization's training loss (Eq. 18 by default), a scalar.

        Args:
            model: ``model(x_i, i)`` in pixel space.
            x0: a data batch.
            i: steps to use; default uniform on 1..N.
            generator: for the steps and the noise.
        """
        check_data(x0, self.basis)
        check_generator(generator, x0.device)
        if i is None:
            i = torch.randint(1, self.N + 1, (x0.shape[0],), generator=generator, device=x0.device)
        i = check_steps(i, x0, self.N)
        amp = caller_autocast(x0.device)

        def checked(x: Tensor, steps: Tensor) -> Tensor:
            with amp():  # only the network runs under the caller's autocast
                return call_model(model, x, steps)

        with full_precision(x0.device):
            return self.parameterization.loss(self, checked, x0, i, generator=generator)

    def score(self, x_i: Tensor, i: Tensor, eps: Tensor) -> Tensor:
        """∇ log q(x_i | x_0) = −U(Uᵀε / s_i) (Eq. 15–16 with the exponent −1/2, DESIGN §2)."""
        return -self._from_basis(self._to_basis(eps) / self._cast_marginal(i, x_i)[1])

    def eps_to_x0(self, x_i: Tensor, i: Tensor, eps: Tensor) -> Tensor:
        """x̂_0 = U((Uᵀx_i − s_i Uᵀε)/a_i). Unstable where a_i underflows; for display."""
        a, s = self._cast_marginal(i, x_i)
        return self._from_basis((self._to_basis(x_i) - s * self._to_basis(eps)) / a)

    def x0_to_eps(self, x_i: Tensor, i: Tensor, x0: Tensor) -> Tensor:
        """ε = U((Uᵀx_i − a_i Uᵀx_0)/s_i), for i ≥ 1."""
        a, s = self._cast_marginal(i, x_i)
        return self._from_basis((self._to_basis(x_i) - a * self._to_basis(x0)) / s)

    def eps_to_score(self, x_i: Tensor, i: Tensor, eps: Tensor) -> Tensor:
        return self.score(x_i, i, eps)

    def grid(self, sampler: str = "dpm++2m", steps: int | None = None,
             timesteps: Sequence[int] | None = None) -> list[int]:
        """The step grid ``sample`` would use: explicit ``timesteps`` or the sampler's default."""
        spec = self._sampler(sampler)
        if timesteps is not None:
            return check_grid(timesteps, self.N)
        return make_grid(self.N, steps or spec.steps or self.N, spec.grid)

    def _sampler(self, name: str):
        if name not in SAMPLERS:
            raise ValueError(f"unknown sampler {name!r}; valid: {sorted(SAMPLERS)}")
        return SAMPLERS[name]

    @torch.no_grad()
    def sample(self, model: Model, shape: Sequence[int], *, sampler: str = "dpm++2m",
               steps: int | None = None, timesteps: Sequence[int] | None = None,
               generator: torch.Generator | None = None, callback: Callable | None = None,
               progress: bool = True, prior: Callable = gaussian_prior,
               clip_x0: tuple[float, float] | None = None, dtype: torch.dtype = torch.float32,
               device=None, **sampler_kwargs) -> Tensor:
        """Draw samples x_0 (pixel space) by running ``sampler`` from the prior.

        Args:
            model: ``model(x_i, i)`` (ε̂ for the default parameterization), x_i (B, C, H, W),
                i LongTensor (B,).
            shape: (B, C, H, W).
            sampler: ``"reverse"`` (Eq. 19–20, all N steps), ``"ancestral"``, ``"ddim"``
                (``eta=`` as keyword) or ``"dpm++2m"`` (the fast default).
            steps: number of network evaluations on the sampler's default grid.
            timesteps: an explicit strictly decreasing grid ending in 0 (overrides ``steps``).
            generator: makes the samples reproducible.
            callback: called per step with ``{"i", "x", "x0"}`` in pixel space.
            progress: show a progress bar.
            prior: ``prior(diffusion, shape, t0, generator, dtype, device) -> x̄_{t0}``
                (coefficients at the grid's first step; see ``gendiff.priors``).
            clip_x0: clamp every x̂_0 to this pixel range (e.g. the data range (−1, 1)), as
                DDPM's clip_denoised. Off by default: it is not part of the math, costs one more
                round trip per step, and would bias the exact answers on Gaussian data. On for
                trained image models: a barely trained network's ε error, divided by a small
                a_i, otherwise leaves speckled samples with the deterministic samplers.
            dtype, device: of the samples (default float32 on the generator's or CPU device).
        """
        spec = self._sampler(sampler)
        grid = self.grid(sampler, steps, timesteps)
        shape = check_shape(shape, dtype, self.basis)
        device = torch.device(device) if device is not None else (
            generator.device if generator is not None else torch.device("cpu"))
        check_generator(generator, device)
        coef = self.coefficients(device)
        amp = caller_autocast(device)

        def denoise(x_bar: Tensor, i: int) -> Tensor:
            i_b = torch.full((shape[0],), i, dtype=torch.long, device=device)
            x_i = self._from_basis(x_bar)
            with amp():  # only the network runs under the caller's autocast
                out = call_model(model, x_i, i_b)  # cast back to the sample dtype
            x0 = self.parameterization.denoise(self._to_basis(out), x_bar, i, coef)
            return x0 if clip_x0 is None else self._to_basis(self._from_basis(x0).clamp(*clip_x0))

        cb = None if callback is None else (lambda d: callback(
            {"i": d["i"], "x": self._from_basis(d["x"]), "x0": self._from_basis(d["x0"])}))
        with full_precision(device):
            x = prior(self, shape, grid[0], generator, dtype, device)
            x = spec.fn(denoise, x, grid, coef, generator=generator, callback=cb, disable=not progress,
                        **sampler_kwargs)
            return self._from_basis(x)

    def __repr__(self) -> str:
        return f"Diffusion({self.basis!r}, {type(self.schedule).__name__}(N={self.N}))"

    def nll(self, model: Model, x0: Tensor, **kwargs):
        """The variational bound in bits/dim (docs/math.md, "Likelihood"); see gendiff.likelihood.nll."""
        from gendiff.likelihood import nll  # imported here: the engine does not depend on it
        return nll(self, model, x0, **kwargs)
