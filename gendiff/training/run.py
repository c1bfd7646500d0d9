"""A run built from its config — each component constructed once — and the one sampling path.

:func:`build_run` is the only place a :class:`RunConfig` becomes objects: the trainer, the
recipes, :func:`~gendiff.training.loading.load_run` (so ``sample.py`` and ``evaluate.py``) all
call it, so a custom basis named by import path is imported after the trust decision and built
exactly once per process. :func:`sample_run` is the only place a run is sampled: the trainer's
grids and figures, ``sample.py`` and ``evaluate.py`` go through it with a :class:`SamplingConfig`.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
from torch import Tensor, nn

from gendiff.bases import build_basis
from gendiff.checks import check_data
from gendiff.data import build_dataset, class_labels
from gendiff.diffusion import Diffusion
from gendiff.guidance import SNRGate
from gendiff.parameterization import build_parameterization
from gendiff.priors import build_prior
from gendiff.samplers import check_sampler_options
from gendiff.schedules import SCHEDULES, build_schedule

from .config import MAX_N, ConfigError, DataConfig, Flag, Int, Num, RunConfig, Text, schema
from .trust import require_trust

__all__ = ["Run", "build_run", "measure_schedule", "event_shape", "SamplingConfig", "sampling_config", "run_sampling",
           "planned_steps", "sample_run"]


@schema
class SamplingConfig:
    """How a run is sampled (docs/math.md, "Other samplers").

    Args:
        sampler: a registered sampler name or an import path ``package.module:name``.
        steps: network evaluations on the sampler's default grid (None: its default); refused for
            samplers that walk every step (reverse, ihdm) unless it is their N.
        clip: clamp x̂_0 to the data's value range while sampling (DDPM's clip_denoised).
        options: the sampler's own keyword options (``eta``, ``quiet_steps``, ``delta_scale``, or a
            custom sampler's); one it does not take is refused.
        guidance, guidance_min_snr: the guidance of a conditional run (:class:`CondConfig`);
            ignored by an unconditional one.
    """

    sampler: Text = "dpm++2m"
    steps: Int(1, MAX_N) | None = None
    clip: Flag = True
    options: dict[str, Any] = field(default_factory=dict)
    guidance: Num(-1e4, 1e4) = 1.0
    guidance_min_snr: Num(0.0, open_lo=True) | None = None

    @property
    def weight(self) -> float | SNRGate:
        """The guidance weight ``Diffusion.sample`` takes: a number, or an :class:`SNRGate`."""
        return self.guidance if self.guidance_min_snr is None else SNRGate(self.guidance, self.guidance_min_snr)


def sampling_config(config: RunConfig) -> SamplingConfig:
    """What the run's config asks its sample grids (and, by default, sample.py/evaluate.py) to use."""
    t, c = config.train, config.cond
    return SamplingConfig(t.sampler, t.sample_steps, t.clip_x0, dict(t.sampler_options), c.guidance,
                          c.guidance_min_snr)


def run_sampling(config: RunConfig, sampler: str | None = None, steps: int | None = None,
                 options: dict | None = None, clip: bool = True, guidance: float | None = None) -> SamplingConfig:
    """The run's own sampling (what its grids used) with what a user asked applied: another
    ``sampler`` starts from that sampler's defaults; ``options`` update the run's; ``clip=False``
    turns the clamp off; ``guidance`` replaces the run's guidance weight."""
    own = sampling_config(config)
    try:
        if sampler and sampler != own.sampler:
            own = replace(own, sampler=sampler, steps=None, options={})
        return replace(own, steps=steps or own.steps, clip=own.clip and clip,
                       options=own.options | dict(options or {}), guidance=own.guidance if guidance is None else guidance)
    except ConfigError as e:
        raise ConfigError(str(e), "sampling") from None


def planned_steps(diffusion: Diffusion, s: SamplingConfig, requested: bool = False) -> int | None:
    """The network evaluations ``s`` asks of ``diffusion`` (None: all N), after checking the
    sampler takes ``s.options``; ValueError saying what is wrong (see :func:`sampling_steps`)."""
    from .loading import sampling_steps
    check_sampler_options(s.sampler, s.options)
    return sampling_steps(s.sampler, s.steps, diffusion.last_train_step, requested=requested)


def event_shape(data: DataConfig) -> tuple[int, ...]:
    """The shape of one example, ``(C, *sides)``: (C, L) signals, (C, H, W) images, (C, D, H, W)
    volumes. The one place the data's shape is derived (from ``data.channels`` and
    ``data.shape``, or the square ``data.size``); samples are ``(n, *event_shape)``."""
    return (data.channels, *data.sides)


