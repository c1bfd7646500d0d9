"""Data of any event shape around the engine (issue 22, items 4–6): the UNet on 1, 2 and 3
spatial axes, array and plug-in data, the embedded 1-D signals, runs that record their shape
and sample it in a fresh process, figures and metrics by shape, and the trust check on data; from
the command line, a 24×16, a 1-D and a 3-D run, a user's joint colour basis by import path, and the
data-driven schedule measured once and sampled without its data."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from gendiff.bases import DCTBasis, Identity1D, Identity3D, IdentityBasis
from gendiff.data import ArrayDataset, SignalsDataset, build_dataset
from gendiff.diffusion import Diffusion
from gendiff.evaluation import fid_kid, held_out, sample_metrics
from gendiff.files import save_array
from gendiff.figures import grid_image, middle_slices, save_grid
from gendiff.metrics import signal_spectrum, signal_spectrum_error, spectrum_error, swd
from gendiff.models import PRESETS, UNet, UNetConfig, build_model
from gendiff.schedules import VPBlurSchedule
from gendiff.training import DataConfig, FabricConfig, RunConfig, TrainConfig, Trainer
from gendiff.training.config import ConfigError
from gendiff.training.loading import imported_code
from gendiff.training.run import build_run, event_shape, sample_run
from gendiff.training.trainer import check_same_run, data_config
from gendiff.training.trust import UntrustedCodeError, code_names

SHAPES = {"small1d": (64,), "small": (24, 16), "small3d": (8, 8, 8)}


# ---- 4. networks ------------------------------------------------------------------------------

@pytest.mark.parametrize("preset,sides", [("small1d", (64,)), ("small1d", (40,)), ("small", (24, 16)),
                                          ("small3d", (8, 8, 8)), ("small3d", (4, 12, 8))])
def test_the_unet_keeps_the_shape_on_every_number_of_axes(preset, sides):
    torch.manual_seed(0)
    model = build_model(preset)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(2, 1, *sides)
    i = torch.tensor([3, 700])
    for _ in range(2):  # the zero-initialised output layer starts at 0; one step makes it answer
        opt.zero_grad()
        model(x, i).sub(x).square().mean().backward()
        opt.step()
    out = model(x, i)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.abs().sum() > 0 and not torch.equal(out[0], out[1])  # it depends on the input and step


def test_the_unet_refuses_data_of_another_number_of_axes():
    model = build_model("small1d")
    with pytest.raises(ValueError, match=r"\(B, 1, L\) with in_channels=1 and dims=1"):
        model(torch.zeros(1, 1, 8, 8), torch.tensor([1]))
    with pytest.raises(ValueError, match="divisible by"):
        model(torch.zeros(1, 1, 66), torch.tensor([1]))


def test_unet_sides_are_given_per_axis_and_checked():
    cfg = UNetConfig(image_size=[24, 16], in_channels=1, model_channels=8, num_res_blocks=1, channel_mult=(1, 2),
                     attention_ds=(), num_groups=4)
    assert cfg.image_size == (24, 16) and cfg.sides == (24, 16)
    assert UNetConfig(**asdict(cfg)) == cfg  # the recorded form rebuilds it
    assert UNetConfig(dims=3, image_size=8, model_channels=8, num_groups=4, channel_mult=(1, 2),
                      attention_ds=()).sides == (8, 8, 8)
    with pytest.raises(ValueError, match="one positive side or 2"):
        UNetConfig(image_size=[24, 16, 8])
    with pytest.raises(ValueError, match="dims must be 1, 2 or 3"):
        UNetConfig(dims=4)
    with pytest.raises(ValueError, match="divisible"):
        UNetConfig(image_size=[24, 18], channel_mult=(1, 2, 2))
    # the paper's preset and the 2-D ones are what they were
    with torch.device("meta"):
        assert sum(p.numel() for p in UNet(PRESETS["paper64"]).parameters()) == 121_060_483
    assert PRESETS["small"].dims == 2 and PRESETS["small"].image_size == 16


@pytest.mark.parametrize("edit,message", [
    (lambda m: m.update(image_size=[24, 10**6]), r"image_size must be an integer in 1..4096"),
    (lambda m: m.update(image_size=[8, 8, 8, 8, 8]), r"image_size must be an integer in 1..4096"),
    (lambda m: m.update(dims=7), r"dims must be an integer in 1..3"),
])
def test_the_config_schema_bounds_the_new_size_fields(tmp_path, edit, message):
    d = image_config(tmp_path, "x.npy").to_dict()
    edit(d["model"])
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict(d)


def test_data_shape_is_checked_and_gives_the_event_shape():
    assert event_shape(DataConfig("digits", 16, 1)) == (1, 16, 16)
    assert event_shape(DataConfig("signals", channels=1, shape=(64,))) == (1, 64)
    assert event_shape(DataConfig("x.npy", channels=2, shape=[8, 8, 8])) == (2, 8, 8, 8)
    with pytest.raises(ConfigError, match="data.shape|shape"):
        DataConfig("x.npy", shape=(8, 8, 8, 8))
    with pytest.raises(ConfigError, match="more than"):
        DataConfig("x.npy", channels=64, shape=(4096, 4096, 4096))
    with pytest.raises(ConfigError, match="args"):
        DataConfig("x.npy", args={"key": float("nan")})


# ---- 5. data --------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(5, 1, 64), (5, 3, 24, 16), (5, 2, 8, 8, 8)])
def test_npy_arrays_of_any_shape_are_data(tmp_path, shape):
    rng = np.random.default_rng(0)
    arr = rng.uniform(-1, 1, shape).astype(np.float32)
    np.save(tmp_path / "a.npy", arr)
    ds = build_dataset(tmp_path / "a.npy")
    assert len(ds) == 5 and tuple(ds[3].shape) == shape[1:]
    assert torch.equal(ds[3], torch.from_numpy(arr[3]))


def test_npz_arrays_and_their_rules(tmp_path):
    pixels = np.arange(2 * 1 * 4 * 6, dtype=np.uint8).reshape(2, 1, 4, 6) * 5
    np.savez(tmp_path / "two.npz", train=pixels, other=pixels[:1])
    with pytest.raises(ValueError, match=r"holds the arrays \['train', 'other'\]; name one"):
        build_dataset(tmp_path / "two.npz")
    ds = build_dataset(tmp_path / "two.npz", value_range=(0.0, 1.0), args={"key": "train"})
    assert torch.allclose(ds[1], torch.from_numpy(pixels[1] / 255.0).float())  # uint8: fractions of 255
    assert ds.args == {"key": "train"} and ds.spec.endswith("two.npz")
    np.save(tmp_path / "loud.npy", np.full((2, 1, 8), 3.0))
    with pytest.raises(ValueError, match=r"outside the data's value_range"):
        build_dataset(tmp_path / "loud.npy")
    np.save(tmp_path / "signed.npy", np.zeros((2, 1, 8), np.int16))
    with pytest.raises(ValueError, match="int16"):
        build_dataset(tmp_path / "signed.npy")
    np.save(tmp_path / "flat.npy", np.zeros((2, 8), np.float32))
    with pytest.raises(ValueError, match=r"\(B, C, \*sides\)"):
        build_dataset(tmp_path / "flat.npy")
    with pytest.raises(ValueError, match="has no splits"):
        build_dataset(tmp_path / "flat.npy", split="test")


def test_the_embedded_signals_are_deterministic_smooth_and_split():
    a, b = SignalsDataset("train", 64), SignalsDataset("train", 64)
    test = SignalsDataset("test", 64)
    assert torch.equal(a.signals, b.signals) and a.signals.shape == (2048, 1, 64) and len(test) == 512
    assert not torch.equal(a.signals[:512], test.signals)  # the splits are different draws
    assert a.signals.min() >= -1 and a.signals.max() <= 1
    freqs, power = signal_spectrum(a.signals)
    # whole cycles 1..8 only: everything above 8/64 cycles per sample is float round-off
    assert power[freqs > 8 / 64].max() < 1e-12 * power.max()
    assert power[0] > power[7] > 0  # amplitudes ∝ 1/k
    assert SignalsDataset("train", 32, n=7, seed=3).signals.shape == (7, 1, 32)
    assert torch.equal(build_dataset("signals", size=(64,))[5], a[5])


def test_image_folders_take_height_and_width(tmp_path):
    from PIL import Image
    Image.fromarray(np.full((30, 20, 3), 200, np.uint8)).save(tmp_path / "a.png")
    ds = build_dataset(tmp_path, size=(24, 16), channels=3)
    assert tuple(ds[0].shape) == (3, 24, 16) and ds.spec == str(tmp_path)
    assert tuple(build_dataset(tmp_path, size=8, channels=1)[0].shape) == (1, 8, 8)


# ---- the trust check on data named by import path ---------------------------------------------

MARKER = '''
import pathlib, torch
pathlib.Path(__file__).with_name("imported").write_text("yes")


class Waves(torch.utils.data.Dataset):
    def __init__(self, n=4, length=16):
        self.x = torch.linspace(-1, 1, length).repeat(n, 1, 1)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, k):
        return self.x[k]

    def config(self):
        return {"n": len(self.x), "length": self.x.shape[-1]}
'''


@pytest.fixture
def marker(tmp_path, monkeypatch):
    """A dataset plug-in whose module leaves a file when it is imported."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "marker_data.py").write_text(MARKER)
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    sys.modules.pop("marker_data", None)


