"""Any event shape (C, L), (C, H, W) with H ≠ W, (C, D, H, W), and bases that mix channels (issue 22).

Each basis against an independent reference (scipy's DCT, an actual n-D convolution, the
Kronecker product of its 1-D factors), the colour basis on its whole event, the exact Gaussian
oracle through every sampler on 1-D and 3-D data, and schedules probed on the real rates tensor.
"""
import json
import math
import re

import numpy as np
import pytest
import scipy.fft
import scipy.ndimage
import torch

from gendiff import ColourBasis, DCTBasis, Diffusion, FourierBasis, GaussianBlurBasis, IdentityBasis, WaveletBasis, testing
from gendiff.bases import (DCT1D, DCT3D, Blur1D, Blur3D, Fourier1D, Fourier3D, Identity1D, Identity3D,
                           OrthoBasis, build_basis)
from gendiff.bases.colour import opponent_matrix, ycbcr_matrix
from gendiff.oracle import expected_bound_bpd, gaussian_kl, linear_output_variance, oracle_model, output_variance
from gendiff.schedules import DataSNRSchedule, Schedule, ScheduleError, VPBlurSchedule, build_schedule
from gendiff.schedules.data_snr import logsnr_cosine_torch
from gendiff.schedules.noise import logsnr_cosine_t
from gendiff.testing import ConformanceError
from gendiff.training.config import ConfigError, RunConfig
from gendiff.training.trust import code_names

EVENTS = {"1d": (64,), "2d": (24, 16), "3d": (8, 8, 8)}
PER_AXES = {  # the built-in per-channel bases, by number of axes
    1: [DCT1D, Fourier1D, Blur1D, Identity1D],
    2: [DCTBasis, FourierBasis, GaussianBlurBasis, IdentityBasis, WaveletBasis],
    3: [DCT3D, Fourier3D, Blur3D, Identity3D],
}


def every_basis():
    for key, shape in EVENTS.items():
        for cls in PER_AXES[len(shape)]:
            yield pytest.param(lambda cls=cls, shape=shape: cls(shape), id=f"{key}-{cls.__name__}")
        for boundary in ("circular", "reflect"):
            blur = {1: Blur1D, 2: GaussianBlurBasis, 3: Blur3D}[len(shape)]
            yield pytest.param(lambda blur=blur, shape=shape, b=boundary: blur(shape, boundary=b),
                               id=f"{key}-blur-{boundary}")
        spatial = {"name": {1: "dct1d", 2: "dct", 3: "dct3d"}[len(shape)], "shape": list(shape)}
        yield pytest.param(lambda spatial=spatial: ColourBasis(spatial, "opponent", speeds=[1, 2, 3]),
                           id=f"{key}-colour")


@pytest.mark.parametrize("make", list(every_basis()))
def test_every_basis_is_orthonormal_on_its_whole_event_and_keeps_the_shape(make):
    b = make()
    report = testing.check_basis(b)
    assert report["UᵀU = I"] < 1e-12 and report["round trip torch.float32"] < 1e-6, report
    assert tuple(b.rates.shape) == b.coef_shape
    b.check_orthonormal()  # the engine's probe
    event = b.event_shape(3)
    x = torch.randn(2, *event, dtype=torch.float64)
    c = b.forward(x)
    assert c.shape == x.shape and b.inverse(c).shape == x.shape
    torch.testing.assert_close(b.inverse(c), x, atol=1e-12, rtol=0)
    again = build_basis(json.loads(json.dumps(b.config())))
    torch.testing.assert_close(again.forward(x), c, atol=0, rtol=0)
    d = Diffusion(b, VPBlurSchedule("quartic", 0.14))
    a, s = d.marginal(torch.tensor([3, 700]))
    assert a.shape == (2, *b.coef_shape)
    assert d.q_sample(x, torch.tensor([3, 700]))[0].shape == x.shape


@pytest.mark.parametrize("shape", [(64,), (9, 12), (6, 5, 7)])
def test_dct_over_n_axes_is_scipys(shape):
    cls = {1: DCT1D, 2: DCTBasis, 3: DCT3D}[len(shape)]
    x = torch.randn(2, 3, *shape, dtype=torch.float64)
    want = scipy.fft.dctn(x.numpy(), norm="ortho", axes=range(-len(shape), 0))
    torch.testing.assert_close(cls(shape).forward(x), torch.from_numpy(want), atol=1e-12, rtol=0)
    k = [np.arange(n) for n in shape]
    rho = sum((np.pi * g / n) ** 2 for g, n in zip(np.meshgrid(*k, indexing="ij"), shape))
    np.testing.assert_allclose(cls(shape).rates[0].numpy(), rho, atol=1e-12)


