"""The Lightning Fabric trainer: one loop for CPU, one GPU, DDP and bf16, resumable exactly."""
from __future__ import annotations

import math
import random
import sys
from dataclasses import MISSING, asdict, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from lightning_fabric import Fabric
from lightning_fabric.utilities.exceptions import MisconfigurationException
from tqdm.auto import tqdm

from torch import nn

from gendiff.data import Labelled
from gendiff.diffusion import Diffusion
from gendiff.figures import forward_strip, save_grid
from gendiff.models import UNetConfig
from gendiff.registry import import_path

from .checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_atomic, verified
from .config import CondConfig, ConfigError, DataConfig, FabricConfig, RunConfig, TrainConfig
from .ema import ema_decay, ema_model
from .loading import check_step, network_config
from .run import Run, build_run, sample_run
from .logs import RunLog, fabric_loggers
from .rundir import RunDirError, RunLock, hold_run_dir, put_back


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


class StoppedBeforeCheckpoint(RuntimeError):
    """A stop was asked (:meth:`Trainer.request_stop`) before a run that replaces another had
    saved anything: it ends without a checkpoint and the replaced run is put back."""


def step_seed(seed: int, rank: int, step: int, stream: int) -> int:
    """A seed that is a pure function of (run seed, rank, step, stream).

    Batches (stream 0) and diffusion noise (stream 1) are drawn from generators seeded this way
    at every step, so a resumed run — on any number of ranks — draws exactly what the
    uninterrupted run would have, without saving per-rank generator states.
    """
    return hash((seed, rank, step, stream)) & 0x7FFFFFFF


class StepBatches(torch.utils.data.Sampler):
    """Batch indices for steps start..steps-1, each drawn from a generator seeded by the step.

    Sampling with replacement from (seed, rank, step) makes the data order a pure function of
    the step, so a resumed run sees exactly the batches the uninterrupted run would have seen.
    """

    def __init__(self, n: int, batch: int, start: int, steps: int, seed: int, rank: int):
        self.n, self.batch, self.start, self.steps, self.seed, self.rank = n, batch, start, steps, seed, rank

    def __iter__(self):
        for k in range(self.start, self.steps):
            g = torch.Generator().manual_seed(step_seed(self.seed, self.rank, k, 0))
            yield torch.randint(self.n, (self.batch,), generator=g).tolist()

    def __len__(self):
        return max(0, self.steps - self.start)


