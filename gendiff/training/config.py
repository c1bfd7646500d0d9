"""Run configuration as frozen, typed data: checked by a schema, never importing or building.

Every config a run reads or writes (``config.json``, a checkpoint's ``"config"``, a recipe's
flags) goes through these pydantic dataclasses before anything is imported, built or written:
strict types (``"no"`` is not a bool, 2.7 is not an int), ranges, and unknown keys refused with
the nearest valid name. Values that size allocations or loops (steps N or K, image size and
shapes, channels, UNet widths, batch and sample counts) have upper bounds (:data:`SIZE_BOUNDS`),
so a crafted file cannot ask for terabytes or hours.

A component (basis, schedule, parameterization, prior, model) is a JSON object
``{"name": <registered name or import path>, **arguments}``; its arguments belong to the
component's own constructor and are checked when it is built (after the trust decision,
:func:`code_names`), since knowing them means importing the component.
"""
from __future__ import annotations

import difflib
import json
import math
from dataclasses import asdict, field, fields
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, Strict, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic.dataclasses import dataclass

# Upper bounds for values that size allocations (docs/reliability.md, "Configs").
MAX_N = 100_000          # diffusion steps: the paper uses 1000; tables are O(N × coordinates)
MAX_SIZE = 4096          # image side
MAX_CHANNELS = 64
MAX_BATCH = 65_536
MAX_SAMPLES = 1_000_000
MAX_NAME = 200           # run-name characters (file systems allow 255 bytes)


class ConfigError(ValueError):
    """A configuration value outside its valid range (the message names the field and the value).

    ``field``: the config field (``"schedule"``, ``"data.spec"``, ``"train.sampler"``, …) or the
    argument the refusal is about, when one is; the command line maps it to the flag that sets it.
    """

    field: str | None = None  # also for subclasses whose own __init__ runs first (UntrustedCodeError)

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def Int(lo: int, hi: int | None = None):  # noqa: N802 - a type, spelled like one
    """A strict integer in lo..hi (bools and floats refused)."""
    return Annotated[int, Strict(), Field(ge=lo, le=hi)]


def Num(lo: float, hi: float | None = None, *, open_lo: bool = False):  # noqa: N802
    """A finite number in [lo, hi] ((lo, hi] with ``open_lo``); ints accepted, bools and strings not."""
    bound = {"gt": lo} if open_lo else {"ge": lo}
    return Annotated[float, Strict(), Field(le=hi, allow_inf_nan=False, **bound)]


Flag = Annotated[bool, Strict()]
Text = Annotated[str, Strict(), Field(min_length=1, max_length=4096)]
SCHEMA = ConfigDict(extra="forbid")