@pytest.mark.parametrize("cls", [Fourier3D, Blur3D])
def test_three_axes_are_the_kronecker_product_of_the_1d_bases(cls):
    shape = (4, 3, 5)
    b = cls(shape)
    one = {Fourier3D: Fourier1D, Blur3D: Blur1D}[cls]
    u = [one((n,)).inverse(torch.eye(n, dtype=torch.float64)).T for n in shape]  # columns: basis vectors
    big = torch.kron(torch.kron(u[0], u[1]), u[2])
    x = torch.randn(2, 1, *shape, dtype=torch.float64)
    torch.testing.assert_close(b.forward(x).reshape(2, -1), x.reshape(2, -1) @ big, atol=1e-12, rtol=0)
    rho = sum(r.reshape(-1, *[1] * (2 - k)) for k, r in enumerate(one((n,)).rates[0] for n in shape))
    torch.testing.assert_close(b.rates[0], rho, atol=1e-14, rtol=0)


def test_the_number_of_axes_is_the_class_s():
    assert DCT1D((64,)).shape == (64,) and DCT1D(64).shape == (64,) and DCT3D(8).shape == (8, 8, 8)
    assert DCTBasis(8).shape == (8, 8)  # an int is still a square for the 2-D bases
    with pytest.raises(ValueError, match=r"basis shape must be \(L,\) with positive sides, got \(8, 8\)"):
        DCT1D((8, 8))
    with pytest.raises(ValueError, match=r"basis shape must be \(D, H, W\) with positive sides, got \(8, 8\)"):
        Blur3D((8, 8))
    with pytest.raises(ValueError, match=r"Fourier1D expects data of shape \(\.\.\., 64\), got a tensor of shape \(2, 1, 63\)"):
        Fourier1D(64).forward(torch.zeros(2, 1, 63))
    d = Diffusion(DCT1D(64), VPBlurSchedule())
    with pytest.raises(ValueError, match=r"x0 must have shape \(B, C, L\) = \(B, C, 64\), got shape \(2, 64\)"):
        d.q_sample(torch.zeros(2, 64), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"shape must be \(B, C, 8, 8, 8\) for DCT3D\(8, 8, 8\), got \(2, 8, 8, 8\)"):
        Diffusion(DCT3D(8), VPBlurSchedule()).sample(lambda x, i: x, (2, 8, 8, 8), steps=2, progress=False)


def convolution(x, sigma, boundary, axes):
    """The n-D Gaussian blur as an actual convolution (scipy.ndimage), written without the basis code."""
    x = x.numpy()
    kernels = []
    for n in x.shape[-axes:]:
        m = np.arange(-(n - 1), n)
        g = np.exp(-m ** 2 / (2 * sigma ** 2))
        kernels.append(g / g.sum())
    k = kernels[0]
    for g in kernels[1:]:
        k = np.multiply.outer(k, g)
    mode = {"zero": "constant", "circular": "grid-wrap", "reflect": "reflect"}[boundary]
    out = np.stack([scipy.ndimage.convolve(v, k, mode=mode, cval=0.0)
                    for v in x.reshape(-1, *x.shape[-axes:])])
    return torch.from_numpy(out.reshape(x.shape))


@pytest.mark.parametrize("boundary", ["zero", "circular", "reflect"])
@pytest.mark.parametrize("cls,shape", [(Blur1D, (23,)), (Blur3D, (8, 7, 10))])
def test_blur_over_one_and_three_axes_is_the_convolution(cls, shape, boundary):
    for sigma in (0.4, 1.3):
        b = cls(shape, sigma=sigma, boundary=boundary)
        x = torch.randn(2, 3, *shape, dtype=torch.float64)  # the same operator on every channel
        blurred = b.inverse(torch.exp(-b.rates) * b.forward(x))
        torch.testing.assert_close(blurred, convolution(x, sigma, boundary, len(shape)), atol=1e-12, rtol=0)


# ---- the colour basis: a joint basis with per-channel rates --------------------------------------