def test_a_dataset_named_by_import_path_is_code_and_needs_trust(tmp_path, marker):
    config = replace(image_config(tmp_path, "x.npy"), data=DataConfig("marker_data:Waves", channels=1, shape=(16,),
                                                                       args={"n": 3}))
    assert code_names(config.to_dict()) == ["marker_data:Waves"] == imported_code(config)  # load_run's check too
    arg_only = replace(config, data=DataConfig("signals", channels=1, shape=(16,), args={"f": "evil.mod:run"}))
    assert code_names(arg_only.to_dict()) == ["evil.mod:run"]  # a data argument with ':' counts too
    with pytest.raises(UntrustedCodeError, match="marker_data:Waves"):
        build_run(config)
    assert "marker_data" not in sys.modules and not (marker / "imported").exists()
    ds = build_dataset("marker_data:Waves", args={"n": 3})  # trusted: imported and called with its args
    assert (marker / "imported").exists() and len(ds) == 3 and tuple(ds[0].shape) == (1, 16)
    with pytest.raises(ValueError, match="takes no split"):
        build_dataset("marker_data:Waves", split="test")


def test_a_trainer_records_the_dataset_it_trained_on(tmp_path, marker):
    np.save(tmp_path / "img.npy", np.zeros((4, 1, 24, 16), np.float32))
    rec = data_config(ArrayDataset(tmp_path / "img.npy"))
    assert (rec.spec, rec.shape, rec.channels) == (str(tmp_path / "img.npy"), (24, 16), 1)
    assert data_config(SignalsDataset("train", 32, n=4)).spec == "signals"
    from marker_data import Waves
    rec = data_config(Waves(n=2, length=8))
    assert (rec.spec, rec.args, rec.shape) == ("marker_data:Waves", {"n": 2, "length": 8}, (8,))

    class Local(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, k):
            return torch.zeros(1, 16, 16)
    rec = data_config(Local())
    assert "unrecorded" in rec.spec and ":" not in rec.spec and rec.size == 16 and rec.shape is None
    trainer = Trainer(diffusion=Diffusion(IdentityBasis((24, 16)), VPBlurSchedule("quartic", 0.0, N=20)),
                      model=build_model("small", image_size=(24, 16)), dataset=ArrayDataset(tmp_path / "img.npy"),
                      out_dir=str(tmp_path))
    assert trainer.config.data.spec == str(tmp_path / "img.npy") and trainer.config.data.shape == (24, 16)


