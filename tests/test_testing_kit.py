"""gendiff.testing: every built-in component passes, and broken ones fail saying what and by how much."""
import pytest
import torch

from gendiff import DCTBasis, Diffusion, FourierBasis, GaussianBlurBasis, IdentityBasis, WaveletBasis, testing
from gendiff.bases import Blur3D, ColourBasis, DCT1D, OrthoBasis
from gendiff.oracle import gaussian_kl, output_variance
from gendiff.samplers import sample_ddim
from gendiff.schedules import BlurringDiffusionSchedule, HeatDissipationSchedule, Schedule, VPBlurSchedule
from gendiff.testing import ConformanceError

BUILTIN_BASES = {
    "identity": lambda: IdentityBasis((8, 8)), "dct": lambda: DCTBasis((8, 6)),
    "fourier": lambda: FourierBasis((8, 8)), "blur-zero": lambda: GaussianBlurBasis((8, 8)),
    "blur-circular": lambda: GaussianBlurBasis((7, 8), boundary="circular"),
    "blur-reflect": lambda: GaussianBlurBasis((8, 8), boundary="reflect"),
    "haar": lambda: WaveletBasis((8, 8)), "db2": lambda: WaveletBasis((16, 16), "db2"),
    "dct-probes": lambda: DCTBasis((40, 40)),  # above DENSE_MAX: checked on random probes
    # any event shape (issue 22): 1-D, 3-D, non-square, and a basis that mixes channels
    "dct1d": lambda: DCT1D((64,)), "blur3d": lambda: Blur3D((8, 8, 8)), "fourier-24x16": lambda: FourierBasis((24, 16)),
    "colour": lambda: ColourBasis({"name": "dct", "shape": [8, 6]}, "opponent", speeds=[1, 2, 2]),
    "colour-probes": lambda: ColourBasis(Blur3D((8, 8, 8)), "ycbcr"),  # 1536 numbers: random probes
}
BUILTIN_SCHEDULES = {
    "ddpm": VPBlurSchedule, "quartic": lambda: VPBlurSchedule("quartic", 0.140625),
    "log": lambda: VPBlurSchedule("log", 0.6), "triangular": lambda: VPBlurSchedule("triangular", 0.6),
    "fine-to-coarse": lambda: VPBlurSchedule("quartic", 0.140625, fine_to_coarse=True),
    "cosine": lambda: VPBlurSchedule("quartic", 0.14, noise="cosine"),
    "logsnr-cosine": lambda: VPBlurSchedule(noise="logsnr-cosine"),
    "heat": HeatDissipationSchedule, "blurring": BlurringDiffusionSchedule,
}


@pytest.mark.parametrize("name", sorted(BUILTIN_BASES))
def test_builtin_bases_pass(name):
    report = testing.check_basis(BUILTIN_BASES[name]())
    assert report["UᵀU = I"] < 1e-12 and report["round trip torch.float32"] < 1e-6


@pytest.mark.parametrize("name", sorted(BUILTIN_SCHEDULES))
@pytest.mark.parametrize("basis", [lambda: DCTBasis((8, 8)), lambda: GaussianBlurBasis((16, 16))])
def test_builtin_schedules_pass(name, basis):
    report = testing.check_schedule(BUILTIN_SCHEDULES[name](), basis().rates, monotone=True)
    assert report["min σ_i²/s_i²"] >= 0 and report["|log a_0|"] == 0


# ------------------------------------------------------------------------- broken bases

class Scaled(IdentityBasis):
    """Invertible (exact round trip) but not orthonormal: U = 2I."""

    def _forward(self, x):
        return x / 2

    def _inverse(self, c):
        return 2 * c


class Sheared(IdentityBasis):
    """Invertible but not orthonormal: a shear along W."""

    def _forward(self, x):
        return x - 0.3 * torch.roll(x, 1, -1) * (torch.arange(x.shape[-1]) > 0)

    def _inverse(self, c):
        out = c.clone()
        for k in range(1, c.shape[-1]):
            out[..., k] = c[..., k] + 0.3 * out[..., k - 1]
        return out


