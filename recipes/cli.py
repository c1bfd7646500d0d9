"""The recipes' command line: every flag, the config field it sets, and the training run.

Recipes parse argv; the library never does. Each recipe builds its own :class:`RunConfig` from
its own flags (declared with ``field=``, the config field they set) and calls :func:`train`,
which applies the flags every recipe shares — naming, optimisation, devices, the components
(``--basis``, ``--schedule``, ``--speed``, ``--parameterization``, ``--prior``, ``--model``,
each a registered name or an import path ``package.module:Name`` with ``--<flag>-args
'{JSON}'``), ``--config run.json`` — through :func:`configure`. :data:`FIELDS` maps config fields
to flags, both ways: the library's messages name the field, ours the flag (:func:`as_flags`).

Process state belongs here, not to the library: :func:`entry` (the recipes' ``__main__``) adds
the working folder to ``sys.path`` so ``--basis mylab.bases:X`` finds ``mylab`` there, and
prints a refused run as one line; :func:`train` sets the thread policy (threads.py) and turns
SIGTERM/SIGINT into a checkpoint and a clean stop.
"""
from __future__ import annotations

from threads import follow_load, set_threads  # first: its OMP_WAIT_POLICY is set before torch loads OpenMP
import argparse
import contextlib
import copy
import inspect
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Callable

import torch

from gendiff.bases import BASES
from gendiff.data.lsun import LMDBError
from gendiff.experiments.paper import DEMO_TRAIN
from gendiff.figures import trajectory
from gendiff.models import PRESETS as MODELS, UNetConfig
from gendiff.parameterization import PARAMETERIZATIONS
from gendiff.priors import PRIORS
from gendiff.registry import import_object
from gendiff.samplers import SAMPLERS
from gendiff.schedules import SCHEDULES
from gendiff.schedules.speed import SPEEDS
from gendiff.data import build_dataset, class_labels
from gendiff.training import (CheckpointError, CondConfig, NonFiniteLossError, RunConfig, RunDirError, TrainConfig,
                              Trainer, check_run_name)
from gendiff.training.trainer import StoppedBeforeCheckpoint
from gendiff.training.config import ConfigError
from gendiff.training.loading import imported_code
from gendiff.training.run import Run, build_run, sample_run
from gendiff.training.rundir import check_run_place
from gendiff.training.trust import require_trust

# Refusals printed as one line (exit 1); anything else keeps its traceback.
REFUSALS = (ConfigError, RunDirError, CheckpointError, LMDBError, NonFiniteLossError, StoppedBeforeCheckpoint)


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


def sides(text: str, *, most: int = 3, square_int: bool = False):
    """An argparse type: one side per axis, ``"64"``, ``"24,16"`` or ``"8,8,8"`` (at most ``most``
    sides, each ≥ 1), as a tuple; with ``square_int`` a single number stays an int (the square
    images of ``--size N``)."""
    try:
        parts = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be sides like 64, 24,16 or 8,8,8 (integers separated by commas), "
                                         f"got {text!r}") from None
    if not 1 <= len(parts) <= most or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"must be 1 to {most} sides, each ≥ 1, got {text!r}")
    return parts[0] if square_int and len(parts) == 1 else parts


def image_size(text: str):
    """An argparse type: ``N`` (N×N images) or ``H,W``."""
    return sides(text, most=2, square_int=True)


image_size.__name__ = "N or H,W"


def data_size(text: str):
    """An argparse type: ``N`` (a square's side, or a signal's length) or the sides ``H,W`` / ``D,H,W``."""
    return sides(text, square_int=True)


data_size.__name__ = "N, H,W or D,H,W"


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
    """An argparse type: a name in ``registry`` or an import path it resolves (the user typed it,
    so it is imported now: a typo or a module not on the path stops the run before any work)."""
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


# ---- flags <-> config fields ----------------------------------------------------------------------