def test_a_checkpoint_from_before_the_shape_fields_is_the_same_run(tmp_path):
    ours = image_config(tmp_path, "x.npy").to_dict()
    saved = json.loads(json.dumps(ours))
    ours["data"]["shape"] = None  # a square run of before: data.size only
    del saved["data"]["shape"], saved["data"]["args"], saved["model"]["dims"]
    check_same_run(tmp_path / "last.ckpt", saved, ours)  # no complaint: those are the defaults
    ours["data"]["args"] = {"key": "x"}
    with pytest.raises(Exception, match="data.args"):
        check_same_run(tmp_path / "last.ckpt", saved, ours)


# ---- 6. everything after training ---------------------------------------------------------------

def image_config(tmp_path, data: str, sides=(24, 16), basis=None, preset="small") -> RunConfig:
    t = TrainConfig(steps=3, batch_size=4, lr=1e-3, ema_decay=0.9, log_every=1, ckpt_every=3, sample_every=0,
                    sample_n=2, sample_steps=3, sampler="ddim")
    model = asdict(replace(PRESETS[preset], image_size=list(sides), in_channels=1, out_channels=1))
    basis = basis or DCTBasis(sides).config()
    return RunConfig("run", basis, VPBlurSchedule("quartic", 0.14, N=1000).config(), model,
                     DataConfig(str(tmp_path / data), channels=1, shape=tuple(sides)), t, FabricConfig("cpu", 1),
                     str(tmp_path))


