"""The recipes' thread policy (recipes/threads.py) decided on fake loads, its benchmark's tables,
and the library's promise to leave process state alone at import (issue 19, item 7)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
HZ = 100


@pytest.fixture
def threads(recipes_importable):
    import threads
    return threads


@pytest.fixture
def bench():
    spec = importlib.util.spec_from_file_location("bench_threads", ROOT / "benchmarks" / "threads.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeCPUs:
    """A machine of ``ncpus`` cores whose ticks advance as scripted: who keeps how many busy."""

    def __init__(self, threads, ncpus=2):
        self.ncpus, self.t = ncpus, 0.0
        self.reading = threads.Reading(0, 0, 0.0)
        self.Reading, self.reads = threads.Reading, 0

    def run(self, seconds: float, others: float, ours: float):
        r = self.reading
        self.reading = self.Reading(r.idle + round((self.ncpus - others - ours) * HZ * seconds),
                                    r.total + round(self.ncpus * HZ * seconds), r.own + ours * seconds)
        self.t += seconds

    def read(self):
        self.reads += 1
        return self.reading


@pytest.mark.parametrize("cores, busy, taken, expected", [
    (2, 0.0, 0.5, 2), (2, 0.49, 0.5, 2), (2, 0.5, 0.5, 1), (2, 1.0, 0.5, 1), (2, 2.0, 0.5, 1),
    (2, 0.2, 0.25, 2), (2, 0.3, 0.25, 1), (8, 2.6, 0.5, 5), (8, 2.4, 0.5, 6), (1, 0.0, 0.5, 1), (4, 9.0, 0.5, 1)])
def test_threads_for_counts_a_core_taken_from_its_threshold_on(threads, cores, busy, taken, expected):
    assert threads.threads_for(cores, busy, taken) == expected


def test_next_threads_goes_down_at_half_a_core_and_up_only_below_a_quarter(threads):
    assert threads.next_threads(2, 0.45, current=2) == 2
    assert threads.next_threads(2, 0.6, current=2) == 1
    assert threads.next_threads(2, 0.3, current=1) == 1  # between the thresholds: kept
    assert threads.next_threads(2, 0.1, current=1) == 2
    assert threads.next_threads(8, 3.0, current=8) == 5
    assert threads.next_threads(8, 1.1, current=5) == 7  # up to what the load leaves free


def test_next_threads_is_stable_under_the_reading_it_acted_on(threads):
    """Looking again at the same load changes nothing: no flip-flop at any threshold."""
    for cores in (1, 2, 4, 16):
        for busy in [k / 20 for k in range(0, 20 * cores + 5)]:
            for current in range(1, cores + 1):
                n = threads.next_threads(cores, busy, current)
                assert 1 <= n <= cores and threads.next_threads(cores, busy, n) == n


def test_others_busy_subtracts_our_own_cpu_time(threads):
    R = threads.Reading
    # 2 CPUs, 1 s: 200 ticks, 50 idle; we used 1 CPU-second (100 ticks): others kept 0.5 busy
    assert threads.others_busy(R(0, 0, 0.0), R(50, 200, 1.0), 2, HZ) == pytest.approx(0.5)
    assert threads.others_busy(R(0, 0, 0.0), R(0, 200, 0.0), 2, HZ) == pytest.approx(2.0)
    assert threads.others_busy(R(0, 0, 0.0), R(0, 200, 2.5), 2, HZ) == 0.0  # tick rounding: never negative
    assert threads.others_busy(R(10, 100, 0.0), R(10, 100, 0.0), 2, HZ) is None  # no tick passed


def test_the_follower_drops_a_thread_when_load_arrives_and_takes_it_back_when_it_leaves(threads):
    cpus, applied, said = FakeCPUs(threads), [], []
    follower = threads.LoadFollower(2, 2, every=1.0, read=cpus.read, clock=lambda: cpus.t, apply=applied.append,
                                    say=said.append, hz=HZ)

    def steps(n, load):  # n steps of 0.25 s, each followed by the hook; we use what the others leave
        for _ in range(n):
            others = load * (2 / 3 if follower.threads == 2 else 1)  # our 2 threads squeeze a second run
            cpus.run(0.25, others, ours=min(follower.threads, 2 - others))
            follower()
    steps(8, load=0.0)
    assert applied == [] and cpus.reads == 1 + 2  # one look per second, not per step
    steps(4, load=1.0)  # a second run starts
    assert applied == [1] and follower.threads == 1 and "2 -> 1" in said[0]
    steps(16, load=1.0)
    assert applied == [1]  # stays down while the load stays
    steps(8, load=0.0)
    assert applied == [1, 2]


def test_the_follower_looks_only_every_period(threads):
    cpus = FakeCPUs(threads)
    follower = threads.LoadFollower(2, 2, every=5.0, read=cpus.read, clock=lambda: cpus.t, apply=lambda n: None,
                                    say=print, hz=HZ)
    for _ in range(19):
        cpus.run(0.25, 2.0, 0.0)
        follower()
    assert cpus.reads == 1 and follower.threads == 2
    cpus.run(0.25, 2.0, 0.0)
    follower()
    assert cpus.reads == 2 and follower.threads == 1


def test_follow_load_hooks_the_optimizer_only_when_it_chooses_the_count(threads):
    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([p], lr=0.1)
    assert threads.follow_load(opt, requested=2) is None
    assert threads.follow_load(opt, requested=None, on_cpu=False) is None
    before = torch.get_num_threads()
    handle = threads.follow_load(opt, requested=None)
    try:
        if not Path("/proc/stat").is_file():
            assert handle is None
            return
        assert handle is not None
        p.grad = torch.ones(3)
        opt.step()  # the hook runs (within the first second it only reads the clock)
        assert torch.get_num_threads() == before
    finally:
        if handle is not None:
            handle.remove()
        torch.set_num_threads(before)


def test_set_threads_without_a_request_uses_the_measured_load(threads, monkeypatch, capsys):
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "our_cpus", lambda: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "busy_cores", lambda: 1.2)
    try:
        assert threads.set_threads(None) == 3 and torch.get_num_threads() == 3
        assert "torch threads: 3 (4 cores, 1.2 busy now" in capsys.readouterr().out
        assert threads.set_threads(2) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_recipe_follows_the_load_while_it_trains(threads, monkeypatch, tmp_path):
    """lsun_blur without --threads: 2 threads at start on an idle (fake) machine, then every
    core busy elsewhere at each look: the run goes on with 1 thread and says so."""
    import lsun_blur
    ticks = iter(range(10**6))
    monkeypatch.setattr(threads, "CHECK_EVERY_S", 0.0)
    monkeypatch.setattr(threads, "our_cpus", lambda: {0, 1})
    monkeypatch.setattr(threads, "busy_cores", lambda: 0.0)
    monkeypatch.setattr(threads, "read_load", lambda: threads.Reading(0, 200 * next(ticks), 0.0))
    said = []
    monkeypatch.setattr(threads, "_say", said.append)
    before = torch.get_num_threads()
    try:
        lsun_blur.main(["--size", "8", "--model", "tiny", "--steps", "2", "--batch-size", "2", "--no-figures",
                        "--out", str(tmp_path), "--lsun-root", str(tmp_path)])
        assert said == ["torch threads: 2 -> 1 (2.0 cores busy elsewhere)"] and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_wait_policy_default_never_overrides_the_user(threads):
    env = {}
    threads.default_wait_policy(env, "PASSIVE")
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "active"}
    threads.default_wait_policy(env, "PASSIVE")
    assert env == {"OMP_WAIT_POLICY": "active"}
    threads.default_wait_policy(env := {}, None)
    assert env == {}


FIRST_IMPORT = """
import sys
sys.path.insert(0, sys.argv[1])
class Stop(Exception):
    pass
