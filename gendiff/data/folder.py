"""Images from a folder tree, and the decoding helpers the other datasets share.

``ImageFolderDataset`` walks ``root`` recursively, keeps every file whose extension is one of
``IMAGE_EXTENSIONS`` (case-insensitive) and resizes each image to ``size x size`` (or to
``size = (H, W)``, e.g. (24, 16) for 3:2 portraits, which keeps such images' aspect ratio) by
a plain resize of the WHOLE image: no cropping, so an aspect ratio other than H:W is not
preserved. This is how the blurring-diffusion / heat-dissipation papers prepared LSUN, and it
keeps every pixel of the scene in the training image.

Files that cannot be decoded are skipped at read time: ``__getitem__`` returns the next readable
image instead, the file is counted in ``n_skipped`` and a warning is issued once per dataset
object. With a multi-process DataLoader each worker holds its own copy of the dataset, so the
count in the main process only covers what the main process itself read.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from gendiff.value_range import check_range, map_range

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
_MODES = {1: "L", 3: "RGB"}


def _to_8bit(img: Image.Image) -> Image.Image:
    """Grayscale of more than 8 bits to 8-bit "L" by scaling; PIL's convert() would clip at 255
    (a float image in [0, 1] came out black, a 32-bit one white).

    - "I;16…" (16-bit PNG/TIFF): / 257.
    - "I" (32-bit integer): values ≤ 255 are 8-bit data, ≤ 65535 16-bit data; above, refused.
    - "F" (32-bit float): values in [0, 1] are scaled by 255; others refused (no range to assume).
    """
    if not (img.mode.startswith("I") or img.mode == "F"):
        return img
    arr = np.asarray(img, dtype=np.float64)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if img.mode == "F":
        if not (np.isfinite(arr).all() and lo >= 0.0 and hi <= 1.0):
            raise ValueError(f"a 32-bit float image must hold values in [0, 1], got [{lo:.4g}, {hi:.4g}]; "
                             "convert it to 8- or 16-bit")
        arr = arr * 255.0
    elif img.mode.startswith("I;16") or (img.mode == "I" and hi > 255):
        if hi > 65535 or lo < 0:
            raise ValueError(f"a 32-bit integer image must hold 8- or 16-bit values, got [{lo:.0f}, {hi:.0f}]; "
                             "convert it to 8- or 16-bit")
        arr = arr / 257.0  # 65535 -> 255
    return Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), "L")


def image_sides(size: int | tuple[int, ...]) -> tuple[int, int]:
    """``(H, W)`` from a side ``n`` (square) or ``(H, W)``; ValueError for anything else."""
    sides = (size, size) if isinstance(size, int) else tuple(size)
    if len(sides) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sides):
        raise ValueError(f"an image size is a positive side or (H, W), got {size!r}")
    return sides


def pil_to_tensor(img: Image.Image, size: int | tuple[int, int], channels: int,
                  value_range: tuple[float, float]) -> torch.Tensor:
    """Convert a PIL image to a float32 ``(channels, H, W)`` tensor in ``value_range``.

    The whole image is resized to ``size x size`` or ``size = (H, W)`` (bicubic; PIL
    antialiases when shrinking); nothing is cropped.
    """
    h, w = image_sides(size)
    img = _to_8bit(img).convert(_MODES[channels])
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    x = torch.from_numpy(arr.reshape(h, w, channels)).permute(2, 0, 1).contiguous()
    return map_range(x, (0.0, 1.0), value_range)


def _size(size: int | tuple[int, int]) -> int | tuple[int, int]:
    """A square's side as an int (as before), other sizes as (H, W)."""
    h, w = image_sides(size)
    return h if h == w else (h, w)


def decode_image(data: bytes | str | os.PathLike) -> Image.Image:
    """Decode an image from encoded bytes or a file path, fully, and apply EXIF orientation.

    ``Image.open`` is lazy; ``load()`` forces the decode here so that truncated or corrupt files
    fail inside the caller's try-block rather than later.
    """
    src = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    with Image.open(src) as img:
        img.load()
        # Camera JPEGs store rotation as a tag; apply it so portraits are not lying sideways.
        return ImageOps.exif_transpose(img)


def check_size_channels(size: int | tuple[int, int], channels: int) -> None:
    """Raise ValueError for a size that is not a positive side or (H, W), or a channel count
    other than 1 or 3."""
    image_sides(size)
    if channels not in _MODES:
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")


