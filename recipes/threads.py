"""The recipes' CPU thread policy: how many torch threads a run uses (the library sets none).

Why it matters: torch's default (one OpenMP thread per core) makes every op wait for its slowest
thread, so on a 2-core machine shared with one busy process the demo's step stalled 15-40×
(issue 13, issue 19).

The policy, chosen by ``benchmarks/threads.py`` (docs/benchmarks.md, section 4): at start, the
cores other processes leave idle (:func:`set_threads`); then, while training, the same count
re-checked every :data:`CHECK_EVERY_S` seconds from the CPU time other processes took meanwhile
(:func:`follow_load`, an optimizer hook the recipe installs), because load that arrives after
the start stalled a run chosen once (issue 19). ``--threads N`` fixes the count and turns both
off. The constants below are the policy's knobs; rerun the benchmark after changing one.
"""
from __future__ import annotations

import math
import os
import time
from typing import Callable, NamedTuple

# Seconds between two looks at the load while training: one read of /proc/stat (30 µs here), so
# often enough that load arriving mid-run costs about one slow step, not minutes.
CHECK_EVERY_S = 1.0
# A core counts as taken once other processes keep this much of it busy: then one thread fewer.
TAKEN = 0.5
# ... and as free again only below this much, so a thread count does not flip back and forth at
# the boundary (our own threads squeeze the others, which then read lower than they would be).
FREED = 0.25
# OMP_WAIT_POLICY the recipes set when the user set none (None: OpenMP's default, workers spin a
# while before they sleep; PASSIVE made the idle 2-thread step 1.33× slower). It acts only because
# every recipe imports this module before torch: libgomp reads it once, when torch loads it.
WAIT_POLICY: str | None = None


def default_wait_policy(environ, policy: str | None = WAIT_POLICY) -> None:
    """Put ``policy`` into ``environ`` as ``OMP_WAIT_POLICY`` unless the user set one."""
    if policy is not None:
        environ.setdefault("OMP_WAIT_POLICY", policy)


default_wait_policy(os.environ)
import torch  # noqa: E402  (after OMP_WAIT_POLICY)


class Reading(NamedTuple):
    """One look at the CPUs: clock ticks since boot of this process's CPUs and its own CPU time."""
    idle: int  # idle + iowait ticks
    total: int  # all ticks
    own: float  # seconds of CPU this process (all its threads) used


def set_threads(requested: int | None, on_cpu: bool = True) -> int:
    """Set and print torch's CPU thread count: ``requested``, else the cores left idle right now.

    Why: torch's default (one thread per core) makes every op wait for its slowest thread; with
    one other busy process on a 2-core machine, the demo stalled for minutes at a time (issue
    13). The default is :func:`threads_for` the cores other processes keep busy, measured before
    this process does any work (:func:`busy_cores`). Not the 1-minute load average: right after
    the ``pip install`` that precedes the README's main command it still reads about 1.5 on an
    idle machine, which halved the demo's threads.

    Args:
        requested: ``--threads``; None or 0 measures.
        on_cpu: print the choice (False when the run goes to a GPU and threads matter little).
    """
    if requested:
        torch.set_num_threads(requested)
        if on_cpu:
            print(f"torch threads: {requested} (--threads)")
        return requested
    cores = len(our_cpus()) or (os.cpu_count() or 1)
    busy, what = busy_cores(), "busy now"
    if busy is None:  # no /proc/stat (macOS, Windows): the load average is the best left
        busy, what = (os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0), "load average"
    n = threads_for(cores, busy)
    torch.set_num_threads(n)
    if on_cpu:
        print(f"torch threads: {n} ({cores} cores, {busy:.1f} {what}; --threads to change)")
    return n


def threads_for(cores: int, busy: float, taken: float = TAKEN) -> int:
    """Threads for ``cores`` cores of which other processes keep ``busy`` busy: the cores left,
    a core counting as taken from ``taken`` of it on (at least 1, at most ``cores``)."""
    return max(1, min(cores, cores - math.floor(busy + 1.0 - taken)))


def next_threads(cores: int, busy: float, current: int) -> int:
    """The thread count after a look at the load: fewer as soon as others take a core
    (:data:`TAKEN`), more only once they leave it clearly free (:data:`FREED`), else unchanged."""
    fewer, more = threads_for(cores, busy, TAKEN), threads_for(cores, busy, FREED)
    return fewer if fewer < current else more if more > current else current


