"""What every training recipe shares: the flags, the embedded CPU demo settings and the run.

Recipes parse argv; the library never does. A recipe builds its own RunConfig from its defaults
and calls :func:`run`, which applies the component flags added by :func:`add_run_args`
(``--basis``, ``--schedule``, ``--speed``, ``--parameterization``, ``--prior``, ``--model``, each
a registered name or an import path ``package.module:Name`` with ``--<flag>-args '{JSON}'``;
``--size``, ``--channels``; ``--config run.json``) through :func:`configure`, so every recipe
takes them without code of its own.
"""
from __future__ import annotations

import threads  # noqa: F401  first: its OMP_WAIT_POLICY must be set before torch loads OpenMP
import argparse
import contextlib
import copy
import inspect
import json
import math
import os
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install
# `--basis mylab.bases:PCABasis` finds mylab in the folder the command runs from, as `python -m`
# would; appended, so it never shadows an installed module.
sys.path.append(os.getcwd())

from gendiff.bases import BASES  # noqa: E402
from gendiff.figures import trajectory  # noqa: E402
from gendiff.models import PRESETS as MODELS, UNetConfig  # noqa: E402
from gendiff.parameterization import PARAMETERIZATIONS  # noqa: E402
from gendiff.priors import PRIORS  # noqa: E402
from gendiff.registry import import_object  # noqa: E402
from gendiff.schedules import SCHEDULES  # noqa: E402
from gendiff.schedules.speed import SPEEDS  # noqa: E402
from gendiff.samplers import SAMPLERS  # noqa: E402
from gendiff.training import (CheckpointError, FabricConfig, RunConfig, RunDirError,  # noqa: E402
                              TrainConfig, Trainer, check_run_name)
from gendiff.data.lsun import LMDBError  # noqa: E402
from threads import follow_load, set_threads  # noqa: E402,F401  (the recipes' thread policy)
from gendiff.training.config import ConfigError  # noqa: E402
from gendiff.training.loading import imported_code  # noqa: E402
from gendiff.training.run import Run, build_run, sample_run  # noqa: E402
from gendiff.training.trust import require_trust  # noqa: E402
from gendiff.training.rundir import check_run_place  # noqa: E402
from lightning_fabric import Fabric  # noqa: E402
from lightning_fabric.utilities.exceptions import MisconfigurationException  # noqa: E402


# ---- flag types: a bad value stops argparse (exit 2, usage shown) before anything is built ------

def int_at_least(lo: int):
    """An argparse type: an integer >= ``lo``; the error names the value and the range."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {v}")
        return v
    parse.__name__ = f"integer >= {lo}"
    return parse


def float_in(lo: float, hi: float = math.inf, *, open_lo: bool = False):
    """An argparse type: a finite number in [lo, hi] (or (lo, hi] with ``open_lo``)."""
    rng = f"{'(' if open_lo else '['}{lo}, {hi}]" if math.isfinite(hi) else f"{'>' if open_lo else '>='} {lo}"

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number {rng}, got {text!r}") from None
        if not (math.isfinite(v) and (v > lo if open_lo else v >= lo) and v <= hi):
            raise argparse.ArgumentTypeError(f"must be a finite number {rng}, got {text}")
        return v
    parse.__name__ = f"number {rng}"
    return parse


def run_name(text: str) -> str:
    try:
        return check_run_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


@contextlib.contextmanager
def flag_errors(flags: str):
    """Turn a component's refusal of a recipe flag's value (ValueError/TypeError) into one line
    naming the flags, for values whose valid range depends on another flag."""
    try:
        yield
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{flags}: {e}") from None


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The recipe's docstring as written, and every flag's default in ``--help``."""

    def _format_action(self, action):
        if not action.help and action.option_strings and _shown(action.default):
            action = copy.copy(action)
            action.help = "(default: %(default)s)"  # argparse prints nothing for a flag without help
        return super()._format_action(action)

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" not in text and action.option_strings and _shown(action.default):
            text += " (default: %(default)s)"
        return text


