"""Round-trip cost of each basis (forward + inverse), beside a plain copy and beside alternative
correct implementations of the same transform.

    python benchmarks/bases.py            # full run (64², 128², 256²), ~1-2 min on 2 cores
    python benchmarks/bases.py --quick    # smoke run (64² only), < 20 s
    python benchmarks/bases.py --threads 2   # default is 1 thread (see --help)

Batches: 16 × 3 channels at 64² and 128², 4 × 3 at 256², float32. Every candidate at one size
is timed in the same interleaved loop (see ``_timing.compare``), so ratios are side by side.

Alternatives measured (each checked against our coefficients; the max |difference| is printed):

- ``matmul (2-D only)``: ``U_Hᵀ @ (x @ U_W)``, the separable hooks as they were before they took
  1 to 3 axes (issue 22): its ratio is what the n-axis code costs in 2-D;
- ``einsum``: ``einsum('hk,bchw,wl->bckl')`` for the separable product;
- ``reshape-gemm``: two plain 2-D GEMMs on (B·C·H, W) views with a transpose between them;
- ``bmm``: the left product as ``torch.bmm`` against an expanded U_H;
- ``torch-dct``: ``torch_dct.dct_2d(x, norm='ortho')`` / ``idct_2d`` (DCT and reflect blur);
- ``rfft-exact``: our real Fourier basis computed with ``torch.fft.rfft`` per axis plus packing
  (Fourier and circular blur: same coefficients as the matrix);
- ``rfft2 (bound)``: ``torch.fft.rfft2``/``irfft2`` — a different (complex) layout, so not a
  drop-in, but a lower bound for any FFT-based Fourier-type basis;
- ``matrix-inplace``: our per-level wavelet matrices with in-place block writes (no ``cat``);
- ``haar-slices``: the Haar DWT by strided slicing, level by level, in Mallat layout;
- ``pywt``: ``pywt.wavedec2``/``waverec2`` (periodization) through NumPy, with coeffs_to_array;
- ``hooks (no checks)``: our own ``_forward``/``_inverse`` called directly, without the input
  and dtype checks of ``OrthoBasis.forward``/``inverse``: its ratio is what the contract costs.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np
import pywt
import torch
import torch_dct

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _timing  # noqa: E402

from gendiff import DCTBasis, FourierBasis, GaussianBlurBasis, IdentityBasis, WaveletBasis  # noqa: E402
from gendiff.bases import SeparableBasis  # noqa: E402

FULL_SIZES = [(64, 16), (128, 16), (256, 4)]   # (side, batch); 3 channels
QUICK_SIZES = [(64, 16)]
# Reported, never "best": rfft2 is not the same basis; the bare hooks skip the checks.
LOWER_BOUNDS = {"rfft2 (bound)", "hooks (no checks)"}


# ---------------------------------------------------------------------------------------------
# Alternative implementations (pure functions of the basis' own 1-D matrices)
# ---------------------------------------------------------------------------------------------

def sep_einsum(uh, uw):
    def fwd(x):
        return torch.einsum("hk,bchw,wl->bckl", uh, x, uw)

    def inv(c):
        return torch.einsum("hk,bckl,wl->bchw", uh, c, uw)
    return fwd, inv


def _gemm_apply(x, a, b):
    """aᵀ x b with two 2-D GEMMs: (x viewed (B·C·H, W)) @ b, transpose, @ a, transpose back."""
    shape = x.shape
    h, w = shape[-2], shape[-1]
    y = (x.reshape(-1, w) @ b).view(shape)
    z = y.mT.reshape(-1, h) @ a                      # (B·C·W, H): rows of yᵀ times a
    return z.view(*shape[:-2], w, h).mT.contiguous()


def sep_matmul(uh, uw):
    """U_Hᵀ x U_W as two broadcast matmuls: SeparableBasis's 2-D hooks before they took n axes."""
    return (lambda x: uh.mT @ (x @ uw)), (lambda c: uh @ (c @ uw.mT))


def sep_gemm(uh, uw):
    uh_t, uw_t = uh.mT.contiguous(), uw.mT.contiguous()
    return (lambda x: _gemm_apply(x, uh, uw)), (lambda c: _gemm_apply(c, uh_t, uw_t))


def sep_bmm(uh, uw):
    uh_t, uw_t = uh.mT.contiguous(), uw.mT.contiguous()

    def left(m, y):
        yb = y.reshape(-1, *y.shape[-2:])
        return torch.bmm(m.expand(yb.shape[0], -1, -1), yb).view(y.shape)
    return (lambda x: left(uh_t, x @ uw)), (lambda c: left(uh, c @ uw_t))


def torch_dct_pair():
    return (lambda x: torch_dct.dct_2d(x, norm="ortho")), (lambda c: torch_dct.idct_2d(c, norm="ortho"))