# Training and device flags (argparse dest) and the TrainConfig / FabricConfig field each sets.
TRAIN_FLAGS = {"steps": "steps", "batch_size": "batch_size", "lr": "lr", "ema_decay": "ema_decay",
               "ckpt_every": "ckpt_every", "sample_every": "sample_every", "sample_steps": "sample_steps",
               "seed": "seed", "num_workers": "num_workers", "sampler": "sampler", "sampler_args": "sampler_options"}
FABRIC_FLAGS = ("accelerator", "devices", "strategy", "num_nodes", "precision")
# conditioning flag -> CondConfig field (--cond sets cond.kind)
COND_FLAGS = {"cond": "kind", "num_classes": "num_classes", "p_uncond": "p_uncond", "guidance": "guidance",
              "guidance_min_snr": "guidance_min_snr"}
# (flag, registry, what) for every component flag; --model is handled by `network`.
COMPONENTS = [("basis", BASES, "basis"), ("schedule", SCHEDULES, "schedule"), ("speed", SPEEDS, "blur speed"),
              ("parameterization", PARAMETERIZATIONS, "parameterization"), ("prior", PRIORS, "prior")]


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


# Every config field a shared flag sets, and that flag: the one table both directions use.
FIELDS = {**{f"train.{f}": _flag(d) for d, f in TRAIN_FLAGS.items()},
          **{f"fabric.{f}": _flag(f) for f in FABRIC_FLAGS},
          **{f"cond.{f}": _flag(d) for d, f in COND_FLAGS.items()},
          "data.spec": "--data", "data.size": "--size", "data.shape": "--size / --shape", "data.args": "--data-args",
          "data.channels": "--channels", "name": "--name",
          "out_dir": "--out", "basis": "--basis / --basis-args", "parameterization": "--parameterization / "
          "--parameterization-args", "prior": "--prior / --prior-args", "model": "--model / --model-args",
          "schedule": "--schedule / --schedule-args / --speed / --speed-args"}


def as_flags(message: str) -> str:
    """A library message with each dotted config field (``train.sample_steps``) named by its flag."""
    for field_name in sorted((f for f in FIELDS if "." in f), key=len, reverse=True):
        message = message.replace(field_name, FIELDS[field_name])
    return message


def flag_error(e: Exception, own: dict[str, str]) -> Exception:
    """``e`` (a refusal: ConfigError, CheckpointError, RunDirError) in the command line's words, of
    the same type: dotted fields named by their flags, and a refused component prefixed by the
    flags that set it (the recipe's own ``own``: flag -> field, too)."""
    message, field_name = as_flags(str(e)), getattr(e, "field", None) or ""
    for flag, own_field in own.items():  # the recipe's own dotted fields (data.value_range -> --value-range)
        message = message.replace(own_field, flag) if "." in own_field else message
    part = field_name.split(".")[0]
    whole = part in ("basis", "schedule", "parameterization", "prior", "model")  # any of its args
    setters = [f for f, own_field in own.items() if own_field == field_name or (whole and own_field.startswith(part))]
    setters += [FIELDS[part]] if whole else []
    setters = [] if message.startswith("--") else [f for f in setters if f not in message]
    text = f"{', '.join(setters)}: {message}" if setters else message
    out = ConfigError(text, field_name or None) if type(e) is ConfigError else type(e)(text)
    out.field = field_name or None
    return out


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