def _shown(default) -> bool:
    return not (default is None or default is False or default is argparse.SUPPRESS)


def json_object(text: str) -> dict:
    """An argparse type: a JSON object of keyword arguments, e.g. ``'{"patches": 4096}'``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"must be a JSON object such as '{{\"patches\": 4096}}', got {text!r} "
                                         f"({e.msg} at character {e.pos})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object (keyword arguments), got {type(value).__name__} "
                                         f"{text!r}")
    if "name" in value:
        raise argparse.ArgumentTypeError("must not contain 'name': the component itself is the flag without -args")
    return value


def component(registry, kind: str):
    """An argparse type: a name in ``registry`` or an import path it resolves (imported now, so a
    typo or a module that is not on the path stops the run before any work)."""
    def parse(text: str) -> str:
        try:
            registry.resolve(text)
        except (ImportError, ValueError, TypeError, KeyError) as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text
    parse.__name__ = kind
    return parse


def network(text: str) -> str:
    """An argparse type for ``--model``: a UNet preset, or an import path of a UNetConfig, an
    ``nn.Module`` class or a function returning one."""
    try:
        obj = import_object(text, "network") if ":" in text else MODELS.resolve(text)
    except (ImportError, ValueError, KeyError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not (isinstance(obj, UNetConfig) or callable(obj)):
        raise argparse.ArgumentTypeError(f"{text!r} is a {type(obj).__name__}: expected a UNet preset, a UNetConfig, "
                                         "an nn.Module class or a function returning one")
    return text


# (flag, registry, what) for every component flag; --model is handled by `network`.
COMPONENTS = [("basis", BASES, "basis"), ("schedule", SCHEDULES, "schedule"), ("speed", SPEEDS, "blur speed"),
              ("parameterization", PARAMETERIZATIONS, "parameterization"), ("prior", PRIORS, "prior")]


def add_component_args(p: argparse.ArgumentParser) -> None:
    """``--<component>`` and ``--<component>-args`` for each component, ``--size``, ``--channels``."""
    g = p.add_argument_group("components (a registered name or an import path package.module:Name; "
                             "default: the recipe's)")
    for flag, registry, what in COMPONENTS:
        g.add_argument(f"--{flag}", type=component(registry, what), metavar="NAME",
                       help=f"{what}: one of {registry.names()} or package.module:Name")
        g.add_argument(f"--{flag}-args", type=json_object, metavar="JSON",
                       help=f"keyword arguments of the {what}, a JSON object"
                       + (" (f_N, f_1)" if flag == "speed" else ""))
    g.add_argument("--model", type=network, metavar="NAME",
                   help=f"network: a UNet preset {MODELS.names()}, or package.module:Name of a UNetConfig, "
                        "an nn.Module class (called as model(x, i)) or a function returning one (default: the "
                        "recipe's, small on embedded data, paper64 on LSUN)")
    g.add_argument("--model-args", type=json_object, metavar="JSON",
                   help="UNetConfig fields, or the keyword arguments of a custom network")
    if "--size" not in p._option_string_actions:
        g.add_argument("--size", type=int_at_least(1), help="image side (resizes the data, the basis and the UNet; "
                       "default: the recipe's, 16 for the embedded demo, 64 for LSUN)")
    g.add_argument("--channels", type=int_at_least(1), help="image channels (data and network; default: the data's)")
    g.add_argument("--config", metavar="RUN.JSON",
                   help="run from this config.json (as a run writes it); flags given explicitly override it")


def add_run_args(p: argparse.ArgumentParser, train: TrainConfig | None = None, name: str = "the recipe's",
                 shown: dict[str, str] | None = None) -> None:
    """Flags for naming, optimisation, devices, resumption and the components (each checked as it
    is parsed); ``--help`` shows every default.

    Args:
        train: the recipe's own training defaults (shown in ``--help``; default :data:`DEMO_TRAIN`).
        name: the recipe's default run name, as ``--help`` shows it.
        shown: ``--help`` texts replacing a field's default (e.g. ``{"steps": "1500 on digits"}``).
    """
    train = train or DEMO_TRAIN
    shown = {f: str(getattr(train, f)) for f in ("steps", "batch_size", "lr", "ema_decay", "ckpt_every",
                                                 "sample_every", "sampler")} | (shown or {})
    p.formatter_class = HelpFormatter
    before = set(p._option_string_actions)
    p.add_argument("--name", type=run_name, help=f"run name, the folder under --out (default: {name})")
    p.add_argument("--out", default="runs", help="folder that holds the run folders")
    p.add_argument("--steps", type=int_at_least(1), help=f"training steps (default: {shown['steps']})")
    p.add_argument("--batch-size", type=int_at_least(1), help=f"(default: {shown['batch_size']})")
    p.add_argument("--lr", type=float_in(0.0, open_lo=True), help=f"Adam learning rate (default: {shown['lr']})")
    p.add_argument("--ema-decay", type=float_in(0.0, 1.0), help=f"(default: {shown['ema_decay']})")
    p.add_argument("--seed", type=int_at_least(0), default=0)
    p.add_argument("--ckpt-every", type=int_at_least(1), help=f"(default: {shown['ckpt_every']})")
    p.add_argument("--sample-every", type=int_at_least(0),
                   help=f"0: no sample grids during training (default: {shown['sample_every']})")
    p.add_argument("--sample-steps", type=int_at_least(1),
                   help="network evaluations for the sample grids, <= N (default: the sampler's)")
    p.add_argument("--sampler", type=component(SAMPLERS, "sampler"), metavar="NAME",
                   help=f"sampler of the sample grids and figures: one of {SAMPLERS.names()} or package.module:name "
                        f"(default: {shown['sampler']})")
    p.add_argument("--sampler-args", type=json_object, metavar="JSON",
                   help="the sampler's options, e.g. '{\"eta\": 0.5}' (ddim); one it does not take is refused")
    p.add_argument("--num-workers", type=int_at_least(0), default=0)
    p.add_argument("--accelerator", default="auto", help="cpu, gpu, auto")
    p.add_argument("--devices", default="1")
    p.add_argument("--strategy", default="auto", help="auto, ddp, …")
    p.add_argument("--num-nodes", type=int_at_least(1), default=1)
    p.add_argument("--precision", default="32-true", help="32-true (the papers) or bf16-mixed")
    p.add_argument("--threads", type=int_at_least(1),
                   help="torch CPU threads (default: the cores the machine's load leaves free, at least 1)")
    p.add_argument("--no-figures", action="store_true",
                   help="skip forward.png, trajectory.png and samples.png (checkpoint and logs only)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue from <out>/<name>/last.ckpt (must exist)")
    start.add_argument("--overwrite", action="store_true",
                       help="start over in an existing run folder (the old run is moved into <run>/replaced-<time>/)")
    p.add_argument("--quick", action="store_true", help="a few steps only (smoke test)")
    p.add_argument("--trust-code", action="store_true",
                   help="let --config (and the run --resume continues) import the custom components "
                        "(package.module:Name) its file names; only for files you trust")
    add_component_args(p)
    common = {p._option_string_actions[o].dest for o in set(p._option_string_actions) - before} | {"data", "size"}
    _track_explicit(p, common)


def _track_explicit(p: argparse.ArgumentParser, common: set[str]) -> None:
    """Make ``p.parse_args`` also record which flags were given (``args.explicit``) and which of
    those are the recipe's own (``args.recipe_flags``): ``--config`` lets only explicit flags
    override the file. The parser is wrapped here so no recipe needs to change."""
    parse = p.parse_args

    def parse_args(argv=None, namespace=None):
        args = parse(argv, namespace)
        saved = {a: a.default for a in p._actions}
        try:
            for a in p._actions:
                a.default = argparse.SUPPRESS
            given, _ = p.parse_known_args(sys.argv[1:] if argv is None else list(argv))
        finally:
            for a, d in saved.items():
                a.default = d
        args.explicit = set(vars(given)) - {"help"}
        args.recipe_flags = sorted(args.explicit - common)
        if getattr(args, "config", None) and args.recipe_flags:  # before the recipe builds anything from them
            p.error(_with_config(args.config, args.recipe_flags))
        # A recipe reads args.model as a UNet preset; a custom network is applied by configure().
        args.network = None
        if args.model and ":" in args.model and not isinstance(import_object(args.model, "network"), UNetConfig):
            args.network, args.model = args.model, None
        return args

    p.parse_args = parse_args


def add_data_args(p: argparse.ArgumentParser, size: int) -> None:
    p.add_argument("--data", default="digits", help="embedded name (digits, photos, photos-gray) or a folder")
    p.add_argument("--size", type=int_at_least(1), default=size)


def _clear_errors(kind, err, tb, _default=sys.excepthook) -> None:
    """A refused run prints one line and exits 1; other errors keep their traceback."""
    if issubclass(kind, (ConfigError, RunDirError, CheckpointError, LMDBError)):
        print(f"error: {err}", file=sys.stderr)
        return
    _default(kind, err, tb)


sys.excepthook = _clear_errors  # recipes only: the library never touches process state


def data_channels(spec: str) -> int:
    """1 for the grayscale embedded sets, else 3."""
    return 1 if spec in ("digits", "photos-gray") else 3


def model_dict(args, channels: int, default: str = "small") -> dict:
    """The chosen UNet preset sized for ``--size`` and ``channels``, as a config dict (a custom
    ``--model`` replaces it in :func:`configure`)."""
    m = MODELS[args.model or default]
    with flag_errors("--size, --model"):  # a UNetConfig checks that its sizes fit together
        return asdict(replace(m, image_size=args.size, in_channels=channels, out_channels=channels))


# The embedded CPU demo: sized so 2 cores finish in minutes (issue 5's measurements).
DEMO_TRAIN = TrainConfig(steps=2000, batch_size=64, lr=1e-3, ema_decay=0.999, log_every=25,
                         ckpt_every=500, sample_every=0, sample_n=64)


def train_config(args, base: TrainConfig, only: set[str] | None = None) -> TrainConfig:
    """``base`` with the command line's overrides (and ``--quick``'s shortening) applied; with
    ``only``, just the flags named there (what --config lets override the file)."""
    over = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "ema_decay": args.ema_decay,
            "ckpt_every": args.ckpt_every, "sample_every": args.sample_every, "sample_steps": args.sample_steps,
            "seed": args.seed, "num_workers": args.num_workers, "sampler": getattr(args, "sampler", None),
            "sampler_options": getattr(args, "sampler_args", None)}
    dest = {"sampler_options": "sampler_args"}  # field -> flag dest where they differ
    t = replace(base, **{k: v for k, v in over.items() if v is not None and (only is None or dest.get(k, k) in only)})
    if args.quick:
        t = replace(t, steps=min(t.steps, 20), ckpt_every=10, sample_n=16, log_every=5)
    return t


def fabric_config(args, base: FabricConfig | None = None, only: set[str] | None = None) -> FabricConfig:
    devices = int(args.devices) if str(args.devices).isdigit() else args.devices
    over = {"accelerator": args.accelerator, "devices": devices, "strategy": args.strategy,
            "num_nodes": args.num_nodes, "precision": args.precision}
    return replace(base or FabricConfig(), **{k: v for k, v in over.items() if only is None or k in only})


# ---- the component flags and --config, applied to the recipe's own RunConfig -------------------

def configure(config: RunConfig, args) -> RunConfig:
    """The run the command line asks for: the recipe's ``config`` (or ``--config``'s file, with
    only the flags given explicitly applied) with every component flag applied.

    ``--basis NAME`` replaces the recipe's basis by ``{"name": NAME, "shape": [size, size],
    **basis_args}``; ``--basis-args`` alone updates the recipe's basis arguments; likewise for
    the schedule, parameterization and prior. ``--speed`` sets the schedule's blur speed
    (``f_type``; ``--speed-args`` sets ``f_N``/``f_1``). ``--model`` is a UNet preset (sized for
    the data) or a custom network (``{"name": path, **model_args}``). ``--size``/``--channels``
    resize the data, the basis and the UNet.
    """
    if getattr(args, "config", None):
        config = from_file(args.config, args)
    given = _given(args)
    size, channels = given.get("size"), given.get("channels")
    data = replace(config.data, **{k: v for k, v in (("size", size), ("channels", channels)) if v is not None})
    out = {"data": data}
    for kind in ("basis", "schedule", "parameterization", "prior"):
        out[kind] = _component(getattr(config, kind), given.get(kind), given.get(f"{kind}_args"),
                               {"shape": [data.size, data.size]} if kind == "basis" else {})
    if size is not None and "shape" in out["basis"] and not given.get("basis"):
        out["basis"]["shape"] = [size, size]
    out["schedule"] = _speed(out["schedule"], given.get("speed"), given.get("speed_args"))
    try:
        out["model"] = _model(config.model, given, data)  # a UNetConfig checks its sizes here
        return replace(config, **out)
    except (ValueError, TypeError, ImportError) as e:
        raise ConfigError(f"the component flags do not make a valid run: {e}") from e


def _given(args) -> dict:
    """The component values to apply: every set value, or with --config only the explicit ones."""
    keys = ["size", "channels", "model", "network", "model_args", "speed", "speed_args"]
    keys += [k for kind, _, _ in COMPONENTS for k in (kind, f"{kind}_args")]
    explicit = getattr(args, "explicit", None)
    with_file = bool(getattr(args, "config", None))
    out = {}
    for k in keys:
        v = getattr(args, k, None)
        if v is not None and (not with_file or explicit is None or k in explicit or k == "network"):
            out[k] = v
    if with_file and "model" in out and "model" not in (explicit or set()):
        del out["model"]
    return out


def _component(current: dict, name: str | None, args: dict | None, defaults: dict) -> dict:
    if name is not None:
        return {"name": name, **defaults, **(args or {})}
    return {**current, **(args or {})}


def _speed(schedule: dict, kind: str | None, args: dict | None) -> dict:
    """The schedule config with the blur speed ``kind`` and its f_N/f_1."""
    if kind is None and not args:
        return schedule
    params = inspect.signature(SCHEDULES.resolve(schedule["name"])).parameters
    if "f_type" not in params and "f_type" not in schedule:
        raise ConfigError(f"--speed applies to a schedule with a blur speed (f_type, e.g. vp_blur); "
                          f"schedule {schedule['name']!r} has none")
    bad = sorted(set(args or {}) - {"f_N", "f_1"})
    if bad:
        raise ConfigError(f"--speed-args: unknown keys {bad}; valid: ['f_N', 'f_1'] (f(N) and f(1))")
    return {**schedule, **({"f_type": kind} if kind else {}), **(args or {})}


def _model(current: dict, given: dict, data) -> dict:
    """A UNet config sized for the data, or a custom network's ``{"name": path, **args}``."""
    args = given.get("model_args") or {}
    if given.get("network"):
        return {"name": given["network"], **args}
    if given.get("model"):
        preset = MODELS.resolve(given["model"])
    elif "name" in current:  # a custom network: only its arguments change
        return {**current, **args}
    else:
        preset = UNetConfig(**current)
    fixed = {"image_size": data.size, "in_channels": data.channels, "out_channels": data.channels}
    unknown = sorted(set(args) - {f.name for f in fields(UNetConfig)})
    if unknown:
        raise ConfigError(f"--model-args: unknown UNetConfig fields {unknown}; valid: "
                          f"{[f.name for f in fields(UNetConfig)]}")
    return asdict(replace(preset, **{**fixed, **args}))


