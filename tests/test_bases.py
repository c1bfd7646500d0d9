"""Conformance suite over every basis, plus each basis against an independent reference."""
import re

import numpy as np
import pytest
import pywt
import scipy.fft
import scipy.linalg
import scipy.ndimage
import torch

from gendiff import (DCTBasis, Diffusion, FourierBasis, GaussianBlurBasis, IdentityBasis,
                     OrthoBasis, WaveletBasis, build_basis)
from gendiff.schedules import VPBlurSchedule

FACTORIES = {
    "identity-5x7": lambda: IdentityBasis((5, 7)),
    "dct-6x9": lambda: DCTBasis((6, 9)),
    "fourier-8x8": lambda: FourierBasis((8, 8)),
    "fourier-7x6": lambda: FourierBasis((7, 6)),
    "blur-zero-8x7": lambda: GaussianBlurBasis((8, 7), sigma=0.4),
    "blur-circular-9x6": lambda: GaussianBlurBasis((9, 6), sigma=1.0, boundary="circular"),
    "blur-reflect-7x8": lambda: GaussianBlurBasis((7, 8), sigma=1.0, boundary="reflect"),
    "wavelet-haar-16x8": lambda: WaveletBasis((16, 8), "haar"),
    "wavelet-db2-16x16": lambda: WaveletBasis((16, 16), "db2", levels=2),
}


@pytest.fixture(params=sorted(FACTORIES))
def basis(request):
    return FACTORIES[request.param]()


def explicit_matrix(b):
    """Uᵀ as an explicit (HW × HW) matrix: the forward transform of every unit image."""
    h, w = b.shape
    eye = torch.eye(h * w, dtype=torch.float64).reshape(h * w, 1, h, w)
    return b.forward(eye).reshape(h * w, h * w).T