class RecipeParser(argparse.ArgumentParser):
    """An argument parser that knows the config field of every recipe flag (``field=`` in
    :meth:`add_argument`) and records which flags were given (``args.explicit``), which of those
    are the recipe's own (``args.recipe_flags``: ``--config`` replaces the recipe's config, so
    they cannot be combined with it), and the recipe's flag -> field map (``args.own_fields``)."""

    def __init__(self, description: str | None = None, **kwargs):
        super().__init__(description=description, formatter_class=HelpFormatter, **kwargs)
        self.own_fields: dict[str, str] = {}
        self.shared: set[str] = set()  # dests of the flags add_run_args adds

    def add_argument(self, *names, field: str | None = None, **kwargs):
        action = super().add_argument(*names, **kwargs)
        if field is not None:
            self.own_fields[action.option_strings[0]] = field
        return action

    def parse_args(self, args=None, namespace=None):
        ns = super().parse_args(args, namespace)
        ns.explicit = self._given(sys.argv[1:] if args is None else list(args))
        ns.recipe_flags = sorted(ns.explicit - self.shared)
        ns.own_fields = dict(self.own_fields)
        if getattr(ns, "config", None) and ns.recipe_flags:  # before the recipe builds anything from them
            self.error(_with_config(ns.config, ns.recipe_flags))
        # A recipe reads args.model as a UNet preset; a custom network is applied by configure().
        ns.network = None
        if getattr(ns, "model", None) and ":" in ns.model and not isinstance(import_object(ns.model, "network"),
                                                                              UNetConfig):
            ns.network, ns.model = ns.model, None
        return ns

    def _given(self, argv: list[str]) -> set[str]:
        """The dests of the flags on the command line (a second parse with no defaults)."""
        saved = {a: a.default for a in self._actions}
        try:
            for a in self._actions:
                a.default = argparse.SUPPRESS
            given, _ = super().parse_known_args(argv)
        finally:
            for a, d in saved.items():
                a.default = d
        return set(vars(given)) - {"help"}


def add_component_args(p: RecipeParser) -> None:
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
        g.add_argument("--size", type=image_size, help="image side N, or H,W (resizes the data, the basis and the UNet; "
                       "default: the recipe's, 16 for the embedded demo, 64 for LSUN)")
    g.add_argument("--shape", type=sides, metavar="SIDES",
                   help="the data's sides, one per axis: 64 (signals), 24,16 (images), 8,8,8 (volumes); sets the "
                        "data, the basis and the UNet (its dims) like --size")
    g.add_argument("--channels", type=int_at_least(1), help="channels (data and network; default: the data's)")
    g.add_argument("--data-args", type=json_object, metavar="JSON",
                   help="keyword arguments of the data: a dataset plug-in's (--data package.module:Name), "
                        "'{\"key\": ...}' for an .npz, '{\"n\": 512}' for signals")
    g.add_argument("--config", metavar="RUN.JSON",
                   help="run from this config.json (as a run writes it); flags given explicitly override it")


def add_cond_args(p: RecipeParser) -> None:
    """``--cond classes`` and classifier-free guidance (docs/math.md, "Conditioning and classifier-free guidance")."""
    g = p.add_argument_group("conditioning")
    g.add_argument("--cond", choices=["none", "classes"],
                   help="classes: a class-conditional run on the data's labels (the digits, an image folder with one "
                        "sub-folder per class, an LSUN category) with classifier-free guidance (default: none)")
    g.add_argument("--num-classes", type=int_at_least(1), help="with --cond classes (default: the data's)")
    g.add_argument("--p-uncond", type=float_in(0.0, 1.0),
                   help="with --cond classes: probability that a training label is dropped (default: 0.1)")
    g.add_argument("--guidance", type=float_in(-1e4, 1e4), metavar="W",
                   help="with --cond classes: the guidance weight of the sample grids and, by default, of sample.py; "
                        "1 the conditional model, 0 the unconditional one (default: 1)")
    g.add_argument("--guidance-min-snr", type=float_in(0.0, open_lo=True), metavar="S",
                   help="with --cond classes: guide only the basis coordinates whose a_i/s_i ≥ S (default: all)")


def add_run_args(p: RecipeParser, train: TrainConfig | None = None, name: str = "the recipe's",
                 shown: dict[str, str] | None = None) -> None:
    """The flags every training recipe shares (each checked as it is parsed); ``--help`` shows
    every default.

    Args:
        train: the recipe's own training defaults (shown in ``--help``; default the demo's).
        name: the recipe's default run name, as ``--help`` shows it.
        shown: ``--help`` texts replacing a field's default (e.g. ``{"steps": "1500 on digits"}``).
    """
    train = train or DEMO_TRAIN
    shown = {f: str(getattr(train, f)) for f in ("steps", "batch_size", "lr", "ema_decay", "ckpt_every",
                                                 "sample_every", "sampler")} | (shown or {})
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
    add_cond_args(p)
    add_component_args(p)
    p.shared |= {p._option_string_actions[o].dest for o in set(p._option_string_actions) - before} | {"data", "size"}