def _with_config(path: str, recipe_flags: list[str]) -> str:
    return (f"--config {path}: {', '.join('--' + f.replace('_', '-') for f in recipe_flags)} cannot be combined "
            "with --config (they shape the recipe's own config, which the file replaces); edit the file or use the "
            "component flags (--schedule-args '{...}', …)")


def from_file(path: str, args) -> RunConfig:
    """The run in ``path`` (a config.json) with the explicitly given general flags applied.

    The recipe's own flags (e.g. heat_dissipation's --K) shape the recipe's config, which the
    file replaces; given with --config they are refused rather than silently ignored.
    """
    if args.recipe_flags:
        raise ConfigError(_with_config(path, args.recipe_flags))
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"--config: no file {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"--config {path}: not a run config ({type(e).__name__}: {e})") from e
    require_trust(raw, f"--config {path}", getattr(args, "trust_code", False), "--trust-code")
    try:
        base = RunConfig.from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"--config {path}: {e}") from None
    only = args.explicit
    name, out_dir = _run_place(Path(path), base)
    over = {"name": args.name if "name" in only else name, "out_dir": args.out if "out" in only else out_dir,
            "train": train_config(args, base.train, only), "fabric": fabric_config(args, base.fabric, only)}
    if "data" in only:
        over["data"] = replace(base.data, spec=args.data)
    return replace(base, **over)


