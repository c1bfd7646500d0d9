"""Probes from the run-layer review (issue 19) that ended in a traceback or a silent acceptance:
each is now a clear error or the right behaviour. docs/reliability.md lists them."""
import collections
import os
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from PIL import Image

from gendiff import DCTBasis, Diffusion
from gendiff.data import build_dataset
from gendiff.data.folder import pil_to_tensor
from gendiff.models import PRESETS
from gendiff.parameterization import PARAMETERIZATIONS
from gendiff.schedules import VPBlurSchedule
from gendiff.training import DataConfig, FabricConfig, RunConfig, Trainer, TrainConfig
from gendiff.training.config import ConfigError


def tiny_diffusion():
    return Diffusion(DCTBasis((8, 8)), VPBlurSchedule("quartic", 0.14, N=50))


@pytest.mark.parametrize("kwargs,error,message", [
    ({"generator": 0}, TypeError, r"generator must be a torch.Generator or a non-empty list of them .*got int 0"),
    ({"timesteps": [20, float("nan"), 0]}, ValueError, r"timesteps must be integers, got \[20, nan, 0\]"),
    ({"timesteps": [20, "10", 0]}, TypeError, r"timesteps must be integers"),
    ({"clip_x0": 0.5}, TypeError, r"clip_x0 must be a range \(lo, hi\), e.g. \(-1.0, 1.0\), or None; got 0.5"),
    ({"shape": (2.7, 1, 8, 8)}, TypeError, r"shape must be integers \(B, C, H, W\), got \(2.7, 1, 8, 8\)"),
])
def test_sample_arguments_are_checked(kwargs, error, message):
    shape = kwargs.pop("shape", (2, 1, 8, 8))
    with pytest.raises(error, match=message):
        tiny_diffusion().sample(lambda x, i: torch.zeros_like(x), shape, progress=False, **kwargs)


def test_a_parameterization_must_be_one(recipes_importable, capsys):
    with pytest.raises(TypeError, match="parameterization must be a gendiff Parameterization .*got OrderedDict"):
        Diffusion(DCTBasis((8, 8)), VPBlurSchedule(), parameterization=collections.OrderedDict())
    with pytest.raises(TypeError, match="'collections:OrderedDict' is collections:OrderedDict, not a Parameterization"):
        PARAMETERIZATIONS.resolve("collections:OrderedDict")
    import lsun_blur
    with pytest.raises(SystemExit) as stop:  # refused as the flag is read; it used to train with ε
        lsun_blur.parse_args(["--parameterization", "collections:OrderedDict"])
    assert stop.value.code == 2 and "not a Parameterization" in capsys.readouterr().err


def tiny_config(tmp_path, **train):
    t = TrainConfig(steps=2, batch_size=4, lr=1e-3, ema_decay=0.9, log_every=1, ckpt_every=2, sample_every=0,
                    sample_n=2, sample_steps=2, **train)
    model = asdict(replace(PRESETS["tiny"], image_size=8, in_channels=1, out_channels=1))
    return RunConfig("run", DCTBasis((8, 8)).config(), VPBlurSchedule("quartic", 0.14, N=50).config(), model,
                     DataConfig("digits", 8, 1), t, FabricConfig("cpu", 1), str(tmp_path))


def test_an_empty_dataset_is_one_message(tmp_path):
    with pytest.raises(ConfigError, match=r"data.spec 'digits' holds no images"):
        Trainer(tiny_config(tmp_path), dataset=[]).setup()


def test_a_run_that_fails_in_its_first_step_leaves_no_run_behind(tmp_path, monkeypatch):
    tr = Trainer(tiny_config(tmp_path), figures=False)
    monkeypatch.setattr(tr, "_train_step", lambda x0: (_ for _ in ()).throw(MemoryError("out of memory")))
    with pytest.raises(MemoryError):
        tr.fit()
    assert not (tmp_path / "run" / "config.json").exists() and not (tmp_path / "run" / "last.ckpt").exists()
    Trainer(tiny_config(tmp_path), figures=False).fit()  # the corrected rerun needs no --overwrite
    assert (tmp_path / "run" / "config.json").exists()


def test_recipe_sizes_that_do_not_fit_are_one_line(recipes_importable, tmp_path, capsys):
    import heat_dissipation
    import table1_small
    with pytest.raises(ConfigError, match=r"--size, --model: image_size=7 must be divisible"):
        heat_dissipation.main(["--size", "7", "--out", str(tmp_path), "--threads", "1"])
    assert not any(tmp_path.iterdir())
    with pytest.raises(SystemExit) as stop:  # used to run at 16 silently
        table1_small.parse_args(["--size", "7"])
    assert stop.value.code == 2 and "--size: the table fixes each dataset's size" in capsys.readouterr().err


def test_a_folder_named_like_an_embedded_set_is_not_silently_ignored(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "digits").mkdir()
    with pytest.raises(ValueError, match=r"'digits' is both an embedded dataset and a path here; pass ./digits"):
        build_dataset("digits", "train", 8, (-1.0, 1.0), 1)
    os.rmdir(tmp_path / "digits")
    assert len(build_dataset("digits", "train", 8, (-1.0, 1.0), 1)) > 0


def test_float_and_32_bit_images_keep_their_values():
    """A float TIFF in [0, 1] used to load all black, a 32-bit one all white."""
    ramp = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    x = pil_to_tensor(Image.fromarray(ramp, "F"), 8, 1, (0.0, 1.0))
    assert torch.allclose(x[0], torch.from_numpy(ramp), atol=1 / 255)
    x16 = pil_to_tensor(Image.fromarray((ramp * 65535).astype(np.int32), "I"), 8, 1, (0.0, 1.0))
    x8 = pil_to_tensor(Image.fromarray((ramp * 255).astype(np.int32), "I"), 8, 1, (0.0, 1.0))
    assert torch.allclose(x16[0], torch.from_numpy(ramp), atol=1 / 255) and torch.allclose(x8, x16, atol=1 / 255)
    with pytest.raises(ValueError, match=r"32-bit float image must hold values in \[0, 1\], got \[0, 2\]"):
        pil_to_tensor(Image.fromarray(ramp * 2, "F"), 8, 1, (0.0, 1.0))
    with pytest.raises(ValueError, match="32-bit integer image must hold 8- or 16-bit values"):
        pil_to_tensor(Image.fromarray((ramp * 1e6).astype(np.int32), "I"), 8, 1, (0.0, 1.0))


def test_a_long_run_name_and_a_huge_batch_are_refused_as_flags(recipes_importable, tmp_path, capsys):
    """A 300-character --name was a traceback from the file system; a huge --batch-size failed
    after config.json was written. Both are now refused before anything is written."""
    import lsun_blur
    with pytest.raises(SystemExit) as stop:
        lsun_blur.parse_args(["--name", "a" * 300])
    assert stop.value.code == 2 and "run name must be at most 200 characters, got 300" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"batch_size: Input should be less than or equal to 65536"):
        lsun_blur.main(["--batch-size", "100000000", "--out", str(tmp_path), "--threads", "1"])
    assert not any(tmp_path.iterdir())