def add_data_args(p: RecipeParser, size: int) -> None:
    p.add_argument("--data", default="digits", help="embedded name (digits, photos, photos-gray) or a folder")
    p.add_argument("--size", type=int_at_least(1), default=size)


# ---- the command line applied to the recipe's RunConfig -------------------------------------------

def configure(config: RunConfig, args) -> RunConfig:
    """The run the command line asks for: the recipe's ``config`` (or ``--config``'s file, with
    only the flags given explicitly applied) with every shared flag applied.

    ``--basis NAME`` replaces the recipe's basis by ``{"name": NAME, "shape": [size, size],
    **basis_args}``; ``--basis-args`` alone updates the recipe's basis arguments; likewise for
    the schedule, parameterization and prior. ``--speed`` sets the schedule's blur speed
    (``f_type``; ``--speed-args`` sets ``f_N``/``f_1``). ``--model`` is a UNet preset (sized for
    the data) or a custom network (``{"name": path, **model_args}``). ``--size``/``--shape``/
    ``--channels`` resize the data, the basis and the UNet (``--shape`` with 1 or 3 sides also
    sets the UNet's ``dims``); ``--data-args`` sets the data's keyword arguments. A schedule
    measured from the data (``--schedule data_snr``) is measured when the run is built
    (:func:`~gendiff.training.run.build_run`, with the basis and data it builds once), so the
    config the trainer writes holds its table.
    """
    with_file = bool(getattr(args, "config", None))
    if with_file:
        config = from_file(args.config, args)
    given = _given(args, with_file)
    train = {TRAIN_FLAGS[k]: v for k, v in given.items() if k in TRAIN_FLAGS}
    t = replace(config.train, **train)
    if args.quick:
        t = replace(t, steps=min(t.steps, 20), ckpt_every=10, sample_n=16, log_every=5)
    fabric = {k: (int(v) if k == "devices" and str(v).isdigit() else v) for k, v in given.items() if k in FABRIC_FLAGS}
    data = _data(config.data, given)
    if with_file and "data" in getattr(args, "explicit", set()):
        data = replace(data, spec=args.data)
    out = {"data": data, "train": t, "fabric": replace(config.fabric, **fabric), "name": given.get("name", config.name),
           "out_dir": given.get("out", config.out_dir)}
    for kind in ("basis", "schedule", "parameterization", "prior"):
        out[kind] = _component(getattr(config, kind), given.get(kind), given.get(f"{kind}_args"),
                               {"shape": list(data.sides)} if kind == "basis" else {})
    if ("size" in given or "shape" in given) and "shape" in out["basis"] and not given.get("basis"):
        out["basis"]["shape"] = list(data.sides)
    out["schedule"] = _speed(out["schedule"], given.get("speed"), given.get("speed_args"))
    out["cond"] = _cond(config.cond, given, data)
    try:
        out["model"] = _model(config.model, given, data, out["cond"].num_classes)  # a UNetConfig checks its sizes
    except (ValueError, TypeError, ImportError) as e:
        raise ConfigError(f"--size, --model: {e}", "model") from e
    try:
        config = replace(config, **out)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"the flags do not make a valid run: {e}") from e
    return config


def _data(data, given: dict):
    """The data config with --size (N: square, H,W), --shape (any sides), --channels, --data-args."""
    if "size" in given and "shape" in given:
        raise ConfigError("--size and --shape both give the data's sides; give one", "data.shape")
    sides = given.get("shape", given.get("size"))
    if isinstance(sides, int):
        data = replace(data, size=sides, shape=None)
    elif sides is not None:
        data = replace(data, shape=tuple(sides))
    if "data_args" in given:
        data = replace(data, args=given["data_args"])
    return replace(data, **{k: given[k] for k in ("channels",) if k in given})