def _run_place(path: Path, base: RunConfig) -> tuple[str, str]:
    """(name, out_dir) of the run ``--config path`` names: the folder holding the file when it is
    a run's own ``config.json`` (a run folder copied or moved elsewhere is resumed where it is now,
    not at the place recorded inside), else the ones the file records (any other file name: a
    config edited into a new run next to the old one is not that run)."""
    folder = path.parent if path.parent.name not in ("", ".", "..") else path.resolve().parent
    if path.name == "config.json" and any((folder / f).exists() for f in ("last.ckpt", "metrics.csv")):
        return folder.name, str(folder.parent)
    return base.name, base.out_dir


def check_run(config: RunConfig) -> Run:
    """Build the run once, before any work, so a bad flag (a d_min of 0, a basis for other image
    sizes, a data folder that is not there, a negative prior δ, a precision Fabric does not know,
    an --out that is a file) fails here with the component named, before the run folder is
    created, instead of deep in training. The trainer then uses what was built."""
    try:  # flags are the user's own; files were asked (--config, --trust-code)
        built = build_run(config, trust_code=True, check_dataset=True)
    except ConfigError as e:
        raise ConfigError(as_flags(str(e))) from e.__cause__
    check_fabric(config.fabric)
    check_run_place(Path(config.out_dir) / config.name)
    return built


