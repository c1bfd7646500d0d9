"""Tests of gendiff.metrics: SWD, radial spectra and FID/KID through clean-fid (no network)."""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
import shutil
import signal
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import linalg
from scipy.ndimage import gaussian_filter

from gendiff.metrics import (MissingWeightsError, fid, kid, laplacian_pyramid, plot_spectra,
                             radial_spectrum, spectrum_error, swd)
from gendiff.metrics.swd import _pyr_up

# The package exports the function fid, which shadows the submodule of the same name.
fid_module = importlib.import_module("gendiff.metrics.fid")

# clean-fid 0.1.35 calls scipy.linalg.sqrtm(..., disp=False), deprecated in scipy 1.17.
pytestmark = pytest.mark.filterwarnings("ignore:The `disp` argument:DeprecationWarning")


def pink_fields(n: int, size: int = 32, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Natural-image-like random fields: white noise with a 1/f amplitude spectrum (power
    1/f^2), periodic, zero mean, std 0.3 so that they sit inside [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, channels, size, size, generator=g, dtype=torch.float64)
    f = torch.fft.fftfreq(size, dtype=torch.float64)
    radius = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    radius[0, 0] = 1.0
    x = torch.fft.ifft2(torch.fft.fft2(noise) / radius).real
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    return (0.3 * x / x.std()).float()


def blur(x: torch.Tensor, sigma: float, **kw) -> torch.Tensor:
    return torch.from_numpy(gaussian_filter(x.numpy(), (0, 0, sigma, sigma), **kw))


# ----------------------------------------------------------------------------------- SWD


@pytest.fixture(scope="module")
def halves():
    x = pink_fields(512)
    return x[:256], x[256:]


def _swd(a, b):
    return swd(a, b, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def same_swd(halves):
    return _swd(*halves)


def test_laplacian_pyramid_reconstructs_the_image():
    x = torch.randn(2, 3, 32, 32)
    pyr = laplacian_pyramid(x, 3)
    assert [p.shape[-1] for p in pyr] == [32, 16, 8]
    rec = pyr[-1]
    for level in reversed(pyr[:-1]):
        rec = level + _pyr_up(rec, level.shape[-2:])
    assert torch.allclose(rec, x, atol=1e-5)


def test_swd_levels_keys_and_reproducibility():
    x = pink_fields(16, size=64)
    y = pink_fields(16, size=64, seed=1)
    kw = dict(patches_per_image=16, n_dirs=64)
    d1 = swd(x, y, generator=torch.Generator().manual_seed(0), **kw)
    d2 = swd(x, y, generator=torch.Generator().manual_seed(0), **kw)
    assert list(d1) == ["64", "32", "16", "mean"] and d1 == d2
    assert list(swd(x, y, levels=2, **kw)) == ["64", "32", "mean"]


@pytest.mark.parametrize("bad", [dict(min_size=0), dict(min_size=-3), dict(levels=0), dict(levels=-1)])
def test_swd_refuses_a_pyramid_that_cannot_stop_or_is_empty(bad):
    # min_size=0 used to loop forever (16 // 2 >= 0 always holds); levels=0 silently meant "auto".
    x = pink_fields(2, size=16)

    def hung(signum, frame):
        raise TimeoutError("swd did not return: the pyramid loop does not stop")
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        with pytest.raises(ValueError, match="min_size|levels"):
            swd(x, x, patches_per_image=4, n_dirs=8, **bad)
        with pytest.raises(ValueError, match="min_size"):  # also when levels is given
            swd(x, x, patches_per_image=4, n_dirs=8, levels=2, min_size=0)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_swd_is_small_for_two_halves_of_one_sample_and_grows_with_blur(halves, same_swd):
    a, b = halves
    values = [same_swd] + [_swd(a, blur(b, s, mode="wrap")) for s in (0.5, 1.0, 2.0)]
    for key in ("32", "16", "mean"):
        curve = [v[key] for v in values]
        assert curve == sorted(curve), (key, curve)
    # Same distribution: well under the mildest blur, overall and at the finest level.
    assert values[0]["mean"] < 0.3 * values[1]["mean"]
    assert values[0]["32"] < 0.1 * values[1]["32"]


def test_swd_grows_with_added_noise(halves, same_swd):
    a, b = halves
    g = torch.Generator().manual_seed(5)
    eps = torch.randn(b.shape, generator=g)
    values = [same_swd] + [_swd(a, b + std * eps) for std in (0.05, 0.1, 0.2)]
    for key in ("32", "mean"):
        curve = [v[key] for v in values]
        assert curve == sorted(curve), (key, curve)
    # Noise is high-frequency: it shows at the finest level far more than at the coarse one.
    assert values[-1]["32"] > 5 * values[-1]["16"]


def test_swd_reads_uint8_like_floats(halves):
    a, b = halves
    to_u8 = lambda x: ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # noqa: E731
    d_float, d_u8 = _swd(a[:64], b[:64]), _swd(to_u8(a[:64]), to_u8(b[:64]))
    assert d_u8["mean"] == pytest.approx(d_float["mean"], rel=0.1)


# ------------------------------------------------------------------------------ spectrum


def test_white_noise_has_a_flat_spectrum_at_its_variance():
    x = 0.2 * torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    freqs, power = radial_spectrum(x)  # [-1, 1] -> [0, 1] halves the std: variance 0.01
    assert freqs[0] == pytest.approx(1 / 32) and freqs[-1] == pytest.approx(0.5)
    assert np.allclose(power, 0.01, rtol=0.15)


def test_uint8_and_float_spectra_agree():
    x = pink_fields(8).clamp(-1, 1)
    u8 = ((x + 1) * 127.5).round().to(torch.uint8)
    _, p_float = radial_spectrum(x)
    _, p_u8 = radial_spectrum(u8)
    assert np.allclose(p_u8, p_float, rtol=0.05, atol=1e-6)


def test_spectrum_error_detects_a_gaussian_blur_of_known_width():
    sigma = 0.7
    data = pink_fields(32, size=64)
    # Circular blur, so that it is an exact multiplication in the DFT domain.
    err = spectrum_error(blur(data, sigma, mode="wrap"), data)
    assert abs(err["low"]) < 0.3
    assert err["high"] < -2.5 and abs(err["low"]) < 0.1 * abs(err["high"])
    omega = 2 * np.pi * err["freqs"]
    analytic = -(sigma * omega) ** 2           # log |G(omega)|^2 = -sigma^2 omega^2
    mid = np.array_split(np.arange(len(omega)), 3)[1]
    assert np.allclose(err["log_ratio"][mid], analytic[mid], atol=0.1, rtol=0.05)
    assert err["mid"] == pytest.approx(analytic[mid].mean(), abs=0.05)


def test_spectrum_error_of_a_set_with_itself_is_zero():
    x = pink_fields(8)
    err = spectrum_error(x, x, n_bands=4)
    assert {"band0", "band1", "band2", "band3", "mean_abs", "freqs", "log_ratio"} == set(err)
    assert err["mean_abs"] == 0.0


def test_plot_spectra_writes_a_png(tmp_path):
    x = pink_fields(4)
    path = plot_spectra({"data": x, "blurred": blur(x, 1.0)}, tmp_path / "spectra.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------- FID


class ChannelStats(torch.nn.Module):
    """Per-channel mean and std: 6 features that hardly change under clean-fid's resize.
    Records what clean-fid fed it."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append((tuple(x.shape), x.dtype, float(x.min()), float(x.max())))
        # Scaled to [0, 1] so that KID's cubic kernel sees Inception-like magnitudes.
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1) / 255.0


def _write_folder(images: np.ndarray, folder) -> str:
    os.makedirs(folder, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(os.path.join(folder, f"{i:04d}.png"))
    return str(folder)


def _images(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    x = pink_fields(n, seed=seed).numpy().transpose(0, 2, 3, 1)
    return np.clip((x + 1) * 127.5 + shift, 0, 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fid")
    ref = _images(48, seed=0)
    return {
        "ref": _write_folder(ref, root / "ref"),
        "same": _write_folder(ref, root / "same"),
        "other": _write_folder(_images(48, seed=1), root / "other"),
        "shifted": _write_folder(_images(48, seed=1, shift=25.0), root / "shifted"),
        "ref_images": ref,
    }


@functools.lru_cache(maxsize=None)
def _clean_fid_features(folder) -> np.ndarray:
    # The reference features go through clean-fid's own folder pipeline (PIL bicubic
    # resize to 299 on float data), the same pipeline fid() uses.
    from cleanfid.fid import get_folder_features

    return get_folder_features(folder, ChannelStats(), num_workers=0, batch_size=16,
                               device="cpu", mode="clean", verbose=False)


def _frechet(f1: np.ndarray, f2: np.ndarray) -> float:
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def _mmd2_poly(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, on all points (one full subset)."""
    d, m = x.shape[1], len(x)
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    off = lambda kk: (kk.sum() - np.trace(kk)) / (m * (m - 1))  # noqa: E731
    return float(off(k(x, x)) + off(k(y, y)) - 2 * k(x, y).mean())


def test_clean_fid_feeds_the_extractor_299px_floats(folders):
    model = ChannelStats()
    fid(folders["ref"], folders["same"], feature_extractor=model, batch_size=16)
    shape, dtype, lo, hi = model.seen[0]
    assert shape[1:] == (3, 299, 299) and dtype == torch.float32 and 0 <= lo and hi <= 255


def test_fid_of_identical_folders_is_zero(folders):
    value = fid(folders["ref"], folders["same"], feature_extractor=ChannelStats(), batch_size=16)
    assert abs(value) < 1e-6


def test_fid_matches_an_independent_frechet_distance(folders):
    model = ChannelStats()
    value = fid(folders["shifted"], folders["ref"], feature_extractor=model, batch_size=16)
    f_ref = _clean_fid_features(folders["ref"])
    f_shift = _clean_fid_features(folders["shifted"])
    assert value == pytest.approx(_frechet(f_shift, f_ref), rel=1e-4)
    # Sanity: channel means survive the resize, so the features are those of the images.
    assert np.allclose(255 * f_ref[:, :3], folders["ref_images"].mean(axis=(1, 2)), atol=1.0)
    # The brightness shift dominates the distance between two unshifted samples.
    assert value > 10 * fid(folders["other"], folders["ref"], feature_extractor=model)


def test_fid_of_a_generator_replaying_the_reference_is_zero(folders):
    images = torch.from_numpy(folders["ref_images"]).permute(0, 3, 1, 2)
    state = {"i": 0}

    def gen(z):  # clean-fid calls gen(z) with z of shape (batch_size, z_dim)
        i = state["i"]
        state["i"] = i + len(z)
        return images[i:i + len(z)]

    value = fid(gen, folders["ref"], feature_extractor=ChannelStats(), num_gen=48,
                batch_size=16, z_dim=8)
    assert state["i"] == 48 and abs(value) < 1e-6


def test_kid_matches_an_independent_mmd(folders):
    model = ChannelStats()
    same = kid(folders["same"], folders["ref"], feature_extractor=model, batch_size=16)
    shifted = kid(folders["shifted"], folders["ref"], feature_extractor=model, batch_size=16)
    # 48 images < clean-fid's subset size 1000: each subset is the whole set, so the
    # estimate is deterministic and equals the full unbiased MMD^2.
    expected = _mmd2_poly(_clean_fid_features(folders["ref"]),
                          _clean_fid_features(folders["shifted"]))
    assert shifted == pytest.approx(expected, rel=1e-6)
    assert abs(same) < 1e-3 * shifted


# --------------------------------------------------------------- missing weights, no network


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network, and clean-fid's weights folder pointed at an empty directory."""
    def refuse(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    empty = tmp_path / "weights"
    empty.mkdir()
    monkeypatch.setattr(fid_module, "INCEPTION_DIR", str(empty))
    monkeypatch.delenv(fid_module.ENV_VAR, raising=False)
    return empty


@pytest.mark.parametrize("metric", [fid, kid])
def test_missing_inception_weights_raise_one_clear_error(folders, offline, metric):
    with pytest.raises(MissingWeightsError) as info:
        metric(folders["ref"], folders["same"])
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(offline / "inception-2015-12-05.pt") in msg
    assert fid_module.INCEPTION_URL in msg and "inception_path=" in msg


def test_missing_explicit_inception_path_is_named(folders, offline):
    path = offline / "elsewhere" / "inception-2015-12-05.pt"
    with pytest.raises(MissingWeightsError, match=str(path)):
        fid(folders["ref"], folders["same"], inception_path=str(path))


def test_missing_reference_statistics_are_reported_with_the_weights(folders, offline):
    with pytest.raises(MissingWeightsError) as info:
        fid(folders["ref"], ("no_such_dataset", 32, "train"))
    msg = str(info.value)
    assert "inception-2015-12-05.pt" in msg
    assert "no_such_dataset_clean_train_32.npz" in msg
    assert "https://www.cs.cmu.edu/~clean-fid/stats/no_such_dataset_clean_train_32.npz" in msg


class StandInLayers(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3)).repeat(1, 683)[:, :2048]


class StandInInception(torch.nn.Module):
    """A stand-in torchscript with the layout clean-fid's InceptionV3W relies on."""

    def __init__(self):
        super().__init__()
        self.layers = StandInLayers()

    def forward(self, x, return_features: bool = False):
        return self.layers(x)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
@pytest.mark.filterwarnings("ignore:no expected SHA-256:RuntimeWarning")
def test_local_inception_file_is_loaded_without_download(tmp_path, offline):
    path = tmp_path / "copy.pt"
    torch.jit.script(StandInInception()).save(str(path))
    model = fid_module._inception_model("clean", str(path), "cpu")
    feats = model(torch.full((2, 3, 299, 299), 192.0))
    # InceptionV3W maps [0, 255] to [-1, 1] before the layers: (192 - 128) / 128.
    assert feats.shape == (2, 2048) and torch.allclose(feats, torch.tensor(0.5))
    shutil.copy(path, offline / "inception-2015-12-05.pt")  # the default location works too
    default = fid_module._inception_model("clean", None, "cpu")
    assert default(torch.zeros(1, 3, 299, 299)).shape == (1, 2048)


def test_inception_weights_default_to_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(fid_module, "INCEPTION_DIR", None)
    monkeypatch.delenv(fid_module.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fid_module.default_inception_path() == str(tmp_path / "xdg" / "gendiff" / "inception-2015-12-05.pt")
    assert not fid_module.default_inception_path().startswith("/tmp/inception")


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_inception_file_is_hash_checked_before_loading(tmp_path, offline, monkeypatch):
    monkeypatch.delenv(fid_module.SHA_ENV_VAR, raising=False)
    path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.script(StandInInception()).save(str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.warns(RuntimeWarning, match=f"first use: it is {digest}"):
        fid_module._inception_model("clean", str(path), "cpu")  # no expected hash: pinned now
    assert Path(str(path) + ".sha256").read_text().split()[0] == digest

    loads = []
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: loads.append(a) or pytest.fail("loaded"))
    with open(path, "ab") as f:
        f.write(b"planted")  # a changed file no longer matches the pin
    with pytest.raises(fid_module.WeightsHashError, match=rf"{path} has SHA-256 .* not {digest}"):
        fid_module._inception_model("clean", str(path), "cpu")
    with pytest.raises(fid_module.WeightsHashError, match="not 00"):  # an explicit expected hash
        fid(str(tmp_path), str(tmp_path), inception_path=str(path), inception_sha256="00" * 32)
    assert loads == []  # refused before torch.jit.load
