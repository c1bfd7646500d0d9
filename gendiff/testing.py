"""Conformance checks for your own basis, schedule and sampler (docs/extending.md).

Each check is a plain function: it returns a dict of the measured errors when the component
conforms, and raises :class:`ConformanceError` (an ``AssertionError`` and a ``ValueError``)
saying what failed and by how much when it does not. They use only the public contract — a
basis's ``forward``/``inverse``/``rates``, a schedule's ``log_a``/``s2``/``N``, and
``Diffusion.sample`` — and take seconds at 8×8::

    from gendiff import testing
    testing.check_basis(MyBasis((8, 8)))
    testing.check_schedule(MySchedule(), MyBasis((8, 8)).rates)
    testing.check_sampler(my_sampler_fn, Diffusion(DCTBasis((8, 8)), VPBlurSchedule()))
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Sequence

import torch
from torch import Tensor

from gendiff.oracle import gaussian_kl, linear_output_variance, oracle_model, oracle_run
from gendiff.parameterization import EpsPrediction

# A basis whose plane has at most this many pixels is checked as a dense matrix (exact);
# larger ones on random probes.
DENSE_MAX = 1024  # 32×32: the three d×d products take about a second
TOL64, TOL32 = 1e-9, 1e-4
PROBE_NUMBERS = 1 << 22  # per schedule call in check_schedule: 32 MiB of float64


class ConformanceError(AssertionError, ValueError):
    """A component that breaks gendiff's contract; the message says which part and by how much."""


def _fail(what: str, detail: str) -> None:
    raise ConformanceError(f"{what}: {detail}")


def _require(ok: bool, what: str, detail: str) -> None:
    if not ok:
        _fail(what, detail)


# ---------------------------------------------------------------------------------- basis

def _event(basis) -> tuple[int, ...]:
    """The basis's coefficient shape: (1, *shape) per channel, ``shape`` when it mixes channels
    (``joint_channels``); its whole event, on which it must be orthonormal."""
    shape = getattr(basis, "shape", None)
    _require(shape is not None and 1 <= len(shape) <= 4, f"{type(basis).__name__}",
             f"a basis needs .shape = the sizes of the axes it acts on, e.g. (H, W), got {shape!r}")
    shape = tuple(int(n) for n in shape)
    return shape if getattr(basis, "joint_channels", False) else (1, *shape)


def check_rates(basis) -> dict[str, float]:
    """ρ is a float64 tensor of the coefficient shape ((1, H, W) for a per-channel 2-D basis,
    (C, H, W) for one that mixes channels), finite and ≥ 0 (docs/math.md, Notation)."""
    name, event = type(basis).__name__, _event(basis)
    try:
        rho = basis.rates
    except (TypeError, ValueError) as e:  # an OrthoBasis refuses bad rates itself, saying why
        raise ConformanceError(str(e)) from e
    _require(isinstance(rho, Tensor), f"{name}.rates", f"must be a torch.Tensor, got {type(rho).__name__}")
    _require(tuple(rho.shape) == event, f"{name}.rates",
             f"must have shape {event} (one rate per coordinate of the event, 1 on a channel axis "
             f"the basis broadcasts over), got {tuple(rho.shape)}")
    _require(rho.dtype == torch.float64, f"{name}.rates", f"must be float64, got {rho.dtype}")
    bad = int((~torch.isfinite(rho)).sum())
    _require(bad == 0, f"{name}.rates", f"{bad} of {rho.numel()} rates are not finite")
    _require(float(rho.min()) >= 0, f"{name}.rates", f"must be ≥ 0, min is {float(rho.min()):.4g}")
    return {"rates_min": float(rho.min()), "rates_max": float(rho.max())}


def _transforms(basis, x: Tensor, what: str) -> tuple[Tensor, Tensor]:
    """forward(x), inverse(x), each checked to keep x's shape, dtype and device."""
    out = []
    for fn in ("forward", "inverse"):
        y = getattr(basis, fn)(x)
        got = (tuple(y.shape), y.dtype, y.device)
        _require(got == (tuple(x.shape), x.dtype, x.device), f"{type(basis).__name__}.{fn} ({what})",
                 f"must keep (shape, dtype, device) = {(tuple(x.shape), x.dtype, x.device)}, got {got}")
        out.append(y)
    return out[0], out[1]


