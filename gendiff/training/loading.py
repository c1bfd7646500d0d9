"""Rebuilding a run from its config: the network, the diffusion, the prior, a checkpoint's EMA
model, and the one rule for how many steps a sampler takes.

Every component of a run is a config dict ``{"name": ..., **args}`` whose name is a registered
name or an import path ``"package.module:Name"`` (gendiff.registry), so a fresh process rebuilds
a custom basis, schedule, speed, parameterization, prior or network by importing its module.
Loading reads tensors only (``weights_only=True``). A checkpoint that names custom components
by import path is refused unless the caller trusts it (``trust_code=True``, recipes'
``--trust-code``): rebuilding imports the modules it names and calls what they define with the
arguments it stores, and the file's hash proves integrity, not who wrote it.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gendiff.diffusion import Diffusion
from gendiff.models import PRESETS, UNet, UNetConfig, build_model
from gendiff.registry import import_object, import_path
from gendiff.samplers import SAMPLERS

from .checkpoint import CheckpointError, load_checkpoint
from .config import ConfigError, RunConfig
from .ema import ema_model
from .trust import code_names, require_trust

__all__ = ["build_network", "network_config", "build_diffusion", "load_run", "open_run",
           "sampling_steps", "check_device"]


def build_network(config: dict[str, Any]) -> nn.Module:
    """The network a run's ``model`` config describes.

    - no ``"name"``: the fields of a :class:`UNetConfig` (what the UNet presets record);
    - ``"name"`` a UNet preset or the import path of a :class:`UNetConfig`: that config with
      the other keys as field overrides;
    - ``"name"`` the import path of an ``nn.Module`` class (or a function returning one): it is
      called with the other keys; the module is used as ``model(x_i, i) -> output``.
    """
    config = dict(config)
    if "unrecorded" in config:
        raise TypeError(config["unrecorded"])
    if "name" not in config:
        return UNet(UNetConfig(**config))
    name = config.pop("name")
    obj = import_object(name, "network") if ":" in str(name) else PRESETS.resolve(name)
    if isinstance(obj, UNetConfig):
        return build_model(obj, **config)
    if not callable(obj):
        raise TypeError(f"network {name!r} is {type(obj).__name__}: expected a UNetConfig, an nn.Module "
                        "class or a function returning an nn.Module")
    try:
        model = obj(**config)
    except TypeError as e:
        raise TypeError(f"network {name!r} could not be built from its arguments {config}: {e} "
                        "(pass them with --model-args, or give the module a config() method that "
                        "returns its constructor arguments)") from e
    if not isinstance(model, nn.Module):
        raise TypeError(f"network {name!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def network_config(model: nn.Module) -> dict[str, Any]:
    """What a run records for a ready network: a UNet's config, else the class's import path
    plus ``model.config()`` when the module defines it (its constructor arguments)."""
    if isinstance(model, UNet):
        return asdict(model.config)
    args = model.config() if callable(getattr(model, "config", None)) else {}
    return {"name": import_path(type(model), "network"), **dict(args)}


def build_diffusion(config: RunConfig, trust_code: bool = False) -> Diffusion:
    """The run's diffusion alone (:func:`~gendiff.training.run.build_run` builds the whole run); its
    sampler, grid budget and sampler options are checked against it, the first place N is known.
    Custom components named by import path are imported only with ``trust_code`` (as build_run)."""
    from .run import _check_sampling, _diffusion, sampling_config
    parts = config.to_dict()
    require_trust({k: parts[k] for k in ("basis", "schedule", "parameterization", "train")},
                  f"run {config.name!r}", trust_code)
    diffusion, d = _diffusion(config), config.data
    _check_sampling(sampling_config(config), diffusion, (d.channels, d.size, d.size))
    return diffusion


def sampling_steps(sampler: str, steps: int | None, N: int, *, requested: bool = False) -> int | None:
    """The network evaluations to ask ``sampler`` for: the one place this is decided.

    ``N`` is where the grid starts: the diffusion's ``last_train_step`` (N, or N − 1 for a run
    trained on 1..N − 1 as the official code does), which is also the most steps any sampler can
    take. A sampler with a step budget (``Sampler.steps`` not None: ddim, dpm++2m, ancestral)
    takes ``steps`` (its default when None), which must be in 1..N. A sampler that walks every
    step (reverse, ihdm) gets None; when the user ``requested`` a number other than N for it,
    that is refused rather than silently ignored.

    Raises:
        ValueError: naming the sampler, the value and what is valid.
    """
    spec = SAMPLERS.resolve(sampler)
    if spec.steps is None:
        if requested and steps is not None and steps != N:
            raise ValueError(f"steps={steps}: sampler {sampler!r} always takes all {N} steps from step {N} (it has no "
                             f"step budget); drop the step count, or choose a sampler with one: "
                             f"{sorted(k for k, v in SAMPLERS.items() if v.steps is not None)}")
        return None
    steps = spec.steps if steps is None else int(steps)
    if not 1 <= steps <= N:
        raise ValueError(f"steps must be in 1..N={N} for sampler {sampler!r}, got {steps}")
    return steps


def steps_taken(steps: int | None, N: int) -> int:
    """The number of network evaluations a :func:`sampling_steps` result means (None: all N)."""
    return N if steps is None else steps


def imported_code(config: RunConfig) -> list[str]:
    """Every import path ``package.module:Name`` the run names (:func:`gendiff.training.trust.code_names`)."""
    return code_names(config.to_dict())


def load_run(ckpt: str | Path, device="cpu", *, trust_code: bool = False):
    """(RunConfig, Diffusion, EMA model) from a checkpoint: :func:`open_run`'s parts."""
    run = open_run(ckpt, device, trust_code=trust_code)
    return run.config, run.diffusion, run.model