class FlatRates(DCTBasis):
    def _rates(self):
        return super()._rates()[0]  # (H, W): the broadcast over channels is lost


class NegativeRates(DCTBasis):
    def _rates(self):
        return super()._rates() - 1.0


class Float32Rates(DCTBasis):
    def _rates(self):
        return super()._rates().float()


class Downcasts(DCTBasis):
    def _forward(self, x, *constants):
        return super()._forward(x, *constants).float()


class MixesChannels(DCTBasis):
    def _forward(self, x, *constants):
        return super()._forward(x, *constants).flip(1)

    def _inverse(self, c, *constants):
        return super()._inverse(c.flip(1), *constants)


class Lossy32(DCTBasis):
    def _forward(self, x, *constants):
        y = super()._forward(x, *constants)
        return y.half().to(y.dtype) if y.dtype == torch.float32 else y


@pytest.mark.parametrize("basis,match", [
    (Scaled((8, 8)), r"not orthonormal: UᵀU = I fails by 3"),
    (Sheared((8, 8)), r"not orthonormal: UᵀU = I fails by 0\.\d+"),
    (Sheared((40, 40)), r"not orthonormal: UᵀU = I fails by 0\.\d+"),
    (Scaled((40, 40)), r"not orthonormal: UᵀU = I fails by 3"),
    # the OrthoBasis contract refuses these rates itself; the kit reports its message
    (FlatRates((8, 8)), r"rates must have shape \(1, H, W\) = \(1, 8, 8\).*got \(8, 8\); add the leading axis"),
    (NegativeRates((8, 8)), r"rates must be finite and ≥ 0, got min -1"),
    (Downcasts((8, 8)), r"forward \(float64\): must keep .*torch.float64.*got .*torch.float32"),
    (MixesChannels((8, 8)), r"same operator to every channel.*differ by \d"),
    (Lossy32((8, 8)), r"round trip in torch.float32: .*differs from x by [\d.e-]+ relative"),
])
def test_broken_bases_fail(basis, match):
    with pytest.raises(ConformanceError, match=match):
        testing.check_basis(basis)


def test_rates_are_float64_by_contract():
    """The kit used to catch float32 rates; now the contract casts ``_rates()`` to float64, and a
    subclass cannot replace the checked public ``rates``."""
    assert Float32Rates((8, 8)).rates.dtype == torch.float64
    testing.check_rates(Float32Rates((8, 8)))
    with pytest.raises(TypeError, match="defines rates; implement _forward, _inverse and _rates instead"):
        class PublicRates(DCTBasis):  # noqa: F841
            @property
            def rates(self):
                return super().rates.float()


def test_conformance_error_is_assertion_and_value_error():
    for kind in (AssertionError, ValueError):
        with pytest.raises(kind):
            testing.check_basis(Scaled((4, 4)))


# ---------------------------------------------------------------------- broken schedules

class Custom(Schedule):
    """VP: s² = 1 − a², with log a_i = −c i/N + bump where i == k (bump > 0 makes a grow)."""

    def __init__(self, bump=0.0, k=500, a0=1.0, s0=0.0, s2_jump=0.0, nan_at=None, N=1000):
        super().__init__(N)
        self.bump, self.k, self.a0, self.s0, self.s2_jump, self.nan_at = bump, k, a0, s0, s2_jump, nan_at

    def log_a(self, i, rates):
        i = torch.as_tensor(i, dtype=torch.float64).reshape(-1, *[1] * rates.dim())
        la = -(5 + rates) * i / self.N + self.bump * (i == self.k) + torch.log(torch.tensor(self.a0)) * (i == 0)
        return la.where(i != self.nan_at, torch.nan) if self.nan_at is not None else la

    def s2(self, i, rates):
        i_b = torch.as_tensor(i).reshape(-1, *[1] * rates.dim())
        s2 = -torch.expm1(2 * self.log_a(i, rates)) + self.s2_jump * (i_b >= self.k)
        return s2.where(i_b != 0, torch.as_tensor(self.s0 ** 2, dtype=torch.float64))