def others_busy(before: Reading, after: Reading, ncpus: int, hz: float) -> float | None:
    """Cores that other processes kept busy between two readings, or None when no tick passed.

    All non-idle ticks of our CPUs minus our own CPU time (``hz`` ticks per second), as a share
    of the ticks that passed, times ``ncpus``. DataLoader workers and other children count as
    others: they compete for the same cores.
    """
    ticks = after.total - before.total
    if ticks <= 0:
        return None
    theirs = ticks - (after.idle - before.idle) - (after.own - before.own) * hz
    return max(0.0, ncpus * theirs / ticks)


def busy_cores(interval: float = 0.3) -> float | None:
    """How many of this process's cores other processes keep busy now, or None where
    ``/proc/stat`` cannot be read.

    Args:
        interval: seconds between the two readings of ``/proc/stat``; this process sleeps
            meanwhile, so the non-idle share of the ticks is everybody else's.
    """
    cpus = our_cpus()
    try:
        idle0, total0 = cpu_times(cpus)
        time.sleep(interval)
        idle1, total1 = cpu_times(cpus)
    except (OSError, ValueError):
        return None
    if total1 <= total0:
        return None
    return len(cpus) * (1.0 - (idle1 - idle0) / (total1 - total0))


class LoadFollower:
    """Looks at the load every ``every`` seconds and changes the thread count (:func:`next_threads`).

    Called with any arguments (an optimizer step hook's or a forward hook's), it costs one clock
    read between looks. Its state is the last reading and the count it set, nothing else.

    Args:
        threads: the count in force now.
        cores: this process's cores.
        every: seconds between looks (default :data:`CHECK_EVERY_S`).
        read, clock, apply, say: where readings, time and the new count come from and go to
            (a test passes its own).
    """

    def __init__(self, threads: int, cores: int, every: float | None = None, *,
                 read: Callable[[], Reading] | None = None, clock: Callable[[], float] = time.monotonic,
                 apply: Callable[[int], None] = torch.set_num_threads, say: Callable[[str], None] = print,
                 hz: float | None = None):
        self.threads, self.cores = threads, cores
        self.every = CHECK_EVERY_S if every is None else every
        self.read, self.clock, self.apply, self.say = read or read_load, clock, apply, say
        self.last, self.last_time = self.read(), clock()  # raises first where there is no /proc/stat
        self.hz = hz or os.sysconf("SC_CLK_TCK")

    def __call__(self, *_) -> None:
        now = self.clock()
        if now - self.last_time < self.every:
            return
        reading = self.read()
        busy = others_busy(self.last, reading, self.cores, self.hz)
        self.last, self.last_time = reading, now
        n = self.threads if busy is None else next_threads(self.cores, busy, self.threads)
        if n != self.threads:
            self.apply(n)
            self.say(f"torch threads: {self.threads} -> {n} ({busy:.1f} cores busy elsewhere)")
            self.threads = n


def follow_load(optimizer: torch.optim.Optimizer, requested: int | None, on_cpu: bool = True):
    """Keep :func:`set_threads`'s choice up to date while ``optimizer`` steps: a step hook that
    re-checks the load every :data:`CHECK_EVERY_S` seconds (:class:`LoadFollower`).

    Returns the hook's handle (``.remove()`` stops it), or None when the count was ``requested``
    (``--threads``), the run is not on the CPU, or the load cannot be read (no ``/proc/stat``).
    """
    if requested or not on_cpu:
        return None
    try:
        follower = LoadFollower(torch.get_num_threads(), len(our_cpus()), say=_say)
    except (OSError, ValueError):
        return None
    return optimizer.register_step_post_hook(follower)


def read_load() -> Reading:
    """A :class:`Reading` now (raises OSError or ValueError where ``/proc/stat`` cannot be read)."""
    idle, total = cpu_times(our_cpus())
    return Reading(idle, total, time.process_time())


def our_cpus() -> set[int]:
    """The CPU numbers this process may run on (a container's cpuset, not the host's); empty
    where the platform does not say."""
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()


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


def _say(text: str) -> None:
    from tqdm.auto import tqdm  # through tqdm, so a running progress bar stays on its line
    tqdm.write(text)
