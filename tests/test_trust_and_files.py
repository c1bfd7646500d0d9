"""What a run trusts and what it writes: code named in a file is never imported or called
before the user says --trust-code; writes never follow a symlink; --overwrite loses nothing.
docs/reliability.md lists these rows."""
import json
import os
import sys
from dataclasses import asdict, replace

import pytest
import torch

from gendiff import GaussianBlurBasis
from gendiff.models import PRESETS
from gendiff.schedules import VPBlurSchedule
from gendiff.training import (CheckpointError, DataConfig, FabricConfig, RunConfig, RunDirError, RunLock,
                              TrainConfig, Trainer, build_diffusion, build_run, load_run)
from gendiff.training.checkpoint import _write_atomic, load_checkpoint
from gendiff.files import SAMPLES_MANIFEST
from gendiff.training.samples import read_manifest
from gendiff.training.config import ConfigError
from gendiff.training.rundir import hold_run_dir
from gendiff.training.trust import UntrustedCodeError, code_names


def run_dict(tmp_path, name="run", steps=4):
    model = replace(PRESETS["tiny"], in_channels=1, out_channels=1)
    t = TrainConfig(steps=steps, batch_size=4, lr=1e-3, ema_decay=0.9, log_every=1, ckpt_every=2, sample_every=0,
                    sample_n=2, sample_steps=2)
    return RunConfig(name, GaussianBlurBasis((16, 16)).config(), VPBlurSchedule("quartic", 0.14, N=50).config(),
                     asdict(model), DataConfig("digits", 16, 1), t, FabricConfig("cpu", 1), str(tmp_path)).to_dict()


# Each component field a config can name code in, and how to set it there.
FIELDS = {
    "basis": lambda d, p: d["basis"].update(name=p),
    "schedule": lambda d, p: d["schedule"].update(name=p),
    "noise": lambda d, p: d["schedule"].update(noise=p),
    "speed": lambda d, p: d["schedule"].update(f_type=p),
    "parameterization": lambda d, p: d["parameterization"].update(name=p),
    "prior": lambda d, p: d["prior"].update(name=p),
    "model": lambda d, p: d["model"].update(name=p),
    "sampler": lambda d, p: d["train"].update(sampler=p),
}
# Module names importlib imports though they are not identifiers: no pattern may decide.
MODULES = ["gdmarker_ok", "0gdmarker", "gd-marker"]


@pytest.fixture
def marker_module(tmp_path, monkeypatch):
    """A module per name that writes a marker file when imported; returns (name -> path, marker)."""
    folder, marker = tmp_path / "plugins", tmp_path / "IMPORTED"
    folder.mkdir()
    for m in MODULES:
        (folder / f"{m}.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\nclass X: pass\n")
    monkeypatch.syspath_prepend(str(folder))
    yield marker
    for m in MODULES:
        sys.modules.pop(m, None)


def crafted_checkpoint(path, config: dict, step: int = 0):
    """A checkpoint whose hash is right for whatever it holds (as an attacker would recompute it)."""
    assert _write_atomic(path, {"config": config, "step": step, "ema": {}}) is None
    return path


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("field", sorted(FIELDS))
def test_code_named_in_a_checkpoint_is_refused_before_any_import(tmp_path, marker_module, field, module):
    d = run_dict(tmp_path)
    FIELDS[field](d, f"{module}:X")
    ckpt = crafted_checkpoint(tmp_path / "evil.ckpt", d)
    with pytest.raises(UntrustedCodeError, match=rf"names code to import: \['{module}:X'\].*nothing was imported"):
        load_run(ckpt)
    assert not marker_module.exists()
    assert isinstance(UntrustedCodeError("x"), CheckpointError) and isinstance(UntrustedCodeError("x"), ConfigError)


