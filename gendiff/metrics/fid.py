"""FID and KID through clean-fid, without ever downloading at run time.

FID: Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium" (NeurIPS 2017).  KID: Binkowski et al., "Demystifying MMD GANs" (ICLR 2018).
Resizing and quantisation follow clean-fid (Parmar, Zhang & Zhu, "On Aliased Resizing and
Surprising Subtleties in GAN Evaluation", CVPR 2022): in mode "clean" every image is resized
to 299x299 with PIL bicubic on float data, without re-quantising, before the features.

clean-fid downloads what it lacks (the Inception torchscript into the shared /tmp, reference
statistics into its package folder).  Here each needed file is looked for first and a
missing one raises :class:`MissingWeightsError` saying where to fetch it and where to put it;
the feature network is then built from the local file and handed to clean-fid as its
``custom_feat_extractor``, so clean-fid never reaches its own download code.

The Inception weights live in the user's cache folder (``$XDG_CACHE_HOME/gendiff``, else
``~/.cache/gendiff``), not in the shared /tmp where anyone can plant a file, and their SHA-256
is checked before ``torch.jit.load`` (:func:`verify_weights`). Neither clean-fid nor
StyleGAN2-ADA (whose URL clean-fid uses) publishes a hash of the file, so the expected hash is
the one given (``inception_sha256=``, ``$GENDIFF_INCEPTION_SHA256`` or :data:`INCEPTION_SHA256`),
else the one recorded in ``<file>.sha256`` on first use (trust on first use, with a warning
that prints it for comparison with a trusted copy); a file that no longer matches is refused.

    >>> fid("samples/", "data/", inception_path="/models/inception-2015-12-05.pt")
    >>> fid(gen, ("cifar10", 32, "train"), num_gen=10_000)   # precomputed clean-fid stats
    >>> fid("samples/", "data/", feature_extractor=my_net)  # any (N, D) embedding
"""
from __future__ import annotations

import hashlib
import os
import warnings
from typing import Callable

import numpy as np
import torch

__all__ = ["fid", "kid", "fid_from_features", "kid_from_features", "MissingWeightsError", "WeightsHashError",
           "INCEPTION_FILE", "INCEPTION_URL", "INCEPTION_DIR", "INCEPTION_SHA256", "default_inception_path",
           "verify_weights"]

# Facts from clean-fid 0.1.35 (downloads_helper.py, features.py, inception_pytorch.py).
INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = ("https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
                 + INCEPTION_FILE)
# None: the user cache folder (see inception_dir). clean-fid's own /tmp is shared by all users.
INCEPTION_DIR: str | None = None
# No hash is published for this file (clean-fid 0.1.35, stylegan2-ada-pytorch); pin one here, by
# argument or by $GENDIFF_INCEPTION_SHA256 once a trusted copy's hash is known.
INCEPTION_SHA256: str | None = None
SHA_ENV_VAR = "GENDIFF_INCEPTION_SHA256"
STATS_URL = "https://www.cs.cmu.edu/~clean-fid/stats/"
# mode "legacy_pytorch" uses pytorch-fid's weights through torch.hub's cache instead.
PT_INCEPTION_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                    "pt_inception-2015-12-05-6726825d.pth")
ENV_VAR = "GENDIFF_INCEPTION_PATH"
MODES = ("clean", "legacy_tensorflow", "legacy_pytorch")


class MissingWeightsError(FileNotFoundError):
    """A weights or statistics file needed by FID/KID is not on this machine."""


class WeightsHashError(ValueError):
    """A weights file whose SHA-256 is not the expected one; it was not loaded."""


def inception_dir() -> str:
    """:data:`INCEPTION_DIR` if set, else ``$XDG_CACHE_HOME/gendiff`` (``~/.cache/gendiff``)."""
    if INCEPTION_DIR:
        return INCEPTION_DIR
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gendiff")