def _rfft_real_last(x):
    """The real orthonormal Fourier basis of ``fourier_matrix`` along the last axis, via rfft."""
    n = x.shape[-1]
    v = torch.view_as_real(torch.fft.rfft(x, dim=-1, norm="ortho")).flatten(-2)  # Re0 Im0 Re1 Im1 …
    scale = _rfft_scale(n, x.dtype, x.device)
    # drop Im0 (and Im of Nyquist for even n): [Re0, Re1, Im1, …] -> length n
    return torch.cat([v[..., :1], v[..., 2:n + 1]], dim=-1) * scale


def _irfft_real_last(c):
    n = c.shape[-1]
    m = n // 2 + 1
    v = torch.zeros(*c.shape[:-1], 2 * m, dtype=c.dtype, device=c.device)
    c = c / _rfft_scale(n, c.dtype, c.device)
    v[..., :1] = c[..., :1]
    v[..., 2:n + 1] = c[..., 1:]
    return torch.fft.irfft(torch.view_as_complex(v.view(*c.shape[:-1], m, 2)), n=n, dim=-1, norm="ortho")


_SCALES: dict = {}


def _rfft_scale(n, dtype, device):
    key = (n, dtype, device)
    if key not in _SCALES:
        s = np.ones(n)
        k = np.arange(1, n - (n % 2 == 0))            # cos/sin pairs, Nyquist excluded
        s[k] = np.where(k % 2 == 1, math.sqrt(2.0), -math.sqrt(2.0))
        _SCALES[key] = torch.as_tensor(s, dtype=dtype, device=device)
    return _SCALES[key]


def rfft_exact_pair():
    def fwd(x):
        return _rfft_real_last(_rfft_real_last(x).mT).mT.contiguous()

    def inv(c):
        return _irfft_real_last(_irfft_real_last(c).mT).mT.contiguous()
    return fwd, inv


def rfft2_bound_pair(shape):
    return (lambda x: torch.fft.rfft2(x, norm="ortho")), (lambda c: torch.fft.irfft2(c, s=shape, norm="ortho"))


