"""The recipes' default CPU thread policy, chosen by timing the demo's training step under each
candidate policy, idle and with competing busy processes (issue 19, item 7).

    .venv/bin/python benchmarks/threads.py            # the full table, 5.5 min on 2 quiet cores
    .venv/bin/python benchmarks/threads.py --quick    # smoke run, 25-45 s: 2 policies × 2 loads, 3 steps

The step is the one ``python recipes/lsun_blur.py`` runs with no data: its config
(``lsun_blur.build_config``: small UNet, 16×16 digits, batch 64, GaussianBlurBasis σ = 0.4,
VPBlurSchedule quartic 0.140625, Adam) through the library's ``Trainer.fit`` — loss, backward,
gradient clip, Adam, EMA, logging — timed between consecutive optimizer steps.

Every cell is a fresh subprocess, because libgomp reads ``OMP_WAIT_POLICY`` once, when torch
loads it (the last table checks this). It builds the run, applies the policy, takes
``--warmup`` steps and waits. The competitors of the cell's load — busy Python loops, or torch
processes training the same demo on 1 thread as a second run would — are started once per load
and held stopped (SIGSTOP); they are let go (SIGCONT) only once the policy has chosen its
threads, so load arrives after the start, as in the issue's stall. Then ``--steps`` steps are
timed (or ``--max-seconds``, whichever comes first). The policies run back to back under each
load, so the ratios compare cells measured minutes apart at most.

Ratios: ``÷ best idle`` is a cell's median over the fastest idle median; ``÷ 1 thread`` is its
median (and its max) over the 1-thread median under the same load. Targets (issue 19): within
1.2× of the best idle time; under load never more than 2× the 1-thread time.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE"}
# name: (what it does, threads fixed or None for set_threads(None), follow the load, environment)
POLICIES = {
    "1": ("1 thread", 1, False, {}),
    "2": ("2 threads", 2, False, {}),
    "2-passive": ("2 threads, OMP_WAIT_POLICY=PASSIVE", 2, False, PASSIVE),
    "start": ("set_threads(None): idle cores at start", None, False, {}),
    "follow": ("start + follow_load: re-checked every CHECK_EVERY_S", None, True, {}),
    "follow-passive": ("start + follow_load, OMP_WAIT_POLICY=PASSIVE", None, True, PASSIVE),
    # follow_load's start on a quiet machine, for a busy one (where "follow" starts on 1 thread)
    "2-follow": ("2 threads at start + follow_load", 2, True, {}),
}
DEFAULT_POLICIES = "1,2,2-passive,start,follow,follow-passive"
# name: (competitor kind, how many)
LOADS = {"idle": ("", 0), "loop1": ("loop", 1), "loop2": ("loop", 2), "torch1": ("torch", 1), "torch2": ("torch", 2)}
QUICK = {"policies": "1,follow", "loads": "idle,loop1", "steps": 3, "warmup": 1, "max_seconds": 4.0}
BUSY_LOOP = "while True:\n    pass"


# ---- the child: one policy's demo run (also the torch competitor) -------------------------------

def child(args) -> None:
    import torch  # first: the environment (OMP_WAIT_POLICY) is exactly the one the parent gave

    sys.path.insert(0, os.path.join(ROOT, "recipes"))
    import lsun_blur
    import threads
    from cli import configure

    from gendiff.training import Trainer

    _, fixed, follow, _ = POLICIES[args.policy]
    torch.set_num_threads(fixed) if fixed else threads.set_threads(None, on_cpu=False)
    argv = ["--steps", "1000000000", "--out", args.out, "--no-figures", "--lsun-root", args.out]
    run_args = lsun_blur.parse_args(argv)
    trainer = Trainer(configure(lsun_blur.build_config(run_args), run_args), figures=False)
    trainer.setup()
    if follow:
        threads.follow_load(trainer.optimizer, None)
    trainer.optimizer.register_step_post_hook(StepClock(args, torch.get_num_threads))
    trainer.fit()


class StepClock:
    """An optimizer step hook: after ``warmup`` steps says "ready" and waits for a line on stdin,
    then records each step's wall time and thread count; prints them as one JSON line and ends
    the process after ``steps`` steps or ``max_seconds`` (a competitor never ends)."""

    def __init__(self, args, threads):
        self.args, self.threads, self.n = args, threads, 0
        self.times, self.counts, self.t = [], [], None

    def __call__(self, *_):
        self.n, now = self.n + 1, time.perf_counter()
        if self.n == self.args.warmup:
            print("ready", flush=True)
            if self.args.competitor:
                return
            sys.stdin.readline()
            self.t = self.t0 = time.perf_counter()
        elif self.t is not None:
            self.times.append(now - self.t)
            self.counts.append(self.threads())
            self.t = now
            if len(self.times) >= self.args.steps or now - self.t0 >= self.args.max_seconds:
                print("RESULT " + json.dumps({"times": self.times, "threads": self.counts}), flush=True)
                os._exit(0)


# ---- the parent: competitors, cells, tables ----------------------------------------------------

def spawn(args, policy: str, out: str, competitor: bool = False) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    env.update(POLICIES[policy][3], TQDM_DISABLE="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", policy, "--out", out, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--max-seconds", str(args.max_seconds)] + (["--competitor"] if competitor else [])
    with open(os.path.join(out, "stderr.txt"), "w") as log:
        return subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                                cwd=out)


def expect(proc: subprocess.Popen, prefix: str) -> str:
    for line in proc.stdout:
        if line.startswith(prefix):
            return line[len(prefix):]
    with open(os.path.join(proc.args[proc.args.index("--out") + 1], "stderr.txt")) as log:
        raise RuntimeError(f"benchmark child (policy {proc.args[3]}) ended (code {proc.wait()}) before "
                           f"{prefix.strip()!r}:\n{log.read()[-3000:]}")


def start_load(args, load: str, tmp: str) -> list[subprocess.Popen]:
    """The load's competitors, running until ready, then stopped (SIGSTOP)."""
    kind, n = LOADS[load]
    procs = []
    for k in range(n):
        if kind == "loop":
            procs.append(subprocess.Popen([sys.executable, "-c", BUSY_LOOP]))
        else:
            procs.append(spawn(args, "1", tempfile.mkdtemp(dir=tmp), competitor=True))
    for p in procs:
        if kind == "torch":
            expect(p, "ready")
        p.send_signal(signal.SIGSTOP)
    return procs