def default_inception_path() -> str:
    """Where the Inception torchscript is looked for: $GENDIFF_INCEPTION_PATH, else
    ``<user cache>/gendiff/inception-2015-12-05.pt``."""
    return os.environ.get(ENV_VAR) or os.path.join(inception_dir(), INCEPTION_FILE)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_weights(path: str, expected: str | None = None) -> str:
    """Check ``path``'s SHA-256 before anything loads it; returns the hash.

    The expected hash is ``expected``, else ``$GENDIFF_INCEPTION_SHA256``, else
    :data:`INCEPTION_SHA256`, else the one pinned in ``<path>.sha256`` on first use. With none of
    these, the hash is pinned now and a warning prints it.

    Raises:
        WeightsHashError: the file's hash differs from the expected one (named with both hashes).
    """
    got = _sha256(path)
    pin = path + ".sha256"
    want = expected or os.environ.get(SHA_ENV_VAR) or INCEPTION_SHA256
    source = "the expected hash"
    if not want and os.path.isfile(pin):
        want, source = open(pin).read().split()[0], f"the hash pinned on first use in {pin}"
    if want:
        if got != want.lower():
            raise WeightsHashError(f"{path} has SHA-256 {got}, not {want.lower()} ({source}); refusing to load "
                                   "it. Replace it with a trusted copy from " + INCEPTION_URL)
        return got
    try:
        with open(pin, "w") as f:
            f.write(f"{got}  {os.path.basename(path)}\n")
    except OSError:
        pass
    warnings.warn(f"no expected SHA-256 for {path} (none is published); first use: it is {got}, pinned in "
                  f"{pin}. Compare it with a trusted copy, or set ${SHA_ENV_VAR}", RuntimeWarning, stacklevel=2)
    return got


def _missing_message(what: str, path: str, url: str, hint: str) -> str:
    return (f"{what} not found at {path}\n"
            f"  fetch it on a machine with internet:  {url}\n"
            f"  and copy it to {path}{hint}")


def _inception_file(inception_path: str | None) -> str:
    path = inception_path or default_inception_path()
    if os.path.isdir(path):
        path = os.path.join(path, INCEPTION_FILE)
    return path


def _stats_path(ref: tuple, mode: str, metric: str) -> tuple[str, str]:
    """(local path, url) of a clean-fid reference-statistics file, named as
    cleanfid.features.get_reference_statistics names it."""
    import cleanfid

    name, res, split = ref
    res = "na" if split == "custom" else res
    suffix = "_kid" if metric == "KID" else ""
    fname = f"{name}_{mode}_{split}_{res}{suffix}.npz".lower()
    return os.path.join(os.path.dirname(cleanfid.__file__), "stats", fname), STATS_URL + fname


def _check_files(mode: str, need_inception: bool, inception_path, stats_ref, metric) -> None:
    """Raise one MissingWeightsError listing every needed file that is absent."""
    problems = []
    if need_inception and mode == "legacy_pytorch":
        path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(PT_INCEPTION_URL))
        if not os.path.exists(path):
            problems.append(_missing_message("pytorch-fid Inception weights", path,
                                             PT_INCEPTION_URL, " (torch.hub cache)"))
    elif need_inception:
        path = _inception_file(inception_path)
        if not os.path.exists(path):
            problems.append(_missing_message(
                "Inception weights (clean-fid torchscript)", path, INCEPTION_URL,
                f", or pass inception_path=, or set ${ENV_VAR}"))
    if stats_ref is not None:
        path, url = _stats_path(stats_ref, mode, metric)
        if not os.path.exists(path):
            problems.append(_missing_message(f"clean-fid {metric} reference statistics",
                                             path, url, ""))
    if problems:
        raise MissingWeightsError("\n".join(problems))


def _inception_model(mode: str, inception_path: str | None, device, inception_sha256: str | None = None) -> Callable:
    """clean-fid's Inception feature network, loaded from the local file only, hash checked first."""
    from cleanfid.inception_torchscript import InceptionV3W

    if mode == "legacy_pytorch":
        from cleanfid.features import build_feature_extractor  # torch.hub cache is present

        return build_feature_extractor(mode, torch.device(device), use_dataparallel=False)

    class LocalInceptionV3W(InceptionV3W):
        # InceptionV3W.__init__ insists on /tmp-style folder + fixed name and may download;
        # keep its forward (normalisation, optional internal resize) but load our file.
        def __init__(self, path: str, resize_inside: bool):
            torch.nn.Module.__init__(self)
            self.base = torch.jit.load(path, map_location="cpu").eval()
            self.layers = self.base.layers
            self.resize_inside = resize_inside

    path = _inception_file(inception_path)
    verify_weights(path, inception_sha256)
    net = LocalInceptionV3W(path, mode == "legacy_tensorflow")
    return net.to(device).eval()


