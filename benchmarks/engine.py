"""Engine costs for the blur basis: schedule memory, construction time and ``q_sample`` time.

    python benchmarks/engine.py            # 64², 128², 256² (3 channels, N = 1000), ~1 min
    python benchmarks/engine.py --quick    # 64² only, < 20 s

Schedule memory is the bytes of every tensor and array reachable (through ``vars()``, lists,
tuples and dicts) from the ``VPBlurSchedule`` and from the ``Diffusion``'s cached rates and
per-device coefficients, each storage counted once, measured after a ``q_sample`` and a short
``sample`` so that lazily filled caches are included. The basis (its 1-D matrices) is reported
separately. It is compared with the official implementation, which stores 7 tables of
(N+1) × (C·H·W) float32: 7·(N+1)·C·H·W·4 bytes.

Target: schedule memory < 10 MiB at 256².
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _timing  # noqa: E402

from gendiff import Diffusion, GaussianBlurBasis  # noqa: E402
from gendiff.schedules import VPBlurSchedule  # noqa: E402

FULL_SIZES = [(64, 16), (128, 16), (256, 4)]
QUICK_SIZES = [(64, 16)]
TARGET_BYTES = 10 * 2 ** 20
CONTRACT_CLAIMS = {64: "329 MiB", 256: "5.1 GiB"}  # docs/math.md, Conventions


def official_bytes(n: int, C: int = 3, N: int = 1000) -> int:
    return 7 * (N + 1) * C * n * n * 4


def reachable_bytes(*roots, exclude=()) -> int:
    """Bytes of the tensors / arrays reachable from ``roots``, each storage counted once."""
    seen_obj, seen_storage = {id(e) for e in exclude}, set()
    total = 0
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen_obj:
            continue
        seen_obj.add(id(obj))
        if isinstance(obj, torch.Tensor):
            st = obj.untyped_storage()
            key = (st.data_ptr(), obj.device)
            if key not in seen_storage:
                seen_storage.add(key)
                total += st.nbytes()
        elif isinstance(obj, np.ndarray):
            base = obj if obj.base is None else obj.base
            if id(base) not in seen_storage:
                seen_storage.add(id(base))
                total += base.nbytes if isinstance(base, np.ndarray) else obj.nbytes
        elif isinstance(obj, dict):
            stack += list(obj.keys()) + list(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack += list(obj)
        elif isinstance(obj, (str, bytes, int, float, complex, bool, type(None), torch.device,
                              torch.dtype)) or callable(obj) and not hasattr(obj, "__dict__"):
            continue
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            stack += list(vars(obj).values())
    return total


def run(args):
    info = _timing.setup(args)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    repeats = args.repeats or (3 if args.quick else 9)
    min_time = 0.01 if args.quick else 0.03
    N = args.N
    load0 = _timing.loadavg()
    rows_mem, rows_time, results = [], [], []
    verdicts = []
    for n, batch in sizes:
        t0 = time.perf_counter()
        basis = GaussianBlurBasis((n, n))
        t_basis = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        schedule = VPBlurSchedule("quartic", 0.140625, N=N)
        t_sched = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        d = Diffusion(basis, schedule)
        t_diff = (time.perf_counter() - t0) * 1e3
        t_diff_nocheck = _timing.time_once(
            lambda: Diffusion(basis, schedule, check_basis=False, validate=False), repeats=3)

        g = torch.Generator().manual_seed(args.seed)
        x0 = torch.randn(batch, 3, n, n, generator=g)
        i = torch.randint(1, N + 1, (batch,), generator=g)
        # exercise the caches before measuring memory
        d.q_sample(x0, i, generator=g)
        d.sample(lambda x, t: x * 0, (batch, 3, n, n), sampler="dpm++2m", steps=3, progress=False,
                 generator=g)
        mem = reachable_bytes(schedule, d._rates, d._coefs)
        mem_all = reachable_bytes(d, exclude=(basis,))
        mem_basis = reachable_bytes(basis)
        off = official_bytes(n, 3, N)
        claim = CONTRACT_CLAIMS.get(n, "—")
        rows_mem.append([f"{n}²×3", f"{mem:,}", _timing.mib(mem), f"{mem_all:,}", _timing.mib(mem_basis),
                         f"{off:,}", f"{off / 2**20:.1f} MiB = {off / 2**30:.2f} GiB", claim,
                         f"{off / max(mem, 1):,.0f}×"])
        if n == 256:
            verdicts.append(f"schedule memory at 256²: {_timing.mib(mem)} (target < 10 MiB): "
                            + ("**met**" if mem < TARGET_BYTES else "**not met**")
                            + f", {TARGET_BYTES / max(mem, 1):,.0f}× under the limit")

        res = _timing.compare({
            "copy": lambda: x0.clone(),
            "round trip": lambda: basis.inverse(basis.forward(x0)),
            "q_sample": lambda: d.q_sample(x0, i, generator=g),
        }, repeats=repeats, warmup=1, min_time=min_time)
        results += list(res.values())
        rows_time.append([f"{n}²×3", batch, t_basis, t_sched, t_diff, t_diff_nocheck,
                          res["round trip"].median, res["q_sample"].median,
                          _timing.ratio(res, "q_sample", "round trip")])
        print(f"# done {n}²", file=sys.stderr, flush=True)

    print(f"## Engine: blur basis (zero boundary), VPBlurSchedule quartic 0.14, N={N}\n")
    print(_timing.machine_markdown(info) + "\n")
    print("### Schedule memory\n")
    print("`schedule`: VPBlurSchedule + Diffusion's cached rates and coefficients; `Diffusion total`: "
          "everything reachable from the Diffusion except the basis; `official`: 7·(N+1)·C·H·W·4 bytes.\n")
    print(_timing.table(["size", "schedule bytes", "schedule", "Diffusion total bytes", "basis",
                         "official bytes", "official", "docs/math.md says", "official / ours"], rows_mem) + "\n")
    print("### Construction and q_sample\n")
    print("Times in ms. `Diffusion()` includes the orthonormality probe and the schedule validation; "
          "`bare` skips both. q_sample draws its noise (1 forward + 2 inverses + randn); its ratio is to one "
          "basis round trip measured in the same interleaved loop.\n")
    print(_timing.table(["size", "B", "basis build", "schedule build", "Diffusion()", "Diffusion() bare",
                         "round trip", "q_sample", "q_sample / round trip"], rows_time) + "\n")
    for v in verdicts:
        print(f"- {v}")
    print()
    print(_timing.noise_note(results, load0))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _timing.add_common_args(p)
    p.add_argument("--N", type=int, default=1000, help="number of diffusion steps")
    run(p.parse_args(argv))


if __name__ == "__main__":
    main()
