"""Small datasets built from data that ships inside installed packages: nothing is downloaded.

``DigitsDataset`` -- scikit-learn's ``load_digits()``: 1797 handwritten digits, 8x8, values
0..16, upsampled (bilinear) to ``size``. Split: a fixed permutation of all 1797 images
(``numpy.random.default_rng(0)``); the last 20% (359 images) are the test split, the first 1438
the train split.

``PhotoCropsDataset`` -- square crops of the photographs bundled in the scikit-image wheel
(only those that load without ``pooch``/network). The split is BY PHOTOGRAPH, so no test crop
shares pixels with a train crop:

* RGB train (6): astronaut, chelsea, motorcycle_left, hubble_deep_field, immunohistochemistry,
  retina. RGB test (2): coffee, rocket.
* Grayscale ("photos-gray") uses the RGB photographs as luminance, with the same split, plus
  native grayscale photographs / scans: train (+8) camera, moon, brick, grass, clock, page,
  text, cell; test (+2) coins, gravel.

With the default ``crops_per_photo=256``: "photos" has 1536 train / 512 test crops,
"photos-gray" 3584 train / 1024 test crops.

``SignalsDataset`` ("signals") -- smooth random 1-D signals generated here, (1, L): each is a
sum of ``components`` sinusoids with whole numbers of cycles k in 1..min(8, L // 4) over the
window (so each signal is periodic), amplitudes ∝ u/k with u uniform in [0.5, 1] (a 1/f²
power spectrum, like natural images), uniform phases; each signal is scaled by its amplitude sum
into [0, 1]. The splits are different draws of ``numpy.random.default_rng([seed, split])``:
2048 train and 512 test signals by default. For the 1-D demo and tests.

``cat`` (same picture as chelsea), ``motorcycle_right`` (near-duplicate of the left view), and
the synthetic images (colorwheel, logo, checkerboard, phantom, horse, binary_blobs) are not used.

Crops: each photograph gives ``crops_per_photo`` crops, cycling through three scales -- a crop
window of 1/8, 1/4 and 1/2 of the photo's short side (never smaller than ``size`` pixels, never
larger than the short side) -- each resized to ``size x size``. A window thus usually covers
many more than ``size`` pixels, which gives natural-image statistics (and 1/f spectra) at small
sizes rather than magnified pixel noise. Implemented as "shrink the whole photo by
size/window with an antialiased bilinear filter, then cut a ``size`` crop", which equals
crop-then-resize up to the filter's footprint at the crop border, and is much cheaper.
Positions come from ``numpy.random.default_rng([seed, crc32(photo name)])``, so a photo's crops
do not depend on which other photos are in the list. Everything is precomputed in ``__init__``.
"""
from __future__ import annotations

import zlib
from functools import partial
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from gendiff.value_range import map_range

SPLITS = ("train", "test")
DIGITS_TEST_FRACTION = 0.2

# Natural RGB photographs bundled in skimage.data, split by photograph.
RGB_TRAIN = ("astronaut", "chelsea", "motorcycle_left", "hubble_deep_field",
             "immunohistochemistry", "retina")