def _wrap_extractor(fn: Callable, device) -> Callable:
    """Make any callable usable by clean-fid, which calls ``model(batch.to(device))`` on a
    float32 batch (N, 3, 299, 299) in [0, 255] (mode "clean") and needs a torch tensor back."""
    if isinstance(fn, torch.nn.Module):
        fn = fn.to(device).eval()

    def model(x: torch.Tensor) -> torch.Tensor:
        f = fn(x)
        f = f if torch.is_tensor(f) else torch.as_tensor(np.asarray(f))
        return f.float().reshape(len(x), -1)

    return model


def _setup(gen_or_folder, ref, mode, feature_extractor, inception_path, device, metric, inception_sha256=None):
    """Validate the inputs, check the files and return (feature model, stats tuple or None)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    stats_ref = None if isinstance(ref, (str, os.PathLike)) else tuple(ref)
    if stats_ref is not None and len(stats_ref) != 3:
        raise ValueError("ref must be a folder or (dataset_name, dataset_res, dataset_split)")
    if mode == "legacy_pytorch" and inception_path is not None:
        raise ValueError("inception_path is the torchscript of modes 'clean' and "
                         "'legacy_tensorflow'; legacy_pytorch reads torch.hub's cache")
    if stats_ref is not None and feature_extractor is not None:
        raise ValueError("precomputed clean-fid statistics are Inception features; "
                         "a custom feature_extractor needs a reference folder")
    for path in (gen_or_folder, ref):
        if isinstance(path, (str, os.PathLike)) and not os.path.isdir(path):
            raise FileNotFoundError(f"image folder not found: {path}")
    _check_files(mode, feature_extractor is None, inception_path, stats_ref, metric)
    if feature_extractor is None:
        return _inception_model(mode, inception_path, device, inception_sha256), stats_ref
    return _wrap_extractor(feature_extractor, device), stats_ref


def fid(gen_or_folder, ref, *, mode: str = "clean", num_gen: int = 50_000, batch_size: int = 32,
        feature_extractor: Callable | None = None, inception_path: str | None = None,
        device="cpu", num_workers: int = 0, z_dim: int = 512, verbose: bool = False,
        inception_sha256: str | None = None) -> float:
    """Frechet Inception Distance via ``cleanfid.fid.compute_fid``.

    Args:
        gen_or_folder: a folder of images, or a generator ``gen(z) -> images`` mapping
            z ~ N(0, I) of shape (batch_size, z_dim) to exactly batch_size images
            (torch, (B, 3, H, W), values in [0, 255], uint8 or float) as clean-fid expects.
        ref: a folder of images, or (dataset_name, dataset_res, dataset_split) naming
            clean-fid's precomputed statistics (e.g. ("cifar10", 32, "train")); these must
            already be in cleanfid/stats/ (the error says which file and from where).
        mode: "clean" (default), "legacy_tensorflow" or "legacy_pytorch", as in clean-fid.
        num_gen: number of generated images (generators only; folders use every image).
        batch_size: batch of the feature network, and of each ``gen`` call.
        feature_extractor: callable or nn.Module mapping the batch clean-fid feeds it
            (float32 (N, 3, 299, 299) in [0, 255] in mode "clean") to (N, D) features;
            replaces Inception (FID then is "Frechet distance in that embedding").
        inception_path: local ``inception-2015-12-05.pt`` (file or folder holding it); default
            ``$GENDIFF_INCEPTION_PATH`` or ``<user cache>/gendiff/inception-2015-12-05.pt``.
        inception_sha256: the file's expected SHA-256, checked before loading (see
            :func:`verify_weights` for the default).
        device: device of the feature network and of z.
        num_workers: DataLoader workers resizing folder images (0: in this process).
        z_dim: latent size passed to ``gen``.
        verbose: let clean-fid print progress.

    Raises:
        MissingWeightsError: the Inception weights or reference statistics are not local.
        WeightsHashError: the Inception file is not the expected one (it is not loaded).
    """
    from cleanfid.fid import compute_fid

    model, stats = _setup(gen_or_folder, ref, mode, feature_extractor, inception_path,
                          device, "FID", inception_sha256)
    is_folder = isinstance(gen_or_folder, (str, os.PathLike))
    kwargs = dict(mode=mode, num_workers=num_workers, batch_size=batch_size, device=device,
                  num_gen=num_gen, z_dim=z_dim, custom_feat_extractor=model, verbose=verbose,
                  use_dataparallel=False)
    if stats is not None:
        kwargs.update(dataset_name=stats[0], dataset_res=stats[1], dataset_split=stats[2])
    else:
        kwargs.update(fdir2=str(ref))
    if is_folder:
        kwargs.update(fdir1=str(gen_or_folder))
    else:
        kwargs.update(gen=gen_or_folder)
    return float(compute_fid(**kwargs))


def _features(source, model, *, mode, num_gen, batch_size, device, num_workers, z_dim,
              verbose) -> np.ndarray:
    """Features of a folder or a generator, exactly as clean-fid's FID path computes them."""
    from cleanfid.fid import get_folder_features, get_model_features

    if isinstance(source, (str, os.PathLike)):
        return get_folder_features(str(source), model, num_workers=num_workers,
                                   batch_size=batch_size, device=device, mode=mode,
                                   verbose=verbose)
    return get_model_features(source, model, mode=mode, z_dim=z_dim, num_gen=num_gen,
                              batch_size=batch_size, device=device, verbose=verbose)