RELOAD = """
import sys, json, torch
torch.set_num_threads(1)
from gendiff.training import open_run
from gendiff.training.run import sample_run
from gendiff.likelihood import bounds
from gendiff.evaluation import held_out
run = open_run(sys.argv[1])
x = sample_run(run, 3, generator=torch.Generator().manual_seed(0))
d = run.config.data
ref = held_out(d.spec, d.sides, d.value_range, d.channels, 4, d.args)
b = bounds(run.diffusion, run.model, ref, steps=2, generator=torch.Generator().manual_seed(0), progress=False)
print(json.dumps({"shape": list(x.shape), "event": list(run.event_shape), "finite": bool(torch.isfinite(x).all()),
                  "bpd": b["posterior"].bpd}))
"""


def reload_in_fresh_process(ckpt) -> dict:
    out = subprocess.run([sys.executable, "-c", RELOAD, str(ckpt)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_24x16_image_run_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "img.npy", rng.uniform(-1, 1, (16, 1, 24, 16)).astype(np.float32))
    trainer = Trainer(image_config(tmp_path, "img.npy"), figures=True)
    ckpt = trainer.fit()
    assert trainer.config.data.shape == (24, 16) and list(trainer.config.model["image_size"]) == [24, 16]
    assert (trainer.run_dir / "forward.png").is_file()
    grid = trainer.sample_grid(2)
    assert grid.is_file()
    got = reload_in_fresh_process(ckpt)
    assert got["shape"] == [3, 1, 24, 16] and got["event"] == [1, 24, 16] and got["finite"]
    assert math.isfinite(got["bpd"]) and got["bpd"] > 0


def test_a_1d_signal_run_end_to_end(tmp_path):
    config = image_config(tmp_path, "unused", sides=(64,), basis=Identity1D((64,)).config(), preset="small1d")
    config = replace(config, data=DataConfig("signals", channels=1, shape=(64,), args={"n": 64}))
    trainer = Trainer(config, figures=True)
    ckpt = trainer.fit()
    assert trainer.sample_grid(4).is_file()
    got = reload_in_fresh_process(ckpt)
    assert got["shape"] == [3, 1, 64] and got["event"] == [1, 64] and got["finite"] and got["bpd"] > 0


def test_a_3d_volume_run_samples_and_draws_its_shape(tmp_path):
    np.save(tmp_path / "vol.npy", np.random.default_rng(0).uniform(-1, 1, (8, 1, 8, 8, 8)).astype(np.float32))
    config = image_config(tmp_path, "vol.npy", sides=(8, 8, 8), basis=Identity3D((8, 8, 8)).config(), preset="small3d")
    trainer = Trainer(config, figures=True)
    trainer.fit()
    assert trainer.config.model["dims"] == 3 and (trainer.run_dir / "forward.png").is_file()
    assert trainer.sample_grid(2).is_file()
    x = sample_run(trainer.run, 2, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 8, 8, 8) and trainer.run.event_shape == (1, 8, 8, 8)


def test_figures_take_every_event_shape(tmp_path):
    assert grid_image(torch.zeros(4, 1, 24, 16)).shape == (3, 2 * 25 + 1, 2 * 17 + 1)
    lines = grid_image(torch.sin(torch.linspace(0, 6, 64)).repeat(6, 2, 1), nrow=3)
    assert lines.shape[0] == 3 and lines.min() < 0.5 < lines.max()  # lines drawn on white
    vol = torch.zeros(2, 1, 4, 6, 8)
    vol[:, :, 2] = 1.0   # the middle D plane
    slices = middle_slices(vol, pad_value=-1.0)  # panels of 8×8: the D, H and W planes through the centre
    assert slices.shape == (2, 1, 8, 24)
    d_plane, h_plane, w_plane = slices[..., :8], slices[..., 8:16], slices[..., 16:]
    assert torch.all(d_plane[..., :6, :] == 1) and torch.all(d_plane[..., 6:, :] == -1)  # the lit plane, padded
    row2 = torch.zeros(4, 8)
    row2[2] = 1
    assert torch.equal(h_plane[0, 0, :4, :], row2) and torch.equal(w_plane[0, 0, :4, :6], row2[:, :6])
    assert torch.all(w_plane[..., :, 6:] == -1)
    for x, name in ((torch.zeros(4, 1, 64), "s.png"), (torch.zeros(4, 1, 8, 8, 8), "v.png")):
        assert save_grid(x, tmp_path / name).stat().st_size > 0
    with pytest.raises(ValueError, match="signals"):
        grid_image(torch.zeros(2, 2))


def test_image_metrics_refuse_other_shapes_with_a_message():
    g = torch.Generator().manual_seed(0)
    sig, vol = torch.rand(8, 1, 64, generator=g), torch.rand(8, 1, 8, 8, 8, generator=g)
    for x, kind in ((sig, "signals"), (vol, "volumes")):
        with pytest.raises(ValueError, match=f"SWD is defined for 2-D images.*{kind}"):
            swd(x, x)
        with pytest.raises(ValueError, match=f"defined for 2-D images.*{kind}"):
            spectrum_error(x, x)
        assert "defined for 2-D images" in fid_kid(x, x, (0.0, 1.0), None)["fid_unavailable"]
    flat = sig[:, :, None]  # (N, 1, 1, 64): a signal folded into an image gave NaN before
    with pytest.raises(ValueError, match="signal_spectrum_error"):
        spectrum_error(flat, flat)
    with pytest.raises(ValueError, match="at least 7×7"):
        swd(flat, flat)
    with pytest.raises(ValueError, match="cannot fill 3 bands"):
        spectrum_error(torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4))
    assert sample_metrics(vol, vol, (0.0, 1.0)) == {}
    m = sample_metrics(sig, sig, (0.0, 1.0))
    assert set(m) == {"spec_low", "spec_mid", "spec_high", "spec_mean_abs"} and m["spec_mean_abs"] == 0