RGB_TEST = ("coffee", "rocket")
# Natural grayscale photographs / scans bundled in skimage.data (used only in grayscale mode).
GRAY_TRAIN = ("camera", "moon", "brick", "grass", "clock", "page", "text", "cell")
GRAY_TEST = ("coins", "gravel")
# Crop window as a fraction of the photo's short side.
CROP_FRACTIONS = (1 / 8, 1 / 4, 1 / 2)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _resize(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Resize a ``(N, C, H, W)`` batch with an antialiased bilinear filter.

    Bilinear weights are non-negative, so values stay inside the input's range (no ringing).
    """
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True)


def _resize01(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """``_resize`` for data in [0, 1], clamped because float round-off can exceed 1 by ~1e-7."""
    return _resize(x, hw).clamp_(0.0, 1.0)


class DigitsDataset(torch.utils.data.Dataset):
    """scikit-learn's 8x8 handwritten digits, upsampled to ``size x size``, one channel.

    Args:
        split: "train" (first 80% of a fixed permutation, 1438 images) or "test" (last 359).
        size: output height and width in pixels.
        value_range: ``(lo, hi)`` that pixel values in [0, 1] (ink level / 16) are mapped to.

    Attributes:
        images: the whole split as a float32 ``(N, 1, size, size)`` tensor.
        labels: the digit classes, int64 ``(N,)`` (not returned by ``__getitem__``; a
            conditional run reads them through ``gendiff.data.Labelled``).
        classes: the class names "0" … "9".
        indices: positions of the split's images in ``load_digits()``.
    """

    spec = "digits"

    def __init__(self, split: str = "train", size: int = 16,
                 value_range: tuple[float, float] = (-1.0, 1.0)):
        from sklearn.datasets import load_digits  # imported here: sklearn is slow to import

        _check_split(split)
        digits = load_digits()
        n = len(digits.images)
        perm = np.random.default_rng(0).permutation(n)
        n_test = int(round(DIGITS_TEST_FRACTION * n))
        self.indices = perm[n - n_test:] if split == "test" else perm[:n - n_test]
        x = torch.from_numpy(digits.images[self.indices].astype(np.float32) / 16.0)
        self.images = map_range(_resize01(x[:, None], (int(size), int(size))), (0.0, 1.0), value_range)
        self.labels = torch.from_numpy(digits.target[self.indices].astype(np.int64))
        self.classes = [str(k) for k in range(10)]
        self.split, self.size, self.value_range = split, int(size), tuple(value_range)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def _load_photo(name: str) -> np.ndarray:
    """A bundled skimage photograph as uint8 ``(H, W)`` or ``(H, W, 3)``."""
    import skimage.data

    if name == "motorcycle_left":
        return skimage.data.stereo_motorcycle()[0]
    return getattr(skimage.data, name)()


def _photo_tensor(name: str, grayscale: bool) -> torch.Tensor:
    """Photo ``name`` as float32 ``(1, C, H, W)`` in [0, 1]; RGB becomes luminance if asked."""
    x = torch.from_numpy(np.ascontiguousarray(_load_photo(name))).float() / 255.0
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
    if grayscale and x.shape[0] == 3:
        # ITU-R BT.601 luma, the weights PIL's convert("L") uses, so folders and crops agree.
        x = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
    return x[None]


def photo_crops(name: str, size: int, n_crops: int, grayscale: bool = False,
                seed: int = 0) -> torch.Tensor:
    """``n_crops`` deterministic square crops of photo ``name``, as ``(n_crops, C, size, size)``.

    Crop ``k`` uses window fraction ``CROP_FRACTIONS[k % 3]`` of the short side (see module doc).
    """
    photo = _photo_tensor(name, grayscale)
    h, w = photo.shape[-2:]
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    out = []
    for j, frac in enumerate(CROP_FRACTIONS):
        count = len(range(j, n_crops, len(CROP_FRACTIONS)))
        if count == 0:
            continue
        window = min(max(frac * min(h, w), size), min(h, w))
        hs, ws = max(size, round(h * size / window)), max(size, round(w * size / window))
        small = _resize01(photo, (hs, ws))[0]
        tops = rng.integers(0, hs - size + 1, size=count)
        lefts = rng.integers(0, ws - size + 1, size=count)
        out.append(torch.stack([small[:, t:t + size, l:l + size] for t, l in zip(tops, lefts)]))
    # Interleave the scales back into crop order k = 0, 1, 2, ... (k % 3 = scale).
    crops = torch.empty(n_crops, photo.shape[1], size, size)
    for j, block in enumerate(out):
        crops[j::len(CROP_FRACTIONS)] = block
    return crops


def photo_names(split: str, grayscale: bool) -> tuple[str, ...]:
    """The skimage photographs used for ``split`` (``grayscale`` adds the native gray ones)."""
    _check_split(split)
    if split == "train":
        return RGB_TRAIN + (GRAY_TRAIN if grayscale else ())
    return RGB_TEST + (GRAY_TEST if grayscale else ())


class PhotoCropsDataset(torch.utils.data.Dataset):
    """Deterministic multi-scale crops of scikit-image's bundled photographs (see module doc).

    Args:
        split: "train" or "test"; the split is by photograph (``photo_names(split, grayscale)``).
        size: output height and width in pixels.
        grayscale: one luminance channel, and the native grayscale photographs join the RGB ones.
        crops_per_photo: crops cut from each photograph (cycling through the three scales).
        value_range: ``(lo, hi)`` that pixel values in [0, 1] are mapped to.
        seed: seed of the crop positions.

    Attributes:
        images: the whole split, float32 ``(N, C, size, size)``, N = photos * crops_per_photo.
        photo_index: for each crop, its photograph's position in ``photos``.
        photos: names of the photographs used.
    """

    def __init__(self, split: str = "train", size: int = 32, grayscale: bool = False,
                 crops_per_photo: int = 256, value_range: tuple[float, float] = (-1.0, 1.0),
                 seed: int = 0):
        if int(size) < 1 or int(crops_per_photo) < 1:
            raise ValueError(f"size and crops_per_photo must be positive, "
                             f"got {size!r}, {crops_per_photo!r}")
        self.photos = photo_names(split, grayscale)
        crops = [photo_crops(p, int(size), int(crops_per_photo), grayscale, seed)
                 for p in self.photos]
        self.images = map_range(torch.cat(crops), (0.0, 1.0), value_range)
        self.photo_index = torch.arange(len(self.photos)).repeat_interleave(int(crops_per_photo))
        self.split, self.size, self.grayscale = split, int(size), grayscale
        self.value_range = tuple(value_range)
        self.spec = "photos-gray" if grayscale else "photos"

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


class SignalsDataset(torch.utils.data.Dataset):
    """Smooth random 1-D signals, one channel, length ``size`` (see the module doc).

    Args:
        split: "train" or "test" (independent draws).
        size: the length L.
        value_range: ``(lo, hi)`` that the signals in [0, 1] are mapped to.
        n: how many signals (default 2048 train, 512 test).
        components: sinusoids per signal.
        seed: with the split, seeds the draw.

    Attributes:
        signals: the whole split, float32 ``(n, 1, L)``.
    """

    spec = "signals"

    def __init__(self, split: str = "train", size: int = 64, value_range: tuple[float, float] = (-1.0, 1.0),
                 n: int | None = None, components: int = 4, seed: int = 0):
        _check_split(split)
        size, n = int(size), int(n if n is not None else (2048 if split == "train" else 512))
        if size < 2 or n < 1 or components < 1:
            raise ValueError(f"signals need size ≥ 2, n ≥ 1 and components ≥ 1, got {size}, {n}, {components}")
        rng = np.random.default_rng([seed, SPLITS.index(split)])
        k = rng.integers(1, max(1, min(8, size // 4)) + 1, size=(n, components, 1))
        amp = rng.uniform(0.5, 1.0, size=(n, components, 1)) / k
        phase = rng.uniform(0.0, 2 * np.pi, size=(n, components, 1))
        t = np.arange(size) / size
        x = (amp * np.sin(2 * np.pi * k * t + phase)).sum(1) / amp.sum(1)  # in [-1, 1]
        self.signals = map_range(torch.from_numpy(0.5 + 0.5 * x)[:, None], (0.0, 1.0), value_range)
        self.split, self.size, self.value_range = split, size, tuple(value_range)

    def __len__(self) -> int:
        return len(self.signals)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.signals[index]


EMBEDDED: dict[str, Callable[..., torch.utils.data.Dataset]] = {
    "digits": DigitsDataset,
    "photos": PhotoCropsDataset,
    "photos-gray": partial(PhotoCropsDataset, grayscale=True),
    "signals": SignalsDataset,
}


def embedded_dataset(name: str, split: str = "train", size: int | tuple[int, ...] | None = None,
                     value_range: tuple[float, float] = (-1.0, 1.0), **args) -> torch.utils.data.Dataset:
    """Build the embedded dataset ``name`` ("digits", "photos", "photos-gray" or "signals").

    ``size`` is the side (the length of a signal), or the sides, all equal; ``None`` keeps the
    dataset's own default (16 for digits, 32 for photos, 64 for signals). ``args`` go to the
    dataset's constructor (e.g. ``n`` for signals).
    """
    if name not in EMBEDDED:
        raise ValueError(f"unknown embedded dataset {name!r}; valid names: {', '.join(EMBEDDED)}")
    if size is not None and not isinstance(size, int):
        if len(set(size)) != 1:
            raise ValueError(f"the embedded dataset {name!r} has equal sides, got {tuple(size)}")
        size = int(size[0])
    kwargs = {} if size is None else {"size": size}
    try:
        return EMBEDDED[name](split=split, value_range=value_range, **kwargs, **args)
    except TypeError as e:
        raise ValueError(f"embedded dataset {name!r}: arguments {args}: {e}") from None