def rates8():
    return DCTBasis((8, 8)).rates


def test_custom_schedule_reference_passes():
    assert testing.check_schedule(Custom(), rates8(), monotone=True)["min σ_i²/s_i²"] > 0


@pytest.mark.parametrize("schedule,match", [
    (Custom(bump=0.01), r"not a valid diffusion: σ_i² = s_i² − r_i² s_\(i−1\)² = -0\.0\d+ < 0 at step i=500"),
    (Custom(a0=0.9), r"a_0 must be 1 \(log a_0 = 0\), \|log a_0\| is up to 0\.105"),
    (Custom(s0=0.1), r"s_0 must be 0, s_0² is up to 0\.01"),
    (Custom(nan_at=7), r"log a_i is not finite at step i=7"),
])
def test_broken_schedules_fail(schedule, match):
    with pytest.raises(ConformanceError, match=match):
        testing.check_schedule(schedule, rates8())


def test_monotone_is_checked_only_when_claimed():
    grows = Custom(bump=0.01, s2_jump=0.5)  # a grows at step 500, but s² jumps enough: valid
    testing.check_schedule(grows, rates8())
    with pytest.raises(ConformanceError, match=r"log a_i must be non-increasing .* grows by 0\.005 at step i=500"):
        testing.check_schedule(grows, rates8(), monotone=True)


def test_schedule_with_wrong_output_shape_fails():
    class Flat(Custom):
        def log_a(self, i, rates):
            return super().log_a(i, rates)[:, 0]
    # probed on the basis's real rates (1, 8, 8), as the engine does (issue 22), not on distinct ρ
    with pytest.raises(ConformanceError, match=r"log_a: must return float64 of shape \(1, 1, 8, 8\)"):
        testing.check_schedule(Flat(), rates8())


# ----------------------------------------------------------------------- samplers

def ancestral(denoise, x, timesteps, coef, *, generator=None, callback=None, disable=False,
              noise=1.0, scale=1.0, seeded=True):
    """The ancestral sampler written from scratch; noise/scale/seeded break it on purpose."""
    for t, u in zip(timesteps[:-1], timesteps[1:]):
        x0 = denoise(x, t).x0
        r, var = coef.transition(t, u)
        s_t2, s_u2 = coef.s2(t), coef.s2(u)
        mean = coef.log_a(u).exp() * var / s_t2 * x0 + r * s_u2 / s_t2 * x
        z = torch.randn(x.shape, generator=generator if seeded else None, dtype=x.dtype)
        x = (mean + noise * (var * s_u2 / s_t2).sqrt() * z).to(x.dtype)
    return scale * x


def variant(**kw):
    return lambda *a, **k: ancestral(*a, **k, **kw)


def ddim(denoise, x, timesteps, coef, *, generator=None, callback=None, disable=False):
    """Deterministic DDIM written from scratch: x̄_u = a_u x̂̄_0 + s_u ε̄', ε̄' = (x̄_t − a_t x̂̄_0)/s_t."""
    for t, u in zip(timesteps[:-1], timesteps[1:]):
        x0 = denoise(x, t).x0
        x = coef.a(u) * x0 + coef.s(u) * (x - coef.a(t) * x0) / coef.s(t)
    return x