def test_the_signal_spectrum_has_the_closed_form():
    L, k, A = 64, 5, 0.3
    t = torch.arange(L, dtype=torch.float64)
    x = (A * torch.sin(2 * math.pi * k * t / L + 0.7)).repeat(3, 1, 1)
    freqs, power = signal_spectrum(x, (-1.0, 1.0))
    # map_range takes (−1, 1) to [0, 1]: amplitude A/2; |rFFT|² / L of a sin of amplitude a at bin k is a² L / 4
    assert freqs[k - 1] == k / L and power[k - 1] == pytest.approx((A / 2) ** 2 * L / 4, rel=1e-6)
    assert np.delete(power, k - 1).max() < 1e-10 * power.max()  # float32 round-off
    halved = signal_spectrum_error(x * 0.5, x, value_range=(-1.0, 1.0))
    assert halved["log_ratio"][k - 1] == pytest.approx(math.log(0.25))


def test_samples_of_any_shape_round_trip_through_an_array_file(tmp_path):
    x = torch.rand(5, 2, 8, 8, 8) * 2 - 1
    path = save_array(x, tmp_path / "samples.npy")
    assert torch.equal(build_dataset(path).data, x)
    ref = held_out("signals", (64,), (-1.0, 1.0), 1, limit=10)
    assert ref.shape == (10, 1, 64)