def _given(args, with_file: bool) -> dict:
    """The shared flags' values to apply: every value set, or with --config only the explicit ones."""
    keys = ["name", "out", "size", "shape", "data_args", "channels", "model", "network", "model_args", "speed",
            "speed_args", *TRAIN_FLAGS, *FABRIC_FLAGS, *COND_FLAGS,
            *(k for kind, _, _ in COMPONENTS for k in (kind, f"{kind}_args"))]
    explicit = getattr(args, "explicit", None)
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


def _cond(current: CondConfig, given: dict, data) -> CondConfig:
    """The run's conditioning with the flags applied; ``--cond classes`` counts the data's classes
    unless ``--num-classes`` is given."""
    flags = {COND_FLAGS[k]: v for k, v in given.items() if k in COND_FLAGS}
    kind = flags.pop("kind", current.kind)
    if kind == "none":
        if flags:
            flags_given = ", ".join(_flag(k) for k in given if k in COND_FLAGS)
            raise ConfigError(f"{flags_given} need --cond classes", "cond.kind")
        return CondConfig()
    if "num_classes" not in flags and current.kind != "classes":
        try:
            flags["num_classes"] = len(class_labels(build_dataset(  # as build_run will: the data's sides, args
                data.spec, size=data.sides, value_range=data.value_range, channels=data.channels, args=data.args))[0])
        except (OSError, ValueError, RuntimeError, ImportError) as e:
            raise ConfigError(f"--cond classes: {e}", "cond.kind") from None
    return replace(current, kind=kind, num_classes=flags.pop("num_classes", current.num_classes), **flags)


def _model(current: dict, given: dict, data, num_classes: int | None = None) -> dict:
    """A UNet config sized for the data (with the run's class count), or a custom network's
    ``{"name": path, **args}``."""
    args = given.get("model_args") or {}
    if given.get("network"):
        return {"name": given["network"], **args}
    if given.get("model"):
        preset = MODELS.resolve(given["model"])
    elif "name" in current:  # a custom network: only its arguments change
        return {**current, **args}
    else:
        preset = UNetConfig(**current)
    square = data.shape is None
    fixed = {"image_size": data.size if square else tuple(data.sides), "dims": len(data.sides),
             "in_channels": data.channels, "out_channels": data.channels, "num_classes": num_classes}
    unknown = sorted(set(args) - {f.name for f in fields(UNetConfig)})
    if unknown:
        raise ConfigError(f"--model-args: unknown UNetConfig fields {unknown}; valid: "
                          f"{[f.name for f in fields(UNetConfig)]}")
    return asdict(replace(preset, **{**fixed, **args}))


def _with_config(path: str, recipe_flags: list[str]) -> str:
    return (f"--config {path}: {', '.join(_flag(f) for f in recipe_flags)} cannot be combined "
            "with --config (they shape the recipe's own config, which the file replaces); edit the file or use the "
            "component flags (--schedule-args '{...}', …)")


def from_file(path: str, args) -> RunConfig:
    """The run in ``path`` (a config.json), trusted only with ``--trust-code`` when it names code.

    A run's own ``config.json`` (next to its checkpoint or metrics) is that run where it is now
    (a folder copied or moved elsewhere is resumed there, not at the place recorded inside); any
    other file is a new run at the place it records.
    """
    if getattr(args, "recipe_flags", None):  # args made without RecipeParser, which refuses them as it parses
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
    path = Path(path)
    folder = path.parent if path.parent.name not in ("", ".", "..") else path.resolve().parent
    if path.name == "config.json" and any((folder / f).exists() for f in ("last.ckpt", "metrics.csv")):
        base = replace(base, name=folder.name, out_dir=str(folder.parent))
    return base