@pytest.mark.parametrize("field", ["basis", "schedule", "noise", "speed", "parameterization", "sampler"])
def test_the_public_build_functions_ask_for_trust_too(tmp_path, marker_module, field):
    """build_run and build_diffusion (the library's two ways to build a config) refuse import
    paths unless trust_code=True, like load_run: a config read from anywhere is safe to pass."""
    d = run_dict(tmp_path)
    FIELDS[field](d, "gdmarker_ok:X")
    config = RunConfig.from_dict(d)
    for build in (build_run, build_diffusion):
        with pytest.raises(UntrustedCodeError, match=r"names code to import: \['gdmarker_ok:X'\]"):
            build(config)
    assert not marker_module.exists()


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_code_named_in_a_config_file_is_refused_before_any_import(tmp_path, marker_module, recipes_importable,
                                                                 field):
    import cli
    import lsun_blur
    d = run_dict(tmp_path, "again")
    FIELDS[field](d, "0gdmarker:X")
    (tmp_path / "run.json").write_text(json.dumps(d))
    args = lsun_blur.parse_args(["--config", str(tmp_path / "run.json"), "--out", str(tmp_path / "out")])
    with pytest.raises(UntrustedCodeError, match=r"--config .*run.json names code to import: \['0gdmarker:X'\]"):
        cli.configure(lsun_blur.build_config(args), args)
    assert not marker_module.exists() and not (tmp_path / "out").exists()


def test_a_builtin_called_from_a_file_is_refused_before_the_call(tmp_path, capsys):
    """Setting the noise schedule to builtins:print used to print '1000' before the refusal."""
    d = run_dict(tmp_path)
    d["schedule"]["noise"] = "builtins:print"
    with pytest.raises(UntrustedCodeError, match=r"\['builtins:print'\]"):
        load_run(crafted_checkpoint(tmp_path / "evil.ckpt", d))
    assert capsys.readouterr().out == ""
    assert code_names(d) == ["builtins:print"] and code_names(run_dict(tmp_path)) == []


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["schedule"].update(N=10 ** 13), r"N must be an integer in 1..100000"),  # a memory bomb
    (lambda d: d["data"].update(size=10 ** 6), r"data.size: Input should be less than or equal to 4096"),
    (lambda d: d["train"].update(batch_size=10 ** 9), r"train.batch_size: Input should be less than or equal"),
    (lambda d: d["train"].update(trian=1), r"train.trian: unknown key"),
    (lambda d: d.update(trian={}), r"trian: unknown key; did you mean 'train'\?"),
    (lambda d: d["train"].update(clip_x0="no"), r"train.clip_x0: Input should be a valid boolean"),
    (lambda d: d.update(schedule={"name": "heat", "K": 2_000_000}), r"K must be an integer in 1..100000"),
    (lambda d: d["basis"].update(shape=(20000, 20000)), r"shape must be integers in 1..4096"),
    (lambda d: d["basis"].update(shape=20000), r"shape must be integers in 1..4096"),
    (lambda d: d["model"].update(model_channels=10 ** 6), r"model_channels must be an integer in 1..4096"),
    (lambda d: d["model"].update(unrecorded="x", image_size=10 ** 6), r"image_size must be an integer in 1..4096"),
])
def test_a_checkpoint_config_is_checked_as_data_before_anything_is_built(tmp_path, edit, message):
    d = run_dict(tmp_path)
    edit(d)
    with pytest.raises(CheckpointError, match=message):
        load_run(crafted_checkpoint(tmp_path / "bad.ckpt", d), trust_code=True)


def test_a_checkpoint_whose_config_is_not_an_object_or_whose_step_is_wrong_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="its config is str, not a JSON object"):
        load_run(crafted_checkpoint(tmp_path / "a.ckpt", "a string"))  # type: ignore[arg-type]
    for step in (-5, 10 ** 6, 2.5):
        with pytest.raises(CheckpointError, match=rf"records step {step!r}, which is not in 0..4"):
            load_run(crafted_checkpoint(tmp_path / "b.ckpt", run_dict(tmp_path), step=step))


def trained(tmp_path, name="run", steps=4):
    config = RunConfig.from_dict(run_dict(tmp_path, name, steps))
    Trainer(config, figures=False).fit()
    return tmp_path / name