# ---- the command line: --size H,W / --shape, --data-args, sample.py and evaluate.py on the shape ----

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def run_py(*args, cwd):
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_flags_give_the_data_its_shape(recipes_importable, tmp_path, marker):
    import cli
    import lsun_blur
    args = lsun_blur.parse_args(["--data", "marker_data:Waves", "--data-args", '{"n": 3, "length": 16}',
                                 "--shape", "16", "--channels", "1", "--basis", "identity1d", "--out", str(tmp_path)])
    config = cli.configure(lsun_blur.build_config(args), args)
    assert config.data.shape == (16,) and config.data.args == {"n": 3, "length": 16}
    assert config.basis == {"name": "identity1d", "shape": [16]}
    assert config.model["dims"] == 1 and tuple(config.model["image_size"]) == (16,) and config.model["in_channels"] == 1
    assert code_names(config.to_dict()) == ["marker_data:Waves"]
    args = lsun_blur.parse_args(["--size", "24,16", "--out", str(tmp_path)])
    config = cli.configure(lsun_blur.build_config(args), args)
    assert config.data.sides == (24, 16) and config.basis["shape"] == [24, 16] and config.model["dims"] == 2
    args = lsun_blur.parse_args(["--size", "12", "--out", str(tmp_path)])  # one number: a square, as before
    config = cli.configure(lsun_blur.build_config(args), args)
    assert (config.data.size, config.data.shape, config.model["image_size"]) == (12, None, 12)
    with pytest.raises(SystemExit):
        lsun_blur.parse_args(["--size", "8,8,8"])  # --size is N or H,W; volumes take --shape
    args = lsun_blur.parse_args(["--size", "8", "--shape", "8,8,8", "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="--size and --shape"):
        cli.configure(lsun_blur.build_config(args), args)


def test_a_24x16_run_from_the_command_line(tmp_path):
    np.save(tmp_path / "faces.npy", np.random.default_rng(0).uniform(-1, 1, (16, 1, 24, 16)).astype(np.float32))
    res = run_py(ROOT / "recipes/lsun_blur.py", "--data", "faces.npy", "--size", "24,16", "--channels", "1",
                 "--basis", "dct", "--steps", "3", "--batch-size", "4", "--no-figures", "--threads", "1",
                 "--name", "faces", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = tmp_path / "runs" / "faces" / "last.ckpt"
    res = run_py(ROOT / "recipes/sample.py", "--ckpt", ckpt, "--n", "2", "--steps", "3", "--threads", "1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    from PIL import Image
    with Image.open(tmp_path / "runs" / "faces" / "samples-unipc-3" / "000001.png") as im:
        assert im.size == (16, 24)  # W × H
    res = run_py(ROOT / "recipes/evaluate.py", "--ckpt", ckpt, "--n", "4", "--seeds", "0", "--steps", "3",
                 "--nll-steps", "2", "--threads", "1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs" / "faces" / "eval-unipc-3" / "metrics.json").read_text())
    assert {"swd_24", "swd_12", "spec_mean_abs"} <= set(metrics["summary"]) and metrics["nll"]["posterior"]["bpd"] > 0


def test_a_1d_run_from_the_command_line(tmp_path):
    res = run_py(ROOT / "recipes/lsun_blur.py", "--data", "signals", "--data-args", '{"n": 64}', "--shape", "64",
                 "--model", "small1d", "--basis", "dct1d", "--steps", "3", "--batch-size", "4", "--no-figures",
                 "--threads", "1", "--name", "sig", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = tmp_path / "runs" / "sig" / "last.ckpt"
    res = run_py(ROOT / "recipes/sample.py", "--ckpt", ckpt, "--n", "3", "--steps", "3", "--threads", "1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    folder = tmp_path / "runs" / "sig" / "samples-unipc-3"
    assert np.load(folder / "samples.npy").shape == (3, 1, 64) and (folder / "grid.png").is_file()
    res = run_py(ROOT / "recipes/evaluate.py", "--ckpt", ckpt, "--n", "8", "--seeds", "0", "--steps", "3",
                 "--nll-steps", "2", "--threads", "1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs" / "sig" / "eval-unipc-3" / "metrics.json").read_text())
    assert "spec_mean_abs" in metrics["summary"] and "2-D images" in metrics["per_seed"][0]["fid_unavailable"]
    res = run_py(ROOT / "recipes/evaluate.py", "--samples", folder, "--ref", "signals", "--size", "64", "--channels",
                 "1", "--threads", "1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]


def test_evaluate_reads_an_array_of_samples(tmp_path):
    from gendiff.evaluation import evaluate_folder
    x = SignalsDataset("test", 64, value_range=(0.0, 1.0)).signals[:32]
    save_array(x, tmp_path / "mine.npy")
    result = evaluate_folder(tmp_path / "mine.npy", "signals", 64, 1, out=tmp_path / "eval")
    m = result["per_seed"][0]
    assert abs(m["spec_mean_abs"]) < 0.5 and "defined for 2-D images" in m["fid_unavailable"]
    assert (tmp_path / "eval" / "spectrum.png").is_file()


# ---- a joint colour basis, a volume and a measured schedule: train → sample → evaluate from the command line ----

TINY = ["--steps", "3", "--batch-size", "4", "--no-figures"]


def recipe(script, *args, cwd):
    """``recipes/<script>`` with ``args`` in a fresh process run in ``cwd``; it must succeed."""
    res = run_py(ROOT / "recipes" / script, *args, "--threads", "1", cwd=cwd)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def train_sample_evaluate(tmp_path, name, *flags, trust=()):
    """``lsun_blur.py`` with ``flags`` (3 steps), then ``sample.py`` (3 samples, 3 steps) and
    ``evaluate.py``, each in a fresh process; the checkpoint, the samples' folder and metrics.json."""
    recipe("lsun_blur.py", *flags, *TINY, "--name", name, cwd=tmp_path)
    ckpt = tmp_path / "runs" / name / "last.ckpt"
    recipe("sample.py", "--ckpt", ckpt, "--n", "3", "--steps", "3", *trust, cwd=tmp_path)
    recipe("evaluate.py", "--ckpt", ckpt, "--n", "4", "--seeds", "0", "--steps", "3", "--nll-steps", "2", *trust,
           cwd=tmp_path)
    return ckpt, ckpt.parent / "samples-unipc-3", json.loads((ckpt.parent / "eval-unipc-3" / "metrics.json").read_text())


def library_samples(ckpt, n=3, trust_code=False):
    """The run's samples as sample.py draws them (seed 0, 3 steps), in [0, 1], from this process."""
    from gendiff.training import open_run
    from gendiff.training.run import run_sampling
    from gendiff.value_range import map_range
    run = open_run(ckpt, trust_code=trust_code)
    x = sample_run(run, n, run_sampling(run.config, steps=3), generator=torch.Generator().manual_seed(0))
    return run, map_range(x, run.config.data.value_range, clamp=True)


def png_samples(folder, n=3):
    from PIL import Image
    return torch.stack([torch.from_numpy(np.array(Image.open(folder / f"{k:06d}.png"))).permute(2, 0, 1)
                        for k in range(n)]).float() / 255


def test_a_users_joint_colour_basis_trains_by_import_path_and_is_rebuilt_in_fresh_processes(tmp_path, monkeypatch):
    """docs/extending.md's own joint basis (opponent axes, then a DCT; chroma 3× as fast), in a
    module next to the command: the checks and the engine take it on its (3, 16, 16) event, the
    command line trains it by import path, and sample.py/evaluate.py rebuild it."""
    from gendiff import testing
    from test_docs_extending import module_block
    (tmp_path / "mycolour.py").write_text(module_block("mycolour.py"))  # docs/extending.md section 10
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mycolour", raising=False)
    from mycolour import RotatedDCT
    mine = RotatedDCT((16, 16), chroma=3)
    testing.check_basis(mine)  # on the whole (3, 16, 16) event
    Diffusion(mine, VPBlurSchedule("quartic", 0.14))
    assert mine.rates.shape == (3, 16, 16) and torch.equal(mine.rates[1], 3 * mine.rates[0])
    ckpt, folder, metrics = train_sample_evaluate(
        tmp_path, "mine", "--data", "photos", "--basis", "mycolour:RotatedDCT", "--basis-args", '{"chroma": 3}',
        "--model", "tiny", trust=["--trust-code"])
    run, want = library_samples(ckpt, trust_code=True)
    assert run.config.basis == {"name": "mycolour:RotatedDCT", "shape": [16, 16], "chroma": 3.0}
    assert torch.equal(run.diffusion.basis.rates, mine.rates)
    # sample.py rebuilt the same basis: its PNGs are these samples (8-bit, ±1 level)
    assert (png_samples(folder) - want).abs().max() <= 1 / 255 + 1e-6
    assert metrics["summary"]["swd_16"]["mean"] >= 0 and 0 < metrics["nll"]["posterior"]["bpd"] < math.inf


def test_a_volume_run_from_the_command_line(tmp_path):
    vol = np.random.default_rng(0).uniform(-1, 1, (16, 1, 8, 8, 8)).astype(np.float32)
    np.save(tmp_path / "vol.npy", vol)
    ckpt, folder, metrics = train_sample_evaluate(tmp_path, "vol", "--data", "vol.npy", "--shape", "8,8,8",
                                                  "--channels", "1", "--basis", "dct3d", "--model", "small3d")
    run, want = library_samples(ckpt)
    assert run.event_shape == (1, 8, 8, 8) and run.config.model["dims"] == 3
    assert torch.allclose(torch.from_numpy(np.load(folder / "samples.npy")), want, atol=1e-6, rtol=0)
    assert (folder / "grid.png").is_file()  # the middle slices
    assert metrics["summary"] == {}  # no image metric exists for volumes, and none is made up
    assert "defined for 2-D images" in metrics["per_seed"][0]["fid_unavailable"]
    assert "volumes" in metrics["per_seed"][0]["fid_unavailable"]
    assert all(0 < metrics["nll"][k]["bpd"] < math.inf for k in ("posterior", "reverse"))


def test_a_schedule_measured_from_the_data_is_measured_only_where_its_table_is_missing(tmp_path):
    from gendiff.schedules import DataSNRSchedule
    from gendiff.training.run import measure_schedule
    img = np.random.default_rng(0).uniform(-1, 1, (10, 1, 24, 16)).astype(np.float32)
    img[:, :, :12] *= 0.2  # the top half quieter: a table that is not flat
    np.save(tmp_path / "img.npy", img)
    plain = image_config(tmp_path, "img.npy")
    assert measure_schedule(plain) is plain  # vp_blur is not measured
    config = replace(plain, schedule={"name": "data_snr", "crossing": [0.2, 0.8]})
    measured = measure_schedule(config, limit=6)  # the first 6 training examples
    want = DataSNRSchedule.from_data(DCTBasis((24, 16)), torch.from_numpy(img[:6]), crossing=(0.2, 0.8))
    assert measured.schedule == want.config() and len(measured.schedule["variance"]) == 1  # (1, 24, 16): per channel
    assert measure_schedule(measured) is measured  # a recorded table is kept, data or not
    assert torch.equal(build_run(measured).diffusion.schedule.variance, want.variance)
    with pytest.raises(ConfigError, match="data.spec"):
        measure_schedule(replace(config, data=DataConfig(str(tmp_path / "gone.npy"), channels=1, shape=(24, 16))))


def test_build_run_measures_the_schedule_with_the_basis_and_data_it_builds_once(tmp_path, monkeypatch):
    """A run whose schedule is measured from the data builds its basis and its training set once:
    the measurement reads the ones build_run makes for the run anyway, and the run's config holds
    the table (what the trainer writes)."""
    import gendiff.training.run as run_module
    from gendiff.schedules import DataSNRSchedule
    img = np.random.default_rng(1).uniform(-1, 1, (10, 1, 24, 16)).astype(np.float32)
    np.save(tmp_path / "img.npy", img)
    config = replace(image_config(tmp_path, "img.npy"), schedule={"name": "data_snr"})
    calls = {"basis": 0, "data": 0}

    def counted(kind, build):
        def wrapper(*a, **k):
            calls[kind] += 1
            return build(*a, **k)
        return wrapper

    monkeypatch.setattr(run_module, "build_basis", counted("basis", run_module.build_basis))
    monkeypatch.setattr(run_module, "_dataset", counted("data", run_module._dataset))
    built = build_run(config, check_dataset=True)
    assert calls == {"basis": 1, "data": 1}
    want = DataSNRSchedule.from_data(DCTBasis((24, 16)), torch.from_numpy(img))
    assert built.config.schedule == want.config() and built.diffusion.schedule.config() == want.config()


def test_the_data_snr_schedule_is_measured_once_from_the_command_line_and_sampled_without_data(tmp_path):
    """``--schedule data_snr`` with the built-in colour basis (chroma twice as fast): config.json
    holds the table measured on the training data, and once the data are gone sample.py (and
    this process) rebuild the run from it."""
    from gendiff.bases import ColourBasis
    from gendiff.schedules import DataSNRSchedule
    photos = torch.stack([build_dataset("photos", size=16, channels=3)[k] for k in range(64)])
    np.save(tmp_path / "photos.npy", photos.numpy())
    recipe("lsun_blur.py", "--data", "photos.npy", "--channels", "3", "--basis", "colour", "--basis-args",
           '{"spatial": "dct", "speeds": [1, 2, 2]}', "--schedule", "data_snr", "--model", "tiny", *TINY, "--steps",
           "2", "--name", "snr", cwd=tmp_path)
    ckpt = tmp_path / "runs" / "snr" / "last.ckpt"
    saved = json.loads((ckpt.parent / "config.json").read_text())
    colour = ColourBasis("dct", shape=(16, 16), speeds=[1, 2, 2])
    assert saved["basis"] == colour.config()
    want = DataSNRSchedule.from_data(colour, photos)
    table = torch.tensor(saved["schedule"]["variance"], dtype=torch.float64)
    torch.testing.assert_close(table, want.variance, rtol=1e-12, atol=0)
    assert table.shape == (3, 16, 16) and table[0, 0, 0] > table[1:, 0, 0].max()  # the mean colour's luma varies most
    (tmp_path / "photos.npy").unlink()  # from here on the run has no data
    recipe("sample.py", "--ckpt", ckpt, "--n", "3", "--steps", "3", cwd=tmp_path)
    run, x = library_samples(ckpt)
    assert torch.equal(run.diffusion.schedule.variance, table)
    assert (png_samples(ckpt.parent / "samples-unipc-3") - x).abs().max() <= 1 / 255 + 1e-6