@dataclass(frozen=True, eq=False)
class Run:
    """A :class:`RunConfig` built: the diffusion, the network, the data and the sampling prior.

    ``dataset()`` builds the training set on first use (sampling a run needs it only for a data
    prior) and keeps it; ``prior`` is the schedule's prior built with that loader.
    """

    config: RunConfig
    diffusion: Diffusion
    model: nn.Module
    dataset: Callable[[], Any]
    prior: Any

    @property
    def event_shape(self) -> tuple[int, ...]:
        """``(C, *sides)`` of one example (:func:`event_shape`)."""
        return event_shape(self.config.data)

    def labels(self, n: int, classes=None) -> Tensor | None:
        """The class labels of ``n`` samples: ``classes`` (an int or one per sample), by default
        every class in equal consecutive blocks (n = k·num_classes: a grid of k columns has one
        row per class); None for an unconditional run (which refuses classes)."""
        c = self.config.cond
        if c.kind != "classes":
            if classes is not None:
                raise ValueError(f"run {self.config.name!r} is unconditional (cond.kind 'none'): it takes no class")
            return None
        labels = torch.arange(n) * c.num_classes // max(n, 1) if classes is None else \
            torch.as_tensor(classes, dtype=torch.long).expand(n).clone()
        if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < c.num_classes):
            raise ValueError(f"classes must be in 0..{c.num_classes - 1} (run {self.config.name!r}), "
                             f"got {labels.unique().tolist()}")
        return labels


def build_run(config: RunConfig, trust_code: bool = False, *, diffusion: Diffusion | None = None,
              model: nn.Module | None = None, dataset=None, prior=None, check_dataset: bool = False) -> Run:
    """Build every component of ``config`` once; ready components given here are used instead.

    Args:
        config: the run.
        trust_code: import the custom components the config names by import path; without it a
            config naming any (in a part that is built here) is refused before anything is imported.
        diffusion, model, dataset, prior: ready components (not rebuilt, not checked for trust).
        check_dataset: build the training set now and check its first image against the data
            config and the basis (a trainer's check before the run folder is made).

    Raises:
        ConfigError: naming the component (by its config field) that cannot be built and why;
            :class:`~gendiff.training.trust.UntrustedCodeError` for untrusted import paths.
    """
    parts = {k: v for k, v in config.to_dict().items() if k in ("basis", "schedule", "parameterization", "prior",
                                                                "model", "train", "data")}
    skip = (["basis", "schedule", "parameterization"] if diffusion is not None else []) + \
        (["model"] if model is not None else []) + (["prior"] if prior is not None else []) + \
        (["data"] if dataset is not None else [])
    require_trust({k: v for k, v in parts.items() if k not in skip}, f"run {config.name!r}", trust_code)
    data_config = config
    loader = (lambda: dataset) if dataset is not None else functools.cache(lambda: _dataset(data_config))
    if diffusion is None:
        diffusion = _diffusion(config, loader)
        if _measured(config):  # recorded with its table: the checkpoint is rebuilt without data
            config = replace(config, schedule=diffusion.schedule.config())
    _check_shape(config, diffusion)
    _check_sampling(sampling_config(config), diffusion, event_shape(config.data))
    if check_dataset:  # before the network: a bad data path fails before a large model is allocated
        _check_first(config, loader())
        _check_classes(config, loader())
    if model is None:
        with torch.random.fork_rng(devices=[]):  # the same initialisation wherever it is built, every rank
            torch.manual_seed(config.train.seed)
            model = _part(config, "model", _network)
    prior = prior if prior is not None else _part(config, "prior", lambda c: build_prior(c, loader))
    return Run(config, diffusion, model, loader, prior)


# The examples a schedule measured from the data reads (the first ones of the training set).
MEASURE_LIMIT = 50_000