def test_resume_refuses_a_negative_step_and_fewer_steps_than_made(tmp_path):
    run = trained(tmp_path)
    config = RunConfig.from_dict(run_dict(tmp_path))
    with pytest.raises(CheckpointError, match=r"is at step 4; --steps 2 would undo steps already made"):
        Trainer(replace(config, train=replace(config.train, steps=2)), figures=False).resume()
    state = load_checkpoint(run / "last.ckpt")
    crafted_checkpoint(run / "last.ckpt", {**state["config"]}, step=-5)
    with pytest.raises(CheckpointError, match=r"records step -5"):
        Trainer(config, figures=False).resume()


def test_resume_compares_the_value_range(tmp_path):
    trained(tmp_path)
    config = RunConfig.from_dict(run_dict(tmp_path))
    other = replace(config, data=replace(config.data, value_range=(0.0, 1.0)))
    with pytest.raises(CheckpointError, match=r"different data.value_range"):
        Trainer(other, figures=False).resume()


@pytest.mark.parametrize("name", [".lock", ".last.ckpt.tmp", "config.json", "metrics.csv"])
def test_writes_in_a_run_folder_never_follow_a_symlink(tmp_path, name):
    target = tmp_path / "precious.txt"
    target.write_text("the user's file")
    run = tmp_path / "run"
    run.mkdir()
    (run / name).symlink_to(target)
    config = RunConfig.from_dict(run_dict(tmp_path))
    try:
        Trainer(config, figures=False, overwrite=True).fit()
    except RunDirError as e:  # the lock refuses to open through a link
        assert name == ".lock" and "is a symbolic link" in str(e)
    assert target.read_text() == "the user's file"


def test_overwrite_moves_the_old_run_aside_and_loses_nothing(tmp_path, capsys):
    run = trained(tmp_path)
    before = sorted(p.name for p in run.iterdir() if p.name != ".lock")
    Trainer(RunConfig.from_dict(run_dict(tmp_path)), figures=False, overwrite=True).fit()
    backups = [p for p in run.iterdir() if p.name.startswith("replaced-")]
    assert len(backups) == 1 and sorted(p.name for p in backups[0].iterdir()) == before
    assert f"moved to {backups[0]}" in capsys.readouterr().err
    assert load_checkpoint(backups[0] / "last.ckpt")["step"] == 4


def test_overwrite_that_fails_before_its_first_checkpoint_puts_the_old_run_back(tmp_path, monkeypatch, capsys):
    """--overwrite loses nothing until the new run has saved: a first step that fails (out of
    memory, say) puts the old run back in place, byte for byte; the new run's files go aside."""
    run = trained(tmp_path)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    tr = Trainer(RunConfig.from_dict(run_dict(tmp_path)), overwrite=True)
    tr.setup()
    monkeypatch.setattr(tr, "_train_step", lambda x0: (_ for _ in ()).throw(MemoryError("out of memory")))
    with pytest.raises(MemoryError):
        tr.fit()
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"} == before
    failed = [p for p in run.iterdir() if p.name.startswith("failed-")]
    assert len(failed) == 1 and (failed[0] / "forward.png").exists()  # the new run's, set aside
    assert not any(p.name.startswith("replaced-") for p in run.iterdir())
    assert "the previous run is back in" in capsys.readouterr().err
    Trainer(RunConfig.from_dict(run_dict(tmp_path)), figures=False, overwrite=True).fit()  # after a save: moved
    assert len([p for p in run.iterdir() if p.name.startswith("replaced-")]) == 1


def test_overwrite_with_an_invalid_fabric_flag_keeps_the_old_run(tmp_path, recipes_importable):
    import lsun_blur
    common_args = ["--steps", "2", "--batch-size", "4", "--sample-steps", "2", "--threads", "1", "--no-figures",
                   "--out", str(tmp_path), "--name", "r"]
    lsun_blur.main(common_args)
    before = sorted(p.name for p in (tmp_path / "r").iterdir())
    for bad in (["--precision", "16-mix"], ["--accelerator", "gpu"], ["--strategy", "nonsense"]):
        with pytest.raises(ConfigError, match=r"--accelerator .* --precision"):
            lsun_blur.main(common_args + ["--overwrite"] + bad)
        assert sorted(p.name for p in (tmp_path / "r").iterdir()) == before