def open_run(ckpt: str | Path, device="cpu", *, trust_code: bool = False):
    """The :class:`~gendiff.training.run.Run` a checkpoint holds, its model the EMA weights, for
    sampling and evaluation.

    The checkpoint holds the full config, so nothing else is needed to rebuild the run. Order: the
    file is read with ``weights_only=True`` and its hash checked (:func:`load_checkpoint`); the
    import paths its config names are refused unless ``trust_code`` (on the data: nothing is
    imported, called or allocated before); the config is checked by its schema and the step
    against it; then :func:`~gendiff.training.run.build_run` builds every component once, on the
    CPU (a run trained on a GPU loads on any machine), and the model moves to ``device``.

    Raises:
        CheckpointError: the file is not a readable gendiff run, it names code and
            ``trust_code`` is False, or a module it names cannot be imported (the message names it).
    """
    from .run import Run, build_run
    check_device(device)
    state = load_checkpoint(ckpt)
    raw = state.get("config")
    if not isinstance(raw, dict):
        raise CheckpointError(f"checkpoint {ckpt} does not describe a gendiff run: its config is "
                              f"{type(raw).__name__}, not a JSON object")
    require_trust(raw, f"checkpoint {ckpt}", trust_code)  # on the data: before any import or call
    try:
        config = RunConfig.from_dict(raw)
    except ConfigError as e:
        raise CheckpointError(f"checkpoint {ckpt} does not describe a valid gendiff run: {e}") from None
    check_step(ckpt, state.get("step"), config)
    _check_recorded(ckpt, config)
    try:
        run = build_run(config, trust_code=True)  # trust was decided above
        ema = ema_model(run.model, config.train.ema_decay)
        ema.load_state_dict(state["ema"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        if isinstance(e.__cause__, ImportError):  # build_run names the component and keeps the cause
            raise CheckpointError(f"checkpoint {ckpt} names a component whose module cannot be imported: "
                                  f"{e.__cause__}. Install it or put its folder on PYTHONPATH, as when it was "
                                  "trained") from e
        raise CheckpointError(f"checkpoint {ckpt} does not describe a gendiff run: {type(e).__name__}: "
                              f"{str(e)[:300]}") from e
    return Run(config, run.diffusion, ema.module.to(device).eval(), run.dataset, run.prior)


def check_step(ckpt, step, config: RunConfig) -> int:
    """The checkpoint's step: an integer in 0..train.steps, else CheckpointError."""
    ok = isinstance(step, int) and not isinstance(step, bool) and 0 <= step <= config.train.steps
    if not ok:
        raise CheckpointError(f"checkpoint {ckpt} records step {step!r}, which is not in 0..{config.train.steps} "
                              "(train.steps): the file is damaged or was edited")
    return step


def _check_recorded(ckpt, config: RunConfig) -> None:
    """A component trained from Python that had no import path cannot be rebuilt: say which."""
    for kind in ("basis", "schedule", "parameterization", "prior", "model"):
        note = getattr(config, kind).get("unrecorded")
        if note:
            raise CheckpointError(f"checkpoint {ckpt}: its {kind} was not recorded when it was trained, so it "
                                  f"cannot be rebuilt: {note}")


def check_device(device) -> torch.device:
    """``torch.device(device)`` if this machine has it; ValueError saying what is missing otherwise."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:<k>' or 'mps', got {device!r}") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available on this machine (torch "
                             f"{torch.__version__}, CUDA build {torch.version.cuda}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r}: MPS is not available on this machine; use --device cpu")
    return dev
