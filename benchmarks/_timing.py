"""Shared helpers for the benchmark scripts: robust side-by-side timing, machine info, tables.

Timings here are meant for a possibly shared CPU, so every comparison is *interleaved*: each
repeat times every candidate once, one after the other, and a ratio is the median over repeats
of the per-repeat ratio. Load that comes and goes then hits both sides of a ratio alike, and the
medians ignore the worst repeats. ``spread`` (relative half inter-quartile range of the repeats)
is reported so a reader can tell a noisy run from a clean one.
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import time
from typing import Callable, Mapping, Sequence

import torch

# A candidate's repeats vary by more than this (relative half-IQR) -> call the run noisy.
NOISY_SPREAD = 0.10


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _blas_threads() -> str:
    try:
        from threadpoolctl import threadpool_info
        return ", ".join(sorted({str(p["num_threads"]) for p in threadpool_info()
                                 if p.get("user_api") == "blas"})) or "n/a"
    except ImportError:
        return "n/a"


def machine_info() -> dict[str, str]:
    la = loadavg()
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_model(),
        "logical cores": str(os.cpu_count()),
        "torch": torch.__version__,
        "torch threads": str(torch.get_num_threads()),
        "NumPy BLAS threads": _blas_threads(),
        "python": platform.python_version(),
        "load average (1 min) at start": "n/a" if la is None else f"{la:.2f}",
    }


def machine_markdown(info: Mapping[str, str]) -> str:
    return "\n".join(f"- {k}: {v}" for k, v in info.items())


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="a fast smoke run (< 20 s): fewer sizes and repeats")
    p.add_argument("--threads", type=int, default=1,
                   help="torch and BLAS threads (default 1; 0 = the libraries' defaults). On a shared "
                        "2-core machine a 2-thread parallel region stalls for a scheduler quantum "
                        "(measured 8-12 ms per op) whenever the other core is busy, so 1 is the default")
    p.add_argument("--repeats", type=int, default=None, help="timing repeats per candidate (median taken)")
    p.add_argument("--seed", type=int, default=0)


_LIMITS = []


def setup(args) -> dict[str, str]:
    """Apply --threads to torch and to NumPy's BLAS (basis construction uses LAPACK)."""
    if args.threads and args.threads > 0:
        torch.set_num_threads(args.threads)
        try:
            from threadpoolctl import threadpool_limits
            _LIMITS.append(threadpool_limits(limits=args.threads))
        except ImportError:
            pass
    torch.manual_seed(args.seed)
    return machine_info()


def _calibrate(fn: Callable[[], object], min_time: float) -> int:
    """Calls per timed sample so that one sample lasts at least ``min_time`` seconds."""
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    return max(1, math.ceil(min_time / max(dt, 1e-7)))


class Result:
    """Per-repeat times (ms per call) of one candidate."""

    def __init__(self, name: str, times_ms: list[float]):
        self.name, self.times = name, times_ms

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def spread(self) -> float:
        """Half the inter-quartile range over the median (0.05 = ±5 %)."""
        if len(self.times) < 4:
            return (max(self.times) - min(self.times)) / 2 / self.median
        q = statistics.quantiles(self.times, n=4)
        return (q[2] - q[0]) / 2 / self.median


def compare(candidates: Mapping[str, Callable[[], object]], repeats: int = 7, warmup: int = 2,
            min_time: float = 0.05) -> dict[str, Result]:
    """Time every candidate ``repeats`` times, interleaved; returns ms per call per candidate."""
    number = {}
    for name, fn in candidates.items():
        for _ in range(warmup):
            fn()
        number[name] = _calibrate(fn, min_time)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            n = number[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            times[name].append((time.perf_counter() - t0) / n * 1e3)
    return {name: Result(name, t) for name, t in times.items()}


def ratio(results: Mapping[str, Result], name: str, ref: str) -> float:
    """Median over repeats of time(name)/time(ref), both measured in the same repeat."""
    a, b = results[name].times, results[ref].times
    return statistics.median(x / y for x, y in zip(a, b))


class single_thread:
    """Context manager: torch runs single-threaded inside (for untimed work on tiny tensors)."""

    def __enter__(self):
        self.n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.n)


def time_once(fn: Callable[[], object], repeats: int = 3) -> float:
    """Median wall time in ms of ``repeats`` single calls (for slow one-off operations)."""
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def fmt(v):
        if isinstance(v, float):
            if v == 0:
                return "0"
            if abs(v) >= 100:
                return f"{v:.0f}"
            if abs(v) >= 1:
                return f"{v:.2f}"
            return f"{v:.3g}"
        return str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def noise_note(results: Sequence[Result], load_start: float | None) -> str:
    """One line on how trustworthy the timings are."""
    worst = max((r.spread for r in results), default=0.0)
    la_end = loadavg()
    cores = os.cpu_count() or 1
    threads = torch.get_num_threads()
    load = f"load average {load_start:.2f} → {la_end:.2f} on {cores} logical cores" if (
        load_start is not None and la_end is not None) else "load average unknown"
    busy = la_end is not None and load_start is not None and max(la_end, load_start) > max(0.5, cores - threads + 0.5)
    noisy = worst > NOISY_SPREAD
    verdict = ("timings are noisy (the machine was shared); trust the side-by-side ratios more "
               "than the absolute times" if (noisy or busy) else "timings look stable")
    return f"Timing quality: worst relative half-IQR over repeats {worst:.0%}; {load}; {verdict}."


def mib(nbytes: float) -> str:
    return f"{nbytes / 2 ** 20:.3g} MiB"
