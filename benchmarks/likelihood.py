"""The ruler checked: the bound's gap to the exact NLL with the exact ε, both reverse means.

    python benchmarks/likelihood.py            # all three tables, ~1 min on one core
    python benchmarks/likelihood.py --quick    # the 8×8 table only, seconds

On data N(0, U diag(λ) Uᵀ) the exact ε-predictor is known and the expected bound has a closed
form (``gendiff.oracle.expected_bound_bpd``; the library's estimator agrees with it in
tests/test_likelihood.py), so bound − exact NLL is what the ruler itself adds, before any
network error. Columns: Eq. 19–20's mean; the posterior mean (``nll``'s default); the posterior
mean with the true Var(x̄_{i−1} | x̄_i) of the data instead of σ_i², which leaves nothing of the
mean's error: what the posterior-mean column still shows is σ_i²'s. Continuous decoder, linear β,
N = 1000. No timing: the numbers are exact arithmetic (float64) and the same on every machine.

(a) 8×8, the tests' λ = 0.02 + 0.5/(1 + 5ρ): the DCT (ρ = ω², up to 15) and the blur basis
    (σ = 0.4, ρ ≤ 0.35), the paper's three rows.
(b) The small Table 1 of docs/results.md: its bases, sizes and rows, with λ the data's own power
    per blur-basis coordinate (E x̄², training split, [−1, 1]): a Gaussian with the data's spectrum.
(c) The paper's 64×64 blur basis with benchmarks/samplers.py's λ = 0.02 + 1/(1 + 30ρ).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "recipes"))
import _timing  # noqa: E402
from table1_small import DATASETS, LABELS, ROWS, SIGMA, load_split, row_schedule  # noqa: E402

from gendiff import DCTBasis, Diffusion, GaussianBlurBasis  # noqa: E402
from gendiff.oracle import expected_bound_bpd, gaussian_entropy_bpd  # noqa: E402
from gendiff.schedules import VPBlurSchedule  # noqa: E402

PAPER_ROWS = {"no blur": ("none", 0.0), "quartic 0.14": ("quartic", 0.140625), "log 0.6": ("log", 0.6)}
HEADER = ["basis", "row", "exact NLL (bits/dim)", "Eq. 19–20 mean: gap", "posterior mean: gap",
          "posterior mean, true variance: gap"]


def gaps(d: Diffusion, lam: torch.Tensor) -> list[float]:
    H = gaussian_entropy_bpd(lam)
    return [H] + [expected_bound_bpd(d, lam, m, v) - H
                  for m, v in (("reverse", "transition"), ("posterior", "transition"), ("posterior", "exact"))]


def paper_rows(basis, label: str, lam: torch.Tensor) -> list[list]:
    return [[label, row, *gaps(Diffusion(basis, VPBlurSchedule(*spec, N=1000), check_basis=False), lam)]
            for row, spec in PAPER_ROWS.items()]


def table1_rows(data: str) -> list[list]:
    size = DATASETS[data].size
    basis = GaussianBlurBasis((size, size), sigma=SIGMA)
    lam = basis.forward(load_split(data, "train", size).double()).pow(2).mean(0)
    return [[f"{data} {size}×{size}", LABELS[row],
             *gaps(Diffusion(basis, row_schedule(row, size), check_basis=False), lam)] for row in ROWS]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="only table (a)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print("## The bound's gap to the exact NLL with the exact ε (bits/dim, N = 1000)\n")
    rows = []
    for basis, label in ((DCTBasis((8, 8)), "DCT 8×8"), (GaussianBlurBasis((8, 8), sigma=SIGMA), "blur σ=0.4, 8×8")):
        rows += paper_rows(basis, label, 0.02 + 0.5 / (1.0 + 5 * basis.rates.double()))
    print("### (a) 8×8, λ = 0.02 + 0.5/(1 + 5ρ)\n\n" + _timing.table(HEADER, rows) + "\n")
    if args.quick:
        return
    rows = [r for data in DATASETS for r in table1_rows(data)]
    print("### (b) The small Table 1's settings, λ = the training data's power per coordinate\n\n"
          + _timing.table(HEADER, rows) + "\n")
    basis = GaussianBlurBasis((64, 64), sigma=SIGMA)
    rows = paper_rows(basis, "blur σ=0.4, 64×64", 0.02 + 1.0 / (1.0 + 30 * basis.rates.double()))
    print("### (c) The paper's 64×64, λ = 0.02 + 1/(1 + 30ρ)\n\n" + _timing.table(HEADER, rows) + "\n")


if __name__ == "__main__":
    main()