# Config fields and the flags that set them: the library's messages name the field, ours the flag.
FIELD_FLAGS = [("train.sampler / train.sample_steps / train.sampler_options", "--sampler / --sample-steps / "
                "--sampler-args"), ("train.sampler", "--sampler"), ("train.sample_steps", "--sample-steps"),
               ("data.spec", "--data"), ("data.channels", "--channels"), ("data.size", "--size")]


def as_flags(message: str) -> str:
    """A library message with each config field named by the flag that sets it."""
    for field_name, flag in FIELD_FLAGS:
        message = message.replace(field_name, flag)
    return message


def check_fabric(fc: FabricConfig) -> None:
    """Let Fabric judge --accelerator/--devices/--strategy/--num-nodes/--precision in a dry
    construction, so a bad value is refused before the run folder is touched (with --overwrite,
    before the old run is moved aside)."""
    try:
        Fabric(accelerator=fc.accelerator, devices=fc.devices, strategy=fc.strategy, num_nodes=fc.num_nodes,
               precision=fc.precision)
    except (ValueError, TypeError, RuntimeError, MisconfigurationException) as e:
        raise ConfigError(f"--accelerator {fc.accelerator} --devices {fc.devices} --strategy {fc.strategy} "
                          f"--num-nodes {fc.num_nodes} --precision {fc.precision}: {e}") from None