def _matrices(basis, event: tuple[int, ...], device) -> tuple[Tensor, Tensor]:
    """(Uᵀ, U) as dense d×d float64 matrices, from the transforms of the unit events."""
    d = math.prod(event)
    eye = torch.eye(d, dtype=torch.float64, device=device).reshape(d, *event)
    ut, u = _transforms(basis, eye, "float64")
    return ut.reshape(d, d).T, u.reshape(d, d).T


def _orthonormality(basis, event: tuple[int, ...], device, probes: int, seed: int) -> dict[str, float]:
    """Max deviations of UᵀU and UUᵀ from I (U: the matrix of ``inverse``) and of forward from Uᵀ,
    on the whole event (every channel a joint basis mixes)."""
    d = math.prod(event)
    if d <= DENSE_MAX:
        ut, u = _matrices(basis, event, device)
        eye = torch.eye(d, dtype=torch.float64, device=device)
        return {"UᵀU = I": float((u.T @ u - eye).abs().max()),
                "UUᵀ = I": float((u @ u.T - eye).abs().max()),
                "forward = Uᵀ (the transpose of inverse)": float((ut - u.T).abs().max())}
    g = torch.Generator(device=device).manual_seed(seed)
    x, y = (torch.randn(probes, *event, generator=g, dtype=torch.float64, device=device) for _ in "xy")
    fx, ix = _transforms(basis, x, "float64")
    dot = lambda p, q: (p * q).flatten(1).sum(1)  # noqa: E731
    norm = dot(x, x).sqrt()
    return {"UᵀU = I": float(((dot(ix, ix) - dot(x, x)) / norm ** 2).abs().max()),  # ‖Ux‖ = ‖x‖
            "UUᵀ = I": float((basis.inverse(fx) - x).abs().max()),
            "forward = Uᵀ (the transpose of inverse)":  # <Uᵀx, y> = <x, Uy>
            float(((dot(fx, y) - dot(x, basis.inverse(y))) / (norm * dot(y, y).sqrt())).abs().max())}


def check_basis(basis, *, device=None, probes: int = 8, seed: int = 0,
                atol64: float = TOL64, atol32: float = TOL32) -> dict[str, float]:
    """Check the basis contract on its whole event: orthonormal, exact round trips, per-channel
    (unless it mixes channels), valid rates.

    The event is the coefficient shape: (1, *shape) for a per-channel basis, ``shape`` = (C, …)
    for one with ``joint_channels`` (docs/math.md, Notation).

    - rates: float64, of the coefficient shape, finite, ≥ 0 (:func:`check_rates`);
    - UᵀU = I and UUᵀ = I in float64, and ``inverse`` is the transpose of ``forward`` — exactly
      on the dense matrix for events of ≤ 1024 numbers, else on random probes (relative errors);
    - round trip inverse(forward(x)) = x in float32 and float64, relative to max |x|;
    - forward/inverse keep shape, dtype and device, on a batch of 2 (3 channels per channel);
    - a per-channel basis gives every channel the same operator (channel c of forward(x) =
      forward(x[:, c])).

    Args:
        basis: the basis (an :class:`gendiff.bases.OrthoBasis`).
        device: where to run the transforms (default CPU).
        probes, seed: random probes for large bases.
        atol64, atol32: tolerances in float64 and float32.
    Returns:
        the measured maximum errors, by check.
    """
    name, event = type(basis).__name__, _event(basis)
    joint = getattr(basis, "joint_channels", False)
    device = torch.device(device or "cpu")
    report = check_rates(basis)
    for what, err in _orthonormality(basis, event, device, probes, seed).items():
        _require(err <= atol64, f"{name} is not orthonormal", f"{what} fails by {err:.3g} (tolerance {atol64:g})")
        report[what] = err
    g = torch.Generator(device=device).manual_seed(seed)
    x64 = torch.randn(2, *event, generator=g, dtype=torch.float64, device=device) if joint else \
        torch.randn(2, 3, *event[1:], generator=g, dtype=torch.float64, device=device)
    for dtype, tol in ((torch.float64, atol64), (torch.float32, atol32)):
        x = x64.to(dtype)
        fx, _ = _transforms(basis, x, str(dtype))
        err = float((basis.inverse(fx) - x).abs().max() / x.abs().max())
        _require(err <= tol, f"{name} round trip in {dtype}",
                 f"inverse(forward(x)) differs from x by {err:.3g} relative (tolerance {tol:g})")
        report[f"round trip {dtype}"] = err
    if joint:
        return report
    per_channel = torch.cat([basis.forward(x64[:, c:c + 1]) for c in range(3)], 1)
    err = float((per_channel - basis.forward(x64)).abs().max())
    _require(err <= atol64, f"{name}.forward", f"must apply the same operator to every channel; the "
             f"channels of a batch and the channels alone differ by {err:.3g}")
    return report