def test_orthonormal(basis):
    ut = explicit_matrix(basis)
    torch.testing.assert_close(ut @ ut.T, torch.eye(ut.shape[0], dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(ut.T @ ut, torch.eye(ut.shape[0], dtype=torch.float64), atol=1e-12, rtol=0)


def test_round_trip_and_inner_products(basis):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 2, *basis.shape, generator=g, dtype=torch.float64)
    y = torch.randn(3, 2, *basis.shape, generator=g, dtype=torch.float64)
    assert (basis.inverse(basis.forward(x)) - x).abs().max() < 1e-12
    assert (basis.forward(basis.inverse(x)) - x).abs().max() < 1e-12
    torch.testing.assert_close((basis.forward(x) * basis.forward(y)).sum(), (x * y).sum(), atol=1e-10, rtol=0)


def test_rates(basis):
    rho = basis.rates
    assert rho.dtype == torch.float64 and tuple(rho.shape) == (1, *basis.shape)
    assert bool((rho >= 0).all()) and bool(torch.isfinite(rho).all())


def test_batching_dtype_autograd(basis):
    x = torch.randn(4, 3, *basis.shape, dtype=torch.float64)
    whole = basis.forward(x)
    one = torch.stack([basis.forward(x[k:k + 1])[0] for k in range(4)])
    torch.testing.assert_close(whole, one, atol=1e-13, rtol=0)
    x32 = x.float().requires_grad_(True)
    c = basis.forward(x32)
    assert c.dtype == torch.float32 and c.device == x32.device and c.shape == x32.shape
    torch.testing.assert_close(c.double(), whole, atol=1e-5, rtol=0)
    (c ** 2).sum().backward()  # ‖Uᵀx‖² = ‖x‖², so the gradient is 2x
    torch.testing.assert_close(x32.grad, 2 * x32.detach(), atol=1e-4, rtol=0)


def test_config_round_trip(basis):
    x = torch.randn(1, 1, *basis.shape, dtype=torch.float64)
    torch.testing.assert_close(build_basis(basis.config()).forward(x), basis.forward(x))


def test_wrong_shape_is_a_clear_error(basis):
    with pytest.raises(ValueError, match=r"expects images of shape"):
        basis.forward(torch.zeros(1, 1, basis.shape[0] + 1, basis.shape[1]))


# ---- the contract lives in OrthoBasis ------------------------------------------------------

class Bare(OrthoBasis):
    """Only the transform (a sign flip) and the rates: every check comes from the base class."""

    def __init__(self, shape, rates_shape=None):
        super().__init__(shape)
        self.rates_shape = rates_shape or (1, *self.shape)
        self.calls = []

    def _forward(self, x):
        self.calls.append(x.dtype)
        return -x

    def _inverse(self, c):
        self.calls.append(c.dtype)
        return -c

    def _rates(self):
        return torch.full(self.rates_shape, 0.1, dtype=torch.float64)


@pytest.mark.parametrize("name", ["bare", *sorted(FACTORIES)])
def test_input_checks_are_the_base_class_for_every_basis(name):
    b = Bare((4, 6)) if name == "bare" else FACTORIES[name]()
    h, w = b.shape
    for fn in (b.forward, b.inverse):
        with pytest.raises(ValueError, match=re.escape(f"{type(b).__name__} expects images of shape (..., {h}, {w}), "
                                                       f"got a tensor of shape (2, {h + 1}, {w})")):
            fn(torch.zeros(2, h + 1, w))
        with pytest.raises(TypeError, match=f"{type(b).__name__} needs a floating-point tensor, got torch.int64"):
            fn(torch.zeros(1, 1, h, w, dtype=torch.int64))
        with pytest.raises(TypeError, match=r"expects a torch.Tensor, got ndarray"):
            fn(np.zeros((1, 1, h, w)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32_once(basis, dtype):
    x = torch.randn(2, 3, *basis.shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    for fn in (basis.forward, basis.inverse):
        got = fn(x)
        assert got.dtype == dtype and got.shape == x.shape
        torch.testing.assert_close(got, fn(x.float()).to(dtype), atol=0, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast would run the matmuls in bf16
        under = basis.forward(x.float())
    torch.testing.assert_close(under, basis.forward(x.float()), atol=0, rtol=0)


def test_hooks_see_only_float32_or_float64_and_constants_are_cast_once():
    b = Bare((3, 3))
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        b.inverse(b.forward(torch.ones(1, 1, 3, 3, dtype=dtype)))
    assert b.calls == [torch.float32] * 6 + [torch.float64] * 2
    blur = GaussianBlurBasis((5, 5))
    x = torch.randn(1, 1, 5, 5)
    blur.forward(x)
    first = blur._constants_like(x)
    blur.inverse(blur.forward(x))
    assert all(a is b for a, b in zip(first, blur._constants_like(x)))  # no cast per call
    assert all(c.dtype == torch.float32 for c in first) and blur.u_h.dtype == torch.float64


@pytest.mark.parametrize("rates_shape", [(4, 6), (3, 4, 6), (1, 1, 4, 6), (1, 6, 4)])
def test_rates_of_another_shape_are_refused(rates_shape):
    b = Bare((4, 6), rates_shape)
    hint = "; add the leading axis: rates[None]" if rates_shape == (4, 6) else ""
    msg = re.escape("Bare.rates must have shape (1, H, W) = (1, 4, 6) (one rate per coordinate") + \
        ".*" + re.escape(f"got {rates_shape}{hint}") + "$"
    with pytest.raises(ValueError, match=msg):
        b.rates
    # (H, W) rates broadcast against a (B, C, 1, 1) step axis: q_sample would be silently wrong
    # when B == C; the engine refuses them even when the orthonormality check is skipped.
    with pytest.raises(ValueError, match=msg):
        Diffusion(b, VPBlurSchedule("linear", 0.5, N=10), check_basis=False)
    assert tuple(Bare((4, 6)).rates.shape) == (1, 4, 6)


def test_negative_or_nonfinite_rates_are_refused():
    b = Bare((2, 2))
    b._rates = lambda: torch.tensor([[[0.0, -0.5], [0.1, 0.2]]], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"Bare.rates must be finite and ≥ 0, got min -0.5"):
        b.rates
    b = Bare((2, 2))
    b._rates = torch.zeros(1, 2, 2)  # a tensor stored under the hook's name
    with pytest.raises(TypeError, match=r"Bare._rates must be a method returning ρ, got a Tensor"):
        b.rates


def test_overriding_the_public_methods_is_refused():
    with pytest.raises(TypeError, match=r"Direct defines forward, rates; implement _forward, _inverse and _rates"):
        class Direct(IdentityBasis):
            def forward(self, x):
                return x

            @property
            def rates(self):
                return torch.zeros(1, *self.shape, dtype=torch.float64)


@pytest.mark.parametrize("cls", [IdentityBasis, DCTBasis, FourierBasis, GaussianBlurBasis, WaveletBasis])
def test_shape_is_normalised_in_one_place(cls):
    assert cls(8).shape == (8, 8) and cls((8, 4)).shape == (8, 4) and cls([4, 8]).shape == (4, 8)
    for bad in [(0, 8), (8, 8, 8), "8x8"]:
        with pytest.raises(ValueError, match=r"basis shape must be \(H, W\)"):
            cls(bad)


# ---- each basis against an independent reference -------------------------------------------

def kernel(n, sigma):
    m = np.arange(-(n - 1), n)
    k = np.exp(-m ** 2 / (2 * sigma ** 2))
    return k / k.sum()


def blur_reference(x, sigma, boundary):
    """The blur as an actual convolution, written without the basis code."""
    x = x.numpy()
    out = x
    for axis in (-2, -1):
        n = x.shape[axis]
        k = kernel(n, sigma)
        if boundary == "zero":
            t = scipy.linalg.toeplitz(k[n - 1:])  # T[i, j] = k[|i − j|]
            out = np.moveaxis(np.moveaxis(out, axis, -1) @ t.T, -1, axis)
        else:
            mode = {"circular": "grid-wrap", "reflect": "reflect"}[boundary]
            out = scipy.ndimage.convolve1d(out, k, axis=axis, mode=mode)
    return torch.from_numpy(out)


@pytest.mark.parametrize("boundary", ["zero", "circular", "reflect"])
@pytest.mark.parametrize("sigma", [0.4, 1.3])
def test_blur_basis_is_the_convolution(boundary, sigma):
    b = GaussianBlurBasis((10, 7), sigma=sigma, boundary=boundary)
    x = torch.randn(2, 3, 10, 7, dtype=torch.float64)  # RGB: the same operator on every channel
    blurred = b.inverse(torch.exp(-b.rates) * b.forward(x))
    torch.testing.assert_close(blurred, blur_reference(x, sigma, boundary), atol=1e-12, rtol=0)


def test_zero_boundary_eigenvalues_match_official_singular_values():
    n = 64
    t = scipy.linalg.toeplitz(kernel(n, 0.4)[n - 1:])
    sv = np.linalg.svd(t, compute_uv=False)
    b = GaussianBlurBasis((n, n))
    np.testing.assert_allclose(np.sort(b.eigenvalues_1d[0]), np.sort(sv), atol=1e-13)
    assert 0.8385 <= sv.min() and sv.max() <= 0.99991
    rho = b.rates[0]
    np.testing.assert_allclose(torch.exp(-rho).numpy(), np.outer(np.sort(sv)[::-1], np.sort(sv)[::-1]), atol=1e-13)


def test_dct_matches_scipy():
    x = torch.randn(2, 3, 6, 9, dtype=torch.float64)
    ref = scipy.fft.dctn(x.numpy(), norm="ortho", axes=(-2, -1))
    np.testing.assert_allclose(DCTBasis((6, 9)).forward(x).numpy(), ref, atol=1e-13)
    k, l = np.meshgrid(np.arange(6), np.arange(9), indexing="ij")
    np.testing.assert_allclose(DCTBasis((6, 9)).rates[0].numpy(), (np.pi * k / 6) ** 2 + (np.pi * l / 9) ** 2)


@pytest.mark.parametrize("n", [7, 8])
def test_fourier_matches_rfft(n):
    x = torch.randn(1, 1, 1, n, dtype=torch.float64)
    c = FourierBasis((1, n)).forward(x)[0, 0, 0].numpy()
    f = np.fft.rfft(x[0, 0, 0].numpy())
    expect = [f[0].real / np.sqrt(n)]
    for k in range(1, (n - 1) // 2 + 1):
        expect += [np.sqrt(2 / n) * f[k].real, -np.sqrt(2 / n) * f[k].imag]
    if n % 2 == 0:
        expect.append(f[n // 2].real / np.sqrt(n))
    np.testing.assert_allclose(c, expect, atol=1e-13)
    rho = FourierBasis((1, n)).rates[0, 0].numpy()
    assert rho[0] == 0.0
    if n % 2 == 0:
        assert rho[-1] == pytest.approx(np.pi ** 2, abs=1e-12)  # Nyquist, exact
    np.testing.assert_allclose(rho[1], (2 * np.pi / n) ** 2)


@pytest.mark.parametrize("wavelet,levels", [("haar", None), ("db2", 2), ("sym4", 1)])
def test_wavelet_matches_pywt(wavelet, levels):
    b = WaveletBasis((16, 32), wavelet, levels=levels)
    x = torch.randn(16, 32, dtype=torch.float64)
    arr, _ = pywt.coeffs_to_array(pywt.wavedec2(x.numpy(), wavelet, mode="periodization", level=b.levels))
    np.testing.assert_allclose(b.forward(x[None, None])[0, 0].numpy(), arr, atol=1e-12)


def test_wavelet_rates_grow_with_frequency():
    b = WaveletBasis((16, 16), "haar")
    rho = b.rates[0]
    assert rho[0, 0] == 0  # coarsest approximation behaves like DC
    finest_diag, coarser_diag = rho[8:, 8:], rho[4:8, 4:8]
    assert float(finest_diag.min()) > float(coarser_diag.max()) > float(rho[2:4, 2:4].max())


def test_wavelet_rejects_bad_sizes_and_biorthogonal():
    with pytest.raises(ValueError, match="divisible by 4"):
        WaveletBasis((6, 8), "haar", levels=2)
    with pytest.raises(ValueError, match="not orthogonal"):
        WaveletBasis((16, 16), "bior2.2")


# ---- a user-defined basis works without touching library code ------------------------------

class RandomRotation(OrthoBasis):
    """A dense random orthogonal matrix on the flattened plane: nothing the library knows."""

    name = "test-random-rotation"

    def __init__(self, shape, seed=0, scale=1.0):
        super().__init__(shape)
        self.seed, self.scale = seed, scale
        n = self.shape[0] * self.shape[1]
        q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
        self.q = torch.from_numpy(q * scale)
        self.rho = torch.linspace(0, 0.3, n, dtype=torch.float64).reshape(1, *self.shape)

    def constants(self):
        return (self.q,)

    def _forward(self, x, q):
        return (x.flatten(-2) @ q).reshape(x.shape)

    def _inverse(self, c, q):
        return (c.flatten(-2) @ q.T).reshape(c.shape)

    def _rates(self):
        return self.rho

    def config_args(self):
        return {"shape": list(self.shape), "seed": self.seed, "scale": self.scale}


def test_user_basis_runs_through_the_engine():
    b = build_basis({"name": "test-random-rotation", "shape": [4, 5], "seed": 3})
    d = Diffusion(b, VPBlurSchedule("quartic", 2.0, N=50))
    x0 = torch.randn(2, 3, 4, 5)
    x_i, eps = d.q_sample(x0, torch.tensor([10, 50]))
    assert x_i.shape == x0.shape and torch.isfinite(x_i).all()
    out = d.sample(lambda x, i: torch.zeros_like(x), (2, 3, 4, 5), steps=5, progress=False)
    assert torch.isfinite(out).all()


def test_non_orthonormal_user_basis_is_rejected():
    with pytest.raises(ValueError, match="not orthonormal"):
        Diffusion(RandomRotation((4, 4), scale=1.1), VPBlurSchedule(N=10))