# ---- training ------------------------------------------------------------------------------------

def check_run(config: RunConfig) -> Run:
    """Build the run once, before any work, so a bad flag fails here, before the run folder is
    created; the trainer then uses what was built. The flags are the user's own, and files were
    asked about (``--config`` and ``--trust-code``), so custom components are trusted."""
    built = build_run(config, trust_code=True, check_dataset=True)
    check_run_place(Path(config.out_dir) / config.name)
    return built


@contextlib.contextmanager
def stop_on_signals(trainer: Trainer):
    """SIGTERM/SIGINT ask ``trainer`` to stop while it trains: it finishes the step, saves and
    returns. Outside the training loop (the end figures) they interrupt at once."""
    def handler(signum, frame):
        if not trainer.in_training_loop:
            raise KeyboardInterrupt(f"signal {signum}")
        trainer.request_stop(signum)

    try:
        old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread: no handlers to set
        old = {}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def flags_named(args):
    """A refusal raised inside, in the command line's words (:func:`flag_error`)."""
    try:
        yield
    except (ConfigError, CheckpointError, RunDirError) as e:
        raise flag_error(e, getattr(args, "own_fields", {})) from e.__cause__


def train(build: Callable[..., RunConfig], args, full_size_hint: str | None = None) -> Path | None:
    """Train the recipe's run ``build(args)`` with the command line applied (:func:`configure`),
    then draw the trajectory and the sample grid and print where everything went.

    Before any work the thread count is set on CPU (threads.py; ``follow_load`` then gives a
    thread back when other processes take a core) and the run is built and checked
    (:func:`check_run`; the trainer's Fabric judges the device flags); then the trainer, the one
    owner of the run folder, locks and claims it and draws the end figures while it holds it.
    """
    with flags_named(args):
        config = configure(build(args), args)
        accelerator = config.fabric.accelerator
        if accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()):
            set_threads(args.threads)
        figures = not args.no_figures
        trainer = Trainer(check_run(config), figures=figures, overwrite=args.overwrite)  # Fabric judges its flags
    trainer.setup()  # fit() would too; the thread policy hooks the optimizer it makes
    follow_load(trainer.optimizer, args.threads, trainer.fabric.device.type == "cpu")
    t0 = time.time()
    with stop_on_signals(trainer), flags_named(args):  # resume's refusals name the flags too
        ckpt = trainer.fit(resume=args.resume, finish=end_figures if figures else None)
    if trainer.interrupted:
        raise SystemExit(f"stopped by a signal at step {trainer.step}; checkpoint {ckpt}; continue with: "
                         f"python {sys.argv[0]} {' '.join(a for a in sys.argv[1:] if a != '--resume')} --resume")
    if not trainer.fabric.is_global_zero:
        return None
    print(f"trained {trainer.step} steps in {time.time() - t0:.0f} s")
    report(trainer.run_dir, ckpt, full_size_hint, figures, trust_code=bool(imported_code(trainer.config)))
    return trainer.run_dir


def end_figures(trainer: Trainer) -> None:
    """trajectory.png (x̂_0 along the reverse process) and samples.png, from the EMA network."""
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


@contextlib.contextmanager
def refusals(**flags: str):
    """A library refusal (ConfigError, or RunDirError for a folder in use) as ``SystemExit("error:
    <flag>: …")``, its ``field`` named by the flag in ``flags`` (field -> flag) or :data:`FIELDS`."""
    try:
        yield
    except (ConfigError, RunDirError) as e:
        field_name = getattr(e, "field", None)
        flag = flags.get(field_name or "", FIELDS.get(field_name or ""))
        raise SystemExit(f"error: {flag + ': ' if flag else ''}{as_flags(str(e))}") from None


def entry(main) -> None:
    """Run a recipe's ``main()`` as a command: the working folder on ``sys.path`` (after
    everything else, so it never shadows an installed module), a refused run as one line."""
    sys.path.append(os.getcwd())
    try:
        main()
    except REFUSALS as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