# ------------------------------------------------------------------------------- schedule

def _step_values(schedule, i: Tensor, rates: Tensor) -> tuple[Tensor, Tensor]:
    la, s2 = schedule.log_a(i, rates), schedule.s2(i, rates)
    want = (len(i), *rates.shape)
    for nm, v in (("log_a", la), ("s2", s2)):
        _require(isinstance(v, Tensor) and tuple(v.shape) == want and v.dtype == torch.float64,
                 f"{type(schedule).__name__}.{nm}", f"must return float64 of shape {want} for "
                 f"{len(i)} steps, got {getattr(v, 'dtype', type(v).__name__)} {tuple(getattr(v, 'shape', ()))}")
    return la, s2


def _first(bad: Tensor, i: Tensor, rates: Tensor) -> str:
    """'step i=…, coordinate (…), ρ=…' of the first True entry of a (B, *rates.shape) mask."""
    k, *pos = (int(v) for v in bad.nonzero()[0])
    return f"step i={int(i[k])}, coordinate {tuple(pos)}, ρ={float(rates[tuple(pos)]):.4g}"


def _check_steps(name: str, i: Tensor, rates: Tensor, now, before, monotone: bool, rtol: float) -> float:
    """Steps i ≥ 1 against their predecessors: finite, s² > 0, σ² ≥ 0, (monotone a); min σ²/s²."""
    (la, s2), (la_p, s2_p) = now, before
    for nm, v in (("log a_i", la), ("s_i²", s2)):
        if not bool(torch.isfinite(v).all()):
            _fail(name, f"{nm} is not finite at {_first(~torch.isfinite(v), i, rates)}")
    if not bool((s2 > 0).all()):
        _fail(name, f"s_i² must be > 0 for i ≥ 1, got {float(s2[~(s2 > 0)][0]):.4g} at "
              f"{_first(~(s2 > 0), i, rates)}")
    var = s2 - torch.exp(2 * (la - la_p)) * s2_p
    bad = var / s2 < -rtol
    if bool(bad.any()):
        _fail(f"{name} is not a valid diffusion", f"σ_i² = s_i² − r_i² s_(i−1)² = {float(var[bad][0]):.4g} "
              f"< 0 at {_first(bad, i, rates)} (the signal grows faster than the noise allows)")
    bad = la > la_p + 1e-12
    if monotone and bool(bad.any()):
        _fail(name, f"log a_i must be non-increasing (monotone=True), it grows by "
              f"{float((la - la_p)[bad][0]):.4g} at {_first(bad, i, rates)}")
    return float((var / s2).min())