@pytest.mark.parametrize("out", ["a_file", "/proc/gendiff-test"])
def test_an_unusable_out_folder_is_one_message(tmp_path, out):
    (tmp_path / "a_file").write_text("x")
    path = tmp_path / out if out == "a_file" else out
    with pytest.raises(RunDirError, match="cannot make run folder"):
        hold_run_dir(os.path.join(path, "run"))


def test_a_truncated_metrics_row_is_dropped_on_resume(tmp_path):
    from gendiff.training.csvlog import CSVLog
    path = tmp_path / "metrics.csv"
    path.write_text("step,loss\n1,0.5\n2,0.4\n3,0.")  # the last line was cut mid-number: still parses
    path.write_text("step,loss,lr\n1,0.5,0.1\n2,0.4,0.1\n3,0.3")  # cut mid-row
    with pytest.warns(UserWarning, match="dropped 1 row"):
        CSVLog(path, start_step=3)
    assert path.read_text().splitlines() == ["step,loss,lr", "1,0.5,0.1", "2,0.4,0.1"]


def test_a_resumed_run_never_writes_through_a_symlink(tmp_path):
    """The run's own files replaced by links (config.json, metrics.csv, the temporary checkpoint):
    resuming writes new files beside them, the targets stay as they were."""
    run = trained(tmp_path)
    target = tmp_path / "precious.txt"
    target.write_text("the user's file")
    metrics = (run / "metrics.csv").read_text()
    for name in ("config.json", "metrics.csv", ".last.ckpt.tmp"):
        (run / name).unlink(missing_ok=True)
        (run / name).symlink_to(target)
    (run / "metrics.csv").unlink()
    (run / "real.csv").write_text(metrics)
    (run / "metrics.csv").symlink_to(run / "real.csv")  # the resume rewrites it: a new file, not the link's target
    config = RunConfig.from_dict(run_dict(tmp_path, steps=6))
    tr = Trainer(config, figures=False)
    assert tr.resume()
    tr.fit()
    assert target.read_text() == "the user's file" and (run / "real.csv").read_text() == metrics
    assert not (run / "config.json").is_symlink() and json.loads((run / "config.json").read_text())["train"]["steps"] == 6
    assert load_checkpoint(run / "last.ckpt")["step"] == 6


# ---- sample.py: its own files only, one folder name, the evaluations it made ----------------------

@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt")
    config = RunConfig.from_dict(run_dict(out, "tiny", steps=2))
    return Trainer(config, figures=False).fit()


def sample_main(*argv):
    import sample
    return sample.main([*argv, "--device", "cpu", "--threads", "1", "--n", "3", "--batch-size", "2"])


def test_sample_overwrite_removes_only_its_own_files(tiny_ckpt, tmp_path, recipes_importable):
    pics = tmp_path / "pics"
    pics.mkdir()
    (pics / "holiday.png").write_bytes(b"the user's photo")
    with pytest.raises(SystemExit, match=r"holds PNGs that sample.py did not write \(holiday.png\)"):
        sample_main("--ckpt", str(tiny_ckpt), "--out", str(pics), "--overwrite", "--steps", "2")
    assert (pics / "holiday.png").read_bytes() == b"the user's photo"
    out = tmp_path / "mine"
    sample_main("--ckpt", str(tiny_ckpt), "--out", str(out), "--steps", "2")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="already holds samples; pass --overwrite"):
        sample_main("--ckpt", str(tiny_ckpt), "--out", str(out), "--steps", "2")
    sample_main("--ckpt", str(tiny_ckpt), "--out", str(out), "--steps", "2", "--overwrite", "--seed", "1")
    assert sorted(p.name for p in out.glob("*.png")) == ["000000.png", "000001.png", "000002.png", "grid.png"]
    assert (out / "notes.txt").read_text() == "mine"


def test_a_sample_folder_is_locked(tiny_ckpt, tmp_path, recipes_importable):
    with RunLock(tmp_path / "s"):
        with pytest.raises(SystemExit, match="is in use by process"):
            sample_main("--ckpt", str(tiny_ckpt), "--out", str(tmp_path / "s"), "--steps", "2")