def test_colour_basis_mixes_channels_and_passes_the_checks_with_chw_rates():
    b = ColourBasis({"name": "dct", "shape": [16, 16]}, "opponent", speeds=[1, 2, 2])
    assert b.joint_channels and b.shape == b.coef_shape == (3, 16, 16) and b.rates.shape == (3, 16, 16)
    torch.testing.assert_close(b.rates[1], 2 * DCTBasis(16).rates[0], atol=0, rtol=0)  # chroma: twice luma
    testing.check_basis(b)
    d = Diffusion(b, VPBlurSchedule("quartic", 0.14))  # the probe runs on the whole (3, 16, 16) event
    x = torch.zeros(1, 3, 16, 16, dtype=torch.float64)
    x[0, 0] = 1.0  # red only: it has luma and both chroma axes
    c = b.forward(x)
    assert all(float(c[0, k].abs().max()) > 0.1 for k in range(3))
    # the same red plane through a per-channel DCT leaves the other channels empty: this U mixes them
    a, _ = d.marginal(torch.tensor([500]))
    assert a.shape == (1, 3, 16, 16)
    luma, chroma = (d.schedule.marginal(torch.tensor([500]), k * DCTBasis(16).rates)[0][0, 0] for k in (1, 2))
    torch.testing.assert_close(a[0, 0], luma, atol=0, rtol=0)  # chroma decays as if its rates were twice luma's
    torch.testing.assert_close(a[0, 1], chroma, atol=0, rtol=0)
    assert float((luma - chroma).max()) > 0.05
    # a probe on one channel is what the engine used to run, and it cannot see this basis
    with pytest.raises(ValueError, match=r"ColourBasis expects images of shape \(\.\.\., 3, 16, 16\)"):
        b.forward(torch.zeros(4, 1, 16, 16, dtype=torch.float64))


class RotatedDCT(OrthoBasis):
    """A user's own joint basis, as the issue wrote it: a fixed colour rotation, then a DCT per
    channel, chroma twice as fast. Without ``joint_channels`` the engine probed it on one channel."""

    axes, joint_channels = 3, True  # (C, H, W)

    def __init__(self, shape=(3, 8, 6)):
        super().__init__(shape)
        self.dct = DCTBasis(self.shape[1:])
        self.m = torch.as_tensor(opponent_matrix())

    def _forward(self, x):
        return self.dct.forward(torch.einsum("ck,...chw->...khw", self.m.to(x), x))

    def _inverse(self, c):
        return torch.einsum("ck,...khw->...chw", self.m.to(c), self.dct.inverse(c))

    def _rates(self):
        return torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64).reshape(3, 1, 1) * self.dct.rates[0]


def test_a_users_joint_basis_passes_the_checks_and_the_engine():
    b = RotatedDCT()
    testing.check_basis(b)
    d = Diffusion(b, VPBlurSchedule("quartic", 0.14))
    assert d.marginal(torch.tensor([10]))[0].shape == (1, 3, 8, 6)
    assert b.config()["name"].endswith(":RotatedDCT") and b.config()["shape"] == [3, 8, 6]
    torch.testing.assert_close(b.forward(torch.ones(1, 3, 8, 6, dtype=torch.float64)),
                               ColourBasis(DCTBasis((8, 6)), speeds=[1, 2, 2]).forward(torch.ones(1, 3, 8, 6, dtype=torch.float64)),
                               atol=1e-14, rtol=0)
    # the probe the engine used to run, one channel of the plane, cannot even be fed to this basis
    with pytest.raises(ValueError, match=r"RotatedDCT expects images of shape \(\.\.\., 3, 8, 6\)"):
        b.forward(torch.zeros(4, 1, 8, 6, dtype=torch.float64))


@pytest.mark.parametrize("rotation", ["opponent", "ycbcr", "identity", "random"])
def test_colour_rotations_are_orthogonal_and_luma_comes_first(rotation):
    m = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))[0]
    given = m.tolist() if rotation == "random" else rotation
    b = ColourBasis(DCT1D(16), given, channels=4 if rotation == "random" else None)
    M = b.matrix
    torch.testing.assert_close(M.T @ M, torch.eye(len(M), dtype=torch.float64), atol=1e-14, rtol=0)
    testing.check_basis(b)
    if rotation in ("opponent", "ycbcr"):
        luma = {"opponent": np.ones(3), "ycbcr": np.array([0.299, 0.587, 0.114])}[rotation]
        np.testing.assert_allclose(M[:, 0].numpy(), luma / np.linalg.norm(luma), atol=1e-14)
    assert ycbcr_matrix()[:, 0] @ opponent_matrix()[:, 1] != 0  # two different rotations


