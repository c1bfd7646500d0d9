"""Custom components from the command line to the checkpoint and back (issue 13).

A temporary module defines a basis and a blur speed; the CLI trains with them by import path,
and sample.py and evaluate.py rebuild them from the checkpoint in fresh processes.
"""
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from gendiff.training import load_checkpoint, sampling_steps

ROOT = Path(__file__).resolve().parents[1]

PLUGIN_BASES = '''
import numpy as np
import torch
from gendiff import OrthoBasis


class RandomBasis(OrthoBasis):
    """A seeded random orthonormal U with rates rising from 0 to 4."""

    def __init__(self, shape=(8, 8), seed=0):
        super().__init__(shape)
        self.seed = int(seed)
        n = self.shape[0] * self.shape[1]
        q, _ = np.linalg.qr(np.random.default_rng(self.seed).standard_normal((n, n)))
        self.U = torch.from_numpy(q)

    def constants(self):
        return (self.U,)

    def _forward(self, x, U):
        return (x.flatten(-2) @ U).reshape(x.shape)

    def _inverse(self, c, U):
        return (c.flatten(-2) @ U.T).reshape(c.shape)

    def _rates(self):
        n = self.shape[0] * self.shape[1]
        return torch.linspace(0, 4, n, dtype=torch.float64).reshape(1, *self.shape)

    def config_args(self):
        return {"shape": list(self.shape), "seed": self.seed}
'''

PLUGIN_NETS = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    """ε̂ from x and i: two convolutions and a learned per-step scale."""

    def __init__(self, channels=1, width=8, N=1000):
        super().__init__()
        self.channels, self.width, self.N = channels, width, N
        self.body = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.SiLU(),
                                  nn.Conv2d(width, channels, 3, padding=1))
        self.scale = nn.Embedding(N + 1, 1)

    def forward(self, x, i):
        return self.body(x) * (1 + self.scale(i)[:, :, None, None])

    def config(self):
        return {"channels": self.channels, "width": self.width, "N": self.N}
'''

PLUGIN_SPEEDS = '''
import numpy as np
from gendiff.schedules.speed import SPEEDS


@SPEEDS.register("sqrt-test")
def sqrt_speed(i, N, f_N, f_1):
    return f_1 + (f_N - f_1) * np.sqrt(i / N)