def heun(denoise, x, timesteps, coef, *, generator=None, callback=None, disable=False):
    """Heun's method in λ = log(a/s) per coordinate, exponential-integrator form: Euler predicts
    x̄_u, and x̂̄_0 taken linear in λ between the two evaluations integrates exactly against
    e^{λ}. Two evaluations per step, one on the last (to s = 0)."""
    for t, u in zip(timesteps[:-1], timesteps[1:]):
        d_t = denoise(x, t).x0
        if u == 0:
            return d_t
        h = coef.log_snr(u) - coef.log_snr(t)
        phi, ratio, a_u = -torch.expm1(-h), coef.s(u) / coef.s(t), coef.a(u)
        d_u = denoise(ratio * x + phi * a_u * d_t, u).x0
        x = ratio * x + a_u * (phi * d_t + (1 - phi / h) * (d_u - d_t))
    return x


def clamped_ddim(denoise, x, timesteps, coef, **kw):
    return sample_ddim(denoise, x, timesteps, coef, **kw).clamp(-1.5, 1.5)


@pytest.fixture(scope="module")
def refs():
    """The built-ins' KLs on the default process at 100 evaluations, measured once for the module."""
    return {r: testing.measure_sampler(r, nfe=100)["kl"] for r in testing.REFERENCE_SAMPLERS}


DETERMINISTIC = [("ddim", {}), ("dpm++2m", {})]


@pytest.mark.parametrize("sampler,opts", DETERMINISTIC + [("reverse", {"quiet_steps": 39})])
def test_exact_kl_is_the_oracle_recursion_for_the_builtins(sampler, opts):
    d = testing.default_diffusion()
    lam = 0.05 + 1.0 / (1.0 + 20 * d.basis.rates)
    for nfe in (9, 19, 39):
        m = testing.measure_sampler(sampler, nfe=nfe, **opts)
        assert m["method"] == "exact" and m["nfe"] == m["steps"] == nfe and m["floor"] == 0, m
        want = gaussian_kl(output_variance(d, lam, sampler, d.grid(sampler, nfe), **opts), lam)
        assert abs(m["kl"] - want) < 1e-10, (sampler, nfe, m["kl"], want)


def test_exact_kl_of_samplers_defined_here_at_equal_evaluations():
    assert testing.measure_sampler(ddim, nfe=19)["kl"] == pytest.approx(testing.measure_sampler("ddim", nfe=19)["kl"],
                                                                         rel=1e-12, abs=0)
    kl = {name: [] for name in ("ddim", "heun", "dpm++2m")}
    for nfe in (9, 19, 39):
        for name in kl:
            m = testing.measure_sampler(heun, nfe=nfe, grid="cubic") if name == "heun" else \
                testing.measure_sampler(name, nfe=nfe)  # each on its default grid: ddim uniform, dpm++2m cubic
            assert m["method"] == "exact" and m["nfe"] == nfe, m  # heun: 5, 10, 20 steps, counted
            kl[name].append(m["kl"])
    falls = {name: [a / b for a, b in zip(v, v[1:])] for name, v in kl.items()}
    # twice the evaluations: a first-order error halves (KL ∝ error², 4×), a second-order one quarters (16×)
    assert all(3 < f < 5 for f in falls["ddim"]) and all(f > 10 for f in falls["heun"]), falls
    assert kl["dpm++2m"][-1] < kl["heun"][-1] < kl["ddim"][-1], kl
    report = testing.check_sampler(heun, nfe=100, grid="cubic")
    assert report["steps"] == 50 and report["nfe"] == 99 and report["method"] == "exact"


def test_stochastic_and_nonlinear_samplers_take_the_monte_carlo_path_with_its_floor():
    m = testing.measure_sampler("ancestral", nfe=20, n=256)
    assert m["method"].startswith("monte carlo (stochastic, n=256, floor ≈ 1/n = 0.0039") and m["floor"] == 1 / 256
    m = testing.measure_sampler(clamped_ddim, nfe=20, n=256)
    assert "deterministic but not linear" in m["method"] and m["floor"] == 1 / 256