class Block:  # stops every import at torch's, noting whether recipes/threads.py ran before it
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            raise Stop("threads" in sys.modules)
sys.meta_path.insert(0, Block())
for recipe in sys.argv[2:]:
    try:
        __import__(recipe)
        print(recipe, "imports no torch")
    except Stop as e:
        print(recipe, "threads first" if e.args[0] else "torch first")
"""


def test_every_recipe_imports_threads_before_torch():
    """So recipes/threads.py's WAIT_POLICY reaches OpenMP, which reads it once, when torch loads."""
    recipes = sorted(p.stem for p in (ROOT / "recipes").glob("*.py") if p.stem != "threads")
    r = subprocess.run([sys.executable, "-c", FIRST_IMPORT, str(ROOT / "recipes"), *recipes], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split("\n")[:-1] == [f"{name} threads first" for name in recipes]


def test_the_benchmark_tables_compute_the_issues_ratios(bench):
    times = {("1", "idle"): [0.20, 0.22, 0.21], ("follow", "idle"): [0.10, 0.11, 0.12],
             ("1", "loop1"): [0.40, 0.40, 0.50], ("follow", "loop1"): [5.0, 0.9, 0.9]}

    def cell(k, scale):
        return {"times": [t * scale for t in times[k]], "threads": [2, 1, 1] if k == ("follow", "loop1") else [1] * 3}
    for scales in ([1.0], [1.0, 3.0]):  # a second round on a machine 3× slower: the same ratios
        cells = {k: [cell(k, s) for s in scales] for k in times}
        rows, summary = bench.tables(cells, ["1", "follow"], ["idle", "loop1"])
        follow_loop = [r for r in rows if r[:2] == ["follow", "loop1"]][0]
        assert follow_loop[2] == "2→1" + "→2→1" * (len(scales) - 1) and follow_loop[3] == 3 * len(scales)
        assert follow_loop[6:] == ["8.18×", "2.25×", "12.50×"]  # 0.9/0.11, 0.9/0.4, 5.0/0.4
        assert summary[0][2:] == ["1.91×", "1.00×", "1.25×", "no"]  # 1 thread: 0.21/0.11 idle
        assert summary[1][2:] == ["1.00×", "2.25×", "12.50×", "no"]
    assert rows[0][4] == pytest.approx(1e3 * (0.22 + 0.60) / 2) and rows[0][5] == pytest.approx(1e3 * 0.66)  # pooled times


@pytest.mark.slow  # 25-45 s on 2 busy cores: 4 fresh subprocesses that each import torch and build the demo
def test_the_benchmark_runs_quick_and_prints_its_table():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "threads.py"), "--quick"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| policy | load | threads | steps | median | max |" in r.stdout
    for policy, load in [("1", "idle"), ("1", "loop1"), ("follow", "idle"), ("follow", "loop1")]:
        row = [line for line in r.stdout.splitlines() if line.startswith(f"| {policy} | {load} |")]
        assert len(row) == 1, r.stdout
        cols = [c.strip() for c in row[0].strip("|").split("|")]
        assert int(cols[3]) >= 1 and float(cols[4]) > 0 and float(cols[5]) >= float(cols[4])
        if policy == "1":
            assert cols[7] == "1.00×"
    assert "| 1 | 1 thread |" in r.stdout