def kid(gen_or_folder, ref, *, mode: str = "clean", num_gen: int = 50_000, batch_size: int = 32,
        feature_extractor: Callable | None = None, inception_path: str | None = None,
        device="cpu", num_workers: int = 0, z_dim: int = 512, verbose: bool = False,
        seed: int = 0, inception_sha256: str | None = None) -> float:
    """Kernel Inception Distance (unbiased MMD^2, cubic polynomial kernel) via clean-fid.

    Arguments as :func:`fid`.  clean-fid's own ``compute_kid`` takes no custom feature
    extractor and always builds (so downloads) Inception, so this assembles the same
    computation from its parts: get_folder_features / get_model_features,
    get_reference_statistics(metric="KID") and kernel_distance (100 subsets of up to 1000).
    ``seed`` fixes those subsets (clean-fid draws them from numpy's global RNG, which is
    restored afterwards).
    """
    from cleanfid.features import get_reference_statistics

    model, stats = _setup(gen_or_folder, ref, mode, feature_extractor, inception_path,
                          device, "KID", inception_sha256)
    opts = dict(mode=mode, num_gen=num_gen, batch_size=batch_size, device=device,
                num_workers=num_workers, z_dim=z_dim, verbose=verbose)
    feats = _features(gen_or_folder, model, **opts)
    if stats is not None:
        ref_feats = get_reference_statistics(stats[0], stats[1], mode=mode, seed=0,
                                             split=stats[2], metric="KID")
    else:
        ref_feats = _features(ref, model, **opts)
    return kid_from_features(ref_feats, feats, seed=seed)


def fid_from_features(f1, f2) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N1, D), (N2, D)
    (clean-fid's ``frechet_distance``, scipy.linalg.sqrtm based)."""
    from cleanfid.fid import fid_from_feats

    return float(fid_from_feats(np.asarray(f1, np.float64), np.asarray(f2, np.float64)))


def kid_from_features(f1, f2, seed: int | None = 0, num_subsets: int = 100,
                      max_subset_size: int = 1000) -> float:
    """KID between two feature sets with clean-fid's ``kernel_distance``; ``seed`` fixes
    the random subsets without disturbing numpy's global RNG (None: use it as is)."""
    from cleanfid.fid import kernel_distance

    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if seed is None:
        return kernel_distance(f1, f2, num_subsets, max_subset_size)
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        return kernel_distance(f1, f2, num_subsets, max_subset_size)
    finally:
        np.random.set_state(state)