def haar_slices_pair(levels):
    r = 1 / math.sqrt(2.0)

    def fwd(x):
        c = x.clone()
        h, w = x.shape[-2:]
        for _ in range(levels):
            b = c[..., :h, :w]
            b = torch.cat([(b[..., 0::2, :] + b[..., 1::2, :]) * r, (b[..., 0::2, :] - b[..., 1::2, :]) * r], -2)
            b = torch.cat([(b[..., 0::2] + b[..., 1::2]) * r, (b[..., 0::2] - b[..., 1::2]) * r], -1)
            c[..., :h, :w] = b
            h, w = h // 2, w // 2
        return c

    def inv(c):
        x = c.clone()
        h, w = c.shape[-2] >> (levels - 1), c.shape[-1] >> (levels - 1)
        for _ in range(levels):
            b = x[..., :h, :w]
            lo, hi = b[..., : w // 2], b[..., w // 2:]
            b = torch.stack([(lo + hi) * r, (lo - hi) * r], -1).flatten(-2)
            lo, hi = b[..., : h // 2, :], b[..., h // 2:, :]
            b = torch.stack([(lo + hi) * r, (lo - hi) * r], -2).flatten(-3, -2)
            x[..., :h, :w] = b
            h, w = h * 2, w * 2
        return x
    return fwd, inv


def wavelet_inplace_pair(basis, x):
    """Our per-level matrices, but one clone and in-place block writes instead of two cats per level."""
    flat = basis._constants_like(x)  # (row, column) analysis matrix per level
    mats = list(zip(flat[0::2], flat[1::2]))

    def fwd(x):
        c = x.clone()
        for ah, aw in mats:
            h, w = ah.shape[0], aw.shape[0]
            c[..., :h, :w] = ah @ c[..., :h, :w] @ aw.mT
        return c

    def inv(c):
        x = c.clone()
        for ah, aw in reversed(mats):
            h, w = ah.shape[0], aw.shape[0]
            x[..., :h, :w] = ah.mT @ x[..., :h, :w] @ aw
        return x
    return fwd, inv


def pywt_pair(levels):
    state = {}

    def fwd(x):
        coeffs = pywt.wavedec2(x.numpy(), "haar", mode="periodization", level=levels, axes=(-2, -1))
        arr, state["slices"] = pywt.coeffs_to_array(coeffs, axes=(-2, -1))
        return torch.from_numpy(arr)

    def inv(c):
        coeffs = pywt.array_to_coeffs(c.numpy(), state["slices"], output_format="wavedec2")
        return torch.from_numpy(pywt.waverec2(coeffs, "haar", mode="periodization", axes=(-2, -1)))
    return fwd, inv


# ---------------------------------------------------------------------------------------------

def bases_for(n):
    return {
        "identity": IdentityBasis((n, n)),
        "dct": DCTBasis((n, n)),
        "fourier": FourierBasis((n, n)),
        "blur zero": GaussianBlurBasis((n, n), boundary="zero"),
        "blur circular": GaussianBlurBasis((n, n), boundary="circular"),
        "blur reflect": GaussianBlurBasis((n, n), boundary="reflect"),
        "wavelet haar": WaveletBasis((n, n), "haar"),
    }


def alternatives(name, basis, x):
    """{candidate name: (forward, inverse)} of correct alternatives (and lower bounds)."""
    alts = {}
    alts["hooks (no checks)"] = (lambda v: basis._forward(v, *basis._constants_like(v)),
                                 lambda c: basis._inverse(c, *basis._constants_like(c)))
    if isinstance(basis, SeparableBasis):
        uh, uw = basis._constants_like(x)
        alts["matmul (2-D only)"] = sep_matmul(uh, uw)
        alts["einsum"] = sep_einsum(uh, uw)
        alts["reshape-gemm"] = sep_gemm(uh, uw)
        alts["bmm"] = sep_bmm(uh, uw)
    if name in ("dct", "blur reflect"):
        alts["torch-dct"] = torch_dct_pair()
    if name in ("fourier", "blur circular"):
        alts["rfft-exact"] = rfft_exact_pair()
        alts["rfft2 (bound)"] = rfft2_bound_pair(basis.shape)
    if isinstance(basis, WaveletBasis):
        alts["matrix-inplace"] = wavelet_inplace_pair(basis, x)
        alts["haar-slices"] = haar_slices_pair(basis.levels)
        alts["pywt"] = pywt_pair(basis.levels)
    return alts


def max_error(basis, fwd, inv, x):
    """max |alt.forward − ours.forward| and the alternative's own round-trip error."""
    ref = basis.forward(x)
    c = fwd(x)
    coef_err = float((c - ref).abs().max()) if c.shape == ref.shape and not c.is_complex() else float("nan")
    return coef_err, float((inv(c) - x).abs().max())


def round_trip(fwd, inv, x):
    return lambda: inv(fwd(x))


def run(args):
    info = _timing.setup(args)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    repeats = args.repeats or (3 if args.quick else 15)
    min_time = 0.01 if args.quick else 0.02
    load0 = _timing.loadavg()
    rows_main, rows_best, rows_all, all_results = [], [], [], []
    for n, batch in sizes:
        x = torch.randn(batch, 3, n, n, generator=torch.Generator().manual_seed(args.seed))
        bases = bases_for(n)
        cands = {"copy": lambda: x.clone()}
        meta = {}
        for name, b in bases.items():
            cands[f"{name}/ours"] = round_trip(b.forward, b.inverse, x)
            for alt, (f, i) in alternatives(name, b, x).items():
                cands[f"{name}/{alt}"] = round_trip(f, i, x)
                meta[f"{name}/{alt}"] = max_error(b, f, i, x)
        res = _timing.compare(cands, repeats=repeats, warmup=1, min_time=min_time)
        all_results += list(res.values())
        size = f"{n}² (B={batch}×3)"
        for name in bases:
            ours = f"{name}/ours"
            rows_main.append([name, size, res[ours].median, _timing.ratio(res, ours, "copy")])
            alts = [k for k in res if k.startswith(name + "/") and k != ours]
            for k in alts:
                ce, rt = meta[k]
                rows_all.append([name, size, k.split("/", 1)[1], res[k].median,
                                 _timing.ratio(res, k, ours), fmt_err(ce), fmt_err(rt)])
            correct = [k for k in alts if k.split("/", 1)[1] not in LOWER_BOUNDS]
            if correct:
                best = min(correct, key=lambda k: res[k].median)
                rows_best.append([name, size, res[ours].median,
                                  f"{res[best].median:.3g} ({best.split('/', 1)[1]})",
                                  _timing.ratio(res, ours, best)])
            else:
                rows_best.append([name, size, res[ours].median, "— (none)", "—"])
        print(f"# done {n}²", file=sys.stderr, flush=True)

    print("## Basis round trips (forward + inverse), float32\n")
    print(_timing.machine_markdown(info) + "\n")
    print(_timing.table(["basis", "size", "ms per round trip", "ratio to copy"], rows_main) + "\n")
    print("### Ours against the fastest correct alternative\n")
    print("ratio = ours / best alternative (> 1: the alternative is faster), per-repeat median.\n")
    print(_timing.table(["basis", "size", "ours ms", "best alternative ms (name)", "ratio"], rows_best) + "\n")
    print("### Every alternative\n")
    print("ratio = alternative / ours (< 1: faster than ours). `coef err`: max |alt coefficients − ours| "
          "(nan: different layout); `rt err`: the alternative's own round-trip max error.\n")
    print(_timing.table(["basis", "size", "candidate", "ms", "ratio to ours", "coef err", "rt err"], rows_all) + "\n")
    print(_timing.noise_note(all_results, load0))


def fmt_err(v):
    return "nan" if v != v else f"{v:.1e}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _timing.add_common_args(p)
    run(p.parse_args(argv))


if __name__ == "__main__":
    main()