def run_cell(args, policy: str, competitors, tmp: str) -> dict:
    proc = spawn(args, policy, tempfile.mkdtemp(dir=tmp))
    try:
        expect(proc, "ready")
        for c in competitors:
            c.send_signal(signal.SIGCONT)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        return json.loads(expect(proc, "RESULT "))
    finally:
        for c in competitors:
            c.send_signal(signal.SIGSTOP)
        proc.kill()
        proc.wait()


def stop_load(procs) -> None:
    for p in procs:
        p.kill()  # a stopped process dies of SIGKILL too
        p.wait()


def measure(args, policies, loads) -> dict:
    """{(policy, load): [{"times": [s, …], "threads": [n, …]} per round]}; within a round all
    policies run back to back under each load (in an order rotated from round to round)."""
    cells = {(p, load): [] for p in policies for load in loads}
    tmp = tempfile.mkdtemp(prefix="gendiff-threads-")
    try:
        for r in range(args.repeats):
            for load in loads:
                competitors = start_load(args, load, tmp)
                try:
                    for policy in policies[r % len(policies):] + policies[:r % len(policies)]:
                        t = time.perf_counter()
                        cells[policy, load].append(run_cell(args, policy, competitors, tmp))
                        print(f"# round {r} {load:7s} {policy:15s} median "
                              f"{statistics.median(cells[policy, load][-1]['times']):.3f} s, cell "
                              f"{time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
                finally:
                    stop_load(competitors)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cells


def thread_path(counts: list[int]) -> str:
    """The thread counts a cell went through, in order ("2→1")."""
    path = [counts[0]] + [b for a, b in zip(counts, counts[1:]) if a != b]
    return "→".join(map(str, path))


def tables(cells: dict, policies, loads) -> tuple[list, list]:
    """The per-cell rows and the per-policy summary. Each ratio is taken within a round (cells
    measured minutes apart at most), then the median over rounds; a max ratio is the worst round's."""
    rounds = range(len(cells[policies[0], loads[0]]))
    med = {(k, r): statistics.median(v[r]["times"]) for k, v in cells.items() for r in rounds}
    top = {(k, r): max(v[r]["times"]) for k, v in cells.items() for r in rounds}
    best_idle = {r: min((med[(p, "idle"), r] for p in policies if (p, "idle") in cells), default=None) for r in rounds}
    rows, summary = [], []
    for p in policies:
        worst = {"idle": [], "loaded": [], "max": []}
        for load in loads:
            k, one = (p, load), [med.get((("1", load), r)) for r in rounds]
            r_idle = _median([med[k, r] / best_idle[r] for r in rounds if best_idle[r]])
            r_one = _median([med[k, r] / one[r] for r in rounds if one[r]])
            r_max = max([top[k, r] / one[r] for r in rounds if one[r]], default=None)
            worst["idle" if load == "idle" else "loaded"].append(r_idle if load == "idle" else r_one)
            if load != "idle":
                worst["max"].append(r_max)
            times = [t for c in cells[k] for t in c["times"]]
            rows.append([p, load, thread_path([n for c in cells[k] for n in c["threads"]]), len(times),
                         statistics.median(times) * 1e3, max(times) * 1e3, _r(r_idle), _r(r_one), _r(r_max)])
        idle, loaded, loaded_max = (_worst(worst[w]) for w in ("idle", "loaded", "max"))
        ok = (idle is None or idle <= 1.2) and (loaded is None or loaded <= 2.0)
        summary.append([p, POLICIES[p][0], _r(idle), _r(loaded), _r(loaded_max), "**yes**" if ok else "no"])
    return rows, summary


def _median(values):
    return statistics.median(values) if values else None


def _worst(ratios):
    return max(ratios) if ratios and None not in ratios else None


def _r(x):
    return "n/a" if x is None else f"{x:.2f}×"


def wait_policy_check() -> list:
    """CPU seconds per wall second of a 2-thread op loop with pauses (workers spin or sleep in
    them): OMP_WAIT_POLICY=PASSIVE set before ``import torch``, after it, or not at all."""
    code = ("import os, sys, time\n"
            "if sys.argv[1] == 'before': os.environ['OMP_WAIT_POLICY'] = 'PASSIVE'\n"
            "import torch\n"
            "if sys.argv[1] == 'after': os.environ['OMP_WAIT_POLICY'] = 'PASSIVE'\n"
            "torch.set_num_threads(2); x = torch.randn(1_000_000)\n"
            "c, w = time.process_time(), time.perf_counter()\n"
            "for _ in range(200):\n    x.add_(1.0); time.sleep(0.002)\n"
            "print((time.process_time() - c) / (time.perf_counter() - w))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    rows = []
    for when in ("unset", "after", "before"):
        out = subprocess.run([sys.executable, "-c", code, when], env=env, capture_output=True, text=True, check=True)
        rows.append([{"unset": "not set", "after": "set after `import torch`",
                      "before": "set before `import torch`"}[when], f"{float(out.stdout):.2f}"])
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}")
    p.add_argument("--policies", default=DEFAULT_POLICIES, help=f"comma-separated, of {list(POLICIES)}")
    p.add_argument("--loads", default=",".join(LOADS), help=f"comma-separated, of {list(LOADS)}")
    p.add_argument("--steps", type=int, default=20, help="timed steps per cell")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before the load arrives (at least 1)")
    p.add_argument("--repeats", type=int, default=1, help="rounds of every cell (ratios: median over rounds)")
    p.add_argument("--max-seconds", type=float, default=6.0, help="time a cell for at most this long (plus a step)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--competitor", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.policy = args.child
        return child(args)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    args.warmup = max(1, args.warmup)
    policies, loads = args.policies.split(","), args.loads.split(",")
    bad = [x for x in policies if x not in POLICIES] + [x for x in loads if x not in LOADS]
    if bad:
        p.error(f"unknown policy or load: {', '.join(bad)}")
    report(args, policies, loads)


def report(args, policies, loads) -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(ROOT, "recipes"))
    import _timing
    import threads

    info = _timing.machine_info()
    info["other processes' busy cores at start (0.3 s)"] = f"{threads.busy_cores():.2f}"
    t0 = time.time()
    cells = measure(args, policies, loads)
    rows, summary = tables(cells, policies, loads)
    check = [] if args.quick else wait_policy_check()
    info["load average (1 min) at the end"] = f"{_timing.loadavg():.2f}"
    info["wall time"] = f"{time.time() - t0:.0f} s"
    print("## Threads: the demo's training step under each thread policy and load\n")
    print(_timing.machine_markdown(info) + "\n")
    print(f"{args.repeats} round(s); {args.steps} timed steps per cell (at most {args.max_seconds:g} s plus a step), "
          f"after {args.warmup} untimed; load arrives after the policy chose its threads. `loopN`: N busy Python loops; `torchN`: N "
          "processes training the demo on 1 thread. Times in ms.\n")
    print(_timing.table(["policy", "load", "threads", "steps", "median", "max", "median ÷ best idle",
                         "median ÷ 1 thread", "max ÷ 1 thread"], rows) + "\n")
    print("Worst case per policy (targets: idle ≤ 1.2× the best idle, loaded ≤ 2× 1 thread):\n")
    print(_timing.table(["policy", "what", "idle ÷ best idle", "loaded median ÷ 1 thread",
                         "loaded max ÷ 1 thread", "meets both"], summary) + "\n")
    if check:
        print("Where OMP_WAIT_POLICY takes effect: CPU s per wall s of 200 × (2-thread add on 10⁶ floats, "
              "2 ms pause); spinning workers burn CPU in the pauses.\n")
        print(_timing.table(["OMP_WAIT_POLICY=PASSIVE", "CPU ÷ wall"], check) + "\n")


if __name__ == "__main__":
    main()