STATE = """
import importlib, json, os, pkgutil, signal, sys
import torch
torch.set_num_threads(3)  # not the default: a library that set any count would show
def mine(*a): pass
signal.signal(signal.SIGINT, mine); signal.signal(signal.SIGTERM, mine); sys.excepthook = mine
def state():
    return {"threads": torch.get_num_threads(), "env": sorted(k for k in os.environ if k.startswith(("OMP_", "GOMP_",
            "KMP_", "MKL_"))), "sigint": signal.getsignal(signal.SIGINT) is mine,
            "sigterm": signal.getsignal(signal.SIGTERM) is mine, "path": list(sys.path), "hook": sys.excepthook is mine}
sys.path.insert(0, sys.argv[1])  # recipes/: importing cli (not running a recipe) must change nothing either
before = state()
import gendiff, gendiff.training
names = [m.name for m in pkgutil.walk_packages(gendiff.__path__, "gendiff.")]
for name in names:
    importlib.import_module(name)
import cli
print(json.dumps({"before": before, "after": state(), "modules": len(names)}))
"""


def test_importing_gendiff_changes_no_process_state():
    """Threads, OpenMP variables, SIGINT/SIGTERM handlers, sys.path and sys.excepthook are the
    recipes' to set (issue 19, item 7): importing gendiff, every submodule and the recipes'
    command-line module leaves them be (a recipe's entry point and cli.train set them)."""
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OMP_")}
    recipes = str(Path(__file__).resolve().parents[1] / "recipes")
    r = subprocess.run([sys.executable, "-c", STATE, recipes], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["modules"] > 20
    assert out["before"]["threads"] == 3 and out["before"]["sigint"] and out["before"]["hook"]
    assert out["after"] == out["before"]