def schema(cls: type) -> type:
    """A frozen pydantic dataclass whose construction (and ``dataclasses.replace``) raises
    :class:`ConfigError` naming every bad field, not pydantic's multi-line report."""
    cls = dataclass(frozen=True, config=SCHEMA)(cls)
    init = cls.__init__

    def __init__(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
        except ValidationError as e:
            raise ConfigError(explain(cls, e)) from None
    cls.__init__ = __init__
    return cls


@schema
class TrainConfig:
    """Optimisation and bookkeeping (docs/math.md, Conventions: Adam 5e-5, batch 16, EMA 0.9999).

    Args:
        steps: total optimizer steps.
        batch_size: per device.
        lr: Adam learning rate.
        ema_decay: the EMA's final decay.
        ema_warmup: ramp the decay as min(decay, (1 + n)/(10 + n)) so short runs sample from
            trained weights rather than from the initialisation.
        grad_clip: max gradient norm, ``None`` for none (the paper uses none).
        seed: seeds the model initialisation, the batches and the diffusion noise.
        log_every, ckpt_every, sample_every: intervals in steps (0 disables sampling).
        sample_n, sample_steps, sampler, sampler_options: what the sample grids use (also the
            default of recipes/sample.py and recipes/evaluate.py for this run; see
            :class:`~gendiff.training.run.SamplingConfig`). ``sampler`` is a registered name or an
            import path; it is resolved, and its options checked, when the run is built.
        clip_x0: clamp x̂_0 to the data range while sampling (DDPM's clip_denoised).
        last_train_step: train on steps 1..this (None: N; the official blur-diffusion and IHDM
            code: N − 1); the default sampling grids start there (``Diffusion``).
        num_workers: DataLoader workers.
    """

    steps: Int(1, 10**9) = 450_000
    batch_size: Int(1, MAX_BATCH) = 16
    lr: Num(0.0, open_lo=True) = 5e-5
    ema_decay: Num(0.0, 1.0) = 0.9999
    ema_warmup: Flag = True
    grad_clip: Num(0.0, open_lo=True) | None = None
    seed: Int(0, 2**63 - 1) = 0
    log_every: Int(1) = 50
    ckpt_every: Int(1) = 5_000
    sample_every: Int(0) = 10_000
    sample_n: Int(1, MAX_SAMPLES) = 64
    sample_steps: Int(1, MAX_N) | None = 50
    sampler: Text = "dpm++2m"
    sampler_options: dict[str, Any] = field(default_factory=dict)
    clip_x0: Flag = True
    last_train_step: Int(1, MAX_N) | None = None
    num_workers: Int(0, 256) = 0

    @field_validator("sampler_options")
    @classmethod
    def _options(cls, v):
        _json_only(v, "sampler_options")
        return v


@schema
class FabricConfig:
    """Lightning Fabric's device arguments; Fabric itself judges the values (recipes construct
    one before the run folder is touched)."""

    accelerator: Text = "auto"
    devices: Int(-1, 4096) | Text = 1
    strategy: Text = "auto"
    num_nodes: Int(1, 4096) = 1
    precision: Text = "32-true"

    @field_validator("devices")
    @classmethod
    def _devices(cls, v):
        if v == 0:
            raise ValueError("devices must be ≥ 1, -1 (every device) or a list like '0,1'")
        return v


MAX_SPATIAL = 3          # spatial axes of one example: signals, images, volumes


@schema
class DataConfig:
    """What the run trains on; :func:`gendiff.training.run.event_shape` reads its shape.

    Args:
        spec: an embedded name ("digits", "photos", "photos-gray", "signals"), a path (image
            folder, LSUN LMDB, ``.npy``/``.npz`` array) or the import path
            ``package.module:Name`` of a dataset class or function, called with ``args``
            (code: the trust check counts it, gendiff.training.trust).
        size: the side of square images; used when ``shape`` is None.
        shape: the spatial sides of one example, one per axis: ``[64]`` (signals), ``[24, 16]``
            (H, W images), ``[8, 8, 8]`` (volumes); None means ``[size, size]``.
        channels: C, the leading axis of every example.
        value_range: ``(lo, hi)`` of the data ((−1, 1) or (0, 1)).
        args: keyword arguments of the dataset ``spec`` names: a plug-in's constructor
            arguments, or ``{"key": name}`` for an ``.npz`` holding several arrays.
    """

    spec: Text = "digits"
    size: Int(1, MAX_SIZE) = 16
    channels: Int(1, MAX_CHANNELS) = 1
    value_range: tuple[Num(-1e6, 1e6), Num(-1e6, 1e6)] = (-1.0, 1.0)
    shape: Annotated[tuple[Int(1, MAX_SIZE), ...], Field(min_length=1, max_length=MAX_SPATIAL)] | None = None
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def sides(self) -> tuple[int, ...]:
        """The spatial sides of one example: ``shape``, or ``(size, size)``."""
        return tuple(self.shape) if self.shape is not None else (self.size, self.size)

    @field_validator("args")
    @classmethod
    def _args(cls, v):
        _json_only(v, "args")
        return v

    @model_validator(mode="after")
    def _not_too_large(self):
        n = math.prod(self.sides)
        if n > MAX_COORDINATES:
            raise ValueError(f"an example of sides {list(self.sides)} has {n} positions per channel, more than "
                             f"{MAX_COORDINATES}")
        return self

    @field_validator("value_range")
    @classmethod
    def _ordered(cls, v):
        if not v[0] < v[1]:
            raise ValueError(f"must be (lo, hi) with lo < hi, got {v}")
        return tuple(float(x) for x in v)


@schema
class CondConfig:
    """Conditioning and classifier-free guidance (docs/math.md, "Conditioning and classifier-free
    guidance").

    Args:
        kind: ``"none"`` (an unconditional network, ``model(x_i, i)``) or ``"classes"`` (the data's
            class labels, ``model(x_i, i, cond)``; the data must have classes, ``gendiff.data.Labelled``).
        num_classes: how many classes (the network's class embedding has one more, the null class).
        p_uncond: in training, each label is replaced by the null class with this probability.
        guidance: the default guidance weight w when the run is sampled (1: the conditional
            model, 0: the unconditional one; Eq. G1).
        guidance_min_snr: guide only coordinates with a_i/s_i ≥ this, elsewhere w = 1
            (:class:`gendiff.guidance.SNRGate`); None guides every coordinate.
    """

    kind: Literal["none", "classes"] = "none"
    num_classes: Int(1, 1_000_000) | None = None
    p_uncond: Num(0.0, 1.0) = 0.1
    guidance: Num(-1e4, 1e4) = 1.0
    guidance_min_snr: Num(0.0, open_lo=True) | None = None

    @model_validator(mode="after")
    def _classes(self):
        if (self.kind == "classes") != (self.num_classes is not None):
            raise ValueError(f"num_classes is needed with kind 'classes' and only then; got kind {self.kind!r}, "
                             f"num_classes {self.num_classes!r}")
        return self


Component = dict[str, Any]


def _json_only(v, where: str) -> None:
    """Plain JSON values only: what a config file can hold, and all a checkpoint may carry."""
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: keys must be strings, got {k!r}")
            _json_only(x, f"{where}.{k}")
    elif isinstance(v, (list, tuple)):
        for k, x in enumerate(v):
            _json_only(x, f"{where}[{k}]")
    elif isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"{where}: must be finite, got {v}")
    elif not (v is None or isinstance(v, (str, int, float, bool))):
        raise ValueError(f"{where}: must be a JSON value, got {type(v).__name__}")


