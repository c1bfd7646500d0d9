"""Tests for gendiff.data: embedded datasets, image folders, LSUN LMDB, build_dataset."""
import hashlib
import io
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import lmdb
import numpy as np
import pytest
import torch
from PIL import Image

from gendiff.data import (EMBEDDED, DigitsDataset, ImageFolderDataset, LSUNDataset,
                          PhotoCropsDataset, build_dataset, embedded_dataset)
from gendiff.data import embedded, lsun

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def thirds_image(width=192, height=64):
    """A wide image: left third red, middle green, right third blue.

    A plain resize to a square keeps all three bands; a centre crop would keep only green.
    """
    arr = np.zeros((height, width, 3), np.uint8)
    w3 = width // 3
    arr[:, :w3], arr[:, w3:2 * w3], arr[:, 2 * w3:] = RED, GREEN, BLUE
    return Image.fromarray(arr)


def encode(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def assert_thirds(x, lo=-1.0, hi=1.0, tol=0.1):
    """``x`` (3, 64, 64) is red / green / blue from left to right, in value range (lo, hi)."""
    x01 = (x - lo) / (hi - lo)
    for col, colour in ((4, RED), (32, GREEN), (59, BLUE)):
        want = torch.tensor(colour, dtype=torch.float32) / 255
        got = x01[:, :, col].mean(dim=1)
        assert torch.allclose(got, want, atol=tol), (col, got, want)


def check_images(ds, channels, size, lo=-1.0, hi=1.0):
    x = ds[0]
    assert x.dtype == torch.float32 and x.shape == (channels, size, size)
    assert float(x.min()) >= lo - 1e-6 and float(x.max()) <= hi + 1e-6


# --------------------------------------------------------------------- digits

@pytest.fixture(scope="module")
def digits():
    return DigitsDataset("train"), DigitsDataset("test")


def test_digits_shapes_range_sizes(digits):
    train, test = digits
    assert (len(train), len(test)) == (1438, 359)
    check_images(train, 1, 16)
    assert train.images.shape == (1438, 1, 16, 16)
    # ink levels 0 and 16 both occur, so the full range is used
    assert float(train.images.min()) == -1.0 and float(train.images.max()) == 1.0


def test_digits_deterministic_and_disjoint(digits):
    train, test = digits
    again = DigitsDataset("train")
    assert torch.equal(train.images, again.images)
    assert set(train.indices.tolist()).isdisjoint(test.indices.tolist())
    assert len(set(train.indices.tolist()) | set(test.indices.tolist())) == 1797


def test_digits_size_and_value_range():
    ds = DigitsDataset("test", size=28, value_range=(0.0, 1.0))
    check_images(ds, 1, 28, 0.0, 1.0)
    assert float(ds.images.min()) == 0.0 and float(ds.images.max()) == 1.0
    with pytest.raises(ValueError, match="split"):
        DigitsDataset("val")


# --------------------------------------------------------------------- photos

@pytest.fixture(scope="module")
def photos():
    kw = dict(crops_per_photo=12)
    return PhotoCropsDataset("train", **kw), PhotoCropsDataset("test", **kw)


def test_photos_shapes_range(photos):
    train, test = photos
    assert len(train) == 12 * len(embedded.RGB_TRAIN) and len(test) == 12 * len(embedded.RGB_TEST)
    check_images(train, 3, 32)
    check_images(test, 3, 32)
    assert float(train.images.min()) >= -1.0 and float(train.images.max()) <= 1.0
    assert float(train.images.std()) > 0.1  # real image content, not a constant


def test_photos_gray_and_size():
    ds = PhotoCropsDataset("test", size=16, grayscale=True, crops_per_photo=3,
                           value_range=(0.0, 1.0))
    check_images(ds, 1, 16, 0.0, 1.0)
    assert len(ds) == 3 * (len(embedded.RGB_TEST) + len(embedded.GRAY_TEST))


def test_photos_deterministic(photos):
    train, _ = photos
    again = PhotoCropsDataset("train", crops_per_photo=12)
    assert torch.equal(train.images, again.images)
    # a photo's crops do not depend on which other photos are in the list
    alone = embedded.photo_crops("chelsea", 32, 12)
    i = train.photos.index("chelsea")
    assert torch.equal(train.images[12 * i:12 * (i + 1)], alone * 2 - 1)


def test_photos_split_by_photograph(photos):
    train, test = photos
    for gray in (False, True):
        tr, te = embedded.photo_names("train", gray), embedded.photo_names("test", gray)
        assert tr and te and set(tr).isdisjoint(te)
    assert set(train.photos).isdisjoint(test.photos)
    assert set(test.photos) == {"coffee", "rocket"}
    # every crop is tagged with its photograph, and no test image reappears in train
    assert train.photo_index.tolist() == sorted(train.photo_index.tolist())
    dist = torch.cdist(test.images.flatten(1), train.images.flatten(1))
    assert float(dist.min()) > 1.0


def test_photos_need_no_network(monkeypatch):
    """Every listed photograph is bundled in the wheel: loading works with sockets disabled."""
    def refuse(*args, **kwargs):
        raise OSError("network disabled in test")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    names = embedded.RGB_TRAIN + embedded.RGB_TEST + embedded.GRAY_TRAIN + embedded.GRAY_TEST
    for name in names:
        assert embedded._load_photo(name).dtype == np.uint8, name


def test_embedded_registry():
    assert set(EMBEDDED) == {"digits", "photos", "photos-gray", "signals"}
    ds = embedded_dataset("photos-gray", split="test", size=8)
    check_images(ds, 1, 8)
    with pytest.raises(ValueError, match="digits.*photos.*photos-gray"):
        embedded_dataset("mnist")


# --------------------------------------------------------------------- folder

@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "imgs"
    (root / "sub" / "deeper").mkdir(parents=True)
    thirds_image().save(root / "a_thirds.png")
    Image.new("RGB", (40, 30), (10, 200, 30)).save(root / "sub" / "b.jpg", quality=95)
    Image.new("L", (20, 20), 128).save(root / "sub" / "deeper" / "c.PNG")
    thirds_image(96, 32).save(root / "d.webp", lossless=True)
    (root / "b_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (root / "notes.txt").write_text("ignored")
    return root


def test_folder_reads_recursively(image_folder):
    ds = ImageFolderDataset(image_folder, size=64)
    assert len(ds) == 5  # 4 images + the corrupt .png; the .txt is ignored
    assert [p.name for p in ds.files][0] == "a_thirds.png"
    check_images(ds, 3, 64)


def test_folder_resizes_without_cropping(image_folder):
    ds = ImageFolderDataset(image_folder, size=64, value_range=(0.0, 1.0))
    assert_thirds(ds[0], 0.0, 1.0, tol=0.02)


def test_folder_skips_and_counts_corrupt(image_folder):
    ds = ImageFolderDataset(image_folder, size=32)
    bad = [p.name for p in ds.files].index("b_corrupt.png")
    with pytest.warns(RuntimeWarning, match="b_corrupt.png"):
        x = ds[bad]
    # the next readable file in sorted order is returned instead
    assert torch.equal(x, ds[bad + 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the warning is issued once only
        items = [ds[i] for i in range(len(ds))]
    assert ds.n_skipped == 1 and len(items) == 5


def test_folder_grayscale(image_folder):
    ds = ImageFolderDataset(image_folder, size=16, channels=1)
    x = ds[[p.name for p in ds.files].index("c.PNG")]
    assert x.shape == (1, 16, 16)
    assert torch.allclose(x, torch.full_like(x, 128 / 255 * 2 - 1), atol=1e-6)


def test_folder_16bit_png_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    x = ImageFolderDataset(tmp_path, size=64, channels=1, value_range=(0.0, 1.0))[0]
    assert torch.allclose(x[0], torch.from_numpy(ramp / 65535.0).float(), atol=1 / 255)


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolderDataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.txt").write_text("no images")
    with pytest.raises(FileNotFoundError, match=r"empty.*\.png.*\.jpg"):
        ImageFolderDataset(tmp_path / "empty")
    with pytest.raises(ValueError, match="channels"):
        ImageFolderDataset(tmp_path, channels=2)


# --------------------------------------------------------------------- LSUN

@pytest.fixture
def lsun_root(tmp_path):
    """A tiny LMDB in the official layout: webp, jpeg and one corrupt record."""
    root = tmp_path / "church_outdoor_train_lmdb"
    records = [
        encode(thirds_image(), "WEBP", quality=95),
        encode(Image.new("RGB", (80, 60), (20, 40, 220)), "JPEG", quality=95),
        b"RIFF\x00\x00\x00\x00WEBPVP8 garbage",
        encode(thirds_image(150, 100), "JPEG", quality=95),
    ]
    env = lmdb.open(str(root), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, data in enumerate(records):
            # official keys are hex SHA-1s; prefix i keeps the database order = record order
            txn.put(f"{i}{hashlib.sha1(data).hexdigest()}".encode(), data)
    env.close()
    return root


def test_lsun_decodes_webp_and_jpeg(lsun_root, tmp_path):
    ds = LSUNDataset(lsun_root, size=64, value_range=(0.0, 1.0), cache_dir=tmp_path / "cache")
    assert len(ds) == 4
    check_images(ds, 3, 64, 0.0, 1.0)
    assert_thirds(ds[0], 0.0, 1.0)  # webp, 192x64: resized, not cropped
    assert_thirds(ds[3], 0.0, 1.0)  # jpeg, 150x100
    blue = ds[1].mean(dim=(1, 2))
    assert torch.allclose(blue, torch.tensor([20, 40, 220]) / 255, atol=0.03)


def test_lsun_skips_and_counts_corrupt(lsun_root, tmp_path):
    ds = LSUNDataset(lsun_root, size=32, cache_dir=tmp_path / "cache")
    with pytest.warns(RuntimeWarning, match="corrupt"):
        x = ds[2]
    assert torch.equal(x, ds[3])
    items = [ds[i] for i in range(len(ds))]
    assert ds.n_corrupt == 1 and len(items) == 4


def test_lsun_key_cache_outside_data_folder(lsun_root, tmp_path, monkeypatch):
    before = sorted(p.name for p in lsun_root.iterdir())
    cache_dir = tmp_path / "cache"
    ds = LSUNDataset(lsun_root, cache_dir=cache_dir)
    assert ds.key_cache.parent == cache_dir and ds.key_cache.is_file()
    assert sorted(p.name for p in lsun_root.iterdir()) == before  # nothing written there
    with np.load(ds.key_cache, allow_pickle=False) as z:  # plain arrays: loading runs no code
        assert z["blob"].tobytes() == b"".join(ds.keys) and int(z["ends"][-1]) == len(b"".join(ds.keys))
    # a second construction reads the cache instead of walking the database
    monkeypatch.setattr(lsun, "_list_keys", lambda *a: pytest.fail("keys were re-listed"))
    second = LSUNDataset(lsun_root, cache_dir=cache_dir)
    assert second.keys == ds.keys
    # both read through one environment (py-lmdb >= 3 refuses to open it twice per process)
    assert torch.equal(second[0], ds[0])


def test_lsun_stale_key_cache_is_rebuilt(lsun_root, tmp_path):
    ds = LSUNDataset(lsun_root, cache_dir=tmp_path / "cache")
    stale = {**lsun._fingerprint(ds.root)}
    stale["bytes"] += 1  # as if data.mdb had changed since the listing
    lsun._write_cached_keys(ds.key_cache, stale, [b"stale"])
    assert lsun._read_cached_keys(ds.key_cache, stale) == [b"stale"]
    assert LSUNDataset(lsun_root, cache_dir=tmp_path / "cache").keys == ds.keys


def test_lsun_key_cache_keeps_any_key_bytes(tmp_path):
    keys = [b"a\x00", b"", b"\xff" * 40, b"0123456789abcdef"]
    fp = {"version": 2, "root": "x", "bytes": 1, "mtime_ns": 2}
    lsun._write_cached_keys(tmp_path / "k.npz", fp, keys)
    assert lsun._read_cached_keys(tmp_path / "k.npz", fp) == keys
    (tmp_path / "k.npz").write_bytes(b"truncated")
    assert lsun._read_cached_keys(tmp_path / "k.npz", fp) is None  # rebuilt, not an error


def test_lsun_default_cache_dir(lsun_root, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    ds = LSUNDataset(lsun_root / "data.mdb")  # the data.mdb file is accepted too
    assert ds.root == lsun_root.resolve()
    assert ds.key_cache.parent == tmp_path / "xdg" / "gendiff" / "lsun_keys"


def test_lsun_fork_workers(lsun_root, tmp_path):
    ds = LSUNDataset(lsun_root, size=16, cache_dir=tmp_path / "cache")
    ds[0]  # opens the environment in the parent before the workers fork
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2,
                                         multiprocessing_context="fork")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the corrupt record, in a worker
        batches = list(loader)
    assert torch.cat(batches).shape == (4, 3, 16, 16)


def test_lsun_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.mdb"):
        LSUNDataset(tmp_path, cache_dir=tmp_path / "cache")


def big_lsun(root: Path, n: int = 24) -> Path:
    """An LMDB of ``n`` incompressible 64×64 JPEGs (~100 KiB in all), so pages lie past 12 KiB."""
    rng = np.random.default_rng(0)
    env = lmdb.open(str(root), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i in range(n):
            img = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
            txn.put(f"{i:04d}".encode(), encode(img, "JPEG", quality=95))
    env.close()
    return root


def test_truncated_lmdb_is_an_error_naming_the_path(tmp_path):
    root = big_lsun(tmp_path / "bedroom_train_lmdb")
    mdb = root / "data.mdb"
    assert mdb.stat().st_size > 12 * 1024
    os.truncate(mdb, 12 * 1024)  # an interrupted copy: mapping it and reading on was a SIGBUS
    with pytest.raises(lsun.LMDBError, match=rf"{mdb}.* is truncated: 12288 bytes"):
        LSUNDataset(root, cache_dir=tmp_path / "cache")
    os.truncate(mdb, 100)
    with pytest.raises(lsun.LMDBError, match=rf"{mdb}.* no valid meta page"):
        LSUNDataset(root, cache_dir=tmp_path / "cache")


def test_truncated_lmdb_recipe_exits_1_with_the_path(tmp_path):
    """The process survives to print the error: exit status 1, not −7 (SIGBUS)."""
    root = big_lsun(tmp_path / "bedroom_train_lmdb")
    os.truncate(root / "data.mdb", 12 * 1024)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "recipes/lsun_blur.py", "--data", str(root), "--quick", "--model", "tiny",
                          "--steps", "1", "--out", str(tmp_path / "runs")],
                         cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, (res.returncode, res.stderr[-2000:])
    assert str(root / "data.mdb") in res.stderr and "truncated" in res.stderr


def test_damaged_lmdb_page_is_an_error_naming_the_path(tmp_path):
    root = big_lsun(tmp_path / "bedroom_train_lmdb")
    mdb = root / "data.mdb"
    info_env = lmdb.open(str(root), readonly=True, lock=False)
    psize, leaf_root = info_env.stat()["psize"], None
    info_env.close()
    data = bytearray(mdb.read_bytes())
    # the main DB's root page number sits in the newer meta page (LMDB 0.9 layout, offset 128)
    metas = [(int.from_bytes(data[o + 144:o + 152], "little"), o) for o in (0, psize)]
    leaf_root = int.from_bytes(data[max(metas)[1] + 128:max(metas)[1] + 136], "little")
    data[leaf_root * psize:(leaf_root + 1) * psize] = b"\xa5" * psize  # garbage over the B-tree root
    mdb.write_bytes(bytes(data))
    with pytest.raises(lsun.LMDBError, match=rf"{mdb}"):
        LSUNDataset(root, cache_dir=tmp_path / "cache")


# --------------------------------------------------------------------- build_dataset

def test_build_dataset_dispatch(image_folder, lsun_root, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert isinstance(build_dataset("digits", "test"), DigitsDataset)
    gray = build_dataset("photos-gray", "test", size=8)
    assert isinstance(gray, PhotoCropsDataset) and gray[0].shape == (1, 8, 8)
    folder = build_dataset(str(image_folder), size=32)
    assert isinstance(folder, ImageFolderDataset) and folder[0].shape == (3, 32, 32)
    lmdb_ds = build_dataset(lsun_root, value_range=(0.0, 1.0))
    assert isinstance(lmdb_ds, LSUNDataset) and lmdb_ds[0].shape == (3, 64, 64)


def test_build_dataset_errors(image_folder, tmp_path):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        build_dataset(str(missing))
    with pytest.raises(FileNotFoundError, match="digits"):  # lists the embedded names
        build_dataset("mnist")
    with pytest.raises(ValueError, match="no splits"):
        build_dataset(image_folder, split="test")
    with pytest.raises(ValueError, match="split"):
        build_dataset("digits", split="val")