def test_colour_basis_takes_a_spatial_name_and_the_sides():
    """As a command line builds it: {"name": "colour", "shape": <the data's sides>, **basis_args}."""
    b = build_basis({"name": "colour", "shape": [24, 16], "spatial": "blur", "speeds": [1, 2, 2]})
    assert b.shape == (3, 24, 16) and b.spatial.config() == GaussianBlurBasis((24, 16)).config()
    assert build_basis(b.config()).rates.equal(b.rates) and "shape" not in b.config()
    with pytest.raises(ValueError, match=r"needs shape=, the spatial sides"):
        ColourBasis("dct")
    with pytest.raises(ValueError, match=r"shape \(8, 8\) is not the spatial basis's \(24, 16\)"):
        ColourBasis({"name": "dct", "shape": [24, 16]}, shape=[8, 8])


def test_colour_basis_refuses_what_is_not_orthogonal_or_does_not_fit():
    with pytest.raises(ValueError, match=r"rotation must be orthogonal \(MᵀM = I\), it is off by 1"):
        ColourBasis(DCT1D(8), [[1.0, 1.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match=r"speeds must be 3 finite numbers ≥ 0"):
        ColourBasis(DCT1D(8), speeds=[1, 2])
    with pytest.raises(ValueError, match=r"rotation 'opponent' is for 3 channels, got channels=4"):
        ColourBasis(DCT1D(8), channels=4)
    with pytest.raises(ValueError, match=r"mixes 3 channels, got channels=1"):
        ColourBasis(DCT1D(8)).event_shape(1)


def test_colour_basis_is_data_in_a_run_config_and_its_sizes_are_bounded():
    b = ColourBasis({"name": "dct", "shape": [24, 16]}, "ycbcr", speeds=[1, 3, 3])
    config = {"name": "run", "basis": b.config(), "schedule": {"name": "vp_blur"}, "model": {}}
    assert RunConfig.from_dict(config).basis == b.config()
    assert build_basis(RunConfig.from_dict(json.loads(json.dumps(config))).basis).rates.equal(b.rates)
    bad = dict(config, basis=dict(b.config(), spatial={"name": "dct", "shape": [20000, 16]}))
    with pytest.raises(ConfigError, match=r"shape must be integers in 1..4096"):
        RunConfig.from_dict(bad)
    for shape, ok in (([64], True), ([8, 8, 8], True), ([3, 8, 8, 8], True), ([2, 2, 2, 2, 2], False),
                      ([4096, 4096, 2], False)):
        cfg = dict(config, basis={"name": "dct3d", "shape": shape})
        if ok:
            RunConfig.from_dict(cfg)
        else:
            with pytest.raises(ConfigError, match=r"shape must have 1 to 4 axes and at most 16777216 entries"):
                RunConfig.from_dict(cfg)
    with pytest.raises(ConfigError, match=r"channels must be an integer in 1..64"):
        RunConfig.from_dict(dict(config, basis=dict(b.config(), channels=65)))


# ---- the exact oracle through every sampler on 1-D and 3-D data -----------------------------------

@pytest.mark.parametrize("sampler", ["reverse", "ancestral", "ddim", "dpm++2m", "dpm++3m", "unipc", "ihdm"])
@pytest.mark.parametrize("basis", [lambda: Blur1D(16), lambda: DCT3D((4, 3, 2)), lambda: FourierBasis((6, 4)),
                                   lambda: ColourBasis(DCT1D(8), speeds=[1, 2, 2])])
def test_every_sampler_runs_on_every_event_with_clamp_and_callback(basis, sampler):
    b = basis()
    d = Diffusion(b, VPBlurSchedule("quartic", 2.0, N=20))
    shape = (2, *b.event_shape(3))
    seen = []
    x = d.sample(oracle_model(d, torch.full(b.coef_shape, 0.5, dtype=torch.float64)), shape, sampler=sampler,
                 steps=None if sampler == "reverse" else 5, clip_x0=(-1.0, 1.0), progress=False,
                 generator=torch.Generator().manual_seed(0), callback=lambda info: seen.append(info["x0"].shape))
    assert x.shape == shape and torch.isfinite(x).all() and set(seen) == {torch.Size(shape)}


ORACLE_EVENTS = {"1d": lambda: Blur1D((64,), sigma=0.8), "3d": lambda: Blur3D((8, 8, 8), sigma=0.8)}
SAMPLER_CASES = [("reverse", {}), ("ancestral", {}), ("ddim", {"eta": 0.0}), ("ddim", {"eta": 0.7}),
                 ("dpm++2m", {}), ("ihdm", {})]


@pytest.mark.parametrize("event", sorted(ORACLE_EVENTS))
@pytest.mark.parametrize("sampler,opts", SAMPLER_CASES)
def test_samples_have_the_oracle_variance_on_1d_and_3d_data(event, sampler, opts):
    basis = ORACLE_EVENTS[event]()
    d = Diffusion(basis, VPBlurSchedule("quartic", 6.0, N=40))
    lam = 0.05 + 1.0 / (1.0 + 20 * basis.rates)
    grid = d.grid(sampler, steps=None if sampler == "reverse" else 12)
    n = 2000
    x = d.sample(oracle_model(d, lam), (n, 1, *basis.shape), sampler=sampler, timesteps=grid, progress=False,
                 generator=torch.Generator().manual_seed(0), dtype=torch.float64, **opts)
    emp = basis.forward(x).var(0)
    want = output_variance(d, lam, sampler, grid, **opts)
    # the variance of a sample variance is 2v²/n: 5 standard errors over up to 512 coordinates
    assert float((emp / want - 1).abs().max()) < 5 * (2 / n) ** 0.5, (sampler, event)


@pytest.fixture(scope="module", params=sorted(ORACLE_EVENTS))
def oracle_process(request):
    """The kit's default process (quartic 0.14, cosine noise) on a 1-D or 3-D DCT, and the
    built-in references' KLs on it at 100 evaluations."""
    basis = {"1d": lambda: DCT1D(64), "3d": lambda: DCT3D(8)}[request.param]()
    d = Diffusion(basis, VPBlurSchedule("quartic", f_N=0.140625, noise="cosine"))
    refs = {r: testing.measure_sampler(r, d, nfe=100, n=512)["kl"] for r in testing.REFERENCE_SAMPLERS}
    return d, refs


@pytest.mark.parametrize("sampler,opts", [("ddim", {"eta": 0.5}), ("ancestral", {}), ("dpm++2m", {}),
                                          ("dpm++3m", {}), ("unipc", {}), ("ddim", {})])
def test_every_sampler_is_within_the_builtins_tolerance_on_1d_and_3d(oracle_process, sampler, opts):
    d, refs = oracle_process
    report = testing.check_sampler(sampler, d, references=refs, n=512, **opts)
    assert report["kl"] < 0.03, report
    if sampler in ("dpm++2m", "ddim") and not opts:  # exact: the linear oracle and the recursion agree
        lam = 0.05 + 1.0 / (1.0 + 20 * d.basis.rates)
        want = gaussian_kl(output_variance(d, lam, sampler, d.grid(sampler, report["steps"])), lam)
        assert report["method"] == "exact" and abs(report["kl"] - want) < 1e-10


def test_reverse_on_the_full_grid_is_within_the_builtins_tolerance_on_3d():
    d = Diffusion(DCT3D(8), VPBlurSchedule("quartic", f_N=0.140625, noise="cosine"))
    lam = 0.05 + 1.0 / (1.0 + 20 * d.basis.rates)
    kl = gaussian_kl(output_variance(d, lam, "reverse", d.grid("reverse")), lam)
    dpm = gaussian_kl(linear_output_variance(d, lam, "dpm++2m", steps=100)[0], lam)
    assert kl < 1.5 * max(dpm, 1e-3), (kl, dpm)


def test_colour_basis_with_per_channel_rates_samples_the_oracle():
    b = ColourBasis(DCTBasis((6, 4)), "opponent", speeds=[1, 2, 2])
    d = Diffusion(b, VPBlurSchedule("quartic", f_N=0.140625, noise="cosine"))
    lam = 0.05 + 1.0 / (1.0 + 20 * b.rates)
    report = testing.check_sampler("dpm++2m", d, lam=lam, references=("ddim", "dpm++2m"), n=256)
    assert report["method"] == "exact" and report["kl"] < 1e-3, report


# ---- schedules are probed on the real rates tensor, by the checker and the engine alike ------------

class Tabled(Schedule):
    """Variance preserving with a per-coordinate speed read by position: log a_i = −c[k] i/N.

    ``bad_at``: a mask of coordinates whose s² halves after step ``N/2`` (σ² < 0 there only).
    """

    def __init__(self, speeds, bad_at=None, N=50):
        super().__init__(N)
        self.speeds, self.bad_at = speeds, bad_at

    def log_a(self, i, rates):
        assert rates.shape == self.speeds.shape, "read by position: needs the real rates tensor"
        i = torch.as_tensor(i, dtype=torch.float64).reshape(-1, *[1] * rates.dim())
        return -(1 + self.speeds) * i / self.N

    def s2(self, i, rates):
        s2 = -torch.expm1(2 * self.log_a(i, rates))
        if self.bad_at is not None:
            i_b = torch.as_tensor(i).reshape(-1, *[1] * rates.dim())
            s2 = torch.where((i_b > self.N // 2) & self.bad_at, s2 / 2, s2)  # the noise shrinks: σ² < 0
        return s2


@pytest.mark.parametrize("basis", [lambda: DCTBasis((6, 4)), lambda: ColourBasis(DCT1D(8), speeds=[1, 2, 2])])
def test_checker_and_engine_agree_on_a_schedule_read_by_position(basis):
    b = basis()
    speeds = torch.linspace(0, 3, b.rates.numel(), dtype=torch.float64).reshape(b.rates.shape)
    testing.check_schedule(Tabled(speeds), b, monotone=True)
    Diffusion(b, Tabled(speeds))
    bad = torch.zeros(b.rates.shape, dtype=torch.bool)
    bad.view(-1)[5] = True
    pos = tuple(int(v) for v in np.unravel_index(5, b.rates.shape))
    with pytest.raises(ConformanceError, match=rf"< 0 at step i=26, coordinate {re.escape(str(pos))}"):
        testing.check_schedule(Tabled(speeds, bad), b)
    with pytest.raises(ScheduleError, match=r"not a valid diffusion at step i=26: .* at coordinate 5 "):
        Diffusion(b, Tabled(speeds, bad))


def test_vp_blur_on_per_channel_rates_passes_both():
    b = ColourBasis(DCTBasis((8, 6)), "ycbcr", speeds=[1, 4, 4])
    report = testing.check_schedule(VPBlurSchedule("log", 0.6), b, monotone=True)
    assert report["|log a_0|"] == 0
    Diffusion(b, VPBlurSchedule("log", 0.6))


# ---- the data-driven schedule ---------------------------------------------------------------------

def gaussian_data(basis, lam, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(n, *basis.coef_shape, generator=g, dtype=torch.float64) * lam.sqrt()
    return basis.inverse(c)


@pytest.mark.parametrize("basis", [lambda: DCT1D(64), lambda: ColourBasis(DCTBasis((6, 4)), speeds=[1, 2, 2]),
                                   lambda: Blur3D(4, boundary="circular")])
def test_every_coordinate_s_snr_crosses_one_at_the_time_its_rate_sets(basis):
    b = basis()
    lam = 0.01 + 1.0 / (1.0 + 5 * b.rates)
    x = gaussian_data(b, lam, 64)
    sch = DataSNRSchedule.from_data(b, x, N=1000, crossing=(0.25, 0.75))
    v = b.forward(x).var(0)  # the table is the data's own per-coordinate variance
    torch.testing.assert_close(sch.variance, v, atol=1e-12, rtol=1e-12)
    rho = b.rates
    tau = 0.75 - 0.5 * (rho / rho.max()).sqrt()  # the rule (docs/math.md)
    i = torch.arange(0, 1001)
    log_snr = 2 * sch.log_a(i, rho) - sch.s2(i, rho).log() + v.log()  # log(v a²/s²)
    ell = torch.from_numpy(logsnr_cosine_t(i.numpy() / 1000, 10.0, -10.0)).reshape(-1, *[1] * rho.dim())
    want = ell - torch.from_numpy(logsnr_cosine_t(tau.numpy(), 10.0, -10.0))
    torch.testing.assert_close(log_snr[1:], want[1:], atol=1e-9, rtol=0)
    # SNR ≥ 1 up to ⌊Nτ⌋ and ≤ 1 from ⌈Nτ⌉ on, for every coordinate; = 1 where Nτ is a step
    k = torch.arange(1, 1001).reshape(-1, *[1] * rho.dim())
    assert bool((log_snr[1:][k <= 1000 * tau - 1e-9] > 0).all()) and bool((log_snr[1:][k >= 1000 * tau + 1e-9] < 0).all())
    assert abs(float(log_snr[750][rho == 0].max())) < 1e-12  # ρ = 0 crosses at t_hi = 0.75
    assert abs(float(log_snr[250][rho == rho.max()].max())) < 1e-12  # the fastest at t_lo = 0.25
    assert log_snr[0].isinf().all()  # a_0 = 1, s_0 = 0
    testing.check_schedule(sch, b, monotone=True)
    Diffusion(b, sch)


def test_data_driven_schedule_is_self_contained_in_its_config():
    b = DCTBasis((6, 4))
    x = gaussian_data(b, 0.02 + 1 / (1 + b.rates), 32)
    sch = DataSNRSchedule.from_data(b, list(zip(x, range(len(x)))), batch_size=5)  # a dataset of (x, label)
    torch.testing.assert_close(sch.variance, b.forward(x).var(0), atol=1e-12, rtol=1e-12)
    config = json.loads(json.dumps(sch.config()))
    assert config["name"] == "data_snr" and np.shape(config["variance"]) == (1, 6, 4)
    again = build_schedule(config)
    i = torch.arange(1001)
    assert torch.equal(again.log_a(i, b.rates), sch.log_a(i, b.rates)) and torch.equal(again.s2(i, b.rates), sch.s2(i, b.rates))
    run = {"name": "run", "basis": b.config(), "schedule": config, "model": {}}
    assert RunConfig.from_dict(run).schedule == config
    # built-ins by name: rebuilding imports no user code, and needs no data
    assert code_names(run) == [] == code_names(dict(run, basis=ColourBasis(b, "ycbcr").config()))
    big = dict(config, variance=[[[1.0] * 1024] * 1024])
    with pytest.raises(ConfigError, match=r"variance must hold at most 262144 numbers, got 1048576"):
        RunConfig.from_dict(dict(run, schedule=big))
    with pytest.raises(ValueError, match=r"measured for coefficients of shape \(1, 6, 4\), got rates of shape \(1, 4, 6\)"):
        Diffusion(DCTBasis((4, 6)), sch)


def test_data_driven_schedule_samples_its_data_with_the_oracle():
    b = DCT1D(32)
    lam = 0.01 + 1.0 / (1.0 + 5 * b.rates)
    sch = DataSNRSchedule(lam, N=1000)
    d = Diffusion(b, sch)
    v, _ = linear_output_variance(d, lam, "dpm++2m", steps=50)
    assert gaussian_kl(v, lam) < 1e-3
    assert torch.equal(logsnr_cosine_torch(torch.tensor([0.3], dtype=torch.float64), 10.0, -10.0),
                       torch.tensor(logsnr_cosine_t(np.array([0.3]), 10.0, -10.0)))
    assert math.isclose(float(sch.crossing_times(b.rates).min()), 0.25) and float(sch.crossing_times(b.rates).max()) == 0.75


# ---- the likelihood bound on any event ------------------------------------------------------------

@pytest.mark.parametrize("basis", [lambda: DCT1D(16), lambda: DCT3D((4, 3, 2)),
                                   lambda: ColourBasis(DCTBasis((4, 3)), "opponent", speeds=[1, 2, 2])])
def test_the_bound_is_its_closed_form_on_every_event(basis):
    b = basis()
    d = Diffusion(b, VPBlurSchedule("quartic", 0.4, N=50, noise="logsnr-cosine"))
    lam = 0.02 + 0.5 / (1.0 + 5 * b.rates)
    x0 = gaussian_data(b, lam, 64)
    r = d.nll(oracle_model(d, lam), x0, decoder="continuous", generator=torch.Generator().manual_seed(1),
              progress=False)
    want = expected_bound_bpd(d, lam)
    assert abs(r.bpd - want) < 4 * r.stderr, (r.bpd, want, r.stderr)
    # 8-bit data: the decoder's one pixel variance is the mean over the whole event's coefficients
    assert math.isfinite(d.nll(oracle_model(d, lam), x0.clamp(-1, 1), steps=4, progress=False,
                               generator=torch.Generator().manual_seed(1)).bpd)