def run(config: RunConfig, args, full_size_hint: str | None = None) -> Path | None:
    """Train (resuming if asked), then draw the trajectory and the sample grid; print where all went.

    ``config`` is the recipe's run; the component flags and ``--config`` are applied to it
    first (:func:`configure`). Before any work: the torch thread count is set on CPU
    (:func:`set_threads`; while training, ``threads.follow_load`` gives a thread back when other
    processes take a core) and the run is built and checked (:func:`check_run`); then the
    trainer, the one owner of the run folder, locks and claims it (an existing run needs --resume
    or --overwrite; --resume needs a checkpoint) and draws the end figures while it holds it.
    """
    config = configure(config, args)
    accelerator = config.fabric.accelerator
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu:
        set_threads(getattr(args, "threads", None))
    return _train(check_run(config), args, full_size_hint)


def _train(built: Run, args, full_size_hint: str | None) -> Path | None:
    figures = not getattr(args, "no_figures", False)
    trainer = Trainer(built, figures=figures, overwrite=getattr(args, "overwrite", False))
    trainer.setup()  # fit() would too; the thread policy hooks the optimizer it makes
    follow_load(trainer.optimizer, getattr(args, "threads", None), trainer.fabric.device.type == "cpu")
    t0 = time.time()
    ckpt = trainer.fit(resume=args.resume, finish=_end_figures if figures else None)
    if trainer.interrupted:
        raise SystemExit(f"stopped by a signal at step {trainer.step}; checkpoint {ckpt}; continue with: "
                         f"python {sys.argv[0]} {' '.join(a for a in sys.argv[1:] if a != '--resume')} --resume")
    if not trainer.fabric.is_global_zero:
        return None
    print(f"trained {trainer.step} steps in {time.time() - t0:.0f} s")
    report(trainer.run_dir, ckpt, full_size_hint, figures, trust_code=bool(imported_code(trainer.config)))
    return trainer.run_dir