def test_sampler_options_are_refused_unless_the_sampler_takes_them(tiny_ckpt, tmp_path, recipes_importable):
    with pytest.raises(SystemExit, match=r"sampler 'dpm\+\+2m' takes no option \['eta'\]; its options: none"):
        sample_main("--ckpt", str(tiny_ckpt), "--sampler", "dpm++2m", "--eta", "0.5", "--out", str(tmp_path / "a"))
    with pytest.raises(SystemExit, match=r"'reverse' takes no option \['delta_scale'\]; its options: \['quiet_steps'\]"):
        sample_main("--ckpt", str(tiny_ckpt), "--sampler", "reverse", "--sampler-args", '{"delta_scale": 1}',
                    "--out", str(tmp_path / "b"))


def heun(denoise, x, timesteps, coef, *, generator=None, callback=None, disable=False):
    """A second-order deterministic sampler (two evaluations per interval but the last), by import path."""
    a, s = (lambda i: coef.a(i).to(x.dtype)), (lambda i: coef.s(i).to(x.dtype))
    for t, u in zip(timesteps[:-1], timesteps[1:]):
        x0 = denoise(x, t).x0
        if u == 0:
            return x0
        eps = (x - a(t) * x0) / s(t)
        x_euler = a(u) * x0 + s(u) * eps
        x0_u = denoise(x_euler, u).x0
        eps_u = (x_euler - a(u) * x0_u) / s(u)
        x = a(u) * (x0 + x0_u) / 2 + s(u) * (eps + eps_u) / 2
    return x


def test_a_custom_sampler_by_import_path_gets_a_plain_folder_and_its_true_evaluations(tiny_ckpt, capsys,
                                                                                     recipes_importable):
    from gendiff.samplers import SAMPLERS, Sampler
    import test_trust_and_files as me
    me.HEUN = Sampler(heun, "uniform", 5)
    out = sample_main("--ckpt", str(tiny_ckpt), "--sampler", "test_trust_and_files:HEUN")
    assert out.name == "samples-test_trust_and_files.HEUN-5" and out.parent == tiny_ckpt.parent
    assert "(test_trust_and_files:HEUN, 9 network evaluations each)" in capsys.readouterr().out
    assert SAMPLERS.resolve("test_trust_and_files:HEUN") is me.HEUN


# ---- one build: a component is constructed once per process ---------------------------------------

COUNTING = '''
from gendiff import DCTBasis

BUILT = []


class CountingBasis(DCTBasis):
    def __init__(self, shape):
        BUILT.append(tuple(shape))
        super().__init__(shape)

    def config(self):
        return {"name": "gd_counting:CountingBasis", "shape": list(self.shape)}
'''


def test_a_one_step_run_and_a_sample_call_each_build_a_custom_basis_once(tmp_path, monkeypatch,
                                                                         recipes_importable):
    (tmp_path / "gd_counting.py").write_text(COUNTING)
    monkeypatch.syspath_prepend(str(tmp_path))
    import gd_counting
    import lsun_blur
    schedules, init = [], VPBlurSchedule.__init__
    monkeypatch.setattr(VPBlurSchedule, "__init__", lambda self, *a, **k: (schedules.append(1), init(self, *a, **k))[1])
    out = lsun_blur.main(["--basis", "gd_counting:CountingBasis", "--steps", "1", "--batch-size", "4",
                          "--sample-steps", "2", "--threads", "1", "--out", str(tmp_path / "runs"), "--name", "c"])
    assert gd_counting.BUILT == [(16, 16)] and len(schedules) == 1  # not once per check, trainer, figure, grid
    sample_main("--ckpt", str(out / "last.ckpt"), "--trust-code", "--steps", "2")
    assert gd_counting.BUILT == [(16, 16)] * 2