def measure_schedule(config: RunConfig, trust_code: bool = False, limit: int = MEASURE_LIMIT) -> RunConfig:
    """``config`` with its schedule measured from the training data, when it is one that is.

    The hook: a schedule class with a classmethod ``from_data(basis, data, **args)`` (e.g.
    ``data_snr``, :meth:`~gendiff.schedules.DataSNRSchedule.from_data`) whose config lacks a
    constructor argument without a default (its table) is built by ``from_data`` on the first
    ``limit`` training examples, in the run's basis and value range, and recorded by its
    ``config()``, table included: the run is then rebuilt without data (a checkpoint,
    ``sample.py``, ``evaluate.py``, ``--config run.json``). Any other config is returned as it
    is. :func:`build_run` does the same with the basis and the data it builds anyway (the
    command line relies on that); this is for a config wanted before any run is built.

    Raises:
        ConfigError: the basis, the data or the measurement fail (naming the field);
            :class:`~gendiff.training.trust.UntrustedCodeError` for untrusted import paths.
    """
    require_trust({"schedule": config.schedule}, f"run {config.name!r}", trust_code)
    if not _measured(config):
        return config
    require_trust({"basis": config.basis, "data": config.to_dict()["data"]}, f"run {config.name!r}", trust_code)
    basis, data = _part(config, "basis", build_basis), _dataset(config)
    return replace(config, schedule=_schedule(config, basis, data, limit).config())