def test_the_default_process_states_its_sigma_range():
    d = testing.default_diffusion()
    sig = testing.sigma_range(d)
    a, s = d.marginal(torch.tensor([d.N]))
    assert sig["step 1000"][0] == pytest.approx(float((s / a).min()), rel=1e-12)
    doc = testing.default_diffusion.__doc__
    short = lambda v: f"{v:.1e}".replace("e-0", "e-").replace("e+0", "e")  # noqa: E731 (6.4e-3, 2.0e4)
    assert short(sig["step 1"][0]) in doc and short(sig["step 1000"][0]) in doc, (sig, doc)
    with pytest.raises(ConformanceError, match=r"σ = s/a of the process: step 1 0.0064…0.0064, step 1000 2e\+04…"):
        testing.check_sampler(variant(scale=0.5), references={"ddim": 1e-3})


def test_builtin_references_are_exact_where_deterministic(refs):
    d = testing.default_diffusion()
    lam = 0.05 + 1.0 / (1.0 + 20 * d.basis.rates)
    assert refs["dpm++2m"] == pytest.approx(gaussian_kl(output_variance(d, lam, "dpm++2m", d.grid("dpm++2m", 100)),
                                                        lam), abs=1e-10)
    assert refs["dpm++2m"] < 1e-3 < refs["ancestral"]  # far below the Monte-Carlo floor 1/n that hid it


@pytest.mark.parametrize("sampler,opts", [("ddim", {"eta": 0.5}), ("ancestral", {}), ("dpm++2m", {}),
                                          ("dpm++3m", {}), ("unipc", {})])
def test_builtin_samplers_pass(sampler, opts, refs):
    testing.check_sampler(sampler, references=refs, **opts)


def test_a_correct_custom_sampler_passes(refs):
    report = testing.check_sampler(ancestral, references=refs)
    assert abs(report["kl"] - refs["ancestral"]) < 2e-3, report  # the same algorithm


@pytest.mark.parametrize("kw,match", [
    # without noise the ancestral step is deterministic, so measured exactly: the coordinates it
    # leaves at 0 make the KL infinite
    ({"noise": 0.0}, r"KL\(samples ‖ data\) = inf nats/dim \(exact\) .* variance is [\d.]+e-\d+ on average"),
    ({"noise": 0.8}, r"KL\(samples ‖ data\) = 0\.\d+ nats/dim \(monte carlo .* exceeds 0\.0\d+"),
    ({"scale": 0.9}, r"KL\(samples ‖ data\) = 0\.0\d+ nats/dim .* variance is 0\.7\d+ on average"),
    ({"scale": 1.25}, r"KL\(samples ‖ data\) = 0\.0\d+ nats/dim .* variance is 1\.\d+ on average"),
    ({"seeded": False}, r"two runs with the same generator differ"),
])
def test_broken_samplers_fail(kw, match, refs):
    with pytest.raises(ConformanceError, match=match):
        testing.check_sampler(variant(**kw), references=refs)


def test_check_sampler_measures_its_own_references():
    d = Diffusion(DCTBasis((4, 4)), VPBlurSchedule(noise="cosine"))
    report = testing.check_sampler("ddim", d, n=256, nfe=50, references=("ddim", "dpm++2m"))
    assert set(report["references"]) == {"ddim", "dpm++2m"} and report["kl"] <= report["limit"]
    with pytest.raises(ConformanceError, match="KL"):
        testing.check_sampler(variant(scale=0.7), d, n=256, nfe=50, references=("ddim", "dpm++2m"))


def test_registration_is_temporary():
    from gendiff.samplers import SAMPLERS
    before = set(SAMPLERS)
    with testing.registered_sampler(ancestral) as name:
        assert name in SAMPLERS
    assert set(SAMPLERS) == before
    with pytest.raises(ConformanceError, match="unknown sampler 'nope'"):
        testing.check_sampler("nope")


def test_check_all_runs_each_check():
    report = testing.check_all(DCTBasis((8, 8)), VPBlurSchedule("quartic", 0.14))
    assert set(report) == {"basis", "schedule"}
    with pytest.raises(ConformanceError, match="rates"):
        testing.check_all(FlatRates((8, 8)))