def test_naming_data_never_switches_the_protocol(tmp_path, recipes_importable):
    import lsun_blur
    config = lsun_blur.build_config(lsun_blur.parse_args(["--data", "photos", "--out", str(tmp_path)]))
    assert (config.train.lr, config.train.sampler, config.data.size, config.data.channels) == (1e-3, "unipc", 16, 3)
    assert config.name == "demo-photos" and config.model["model_channels"] == PRESETS["small"].model_channels
    with pytest.raises(ConfigError, match=r"--data: preset church-none trains on LSUN church: give its LMDB folder"):
        lsun_blur.main(["--preset", "church-none", "--lsun-root", str(tmp_path / "none"), "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())


def test_a_training_recipe_takes_the_sampler_and_refuses_options_it_does_not_take(tmp_path, recipes_importable):
    import lsun_blur
    argv = ["--steps", "1", "--batch-size", "4", "--sample-steps", "3", "--threads", "1", "--out", str(tmp_path)]
    with pytest.raises(ConfigError, match=r"--sampler-args: sampler 'unipc' takes no option \['eta'\]; its options: \['corrector'"):
        lsun_blur.main(argv + ["--sampler-args", '{"eta": 0.3}'])
    assert not any(tmp_path.iterdir())
    out = lsun_blur.main(argv + ["--sampler", "ddim", "--sampler-args", '{"eta": 0.3}', "--name", "d"])
    saved = json.loads((out / "config.json").read_text())["train"]
    assert (saved["sampler"], saved["sampler_options"]) == ("ddim", {"eta": 0.3})


def test_evaluate_writes_a_folders_report_to_out(tmp_path, recipes_importable):
    import evaluate
    from gendiff.figures import save_grid
    samples = tmp_path / "samples"
    for k in range(4):
        save_grid(torch.rand(1, 1, 16, 16) * 2 - 1, samples / f"{k:06d}.png")
    evaluate.main(["--samples", str(samples), "--ref", "digits", "--size", "16", "--channels", "1", "--ref-n", "8",
                   "--out", str(tmp_path / "report"), "--threads", "1", "--swd-min-size", "8"])
    assert (tmp_path / "report" / "metrics.json").is_file() and not (samples / "metrics.json").exists()


def test_a_metrics_file_that_does_not_parse_is_moved_aside_not_deleted(tmp_path):
    from gendiff.training.csvlog import CSVLog
    path = tmp_path / "metrics.csv"
    path.write_text("stp,loss\n1,0.5\n2,0.4\n")  # a damaged header: no row parses
    with pytest.warns(UserWarning, match="no row parses; the file was moved to"):
        CSVLog(path, start_step=2)
    (aside,) = tmp_path.glob("metrics.csv.damaged-*")
    assert aside.read_text() == "stp,loss\n1,0.5\n2,0.4\n"


def test_a_sampler_option_value_is_refused_before_training(tmp_path, recipes_importable):
    import lsun_blur
    with pytest.raises(ConfigError, match=r"eta must be a finite number"):
        lsun_blur.main(["--steps", "1", "--batch-size", "4", "--threads", "1", "--out", str(tmp_path),
                        "--sampler", "ddim", "--sample-steps", "2", "--sampler-args", '{"eta": "abc"}'])
    assert not any(tmp_path.iterdir())


def test_resume_with_another_learning_rate_is_refused(tmp_path):
    trained(tmp_path)
    config = RunConfig.from_dict(run_dict(tmp_path, steps=6))
    with pytest.raises(CheckpointError, match=r"different train.lr"):
        Trainer(replace(config, train=replace(config.train, lr=5e-4)), figures=False).resume()


def test_sample_defaults_to_the_runs_own_sampling_and_believes_only_its_own_manifest_names(
        tiny_ckpt, tmp_path, capsys, recipes_importable):
    out = sample_main("--ckpt", str(tiny_ckpt), "--out", str(tmp_path / "s"))
    assert "(dpm++2m, 2 network evaluations each)" in capsys.readouterr().out  # the run's sample_steps=2
    (tmp_path / "keep.txt").write_text("mine")
    (out / SAMPLES_MANIFEST).write_text(json.dumps(["../keep.txt", "000000.png"]))
    assert read_manifest(out) == {"000000.png"}