def check_schedule(schedule, rates, *, monotone: bool = False, chunk: int = 128,
                   rtol: float = 1e-9) -> dict[str, float]:
    """Check the schedule contract from ``log_a``, ``s2`` and ``N`` alone, at every step.

    - shapes: (B, *rates.shape), float64;
    - a_0 = 1 and s_0 = 0 (x_0 is data);
    - log a_i and s_i² finite, s_i² > 0 for i ≥ 1;
    - σ_i² = s_i² − r_i² s_{i−1}² ≥ 0 (r_i = a_i/a_{i−1}): a valid forward chain (docs/math.md, Eq. 6);
    - with ``monotone=True``: log a_i non-increasing in i (the signal only decays).

    The schedule is probed on the basis's real rates tensor, at its coefficient shape, as
    ``Diffusion`` does (``Schedule.validate`` with the default ``validation_rates``): a schedule
    that reads a per-coordinate table by position passes both or fails both.

    Args:
        schedule: an object with ``N``, ``log_a(i, rates)`` and ``s2(i, rates)``.
        rates: ρ of the basis's coefficient shape ((1, H, W), (C, H, W), (1, L), …), or a basis
            (its ``rates`` are used).
        monotone: also require a_i ≤ a_{i−1}.
        chunk: steps evaluated at once (fewer for large events: memory O(chunk × coordinates)).
        rtol: negative σ² allowed relative to s_i², for rounding.
    Returns:
        the measured extremes (min σ²/s², |log a_0|, s_0², …).
    """
    name = type(schedule).__name__
    rates = getattr(rates, "rates", rates)
    _require(isinstance(rates, Tensor) and rates.dim() >= 2 and rates.is_floating_point(), f"{name}",
             "rates must be a floating-point tensor of a basis's coefficient shape (1 or C, *spatial), "
             f"got {tuple(getattr(rates, 'shape', ()))}")
    N = schedule.N
    _require(isinstance(N, int) and N >= 1, f"{name}.N", f"must be an int ≥ 1, got {N!r}")
    rates = rates.to(torch.float64)
    chunk = max(1, min(chunk, PROBE_NUMBERS // rates.numel()))
    la0, s20 = _step_values(schedule, torch.tensor([0]), rates)
    report = {"|log a_0|": float(la0.abs().max()), "|s_0²|": float(s20.abs().max())}
    _require(report["|log a_0|"] <= 1e-12, f"{name}", f"a_0 must be 1 (log a_0 = 0), |log a_0| is up to "
             f"{report['|log a_0|']:.3g}")
    _require(report["|s_0²|"] <= 1e-12, f"{name}", f"s_0 must be 0, s_0² is up to {report['|s_0²|']:.3g}")
    worst, prev = math.inf, (la0, s20)
    for start in range(1, N + 1, chunk):
        i = torch.arange(start, min(start + chunk, N + 1))
        la, s2 = _step_values(schedule, i, rates)
        la_p, s2_p = torch.cat([prev[0], la[:-1]]), torch.cat([prev[1], s2[:-1]])
        worst = min(worst, _check_steps(name, i, rates, (la, s2), (la_p, s2_p), monotone, rtol))
        prev = (la[-1:], s2[-1:])
    report["min σ_i²/s_i²"] = worst
    return report


# -------------------------------------------------------------------------------- sampler

REFERENCE_SAMPLERS = ("ddim", "ancestral", "dpm++2m")


@contextmanager
def registered_sampler(sampler, grid: str = "uniform", steps: int | None = 50):
    """Yield a name under which ``Diffusion.sample`` finds ``sampler``; unregister afterwards.

    ``sampler``: a registered name or import path, a :class:`gendiff.samplers.Sampler`, or a
    plain sampler function ``fn(denoise, x, timesteps, coef, *, generator, callback, disable, **opts)``
    (registered with ``grid`` and ``steps``). The one place that knows how the registry works.
    """
    from gendiff.samplers import SAMPLERS, Sampler
    if isinstance(sampler, str):
        try:
            SAMPLERS.resolve(sampler)  # a registered name or an import path
        except (ImportError, TypeError, ValueError) as e:
            raise ConformanceError(f"check_sampler: {e}") from e
        yield sampler
        return
    spec = sampler if isinstance(sampler, Sampler) else Sampler(sampler, grid, steps)
    _require(callable(spec.fn), "check_sampler", f"a sampler must be a name or a function, got {sampler!r}")
    name = f"_checked-{getattr(spec.fn, '__name__', 'sampler')}-{id(spec)}"
    SAMPLERS.register(name, spec)
    try:
        yield name
    finally:
        SAMPLERS.unregister(name)


def default_diffusion(size: int = 8):
    """The process :func:`check_sampler` uses when given none: quartic blur (f(N) = 0.140625),
    DCT, cosine noise, N = 1000.

    Its σ = s/a (:func:`sigma_range`) runs from 6.4e-3 at step 1 to 2.0e4 at step N for the
    mean colour, and to 2e189 for the highest frequency, which the blur has erased: a sampler
    that steps in σ or x/a (EDM's form) must cope with that range, or diverges here.
    """
    from gendiff import DCTBasis, Diffusion
    from gendiff.schedules import VPBlurSchedule
    # cosine noise: the built-in samplers' own error at 100 evaluations is then small (KL ≤ 6e-3),
    # so the comparison in check_sampler is tight.
    return Diffusion(DCTBasis((size, size)), VPBlurSchedule("quartic", f_N=0.140625, noise="cosine"))


def sigma_range(diffusion, start: int | None = None) -> dict[str, tuple[float, float]]:
    """σ = s/a over the coordinates, (smallest, largest), at step 1 and at the grid's first step
    (default ``last_train_step``): the range a sampler written in σ must cover."""
    coef, start = diffusion.coefficients(), diffusion.last_train_step if start is None else start
    out = {}
    for i in (1, start):
        sigma = torch.exp(-coef.log_snr(i))
        out[f"step {i}"] = (float(sigma.min()), float(sigma.max()))
    return out


def _default_lam(diffusion) -> Tensor:
    """Natural-image-like data variances: power falls with the rate (frequency)."""
    return 0.05 + 1.0 / (1.0 + 20 * diffusion.basis.rates.to(torch.float64))


def _run(diffusion, name: str, lam: Tensor, steps: int, opts, scale=1.0, seed: int = 0) -> tuple[Tensor, int]:
    """(x̄_0, network evaluations) of one run from x̄_T = s_T ⊙ scale with the exact denoiser."""
    shape = (1, *diffusion.basis.coef_shape)
    return oracle_run(diffusion, lam, name, shape=shape, scale=scale, seed=seed, steps=steps, **opts)


def steps_for_nfe(diffusion, name: str, nfe: int, lam: Tensor | None = None, **opts) -> tuple[int, int]:
    """The most grid steps whose network evaluations stay ≤ ``nfe``, and the evaluations they make.

    The evaluations are counted by running the sampler (a Heun step makes two), not assumed;
    the search assumes they grow with the steps and that a step makes at least one.
    """
    lam = _default_lam(diffusion) if lam is None else lam
    calls = {}

    def count(steps: int) -> int:
        if steps not in calls:
            calls[steps] = _run(diffusion, name, lam, steps, opts)[1]
        return calls[steps]

    lo, hi = 1, min(int(nfe), diffusion.last_train_step)
    if count(hi) <= nfe:
        return hi, count(hi)
    _require(count(lo) <= nfe, f"sampler {name!r}", f"makes {count(lo)} network evaluations with one step, "
             f"more than the {nfe} allowed")
    while hi - lo > 1:  # count(lo) ≤ nfe < count(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) <= nfe else (lo, mid)
    return lo, count(lo)


def _exact_or_why(diffusion, name: str, lam: Tensor, steps: int, seed: int, opts) -> str | None:
    """None when the linear-oracle trick gives this sampler's exact output variance, else why not.

    Raises when the same generator does not reproduce the output: all randomness must come from
    ``generator``. From x̄_T = s_T·1 a sampler is deterministic when another seed gives the same
    output, and linear and per-coordinate (what the trick needs) when x̄_T = 2 s_T ⊙ signs gives
    2 signs ⊙ that output.
    """
    x, _ = _run(diffusion, name, lam, steps, opts, seed=seed)
    err = float((_run(diffusion, name, lam, steps, opts, seed=seed)[0] - x).abs().max())
    _require(err == 0, f"sampler {name!r}", f"two runs with the same generator differ by {err:.3g}: "
             "draw every random number with generator=")
    if not torch.equal(_run(diffusion, name, lam, steps, opts, seed=seed + 1)[0], x):
        return "stochastic"
    signs = torch.randint(0, 2, x.shape[1:], generator=torch.Generator().manual_seed(seed)) * 2.0 - 1
    y, _ = _run(diffusion, name, lam, steps, opts, scale=2 * signs)
    if not torch.allclose(y, 2 * signs * x, rtol=1e-9, atol=1e-12 * float(x.abs().max())):
        return "deterministic but not linear per coordinate in x̄_T"
    return None


def _fit(diffusion, name: str, lam: Tensor, n: int, steps: int | None, seed: int, opts) -> tuple[float, float]:
    """(KL per dimension, mean sample/data variance ratio) of ``n`` samples, see :func:`sampler_kl`."""
    shape = (n, *diffusion.basis.coef_shape)
    x = diffusion.sample(oracle_model(diffusion, lam), shape, sampler=name, steps=steps,
                         generator=torch.Generator().manual_seed(seed), progress=False,
                         dtype=torch.float64, **opts)
    _require(tuple(x.shape) == shape and bool(torch.isfinite(x).all()), f"sampler {name!r}",
             f"must return finite samples of shape {shape}, got {tuple(x.shape)} with "
             f"{int((~torch.isfinite(x)).sum())} non-finite values")
    c, lam = diffusion.basis.forward(x), lam.reshape(shape[1:])
    q = c.var(0) / lam
    return float((0.5 * (q + c.mean(0) ** 2 / lam - 1 - torch.log(q))).mean()), float(q.mean())


def sampler_kl(diffusion, name: str, lam: Tensor, n: int = 1024, steps: int | None = 100,
               seed: int = 0, **opts) -> float:
    """Monte-Carlo KL(samples ‖ data) per dimension for Gaussian data N(0, U diag(λ) Uᵀ).

    ``n`` samples drawn with the exact ε-predictor (:func:`gendiff.oracle.oracle_model`), so
    only the sampler errs; each coordinate's sample mean m and variance v give
    KL(N(m, v) ‖ N(0, λ)), averaged over coordinates. An exact sampler scores ≈ 1/n, the
    Monte-Carlo floor. ``name`` is a registered sampler; ``opts`` go to it.
    """
    return _fit(diffusion, name, lam, n, steps, seed, opts)[0]


def measure_sampler(sampler, diffusion=None, *, nfe: int = 100, steps: int | None = None,
                    lam: Tensor | None = None, n: int = 1024, seed: int = 0, grid: str = "uniform",
                    **opts) -> dict:
    """KL(samples ‖ data) per dimension of a sampler with the exact denoiser on Gaussian data.

    Exact for a deterministic sampler (the linear-oracle trick: with the exact, linear denoiser
    it is a per-coordinate linear map, so one run from x̄_T = s_T·1 gives its output variance,
    :func:`gendiff.oracle.linear_output_variance`); a Monte-Carlo estimate from ``n`` samples
    (:func:`sampler_kl`, floor ≈ 1/n) for one that adds noise or is not linear in x̄_T.

    Args:
        sampler, grid: as in :func:`check_sampler`.
        diffusion: the process (ε-prediction); default :func:`default_diffusion`.
        nfe: network evaluations: the sampler runs the most grid steps that stay within them
            (:func:`steps_for_nfe`, counted).
        steps: grid steps declared instead (``nfe`` is then what they make, counted).
        lam: data variances λ, of the basis's coefficient shape (``basis.coef_shape``, (1, H, W)
            for a per-channel 2-D basis); default falls with the rate, 1.05 … 0.05.
        n, seed: samples and seed of the Monte-Carlo path (and the seeds of the checks).
        opts: passed to the sampler.
    Returns:
        ``{"kl", "variance_ratio", "nfe", "steps", "method", "floor"}``; ``method`` is
        ``"exact"`` or ``"monte carlo (…why…)"``, ``floor`` the Monte-Carlo floor 1/n (0 when exact).
    """
    diffusion = diffusion or default_diffusion()
    _require(isinstance(diffusion.parameterization, EpsPrediction), "check_sampler",
             "needs an ε-prediction process (the oracle predicts ε), got "
             f"{type(diffusion.parameterization).__name__}")
    lam = _default_lam(diffusion) if lam is None else lam.to(torch.float64)
    with registered_sampler(sampler, grid, steps) as name:
        if steps is None:
            steps, nfe = steps_for_nfe(diffusion, name, nfe, lam, **opts)
        why = _exact_or_why(diffusion, name, lam, steps, seed, opts)
        if why is None:
            v, nfe = linear_output_variance(diffusion, lam, name, check_deterministic=False, steps=steps, **opts)
            _require(bool(torch.isfinite(v).all()), f"sampler {name!r}",
                     "returns non-finite values from x̄_T = s_T·1")
            kl, ratio, floor = gaussian_kl(v, lam), float((v / lam).mean()), 0.0
        else:
            nfe = _run(diffusion, name, lam, steps, opts)[1]
            (kl, ratio), floor = _fit(diffusion, name, lam, n, steps, seed, opts), 1.0 / n
    method = "exact" if why is None else f"monte carlo ({why}, n={n}, floor ≈ 1/n = {floor:.2g} nats/dim)"
    return {"kl": kl, "variance_ratio": ratio, "nfe": nfe, "steps": steps, "method": method, "floor": floor}


def check_sampler(sampler, diffusion=None, *, nfe: int = 100, steps: int | None = None, n: int = 1024,
                  lam: Tensor | None = None, references: Sequence[str] | dict = REFERENCE_SAMPLERS,
                  factor: float = 1.5, seed: int = 0, grid: str = "uniform", **opts) -> dict:
    """Check that a sampler reproduces Gaussian data about as well as the built-in samplers, at
    equal network evaluations.

    With data N(0, U diag(λ) Uᵀ) and the exact ε-predictor only the sampler errs; its
    KL(samples ‖ data) (:func:`measure_sampler`: exact for a deterministic sampler, Monte Carlo
    otherwise) must not exceed ``factor`` × the worst of the ``references``, each run with the
    sampler's network evaluations, plus 2/n when the sampler's own KL is a Monte-Carlo estimate.
    A sampler that forgets its noise or scales its step wrongly fails by a wide margin
    (tests/test_testing_kit.py). Also checks that a seeded generator reproduces.

    Args:
        sampler: a registered name, a :class:`gendiff.samplers.Sampler`, or a function
            ``fn(denoise, x, timesteps, coef, *, generator, callback, disable, **opts)``.
        diffusion: the process (ε-prediction); default :func:`default_diffusion`, DCT at 8×8
            (its σ range is in the report, see :func:`sigma_range`).
        nfe: network evaluations for the sampler (the most steps within them, counted) and the
            references.
        steps: the sampler's grid steps, declared; the references then get the evaluations
            those steps make.
        n: samples of a Monte-Carlo estimate; its floor is ≈ 1/n.
        lam: data variances λ, of the basis's coefficient shape (``basis.coef_shape``, (1, H, W)
            for a per-channel 2-D basis); default falls with the rate, 1.05 … 0.05.
        references: the built-ins to compare with, or their KLs already measured by
            :func:`measure_sampler` with the same process, λ and evaluations (``{name: kl}``).
        factor: the slack allowed over the worst reference.
        seed: for the samples and the checks.
        grid: the step grid of a sampler given as a function.
        opts: passed to the sampler.
    Returns:
        :func:`measure_sampler`'s report plus ``"limit"``, ``"references"`` ({name: kl}) and
        ``"sigma"`` (:func:`sigma_range`).
    """
    diffusion = diffusion or default_diffusion()
    lam = _default_lam(diffusion) if lam is None else lam.to(torch.float64)
    report = measure_sampler(sampler, diffusion, nfe=nfe, steps=steps, lam=lam, n=n, seed=seed, grid=grid, **opts)
    refs = dict(references) if isinstance(references, dict) else {
        r: measure_sampler(r, diffusion, nfe=report["nfe"], lam=lam, n=n, seed=seed)["kl"] for r in references}
    worst = max(refs, key=refs.get)
    limit = factor * refs[worst] + (2 / n if report["floor"] else 0.0)
    report.update(limit=limit, references=refs, sigma=sigma_range(diffusion))
    _require(report["kl"] <= limit, f"sampler {getattr(sampler, '__name__', sampler)!r}",
             f"KL(samples ‖ data) = {report['kl']:.3g} nats/dim ({report['method']}) with {report['nfe']} network "
             f"evaluations ({report['steps']} steps) and the exact denoiser exceeds {limit:.3g} = {factor:g} × "
             f"the worst built-in ({worst}: {refs[worst]:.3g}){' + 2/n' if report['floor'] else ''} at the same "
             f"evaluations; sample/data variance is {report['variance_ratio']:.3g} on average (1 is right); "
             "built-ins: " + ", ".join(f"{r} {v:.3g}" for r, v in refs.items()) + "; σ = s/a of the process: "
             + ", ".join(f"{k} {lo:.2g}…{hi:.2g}" for k, (lo, hi) in report["sigma"].items()))
    return report


def check_all(basis=None, schedule=None, sampler=None, **sampler_kwargs) -> dict:
    """Run every check that applies: basis, schedule (on the basis's rates, else an 8×8 DCT's),
    and the sampler on ``Diffusion(basis, schedule)`` (defaults where not given; an 8×8 basis
    keeps it to seconds). Returns the reports by component."""
    from gendiff import DCTBasis, Diffusion
    report = {}
    if basis is not None:
        report["basis"] = check_basis(basis)
    if schedule is not None:
        report["schedule"] = check_schedule(schedule, (basis or DCTBasis((8, 8))).rates)
    if sampler is not None:
        diffusion = None
        if basis is not None or schedule is not None:
            base = default_diffusion()
            diffusion = Diffusion(basis or base.basis, schedule or base.schedule)
        report["sampler"] = check_sampler(sampler, diffusion, **sampler_kwargs)
    return report