def list_images(root: str | os.PathLike) -> list[Path]:
    """All image files under ``root`` (recursive, sorted for a stable order).

    Raises FileNotFoundError naming ``root`` if it is missing or holds no image files.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {str(root)!r} (not a directory)")
    files = sorted(p for p in root.rglob("*")
                   if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise FileNotFoundError(
            f"no image files under {str(root)!r} (searched recursively for extensions "
            f"{', '.join(IMAGE_EXTENSIONS)}, case-insensitive)")
    return files


def folder_classes(root: Path, files: list[Path]) -> tuple[list[str] | None, torch.Tensor | None]:
    """(sorted class names, label per file) from each file's first sub-folder under ``root``;
    (None, None) when a file lies directly in ``root`` (the folder has no classes)."""
    firsts = [f.relative_to(root).parts for f in files]
    if any(len(p) < 2 for p in firsts):
        return None, None
    classes = sorted({p[0] for p in firsts})
    index = {c: k for k, c in enumerate(classes)}
    return classes, torch.tensor([index[p[0]] for p in firsts], dtype=torch.long)


class SkipsBadRecords(torch.utils.data.Dataset):
    """A dataset that returns the next readable record when one fails to decode.

    Subclasses implement :meth:`_source` (opened once per item) and :meth:`_decode`
    (``-> PIL.Image``), :meth:`_name` (for the warning) and set ``size``, ``channels``,
    ``value_range``. Failures are remembered (``n_bad``), warned about once, and never crash a
    run; a full lap without a readable record raises.
    """

    what, bad_word = "record", "unreadable"

    def __init__(self):
        self._bad: set[int] = set()
        self._warned = False

    def _source(self):
        return None

    def _decode(self, source, i: int) -> Image.Image:
        raise NotImplementedError

    def _name(self, i: int) -> str:
        return str(i)

    @property
    def n_bad(self) -> int:
        return len(self._bad)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.read(index)[1]

    def read(self, index: int) -> tuple[int, torch.Tensor]:
        """(the record actually read, its image): ``index`` or, past bad records, the next good one
        (a labelled view takes the label of the image it got, ``gendiff.data.labels``)."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} {self.what}s")
        source = self._source()  # outside the try: a source that cannot open is not a bad record
        for step in range(n):  # walk forward past bad records; one full lap means none is good
            i = (index % n + step) % n
            if i in self._bad:
                continue
            try:
                img = self._decode(source, i)
            except Exception as err:  # PIL and lmdb raise many types for bad data
                self._skip(i, err)
                continue
            return i, pil_to_tensor(img, self.size, self.channels, self.value_range)
        raise RuntimeError(f"none of the {n} {self.what}s in {str(self.root)!r} is readable")

    def _skip(self, i: int, err: Exception) -> None:
        self._bad.add(i)
        if not self._warned:
            self._warned = True
            warnings.warn(f"skipping {self.bad_word} {self.what} {self._name(i)} in {str(self.root)!r} ({err!r}); "
                          f"further failures are counted without warning", RuntimeWarning, stacklevel=4)


class ImageFolderDataset(SkipsBadRecords):
    """All images under a folder, resized (not cropped) to ``size x size`` or ``(H, W)``.

    Args:
        root: folder to search recursively for ``IMAGE_EXTENSIONS`` files.
        size: output side in pixels, or ``(H, W)``.
        channels: 3 for RGB, 1 for grayscale (converted with PIL's luminance formula).
        value_range: ``(lo, hi)`` that pixel values in [0, 1] are mapped to linearly.

    Attributes:
        files: the sorted list of image paths.
        classes, labels: the class of each image is its first sub-folder under ``root``, as in
            torchvision's ImageFolder (``root/<class>/…``): the sorted class names and a
            LongTensor of labels; both None when an image lies directly in ``root``.
        n_skipped: how many distinct files failed to decode so far (in this process).
    """

    def __init__(self, root: str | os.PathLike, size: int | tuple[int, int] = 64, channels: int = 3,
                 value_range: tuple[float, float] = (-1.0, 1.0)):
        super().__init__()
        check_size_channels(size, channels)
        check_range(value_range)  # validate early
        self.root = Path(root).expanduser()
        self.files = list_images(self.root)
        self.classes, self.labels = folder_classes(self.root, self.files)
        self.size, self.channels, self.value_range = _size(size), channels, tuple(value_range)
        self.spec = str(root)  # what a run trained on it records (gendiff.training.trainer)

    what = "image file"

    @property
    def n_skipped(self) -> int:
        return self.n_bad

    def __len__(self) -> int:
        return len(self.files)

    def _decode(self, source, i: int) -> Image.Image:
        return decode_image(self.files[i])

    def _name(self, i: int) -> str:
        return repr(str(self.files[i]))

    def __repr__(self) -> str:
        return (f"ImageFolderDataset(root={str(self.root)!r}, n={len(self)}, size={self.size}, "
                f"channels={self.channels}, value_range={self.value_range})")
