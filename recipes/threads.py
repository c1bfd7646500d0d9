"""The recipes' CPU thread policy: how many torch threads a run uses (the library sets none).

Why it matters: torch's default (one OpenMP thread per core) makes every op wait for its slowest
thread, so on a 2-core machine shared with one busy process the demo's step stalled 15-40×
(issue 13, issue 19).
"""
from __future__ import annotations

import math
import os
import time

import torch


def set_threads(requested: int | None, on_cpu: bool = True) -> int:
    """Set and print torch's CPU thread count: ``requested``, else the cores left idle right now.

    Why: torch's default (one thread per core) makes every op wait for its slowest thread; with
    one other busy process on a 2-core machine, the demo stalled for minutes at a time (issue
    13). The default is cores − (cores other processes keep busy, rounded half up), at least 1,
    measured before this process does any work (:func:`busy_cores`). Not the 1-minute load
    average: right after the ``pip install`` that precedes the README's main command it still
    reads about 1.5 on an idle machine, which halved the demo's threads.

    Args:
        requested: ``--threads``; None or 0 measures.
        on_cpu: print the choice (False when the run goes to a GPU and threads matter little).
    """
    if requested:
        torch.set_num_threads(requested)
        if on_cpu:
            print(f"torch threads: {requested} (--threads)")
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy, what = busy_cores(), "busy now"
    if busy is None:  # no /proc/stat (macOS, Windows): the load average is the best left
        busy, what = (os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0), "load average"
    n = max(1, min(cores, cores - math.floor(busy + 0.5)))
    torch.set_num_threads(n)
    if on_cpu:
        print(f"torch threads: {n} ({cores} cores, {busy:.1f} {what}; --threads to change)")
    return n


def busy_cores(interval: float = 0.3) -> float | None:
    """How many of this process's cores other processes keep busy now, or None where
    ``/proc/stat`` cannot be read.

    Args:
        interval: seconds between the two readings of ``/proc/stat``; this process sleeps
            meanwhile, so the non-idle share of the ticks is everybody else's.
    """
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    try:
        idle0, total0 = cpu_times(cpus)
        time.sleep(interval)
        idle1, total1 = cpu_times(cpus)
    except (OSError, ValueError):
        return None
    if total1 <= total0:
        return None
    return len(cpus) * (1.0 - (idle1 - idle0) / (total1 - total0))


def cpu_times(cpus, path: str = "/proc/stat") -> tuple[int, int]:
    """(idle + iowait, all) clock ticks since boot of the CPUs numbered in ``cpus``, summed.

    Args:
        cpus: CPU numbers (``os.sched_getaffinity(0)``): a container's cpuset, not the host's.
        path: the kernel's statistics file (a test passes its own).

    Raises:
        ValueError: none of ``cpus`` is in the file.
    """
    idle = total = 0
    with open(path) as f:
        for line in f:
            name, _, ticks = line.partition(" ")
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                t = [int(v) for v in ticks.split()[:8]]  # user nice system idle iowait irq softirq steal
                idle, total = idle + t[3] + t[4], total + sum(t)
    if total == 0:
        raise ValueError(f"no CPU of {sorted(cpus)} in {path}")
    return idle, total