def _measured(config: RunConfig) -> bool:
    """The schedule is measured from the data: its class has ``from_data`` and its config lacks
    a required constructor argument (the table)."""
    cls = _part(config, "schedule", lambda c: SCHEDULES.resolve(c["name"]))
    needed = [p.name for p in inspect.signature(cls).parameters.values()
              if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return callable(getattr(cls, "from_data", None)) and not all(n in config.schedule for n in needed)


def _schedule(config: RunConfig, basis, data=None, limit: int = MEASURE_LIMIT):
    """The run's schedule: from its config, or measured by ``from_data`` on the first ``limit``
    examples of ``data`` in ``basis`` (``data`` given only when :func:`_measured`)."""
    if data is None:
        return _part(config, "schedule", build_schedule)
    args = {k: v for k, v in config.schedule.items() if k != "name"}
    cls = SCHEDULES.resolve(config.schedule["name"])
    examples = (data[k] for k in range(min(len(data), limit)))
    return _part(config, "schedule", lambda c: cls.from_data(basis, examples, **args))


def _part(config: RunConfig, kind: str, build: Callable[[dict], Any]):
    """``build(config.<kind>)``, its failure a ConfigError naming the field and the value."""
    cfg = getattr(config, kind)
    try:
        return build(cfg)
    except ImportError as e:
        raise ConfigError(f"invalid run {config.name!r}: {kind} {cfg}: {e}", kind) from e
    except (ValueError, ZeroDivisionError, OverflowError, TypeError, KeyError) as e:
        raise ConfigError(f"invalid run {config.name!r}: {kind} {cfg}: {type(e).__name__}: {e}", kind) from e


def _network(cfg: dict) -> nn.Module:
    from .loading import build_network
    return build_network(cfg)


def _diffusion(config: RunConfig, loader: Callable[[], Any] | None = None) -> Diffusion:
    """The diffusion of ``config``; a schedule measured from the data reads it from ``loader``
    (the run's own training set, built once), in the basis built here."""
    basis = _part(config, "basis", build_basis)
    schedule = _schedule(config, basis, loader() if loader is not None and _measured(config) else None)
    param = _part(config, "parameterization", build_parameterization)
    try:
        return Diffusion(basis, schedule, parameterization=param, last_train_step=config.train.last_train_step)
    except (ValueError, ZeroDivisionError, OverflowError, TypeError) as e:
        raise ConfigError(f"invalid run {config.name!r}: schedule {config.schedule} with basis "
                          f"{config.basis.get('name', config.basis)}: {type(e).__name__}: {e}", "schedule") from e


def _check_sampling(s: SamplingConfig, diffusion: Diffusion, shape) -> None:
    """The sampler resolves, the step budget fits N, and the sampler accepts its options' names
    and values: a dry run of two steps with a zero network (milliseconds), so a bad value fails
    here, not in the figures after training."""
    try:
        planned_steps(diffusion, s)
        grid = [min(2, diffusion.last_train_step), 1, 0] if diffusion.last_train_step > 1 else [1, 0]
        zeros = lambda d, shape_, t0, g, dtype, device: torch.zeros(shape_, dtype=dtype, device=device)  # noqa: E731
        diffusion.sample(lambda x, i: torch.zeros_like(x), (1, *shape), sampler=s.sampler, timesteps=grid,
                         progress=False, prior=zeros, **s.options)
    except ImportError as e:
        raise ConfigError(f"train.sampler: {e}", "train.sampler") from e
    except (ValueError, TypeError) as e:
        raise ConfigError(f"train.sampler / train.sample_steps / train.sampler_options: {e}",
                          "train.sampler") from None


def _dataset(config: RunConfig):
    d = config.data
    try:
        return build_dataset(d.spec, split="train", size=d.sides, value_range=d.value_range, channels=d.channels,
                             args=d.args)
    except ImportError as e:
        raise ConfigError(f"data.spec {d.spec!r}: {e}", "data.spec") from e
    except (OSError, ValueError, RuntimeError) as e:  # missing/empty folder, bad LMDB, unreadable images
        raise ConfigError(f"data.spec {d.spec!r}: {e}", "data.spec") from e


def _check_first(config: RunConfig, dataset) -> None:
    """The data's first item has the configured shape."""
    d, want = config.data, event_shape(config.data)
    try:
        first = dataset[0] if len(dataset) else None
    except (OSError, ValueError, RuntimeError) as e:
        raise ConfigError(f"data.spec {d.spec!r}: {e}", "data.spec") from e
    if first is None:
        raise ConfigError(f"data.spec {d.spec!r} holds no {_kind(d)}", "data.spec")
    got = tuple(getattr(first, "shape", ()))
    if got != want:
        raise ConfigError(f"data.spec {d.spec!r} gives {_kind(d)} of shape {got}, but the run expects {want} "
                          f"(data.channels {d.channels}, {_sides_field(d, True)})", "data.spec")


def _check_classes(config: RunConfig, dataset) -> None:
    """A class-conditional run's data have classes, no more than ``cond.num_classes``."""
    n = config.cond.num_classes
    if config.cond.kind != "classes":
        return
    try:
        classes, _ = class_labels(dataset)
    except ValueError as e:
        raise ConfigError(f"data.spec {config.data.spec!r} with cond.kind 'classes': {e}") from None
    if len(classes) > n:
        raise ConfigError(f"data.spec {config.data.spec!r} has {len(classes)} classes but cond.num_classes is {n}")


def _check_shape(config: RunConfig, diffusion: Diffusion) -> None:
    """The basis takes the data's shape."""
    d = config.data
    want = event_shape(d)
    try:
        check_data(torch.zeros(1, *want), diffusion.basis)
    except ValueError as e:
        raise ConfigError(f"invalid run {config.name!r}: the data are {'×'.join(map(str, want))} ({_sides_field(d)}, "
                          f"data.channels) but basis {config.basis} does not take them: {e}", "basis") from e


def _sides_field(d: DataConfig, value: bool = False) -> str:
    """The field that gave the sides (``data.shape`` or the square's ``data.size``), for messages."""
    if d.shape is not None:
        return f"data.shape {list(d.shape)}" if value else "data.shape"
    return f"data.size {d.size}" if value else "data.size"


def _kind(d: DataConfig) -> str:
    return ("signals", "images", "volumes")[len(d.sides) - 1]


@torch.no_grad()
def sample_run(run: Run, n: int, sampling: SamplingConfig | None = None, *, model: nn.Module | None = None,
               generator=None, device=None, batch_size: int | None = None, callback: Callable | None = None,
               progress: bool = False, requested: bool = False, classes=None) -> Tensor:
    """``n`` samples of the run (pixel space, on the CPU): the one sampling path.

    Args:
        run: the built run.
        n: how many samples.
        sampling: sampler, steps, clamp and options (default the run's own, :func:`sampling_config`).
        model: the network to sample (default ``run.model``; the trainer passes its EMA).
        generator: one generator for all batches (reproducible); ``device``: where to sample.
        batch_size: samples per network call (default all ``n`` at once).
        callback: the sampler's per-step callback (``{"i", "x", "x0"}``, pixel space).
        requested: ``sampling.steps`` was asked for by the user (a walk-every-step sampler then
            refuses a number other than its N instead of ignoring it).
        classes: a conditional run's classes, an int or one per sample (:meth:`Run.labels`:
            default every class in turn), sampled with ``sampling``'s guidance.
    """
    s = sampling or sampling_config(run.config)
    d = run.diffusion
    steps = planned_steps(d, s, requested)
    clip = run.config.data.value_range if s.clip else None
    model = run.model if model is None else model
    labels = run.labels(n, classes)
    guided = {} if labels is None else {"guidance": s.weight}
    out, batch = [], batch_size or n
    for k in range(0, n, batch):
        cond = None if labels is None else labels[k:k + batch]
        x = d.sample(model, (min(batch, n - k), *run.event_shape), sampler=s.sampler, steps=steps,
                     generator=generator, device=device, progress=progress, prior=run.prior, clip_x0=clip,
                     callback=callback, cond=cond, **guided, **s.options)
        out.append(x.cpu())
    return torch.cat(out)