# Arguments that size what a component allocates or loops over, whatever the component: a crafted
# file must not ask for a 10**9-step heat schedule, a 20000² eigendecomposition or a huge UNet.
SIZE_BOUNDS = {"N": MAX_N, "K": MAX_N, "model_channels": 4096, "num_res_blocks": 64,
               "in_channels": MAX_CHANNELS, "out_channels": MAX_CHANNELS, "channels": MAX_CHANNELS,
               "dims": MAX_SPATIAL}
MAX_AXES = 4                      # a basis's shape: (L,), (H, W), (D, H, W), or (C, …) for a joint one
MAX_COORDINATES = MAX_SIZE ** 2   # numbers in one example (a basis's shape multiplied out)
MAX_TABLE = 1 << 18               # numbers in a table a component carries (DataSNRSchedule's variance)
TABLES = ("variance", "rotation")  # the JSON arrays a component may carry as data


def _is_int(n, hi: int) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= hi


def _numbers(v, depth: int = 0) -> int:
    """How many numbers a nested list holds (a ValueError past MAX_AXES + 1 levels)."""
    if not isinstance(v, (list, tuple)):
        return 1
    if depth > MAX_AXES:
        raise ValueError(f"a table may nest at most {MAX_AXES + 1} levels")
    return sum(_numbers(x, depth + 1) for x in v)


def _check_shape(shape) -> None:
    dims = shape if isinstance(shape, (list, tuple)) else [shape]
    if not all(_is_int(s, MAX_SIZE) for s in dims):
        raise ValueError(f"shape must be integers in 1..{MAX_SIZE}, got {shape!r}")
    if not 1 <= len(dims) <= MAX_AXES or math.prod(dims) > MAX_COORDINATES:
        raise ValueError(f"shape must have 1 to {MAX_AXES} axes and at most {MAX_COORDINATES} entries in all, "
                         f"got {shape!r}")


def _check_image_size(sides) -> None:
    """A UNet's ``image_size``: one side, or one per spatial axis."""
    dims = sides if isinstance(sides, (list, tuple)) else [sides]
    if not (1 <= len(dims) <= MAX_SPATIAL and all(_is_int(s, MAX_SIZE) for s in dims)):
        raise ValueError(f"image_size must be an integer in 1..{MAX_SIZE} (one side, or a list of at most "
                         f"{MAX_SPATIAL}, one per axis), got {sides!r}")


def _check_sizes(v: Component) -> None:
    """Every size-like argument of ``v`` and of the components nested in it (a colour basis's spatial basis)."""
    for key, hi in SIZE_BOUNDS.items():
        n = v.get(key)
        if n is not None and not _is_int(n, hi):
            raise ValueError(f"{key} must be an integer in 1..{hi}, got {n!r}")
    if v.get("shape") is not None:
        _check_shape(v["shape"])
    if v.get("image_size") is not None:
        _check_image_size(v["image_size"])
    mult = v.get("channel_mult")
    if mult is not None and not (isinstance(mult, (list, tuple)) and len(mult) <= 8 and all(
            isinstance(m, int) and not isinstance(m, bool) and 1 <= m <= 16 for m in mult)):
        raise ValueError(f"channel_mult must be at most 8 integers in 1..16, got {mult!r}")
    for key in TABLES:
        if key in v and _numbers(v[key]) > MAX_TABLE:
            raise ValueError(f"{key} must hold at most {MAX_TABLE} numbers, got {_numbers(v[key])}")
    for x in v.values():
        if isinstance(x, dict):
            _check_sizes(x)