class Trainer:
    """Train a network with ``diffusion.loss`` and write everything to ``run_dir``.

    Either a :class:`Run` (built by :func:`build_run`, as the recipes do: nothing is built
    again), a :class:`RunConfig` (built once by :meth:`setup`), or ready
    components: ``diffusion`` (or ``basis`` and ``schedule``), any ``nn.Module`` called as
    ``model(x_i, i)``, and the data as a :class:`DataConfig` or a ``dataset`` of (C, *sides)
    tensors (recorded by :func:`data_config`: its shape, and its spec when it has one). Ready components are recorded in the run's config by :meth:`config` / import path
    (gendiff.registry), so :func:`load_run` rebuilds them when they live in importable modules.

        Trainer(config).fit()
        Trainer(diffusion=Diffusion(basis, schedule), model=net, data=DataConfig("digits", 16, 1),
                train=TrainConfig(steps=100), name="mine").fit()

    Args:
        config: the run (a :class:`Run` or a :class:`RunConfig`); ready components given with a
            config replace the corresponding parts.
        run_dir: output folder (default ``<out_dir>/<name>``).
        diffusion, basis, schedule, model, prior, dataset: ready components.
        data, train, fabric, cond, name, out_dir: the rest of the run when no ``config`` is given
            (``cond``: a :class:`CondConfig`, for a class-conditional network ``model(x_i, i, cond)``).
        figures: draw ``forward.png`` when training starts (False skips it).
        overwrite: let :meth:`fit` start over in a folder that holds another run (the old run's
            files are moved into ``replaced-<time>/`` there); without it that is refused, unless
            :meth:`resume` loaded ``run_dir/last.ckpt`` first, continuing that run
            (gendiff.training.rundir).
        trust_code: let :meth:`setup` import the custom components a ``RunConfig`` names by import
            path. A config object you construct is yours, so the default is True; a config read
            from a file goes through :func:`load_run` or the recipes' ``--config``, which ask.
    """

    def __init__(self, config: RunConfig | Run | None = None, run_dir: str | Path | None = None, *,
                 diffusion: Diffusion | None = None, basis=None, schedule=None, model: nn.Module | None = None,
                 prior=None, dataset=None, data: DataConfig | None = None, train: TrainConfig | None = None,
                 fabric: FabricConfig | None = None, cond: CondConfig | None = None, name: str = "run",
                 out_dir: str = "runs", figures: bool = True, overwrite: bool = False, trust_code: bool = True):
        self._run = config if isinstance(config, Run) else None
        if self._run is not None:  # recorded as built: each component's own config()
            config, diffusion = self._run.config, self._run.diffusion
        if diffusion is None and (basis is not None or schedule is not None):
            if basis is None or schedule is None:
                raise TypeError("Trainer: give both basis and schedule (or a ready diffusion)")
            diffusion = Diffusion(basis, schedule)
        self._ready = {"diffusion": diffusion, "model": model, "prior": prior, "dataset": dataset}
        if self._run is not None and (model is not None or prior is not None or dataset is not None):
            raise TypeError("Trainer: a built Run carries its model, prior and dataset; give them to build_run")
        self.config = config = _run_config(config, diffusion, model, data, train, fabric, name, out_dir, dataset,
                                           cond)
        self.run_dir = Path(run_dir or Path(config.out_dir) / config.name)
        self.figures, self.overwrite, self.trust_code = figures, overwrite, trust_code
        self._owns_run_dir = False  # True once this trainer continues or claimed the run there
        self.fabric = _fabric(config.fabric, self.run_dir)
        self._stop_signal: int | None = None  # set by request_stop on this rank
        self._stopped = False  # any rank got a signal and fit() stopped early
        self._is_setup = False
        self._replacing = False  # True until the first save of a run that moved another aside
        self.in_training_loop = False  # a stop request acts only there (recipes' signal handlers)
        self.resumed_at: int | None = None  # the step resume() continued from

    def setup(self) -> None:
        """Data first (a bad path fails before the model is built), then model, EMA, optimizer."""
        c, fabric = self.config, self.fabric
        fabric.launch()
        torch.manual_seed(c.train.seed)  # dropout and a custom network's own randomness follow --seed
        self.run = run = self._run or build_run(c, self.trust_code, check_dataset=True, **self._ready)
        self.dataset, self.diffusion, self.prior, self.raw_model = run.dataset(), run.diffusion, run.prior, run.model
        # a class-conditional run trains on (image, label) pairs (docs/math.md, "Conditioning …")
        self.train_set = Labelled(self.dataset) if c.cond.kind == "classes" else self.dataset
        self.ema = ema_model(self.raw_model, c.train.ema_decay, c.train.ema_warmup).to(fabric.device)
        opt = torch.optim.Adam(self.raw_model.parameters(), lr=c.train.lr)
        self.model, self.optimizer = fabric.setup(self.raw_model, opt)
        self.generator = torch.Generator(fabric.device)
        self.step = 0
        self._is_setup = True

    def state(self) -> dict:
        """Tensors and plain values only (checkpoint format 2), so loading runs no code."""
        return {"model": self.raw_model.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(), "step": self.step,
                "config": self.config.to_dict(), "rng": rng_state()}

    def request_stop(self, signum: int | None = None) -> None:
        """Ask :meth:`fit` to stop after the current step, save and return (every rank stops at
        the same step). Safe from a signal handler: the recipes' SIGTERM/SIGINT call it; the
        library installs no handler itself."""
        self._stop_signal = signum if signum is not None else -1

    @property
    def interrupted(self) -> bool:
        """True when a stop request (:meth:`request_stop`, the recipes' SIGTERM/SIGINT) on any rank
        stopped :meth:`fit` early (a checkpoint was saved)."""
        return self._stopped

    def save(self) -> Path:
        """``last.ckpt``, then ``config.json`` beside it (rank 0; both atomic). The config is written
        with the checkpoint, not at the start: a run that fails in its first step (out of memory,
        say) leaves no run behind, so the corrected rerun needs no --overwrite."""
        return save_atomic(self.fabric, self.run_dir / "last.ckpt", self.state(),
                           beside={"config.json": self.config.to_json()})

    def resume(self, path: str | Path | None = None) -> bool:
        """Restore from ``path`` or ``run_dir/last.ckpt``; False when there is nothing to resume."""
        path = Path(path) if path else latest_checkpoint(self.run_dir)
        if path is None or not path.is_file():
            return False
        if not self._is_setup:
            self.setup()
        state = load_checkpoint(path)  # weights_only, hash checked; CheckpointError names the file
        saved = state.get("config") if isinstance(state.get("config"), dict) else {}
        check_same_run(path, saved, self.config.to_dict())
        check_extends(path, state.get("step"), self.config)
        try:
            self.raw_model.load_state_dict(state["model"])
            self.ema.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.step = self.resumed_at = int(state["step"])
            set_rng_state(state["rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise CheckpointError(f"checkpoint {path} does not fit this run: {type(e).__name__}: "
                                  f"{str(e)[:300]}") from e
        # Continuing the folder's own run is not overwriting it; another run's checkpoint is.
        self._owns_run_dir = path.resolve() == (self.run_dir / "last.ckpt").resolve()
        return True

    def _loader(self):
        t = self.config.train
        sampler = StepBatches(len(self.train_set), t.batch_size, self.step, t.steps, t.seed,
                              self.fabric.global_rank)
        loader = torch.utils.data.DataLoader(self.train_set, batch_sampler=sampler, num_workers=t.num_workers)
        return self.fabric.setup_dataloaders(loader, use_distributed_sampler=False)

    def fit(self, resume: bool = False, finish: Callable[["Trainer"], object] | None = None) -> Path:
        """Train to ``config.train.steps`` (calling :meth:`setup` first if needed); returns the
        last checkpoint's path. The trainer is the one owner of its run folder: it is locked while
        this runs, a fresh start may not write over another run's files (see ``overwrite``), and
        ``resume`` continues ``run_dir/last.ckpt`` (which must exist; recipes' ``--resume``).
        ``finish(trainer)`` runs on rank 0 after training, while the folder is still locked (the
        recipes' end figures), unless a signal stopped the run."""
        if not self._is_setup:
            self.setup()
        owned = self._owns_run_dir
        lock = _hold_run_dir(self.fabric, self.run_dir, resume=resume and not owned, overwrite=self.overwrite,
                             check=not owned)
        try:
            if resume and not owned:
                self.resume()
                if self.fabric.is_global_zero:
                    print(f"resumed {self.run_dir / 'last.ckpt'} at step {self.step}", flush=True)
            self._owns_run_dir = True
            self._fit_or_put_back(None if lock is None else lock.backup)
            if finish is not None and not self._stopped and self.fabric.is_global_zero:
                finish(self)
        finally:
            if lock is not None:
                lock.release()
        return self.run_dir / "last.ckpt"

    def _fit_or_put_back(self, backup: Path | None) -> None:
        """:meth:`_fit`; when it fails before the first checkpoint of a run that replaced another
        (``overwrite``), the old run is put back where it was: nothing is lost until the new run
        has saved."""
        self._replacing = any_rank(self.fabric, backup is not None)  # rank 0 holds the backup; all ranks act alike
        try:
            self._fit()
        except BaseException:
            if backup is not None and self._replacing:
                try:
                    failed = put_back(self.run_dir, backup)
                except OSError as e:  # the error to report is the run's, not this one
                    print(f"could not put the previous run back ({e}); it is in {backup}", file=sys.stderr)
                else:
                    print(f"the new run stopped before its first checkpoint: the previous run is back in "
                          f"{self.run_dir} (the new run's files are in {failed})", file=sys.stderr)
            raise
        finally:
            self._replacing = False

    def _fit(self) -> None:
        c, fabric = self.config.train, self.fabric
        bar, log = None, None
        self.in_training_loop = True
        try:
            bar = tqdm(total=c.steps, initial=self.step, disable=not fabric.is_global_zero, desc="train")
            log = self._open_run() if fabric.is_global_zero else None
            for batch in self._loader():
                loss, grad_norm = self._train_step(*(batch if isinstance(batch, (tuple, list)) else (batch,)))
                self.step += 1
                bar.update(1)
                if log is not None and (self.step % c.log_every == 0 or self.step == c.steps):
                    log.scalars(self._metrics(loss, grad_norm), self.step)
                    bar.set_postfix(loss=f"{loss:.4f}")
                if c.sample_every and self.step % c.sample_every == 0 and log is not None:
                    log.images("samples", self._samples(), self.config.data.value_range, self.step)
                # A stop asked on any rank stops every rank at this step, so all save together.
                self._stopped = stop = any_rank(fabric, self._stop_signal is not None)
                if stop and self._replacing:  # stopped before the first save: nothing replaces the old run
                    raise StoppedBeforeCheckpoint(f"stopped at step {self.step}, before the first checkpoint of the "
                                                  "run that was to replace the one in this folder")
                if self.step % c.ckpt_every == 0 or self.step == c.steps or stop:
                    self.save()
                    self._replacing = False
                if stop:
                    break
        finally:
            self.in_training_loop = False
            if bar is not None:
                bar.close()
            if log is not None:
                log.close()

    def _open_run(self) -> RunLog:
        """The forward figure and the logs of rank 0."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.figures:
            x0 = torch.stack([self.dataset[k] for k in range(min(6, len(self.dataset)))])
            forward_strip(self.diffusion, x0, self.run_dir / "forward.png",
                          value_range=self.config.data.value_range, generator=torch.Generator().manual_seed(0))
        return RunLog(self.fabric, self.run_dir, self.step, self.config.train.batch_size * self.fabric.world_size)

    def _metrics(self, loss: float, grad_norm: float) -> dict[str, float]:
        t, n = self.config.train, float(self.ema.n_averaged)
        return {"loss": loss, "lr": float(self.optimizer.param_groups[0]["lr"]), "grad_norm": grad_norm,
                "ema_decay": ema_decay(t.ema_decay, max(n - 1, 0), t.ema_warmup), "ema_n": n}

    def _train_step(self, x0: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[float, float]:
        t = self.config.train
        self.optimizer.zero_grad(set_to_none=True)
        self.generator.manual_seed(step_seed(t.seed, self.fabric.global_rank, self.step, 1))
        p_uncond = 0.0 if labels is None else self.config.cond.p_uncond
        loss = self.diffusion.loss(self.model, x0, cond=labels, p_uncond=p_uncond, generator=self.generator)
        value = mean_over_ranks(self.fabric, loss)
        self._stop_if_nonfinite("loss", value)
        self.fabric.backward(loss)
        # Gradients are synchronised, so every rank sees the same norm; a finite loss can still
        # give inf gradients, which one optimizer step would write into the weights.
        norm = float(self.fabric.clip_gradients(self.model, self.optimizer, max_norm=t.grad_clip or float("inf"),
                                                error_if_nonfinite=False))
        self._stop_if_nonfinite("gradient norm", norm)
        self.optimizer.step()
        self.ema.update_parameters(self.raw_model)
        return value, norm

    def _stop_if_nonfinite(self, what: str, value: float) -> None:
        if not np.isfinite(value):
            raise NonFiniteLossError(f"{what} is {value} at step {self.step + 1}; stopping. "
                                     f"{_last_good(self.run_dir)} (lower the lr, set grad_clip, or use 32-true).")

    @torch.no_grad()
    def _samples(self, n: int | None = None) -> torch.Tensor:
        """EMA samples with the run's sampler and step budget (a fixed seed, so grids compare)."""
        g = torch.Generator(self.fabric.device).manual_seed(1234)
        return sample_run(self.run, n or self.config.train.sample_n, model=self.ema.module.eval(), generator=g,
                          device=self.fabric.device)

    def sample_grid(self, n: int | None = None, path: Path | None = None) -> Path | None:
        """EMA samples with the configured sampler, as ``samples.png`` (rank 0 only); a
        class-conditional run's grid has one row per class (``n`` rounded up to fill the rows)."""
        if not self.fabric.is_global_zero:
            return None
        n, rows = n or self.config.train.sample_n, self.config.cond.num_classes
        if rows:
            n = rows * math.ceil(n / rows)
        return save_grid(self._samples(n), path or self.run_dir / "samples.png", self.config.data.value_range,
                         nrow=n // rows if rows else None)


def any_rank(fabric: Fabric, flag: bool) -> bool:
    """True on every rank when ``flag`` is True on any rank."""
    if fabric.world_size == 1:
        return flag
    return bool(fabric.all_reduce(torch.tensor(float(flag), device=fabric.device), reduce_op="max"))


def mean_over_ranks(fabric: Fabric, loss: torch.Tensor) -> float:
    """The loss averaged over ranks, so a NaN on any rank stops every rank at the same step.

    Why: a rank that raised alone would leave the others waiting in the gradient all-reduce.
    """
    loss = loss.detach()
    if fabric.world_size > 1:
        loss = fabric.all_reduce(loss, reduce_op="mean")
    return float(loss)


def check_same_run(path: Path, saved: dict, ours: dict) -> None:
    """Refuse to continue a checkpoint of a different process under the same name."""
    keys = ["basis", "schedule", "parameterization", "prior", "model"]
    diff = [k for k in keys if k in saved and _same_form(k, saved[k]) != _same_form(k, ours[k])]
    data = {**_defaults(DataConfig), **saved.get("data", {})}  # a checkpoint from before a data field existed has its default
    diff += [f"data.{k}" for k in ("spec", "size", "channels", "value_range", "shape", "args")
             if _plain(data.get(k)) != _plain(ours["data"][k])]
    diff += [f"train.{k}" for k in ("last_train_step", "seed", "batch_size", "lr", "ema_decay", "ema_warmup",
                                    "grad_clip") if saved.get("train", {}).get(k) != ours["train"][k]]
    diff += [f"cond.{k}" for k in ("kind", "num_classes", "p_uncond")
             if isinstance(saved.get("cond"), dict) and saved["cond"].get(k) != ours["cond"][k]]
    if diff:
        first = diff[0].split(".")
        was = saved.get(first[0]) if len(first) == 1 else saved.get(first[0], {}).get(first[1])
        now = ours[first[0]] if len(first) == 1 else ours[first[0]][first[1]]
        # The run's own config.json restores its components, not data that has since moved.
        as_it_was = ("" if any(k.startswith("data.") for k in diff) else
                     f"continue it as it was with --config {path.parent / 'config.json'} --resume, ")
        raise CheckpointError(f"{path} was trained with a different {', '.join(diff)} "
                              f"(saved {_short(was)}, this run {_short(now)}); {as_it_was}"
                              "use another --name or --out, or start over with --overwrite")


def check_extends(path: Path, step, ours: RunConfig) -> None:
    """A resumed run goes on from the checkpoint's step: ``--steps`` may extend it (or end an
    interrupted run earlier), never ask for fewer steps than were already made."""
    ok = isinstance(step, int) and not isinstance(step, bool) and step >= 0
    if ok and step > ours.train.steps:
        raise CheckpointError(f"{path} is at step {step}; --steps {ours.train.steps} would undo steps already made "
                              f"(a resumed run continues from its checkpoint). Drop --steps, or pass --steps ≥ {step}")
    check_step(path, step, ours)


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def _defaults(cls) -> dict:
    return {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(cls)}


def _same_form(kind: str, v):
    """A UNet's fields as its config holds them (tuples, defaults of fields added since, such as
    ``dims``), so a checkpoint recorded before a field existed is the same run; the rest as is."""
    if kind == "model" and isinstance(v, dict) and "name" not in v and "unrecorded" not in v:
        try:
            return asdict(UNetConfig(**v))
        except (TypeError, ValueError):
            return v
    return v


def _last_good(run_dir: Path) -> str:
    # "good": hash-verified; every save happened after a finite step, before the bad one
    last = latest_checkpoint(run_dir)
    if last is None:
        return "No checkpoint was saved yet"
    if verified(last):
        return f"The last good checkpoint is {last} (hash verified)"
    return f"There is no good checkpoint: {last} fails verification"


def _hold_run_dir(fabric: Fabric, run_dir: Path, *, resume: bool, overwrite: bool, check: bool) -> RunLock | None:
    """Rank 0 locks ``run_dir`` and, with ``check``, makes sure it holds no other run unless
    ``overwrite`` (:func:`~gendiff.training.rundir.hold_run_dir`). Any error there stops every
    rank: the others would otherwise wait for rank 0 in the first collective. Returns rank 0's
    lock (None elsewhere)."""
    lock = error = None
    if fabric.is_global_zero:
        try:
            lock = hold_run_dir(run_dir, resume=resume, overwrite=overwrite, check=check)
        except Exception as e:
            if fabric.world_size == 1:
                raise
            error = e
    if fabric.world_size > 1:
        message = fabric.broadcast(None if error is None else f"{type(error).__name__}: {error}", src=0)
        if error is not None:
            raise error
        if message is not None:
            raise RunDirError(f"rank 0 could not take the run folder: {message}")
    return lock


def _fabric(fc: FabricConfig, run_dir: Path) -> Fabric:
    """Fabric for ``fc``; its refusal of a flag (precision, accelerator, devices, strategy) is a
    ConfigError naming the fields, raised here, before :meth:`Trainer.fit` touches the run folder."""
    try:
        return Fabric(accelerator=fc.accelerator, devices=fc.devices, strategy=fc.strategy, num_nodes=fc.num_nodes,
                      precision=fc.precision, loggers=fabric_loggers(run_dir))
    except (ValueError, TypeError, RuntimeError, MisconfigurationException) as e:
        raise ConfigError(f"fabric.accelerator {fc.accelerator}, fabric.devices {fc.devices}, fabric.strategy "
                          f"{fc.strategy}, fabric.num_nodes {fc.num_nodes}, fabric.precision {fc.precision}: {e}",
                          "fabric") from None


def rng_state() -> dict:
    """torch, NumPy and Python RNG states as tensors and plain values (no NumPy objects)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64),
                       "gauss_next": gauss_next}}


def set_rng_state(rng: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(rng["torch"])
    n = rng["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = rng["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))


def _short(value, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _run_config(config, diffusion, model, data, train, fabric, name, out_dir, dataset=None, cond=None) -> RunConfig:
    """``config`` with ready components recorded in place of its component configs, or a new
    run from the components (a component that cannot be recorded is noted, not refused: it
    trains, and only rebuilding it from the checkpoint will fail, with that note)."""
    if config is None:
        if diffusion is None or model is None:
            raise TypeError("Trainer needs a RunConfig, or ready components: diffusion (or basis and schedule) "
                            "and model")
        data = data or (data_config(dataset) if dataset is not None else DataConfig())
        parts = {"name": name, "data": data, "train": train or TrainConfig(),
                 "fabric": fabric or FabricConfig(), "cond": cond or CondConfig(), "out_dir": out_dir}
    else:
        parts = config.to_dict()
        parts.update(data=config.data, train=config.train, fabric=config.fabric, cond=cond or config.cond)
    if diffusion is not None:
        parts.update(basis=_recorded(diffusion.basis.config), schedule=_recorded(diffusion.schedule.config),
                     parameterization=_recorded(diffusion.parameterization.config))
    if model is not None:
        parts["model"] = _recorded(lambda: network_config(model))
    return RunConfig(**parts)


def data_config(dataset, value_range=None) -> DataConfig:
    """What a run trained on ``dataset`` (given from Python) records: its shape and channels from
    its first example; its ``spec`` (and ``args``) when it has them (gendiff's datasets do), else
    its class's import path and ``config()`` (a plug-in's constructor arguments), else a note
    that it was not recorded (training works; rebuilding the data from the checkpoint does not).
    ``value_range``: the dataset's own ``value_range`` attribute, else (−1, 1)."""
    first = dataset[0]
    channels, *sides = tuple(first.shape)
    if not 1 <= len(sides) <= 3:
        raise ValueError(f"a dataset's examples must be (C, *sides) with 1 to 3 spatial axes, got {tuple(first.shape)}")
    spec, args = getattr(dataset, "spec", None), dict(getattr(dataset, "args", None) or {})
    if not isinstance(spec, str):
        try:
            spec = import_path(type(dataset), "dataset")
            args = dict(dataset.config()) if callable(getattr(dataset, "config", None)) else {}
        except TypeError:
            spec = f"(unrecorded {type(dataset).__qualname__} given to the Trainer from Python)"
    square = len(sides) == 2 and sides[0] == sides[1]
    vr = value_range or getattr(dataset, "value_range", None) or (-1.0, 1.0)
    return DataConfig(spec=spec, size=sides[0] if square else _defaults(DataConfig)["size"], channels=channels,
                      value_range=tuple(float(v) for v in vr), shape=None if square else tuple(sides), args=args)


def _recorded(config_fn) -> dict:
    try:
        return config_fn()
    except TypeError as e:
        return {"name": None, "unrecorded": str(e)}