'''

TRAIN = ["--basis", "mylab_test.bases:RandomBasis", "--basis-args", '{"seed": 3}',
         "--speed", "mylab_test.speeds:sqrt_speed", "--speed-args", '{"f_N": 0.1}', "--size", "8",
         "--channels", "1", "--model", "tiny", "--steps", "4", "--batch-size", "8", "--sample-steps", "3",
         "--threads", "1", "--no-figures"]


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plugins")
    pkg = folder / "mylab_test"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "bases.py").write_text(textwrap.dedent(PLUGIN_BASES))
    (pkg / "speeds.py").write_text(textwrap.dedent(PLUGIN_SPEEDS))
    (pkg / "nets.py").write_text(textwrap.dedent(PLUGIN_NETS))
    return folder


def run_py(*args, pythonpath=None, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(pythonpath or ""), str(ROOT)) if p)}
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def trained(plugin, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    res = run_py(ROOT / "recipes/lsun_blur.py", *TRAIN, "--out", out, "--name", "plug", pythonpath=plugin)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "torch threads: 1" in res.stdout
    assert f"sample.py --ckpt {out / 'plug' / 'last.ckpt'} --n 64 --trust-code" in res.stdout  # the hint works
    return out / "plug"


def test_the_checkpoint_records_import_paths_and_arguments(trained):
    config = load_checkpoint(trained / "last.ckpt")["config"]
    assert config["basis"] == {"name": "mylab_test.bases:RandomBasis", "shape": [8, 8], "seed": 3}
    assert config["schedule"]["f_type"] == "mylab_test.speeds:sqrt_speed" and config["schedule"]["f_N"] == 0.1
    assert config["data"]["size"] == 8 and config["model"]["image_size"] == 8 and config["model"]["in_channels"] == 1
    assert json.loads((trained / "config.json").read_text()) == json.loads(json.dumps(config))
    assert not (trained / "forward.png").exists() and not (trained / "samples.png").exists()  # --no-figures
    header = (trained / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"loss", "lr", "grad_norm", "ema_decay", "images_per_s"} <= set(header)
    assert list(trained.glob("logs/version_*/metrics.csv")), "Fabric's CSVLogger wrote nothing"


def test_sample_and_evaluate_rebuild_the_custom_components_in_fresh_processes(trained, plugin):
    ckpt = trained / "last.ckpt"
    res = run_py(ROOT / "recipes/sample.py", "--ckpt", ckpt, "--n", "3", "--steps", "3", "--threads", "1",
                 "--device", "cpu", pythonpath=plugin)
    assert res.returncode == 1 and "names code to import" in res.stderr and "--trust-code" in res.stderr
    res = run_py(ROOT / "recipes/sample.py", "--ckpt", ckpt, "--n", "3", "--steps", "3", "--threads", "1",
                 "--device", "cpu", "--trust-code", pythonpath=plugin)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(list((trained / "samples-unipc-3").glob("0*.png"))) == 3
    again = run_py(ROOT / "recipes/sample.py", "--ckpt", ckpt, "--n", "2", "--steps", "3", "--threads", "1",
                   "--device", "cpu", "--trust-code", pythonpath=plugin)
    assert again.returncode == 1 and "already holds samples; pass --overwrite" in again.stderr
    assert len(list((trained / "samples-unipc-3").glob("0*.png"))) == 3  # the first sampling, untouched
    res = run_py(ROOT / "recipes/evaluate.py", "--ckpt", ckpt, "--n", "16", "--seeds", "0", "--steps", "3",
                 "--threads", "1", "--trust-code", pythonpath=plugin)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((trained / "eval-unipc-3" / "metrics.json").read_text())
    assert metrics["steps"] == 3 and all(torch.isfinite(torch.tensor(v["mean"])) for v in metrics["summary"].values())


def test_a_missing_module_is_named(trained, tmp_path):
    res = run_py(ROOT / "recipes/sample.py", "--ckpt", trained / "last.ckpt", "--n", "1", "--threads", "1",
                 "--device", "cpu", "--trust-code", cwd=tmp_path)  # no PYTHONPATH to the plug-ins
    assert res.returncode == 1
    assert "cannot import module 'mylab_test" in res.stderr and "Traceback" not in res.stderr


@pytest.fixture
def recipes(monkeypatch, plugin):
    monkeypatch.syspath_prepend(str(ROOT / "recipes"))
    monkeypatch.syspath_prepend(str(plugin))
    import lsun_blur
    return lsun_blur


def test_flags_become_the_component_configs(recipes, tmp_path):
    import cli
    args = recipes.parse_args([*TRAIN, "--out", str(tmp_path), "--parameterization-args", '{"weighting": "score"}'])
    config = cli.configure(recipes.build_config(args), args)
    assert config.basis == {"name": "mylab_test.bases:RandomBasis", "shape": [8, 8], "seed": 3}
    assert config.schedule["f_type"] == "mylab_test.speeds:sqrt_speed" and config.schedule["N"] == 1000
    assert config.parameterization == {"name": "eps", "weighting": "score"}
    assert (config.data.size, config.data.channels, config.model["image_size"]) == (8, 1, 8)
    args = recipes.parse_args(["--schedule", "heat", "--schedule-args", '{"K": 20}', "--basis", "dct", "--sample-steps", "10",
                               "--size", "8", "--out", str(tmp_path)])
    config = cli.configure(recipes.build_config(args), args)
    assert config.schedule == {"name": "heat", "K": 20} and config.basis == {"name": "dct", "shape": [8, 8]}


@pytest.mark.parametrize("argv, message", [
    (["--basis-args", "{not json"], "JSON object"),
    (["--basis-args", "[1, 2]"], "JSON object"),
    (["--basis", "no-such-basis"], "valid names"),
    (["--model", "no-such"], "unknown UNet preset"),
    (["--basis", "nolab_missing.bases:X"], "cannot import module 'nolab_missing.bases'"),
])
def test_bad_component_flags_stop_argparse(recipes, capsys, argv, message):
    with pytest.raises(SystemExit):
        recipes.parse_args(argv)
    assert message in capsys.readouterr().err


def test_speed_on_a_schedule_without_one_and_unknown_speed_args(recipes, tmp_path):
    import cli
    args = recipes.parse_args(["--schedule", "heat", "--speed", "quartic", "--out", str(tmp_path)])
    with pytest.raises(cli.ConfigError, match="blur speed"):
        cli.configure(recipes.build_config(args), args)
    args = recipes.parse_args(["--speed-args", '{"fN": 1}', "--out", str(tmp_path)])
    with pytest.raises(cli.ConfigError, match="f_N"):
        cli.configure(recipes.build_config(args), args)


def test_config_file_reruns_a_run_and_explicit_flags_override_it(recipes, trained, tmp_path, capsys):
    import cli
    argv = ["--config", str(trained / "config.json"), "--name", "again", "--steps", "2", "--out", str(tmp_path)]
    args = recipes.parse_args(argv)  # the file names import paths: refused until trusted
    with pytest.raises(cli.ConfigError, match=r"names code to import: \['mylab_test.bases:RandomBasis', "
                                                 r"'mylab_test.speeds:sqrt_speed'\]"):
        cli.configure(recipes.build_config(args), args)
    args = recipes.parse_args(argv + ["--trust-code"])
    config = cli.configure(recipes.build_config(args), args)
    saved = json.loads((trained / "config.json").read_text())
    now = json.loads(json.dumps(config.to_dict()))
    assert now["basis"] == saved["basis"] and now["schedule"] == saved["schedule"] and now["model"] == saved["model"]
    assert (config.name, config.train.steps, config.out_dir) == ("again", 2, str(tmp_path))
    assert config.train.batch_size == saved["train"]["batch_size"]  # not given: the file's
    with pytest.raises(SystemExit) as stop:  # refused as the flags are read, before the recipe uses them
        recipes.parse_args(["--config", str(trained / "config.json"), "--preset", "church-none"])
    assert stop.value.code == 2 and "--preset cannot be combined with --config" in capsys.readouterr().err
    args = recipes.parse_args(["--config", str(trained / "config.json"), "--trust-code"])
    args.recipe_flags = ["preset"]  # the library-side check, for args built without the recipe's parser
    with pytest.raises(cli.ConfigError, match="--preset cannot be combined with --config"):
        cli.configure(recipes.build_config(args), args)


def test_a_custom_network_by_import_path_trains_and_loads(recipes, tmp_path):
    from gendiff.training import load_run
    out = recipes.main(["--model", "mylab_test.nets:TinyNet", "--model-args", '{"width": 4}', "--size", "8",
                        "--steps", "2", "--batch-size", "4", "--sample-steps", "2", "--threads", "1",
                        "--no-figures", "--out", str(tmp_path), "--name", "net"])
    from gendiff.training import CheckpointError
    with pytest.raises(CheckpointError, match=r"names code to import: \['mylab_test.nets:TinyNet'\]"):
        load_run(out / "last.ckpt")
    config, diffusion, model = load_run(out / "last.ckpt", trust_code=True)
    assert config.model == {"name": "mylab_test.nets:TinyNet", "width": 4}
    assert type(model).__name__ == "TinyNet" and model.width == 4
    x = torch.randn(2, 1, 8, 8)
    assert model(x, torch.tensor([1, 5])).shape == x.shape


def test_steps_are_decided_in_one_place():
    assert sampling_steps("ihdm", None, 200) is None  # all N steps
    with pytest.raises(ValueError, match="always takes all 200 steps from step 200"):
        sampling_steps("ihdm", 10, 200, requested=True)
    assert sampling_steps("ihdm", 10, 200) is None  # a training default is not a request
    assert sampling_steps("dpm++2m", None, 200) == 50 and sampling_steps("ddim", 7, 200) == 7
    with pytest.raises(ValueError, match="1..N=20"):
        sampling_steps("ddim", 50, 20)


@pytest.mark.parametrize("recipe", ["lsun_blur", "heat_dissipation", "blurring_diffusion", "sample", "evaluate"])
def test_help_shows_the_defaults(recipes, capsys, recipe):
    import importlib
    with pytest.raises(SystemExit):
        importlib.import_module(recipe).parse_args(["--help"])
    text = capsys.readouterr().out
    assert "(default:" in text, recipe
    if recipe not in ("sample", "evaluate"):
        assert "--basis" in text and "--threads" in text and "--no-figures" in text
        entries = re.split(r"\n  (?=-)", text)  # one entry per option, its wrapped help included
        for flag in ("--steps", "--batch-size", "--lr", "--ema-decay", "--ckpt-every", "--name", "--size",
                     "--channels", "--model"):
            entry = next(e for e in entries if e.startswith(flag + " "))
            assert "default:" in " ".join(entry.split()), (recipe, flag, entry)


def test_evaluate_reports_why_bits_per_dim_is_missing_for_heat_dissipation(recipes, tmp_path, capsys):
    import evaluate
    import heat_dissipation
    run = heat_dissipation.main(["--K", "10", "--size", "8", "--model", "tiny", "--steps", "1", "--batch-size", "2",
                                 "--threads", "1", "--no-figures", "--out", str(tmp_path), "--name", "ihdm"])
    result = evaluate.main(["--ckpt", str(run / "last.ckpt"), "--n", "4", "--seeds", "0", "--threads", "1"])
    assert "nll" not in result and "Gaussian-prior" in result["nll_unavailable"]
    assert "bits/dim: not available (nll needs a Gaussian-prior" in capsys.readouterr().out
    assert any(k.startswith("swd_") for k in result["summary"])  # the other metrics were still computed


def test_evaluate_a_run_trained_on_an_image_folder(recipes, tmp_path, capsys):
    """A folder has no held-out split: its training images are the reference (said), at most --ref-n."""
    import evaluate
    from PIL import Image
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for k in range(6):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(images / f"{k}.png")
    run = recipes.main(["--data", str(images), "--fast", "--size", "8", "--model", "tiny", "--steps", "1",
                        "--batch-size", "2", "--sample-steps", "2", "--threads", "1", "--no-figures",
                        "--out", str(tmp_path), "--name", "f"])
    result = evaluate.main(["--ckpt", str(run / "last.ckpt"), "--seeds", "0", "--steps", "2", "--ref-n", "4",
                            "--nll-steps", "2", "--threads", "1"])
    out = capsys.readouterr().out
    assert f"the run's data {images} has no held-out split" in out
    assert result["n"] == 4 and set(result["nll"]) == {"posterior", "reverse"}
    assert all(len(b["bpd_per_image"]) == 4 for b in result["nll"].values())  # 4 of the 6 images, spread
    assert "bits/dim, posterior mean (reference images, 2 steps per image)" in out
    assert "bits/dim, Eq. 19–20 mean (reference images, 2 steps per image)" in out
    with pytest.raises(SystemExit, match="error: --ref: dataset '/no/such' is neither"):
        evaluate.main(["--ckpt", str(run / "last.ckpt"), "--ref", "/no/such", "--threads", "1"])
    with pytest.raises(SystemExit, match="error: --samples: no folder /no/such"):
        evaluate.main(["--samples", "/no/such", "--ref", "digits", "--size", "8", "--threads", "1"])


def test_sample_refuses_steps_for_ihdm_and_names_the_folder_by_what_ran(recipes, tmp_path, capsys):
    import heat_dissipation
    import sample
    run = heat_dissipation.main(["--K", "10", "--size", "8", "--model", "tiny", "--steps", "1", "--batch-size", "2",
                                 "--threads", "1", "--no-figures", "--out", str(tmp_path), "--name", "ihdm"])
    ckpt = str(run / "last.ckpt")
    # the IHDM recipe trains levels 1..K−1 (its reference code), so sampling walks 9 steps from 9
    with pytest.raises(SystemExit, match="sampler 'ihdm' always takes all 9 steps from step 9"):
        sample.main(["--ckpt", ckpt, "--steps", "3", "--n", "1", "--device", "cpu", "--threads", "1"])
    assert not list(run.glob("samples-*"))
    out = sample.main(["--ckpt", ckpt, "--n", "1", "--device", "cpu", "--threads", "1"])
    assert out.name == "samples-ihdm-9" and (out / "000000.png").is_file()


def test_a_checkpoint_naming_code_imports_nothing_unless_trusted(trained, tmp_path, monkeypatch):
    """A checkpoint whose config names os:system (hash recomputed, as anyone editing it can) is
    refused before any import or call; the marker file the command would create never exists."""
    from gendiff.training import load_run
    from gendiff.training.checkpoint import content_hash, load_checkpoint
    state = load_checkpoint(trained / "last.ckpt")
    marker = tmp_path / "ran"
    state["config"]["parameterization"] = {"name": "os:system", "command": f"touch {marker}"}
    state.pop("sha256")
    state["sha256"] = content_hash({k: v for k, v in state.items() if k != "sha256"})
    evil = tmp_path / "evil.ckpt"
    torch.save(state, evil)
    from gendiff.training import CheckpointError
    with pytest.raises(CheckpointError, match=r"names code to import: \[.*'os:system'"):
        load_run(evil)
    assert not marker.exists()