def _check_component(kind: str, v: Component, named: bool = True) -> Component:
    if not isinstance(v, dict):
        raise ValueError(f"must be a JSON object {{'name': ..., **arguments}}, got {type(v).__name__}")
    _json_only(v, kind)
    _check_sizes(v)
    if "unrecorded" in v:  # a ready component trained from Python that has no import path
        return v
    if named or "name" in v:
        name = v.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"needs 'name': a registered name or an import path 'package.module:Name', got {name!r}")
    return v


@schema
class RunConfig:
    """Everything needed to rebuild a run: basis, schedule, model, parameterization and prior
    configs (each ``{"name": ..., **args}``; a UNet model may be its fields alone) plus the
    dataclasses above. Checking one imports and builds nothing."""

    name: Annotated[str, Strict(), Field(max_length=MAX_NAME)]
    basis: Component
    schedule: Component
    model: Component
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    fabric: FabricConfig = field(default_factory=FabricConfig)
    out_dir: Text = "runs"
    parameterization: Component = field(default_factory=lambda: {"name": "eps", "weighting": "eps"})
    prior: Component = field(default_factory=lambda: {"name": "gaussian"})
    cond: CondConfig = field(default_factory=CondConfig)

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        from .rundir import check_run_name
        return check_run_name(v)

    @field_validator("basis", "schedule", "parameterization", "prior", "model")
    @classmethod
    def _components(cls, v, info):
        return _check_component(info.field_name, v, named=info.field_name != "model")

    @model_validator(mode="after")
    def _steps_fit(self):
        t, n = self.train, self.schedule.get("N")
        if isinstance(n, int) and t.last_train_step is not None and t.last_train_step > n:
            raise ValueError(f"train.last_train_step must be in 1..N={n}, got {t.last_train_step}")
        return self

    @model_validator(mode="after")
    def _classes_fit(self):
        # a UNet config (no name, or a preset's overrides) records its class count: it must be the run's
        ours, theirs = self.cond.num_classes, self.model.get("num_classes")
        unet = "unrecorded" not in self.model and ":" not in str(self.model.get("name", ""))
        if unet and theirs != ours:
            raise ValueError(f"model.num_classes ({theirs!r}) must be cond.num_classes ({ours!r}): a class-conditional "
                             "run needs the UNet's class embedding, an unconditional one none")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: Any) -> "RunConfig":
        """The run in ``d`` (a parsed config.json or a checkpoint's config), checked field by field.

        Raises:
            ConfigError: every field that is wrong, by its dotted name, with the nearest valid
                name for an unknown key.
        """
        if not isinstance(d, dict):
            raise ConfigError(f"a run config must be a JSON object, got {type(d).__name__}")
        return validate(cls, d)


_ADAPTERS: dict[type, TypeAdapter] = {}


def validate(cls: type, data: dict) -> Any:
    """``cls`` from ``data`` with every error gathered into one :class:`ConfigError`."""
    adapter = _ADAPTERS.setdefault(cls, TypeAdapter(cls))
    try:
        return adapter.validate_python(data)
    except ValidationError as e:
        raise ConfigError(explain(cls, e)) from None
    except ConfigError as e:  # raised by a nested dataclass's own __init__
        raise ConfigError(f"invalid {cls.__name__}: {e}") from None


def explain(cls: type, err: ValidationError) -> str:
    """One line per error: the dotted field, what is wrong, the value; unknown keys with the
    nearest valid one."""
    lines = []
    for e in err.errors(include_url=False):
        loc = [str(p) for p in e["loc"]]
        if e["loc"] and isinstance(e["loc"][0], int):  # a positional argument: name its field
            loc[0] = fields(cls)[e["loc"][0]].name
        where = ".".join(loc) or cls.__name__
        if e["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
            valid = _field_names(cls, loc[:-1])
            near = difflib.get_close_matches(loc[-1], valid, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            lines.append(f"{where}: unknown key{hint} (valid: {', '.join(valid)})")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {msg} (got {_short(e.get('input'))})")
    return f"invalid {cls.__name__}: " + "; ".join(lines)


def _field_names(cls: type, path: list[str]) -> list[str]:
    for p in path:
        nested = {f.name: f.type for f in fields(cls)}.get(p)
        cls = _NESTED.get(p, cls) if nested is not None else cls
    return [f.name for f in fields(cls)]


_NESTED = {"train": TrainConfig, "data": DataConfig, "fabric": FabricConfig, "cond": CondConfig}


def _short(v: Any, limit: int = 80) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[:limit] + "…"