def _end_figures(trainer: Trainer) -> None:
    config = trainer.config
    print(f"sampling the figures with {config.train.sampler} …")
    g = torch.Generator(trainer.fabric.device).manual_seed(config.train.seed)
    ema = trainer.ema.module.eval()
    trajectory(lambda callback: sample_run(trainer.run, 8, model=ema, generator=g, device=trainer.fabric.device,
                                           callback=callback),
               trainer.run_dir / "trajectory.png", value_range=config.data.value_range)
    trainer.sample_grid(n=config.train.sample_n)


def report(run_dir: Path, ckpt: Path, full_size_hint: str | None, figures: bool = True,
           trust_code: bool = False) -> None:
    """Where everything went, and the command that samples more (``trust_code``: the run names
    custom components, which sample.py imports only when told to)."""
    print(f"\nrun folder: {run_dir}")
    pictures = [("samples.png", "EMA samples"), ("forward.png", "the forward process x_0 … x_N"),
                ("trajectory.png", "predicted x̂_0 along the reverse process (last column: the sample)")]
    for name, what in (pictures if figures else []) + [
            (ckpt.name, "resumable checkpoint (model, EMA, optimizer, step, RNG, config)"),
            ("config.json", "the full run configuration (rerun with --config)"),
            ("metrics.csv", "loss, lr, grad norm, EMA decay, images/s (also logs/ for Fabric's loggers)")]:
        print(f"  {run_dir / name}: {what}")
    print(f"\nmore samples: python recipes/sample.py --ckpt {ckpt} --n 64{' --trust-code' if trust_code else ''}")
    if full_size_hint:
        print(full_size_hint)
