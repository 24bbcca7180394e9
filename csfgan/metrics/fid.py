"""FID and KID through torch-fidelity, on TF-Inception or on a network of our own that no loss uses.

Feature extractors, and every result names the one it used (``features``), so a table can say
which features an FID is on instead of passing one number off as another:

* ``inception-v3-compat``: torch-fidelity's port of the TF-Inception graph (pool3, 2048-d) that
  published FIDs use. Its weights are never downloaded from here: they come from torch-fidelity's
  torch-hub cache file or a configured path (:func:`inception_weights_available`), and are opened
  with ``torch.load(weights_only=True)`` before torch-fidelity (which unpickles them unrestricted)
  sees them, so a crafted file is refused without running anything.
* ``species-classifier``: the pooled features of :mod:`csfgan.metrics.feature_net`, a CNN trained
  for classification on the dataset's train split and used in no training loss: the offline FID.
* ``damsm-image-encoder``: the global feature of a DAMSM image encoder. Kept for comparison with
  older results only: offline it is also the perceptual loss's network, so FID on it measures in
  part what the generator was trained towards. ``csfgan evaluate`` does not use it.

The two module extractors take any ``nn.Module`` with ``global_features(images in [-1, 1],
(B, 3, H, W)) -> (B, D)``, registered with torch-fidelity as a feature extractor, and images at their
own resolution. The features go through torch-fidelity's own FID statistics, Fréchet distance and
KID code.

Reference features of the real test set are cached as ``.npz`` (read with ``allow_pickle=False``;
torch-fidelity's own cache is a pickle it loads unrestricted, so it is not used) under a name derived
from everything that affects them: a caller label (the dataset), the extractor's weights hash, the
resolution, N and a digest of the images themselves. A retrained network has another hash, so its
stale features are never reused. :func:`reference_features` fills that cache once (edm's
``fid.py ref``); :func:`fid_kid` computes the metrics against it (``calc``) and recomputes only on a
miss. Images reach torch-fidelity as in-memory uint8 datasets: no PNG round trip.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import warnings
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch_fidelity.metric_fid as tfm
import torch_fidelity.metric_kid as tfk
from torch import nn
from torch_fidelity import KEY_METRIC_FID, KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from csfgan.errors import UserError
from csfgan.io import atomic_path

INCEPTION = "inception-v3-compat"
FEATURE_NET = "species-classifier"
DAMSM = "damsm-image-encoder"
FEATURE_EXTRACTORS = (INCEPTION, FEATURE_NET, DAMSM)
MODULE_EXTRACTORS = (FEATURE_NET, DAMSM)
# The file torch-fidelity itself downloads into the torch-hub cache; looked for, never fetched.
INCEPTION_WEIGHTS_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
KID_SUBSETS = 100  # torch-fidelity's default, recorded in every result


class InceptionWeightsError(UserError):
    """An Inception weights file is missing, or is not a plain state_dict safe to hand torch-fidelity."""


def inception_weights_available(path: str | os.PathLike | None = None) -> str | None:
    """The TF-Inception weights file to use, or ``None`` if there is none on this machine.

    With ``path`` (a configured weights file) that file must exist: a configured path that is
    missing is a configuration error, not a reason to fall back to other features silently.
    Without it, torch-fidelity's torch-hub cache file is used if present.
    """
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise InceptionWeightsError(
                f"Inception weights file {path} (eval.inception_weights_path) does not exist; fix the path, "
                f"or leave it unset to use torch-fidelity's cache file {_hub_inception_path()} if present"
            )
        return str(path)
    hub = _hub_inception_path()
    return str(hub) if hub.is_file() else None


def _hub_inception_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILENAME


def check_inception_weights(path: str) -> None:
    """Open ``path`` as torch-fidelity will, but with ``weights_only=True``: a plain state_dict of
    tensors loads, anything that would run code when unpickled is refused before torch-fidelity
    (``torch.load(weights_only=False)``) ever opens it."""
    stat = os.stat(path)
    _check_state_dict_file(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=4)
def _check_state_dict_file(path: str, size: int, mtime_ns: int) -> None:
    # size and mtime are part of the memo key only, so a rewritten file is checked again.
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for code, RuntimeError/EOFError for damaged files
        raise InceptionWeightsError(
            f"Inception weights file {path} is not a plain state_dict ({type(exc).__name__}; loaded with "
            f"weights_only=True, so nothing in it ran): torch-fidelity needs its own "
            f"{INCEPTION_WEIGHTS_FILENAME}, a dict of tensors saved with torch.save"
        ) from exc
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise InceptionWeightsError(
            f"Inception weights file {path} holds a {type(obj).__name__}, not a state_dict of tensors: "
            f"use torch-fidelity's {INCEPTION_WEIGHTS_FILENAME}"
        )


@lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    # size and mtime are part of the memo key only, so a rewritten file is hashed again.
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _weights_file_hash(path: str) -> str:
    stat = os.stat(path)
    return _file_sha256(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


def module_weights_hash(module: nn.Module) -> str:
    """sha256 over a module's class, parameter/buffer names, dtypes, shapes and values."""
    digest = hashlib.sha256(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        # Viewed as bytes so every dtype (bfloat16 included) hashes without a numpy conversion.
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- a module's features as a torch-fidelity extractor

# torch-fidelity builds extractors itself, from the registered class and its keyword arguments, so
# a live module cannot be passed in directly. fid_kid puts the network here for the duration of one
# call, under a unique key handed to the extractor as the ``csfgan_network_key`` keyword (which
# create_feature_extractor forwards untouched to the extractor's constructor).
_NETWORKS: dict[str, nn.Module] = {}
_network_tokens = itertools.count()


@contextlib.contextmanager
def _registered_network(network: nn.Module, weights_hash: str) -> Iterator[str]:
    key = f"{weights_hash[:16]}-{next(_network_tokens)}"
    was_training = network.training
    _NETWORKS[key] = network
    network.eval()  # features of a frozen network: no dropout, BatchNorm running statistics
    try:
        yield key
    finally:
        del _NETWORKS[key]
        network.train(was_training)


class ModuleGlobalFeatures(FeatureExtractorBase):
    """``global_features`` of a caller's network on uint8 images, for torch-fidelity's FID/KID.

    The network is held outside this module's parameter tree on purpose: torch-fidelity calls
    ``requires_grad_(False)``, ``eval()`` and ``cuda()`` on the extractor, and those must not reach
    into (and silently change) the caller's network. Batches are moved to the network's device.
    """

    FEATURE = "global"

    def __init__(self, name, features_list, csfgan_network_key=None, **kwargs):
        super().__init__(name, features_list)
        if csfgan_network_key not in _NETWORKS:
            raise ValueError(
                f"no network registered under {csfgan_network_key!r}: use csfgan.metrics.fid.fid_kid "
                f"(which registers it) rather than torch-fidelity's feature_extractor={name!r} directly"
            )
        object.__setattr__(self, "_network", _NETWORKS[csfgan_network_key])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3):
            raise ValueError(f"expected uint8 images (B, 3, H, W); got {getattr(x, 'dtype', type(x))} {tuple(x.shape)}")
        param = next(itertools.chain(self._network.parameters(), self._network.buffers()), None)
        device = param.device if param is not None else torch.device("cpu")
        images = x.to(device, torch.float32) / 127.5 - 1.0  # uint8 [0, 255] -> the network's [-1, 1]
        features = self._network.global_features(images)
        if features.dim() != 2 or features.shape[0] != x.shape[0]:
            raise ValueError(f"global_features must return (B, D) = ({x.shape[0]}, D); got {tuple(features.shape)}")
        return (features.to(torch.float32),)

    @staticmethod
    def get_provided_features_list():
        return (ModuleGlobalFeatures.FEATURE,)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        if metric == "isc":
            raise ValueError("this network's features have no ImageNet class logits; Inception Score needs Inception")
        return ModuleGlobalFeatures.FEATURE

    @staticmethod
    def can_be_compiled():
        return False  # arbitrary user modules; compilation would only add start-up time here

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros((1, 3, 64, 64), dtype=torch.uint8)


for _name in MODULE_EXTRACTORS:
    if _name not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(_name, ModuleGlobalFeatures)


# ---------------------------------------------------------------- inputs, the reference cache and the metrics


class UInt8ImageDataset(torch.utils.data.Dataset):
    """uint8 (N, H, W, 3) images (in memory or memory-mapped) served as the uint8 (3, H, W) tensors
    torch-fidelity feeds its extractors."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        # A copy: memory-mapped arrays are read-only, and torch wants writable storage.
        return torch.from_numpy(np.array(self.images[i].transpose(2, 0, 1)))


def _check_images(name: str, images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        shape = getattr(images, "shape", None)
        dtype = getattr(images, "dtype", type(images).__name__)
        raise ValueError(f"{name} images must be a uint8 array (N, H, W, 3); got shape {shape}, dtype {dtype}")
    if len(images) < 2:
        raise ValueError(f"FID/KID need at least 2 {name} images (a covariance); got {len(images)}")


def _images_digest(images: np.ndarray) -> str:
    digest = hashlib.sha256(str(images.shape).encode())
    for start in range(0, len(images), 256):  # in chunks: a memory-mapped test set need not fit in RAM
        digest.update(np.ascontiguousarray(images[start : start + 256]).data)
    return digest.hexdigest()


def _slug(text: str) -> str:
    # The cache name becomes a file name: no path separators or odd characters.
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "real"


class _Resolved:
    """One extractor, ready to run: the torch-fidelity extractor, and what a result must record."""

    def __init__(self, extractor, network, inception_weights, cache_dir, cache_key, batch_size, verbose):
        if extractor not in FEATURE_EXTRACTORS:
            raise ValueError(f"unknown feature extractor {extractor!r}; use one of {FEATURE_EXTRACTORS}")
        if cache_key is not None and cache_dir is None:
            raise ValueError("cache_key was given without cache_dir: say where the reference features are cached")
        self.extractor = extractor
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.cache_key = cache_key
        self.batch_size = batch_size
        self.verbose = verbose
        self.network = None
        self.layer = FEATURE_EXTRACTORS_REGISTRY[extractor].get_default_feature_layer_for_metric("fid")
        self.kwargs = dict(verbose=verbose)
        if extractor == INCEPTION:
            weights = inception_weights_available(inception_weights)
            if weights is None:
                raise InceptionWeightsError(
                    f"no TF-Inception weights on this machine (looked for {_hub_inception_path()}) and they are "
                    f"never downloaded here: configure a weights file, or compute FID on {FEATURE_NET!r} "
                    f"features (`csfgan train-features`) and label it so"
                )
            check_inception_weights(weights)
            self.weights_hash = _weights_file_hash(weights)
            self.kwargs["feature_extractor_weights_path"] = weights
            self.cuda = torch.cuda.is_available()
        else:
            if network is None or not callable(getattr(network, "global_features", None)):
                raise ValueError(f"{extractor!r} features need network: an nn.Module with global_features(images)")
            self.network = network
            self.weights_hash = module_weights_hash(network)
            param = next(itertools.chain(network.parameters(), network.buffers()), None)
            # Move batches to GPU only if the network lives there; the extractor moves them anyway.
            self.cuda = param is not None and param.is_cuda

    def reference_path(self, real: np.ndarray) -> Path | None:
        """The cache file of the real set's features, or ``None`` without a cache directory."""
        if self.cache_dir is None:
            return None
        _, h, w, _ = real.shape
        label = _slug(self.cache_key or "real")
        name = f"{label}-w{self.weights_hash[:12]}-{h}x{w}-n{len(real)}-d{_images_digest(real)[:12]}"
        return self.cache_dir / f"{name}-{self.extractor}-features-{self.layer}.npz"

    @contextlib.contextmanager
    def feature_extractor(self) -> Iterator[FeatureExtractorBase]:
        if self.network is None:
            yield create_feature_extractor(self.extractor, [self.layer], cuda=self.cuda, **self.kwargs)
            return
        with _registered_network(self.network, self.weights_hash) as key:
            yield create_feature_extractor(self.extractor, [self.layer], cuda=self.cuda, csfgan_network_key=key,
                                           **self.kwargs)

    def features(self, images: np.ndarray, extractor: FeatureExtractorBase) -> torch.Tensor:
        # save_cpu_ram is torch-fidelity's switch for num_workers=0: serving in-memory uint8 arrays,
        # DataLoader worker processes would only add start-up cost.
        out = get_featuresdict_from_dataset(UInt8ImageDataset(images), extractor, self.batch_size, self.cuda,
                                            True, self.verbose)
        return out[self.layer].to(torch.float32)

    def reference(self, real: np.ndarray, extractor: FeatureExtractorBase) -> torch.Tensor:
        """The real set's features: from the cache when it holds them, else computed (and cached)."""
        path = self.reference_path(real)
        if path is not None and path.is_file():
            cached = _read_features(path, len(real))
            if cached is not None:
                return cached
        features = self.features(real, extractor)
        if path is not None:
            _write_features(path, features)
        return features


def _read_features(path: Path, n: int) -> torch.Tensor | None:
    """Cached features (n, D) float32, or ``None`` (with a warning) if the file is not such an array.

    ``allow_pickle=False``: an object array (a pickle) in the file is refused, never unpickled.
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            features = archive["features"]
    except Exception as exc:  # BadZipFile, ValueError (pickled objects), KeyError, OSError
        warnings.warn(f"{path}: unreadable reference-feature cache ({type(exc).__name__}: {exc}); recomputing it",
                      stacklevel=3)
        return None
    if features.dtype != np.float32 or features.ndim != 2 or len(features) != n:
        warnings.warn(f"{path}: reference-feature cache holds {features.dtype} {features.shape}, not ({n}, D) "
                      f"float32; recomputing it", stacklevel=3)
        return None
    return torch.from_numpy(features)


def _write_features(path: Path, features: torch.Tensor) -> None:
    tmp, commit = atomic_path(path)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, features=features.numpy())
        commit()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def reference_features(
    real: np.ndarray,
    *,
    extractor: str,
    network: nn.Module | None = None,
    inception_weights: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike,
    cache_key: str | None = None,
    batch_size: int = 64,
    verbose: bool = False,
) -> np.ndarray:
    """Features (N, D) of the real set, computed once and cached where :func:`fid_kid` looks for them.

    The ``ref`` half of edm's split: a workflow runs it once per dataset before the per-run ``calc``
    (:func:`fid_kid` with the same ``extractor``, network/weights, ``cache_dir`` and ``cache_key``).
    """
    if cache_dir is None:
        raise ValueError("reference_features needs cache_dir: caching them is its whole purpose")
    _check_images("real", real)
    resolved = _Resolved(extractor, network, inception_weights, cache_dir, cache_key, batch_size, verbose)
    with resolved.feature_extractor() as feat_extractor:
        return resolved.reference(real, feat_extractor).numpy()


def fid_kid(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    extractor: str,
    network: nn.Module | None = None,
    inception_weights: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    cache_key: str | None = None,
    kid_subset_size: int = 1000,
    batch_size: int = 64,
    verbose: bool = False,
    return_features: bool = False,
) -> dict | tuple[dict, np.ndarray, np.ndarray]:
    """FID and KID of ``fake`` against ``real`` (both uint8 (N, H, W, 3), same shape) via torch-fidelity.

    ``extractor`` is ``"inception-v3-compat"`` (weights from ``inception_weights`` or the torch-hub
    cache; never downloaded), or ``"species-classifier"`` / ``"damsm-image-encoder"`` (need
    ``network``); the argument the other extractors need is ignored. With ``cache_dir``, the real
    set's features are cached (keyed by ``cache_key``, weights hash, resolution, N and image digest)
    and reused; the fakes are never cached. KID uses ``KID_SUBSETS`` subsets of
    ``min(kid_subset_size, N)`` images (with N <= kid_subset_size every subset is the whole set, so
    ``kid_std`` is 0).

    Returns ``fid``, ``kid_mean``, ``kid_std`` and what they were measured with: ``features`` (the
    extractor name, for labelling), ``feature_weights_sha256``, ``num_images``, ``kid_subset_size``,
    ``kid_subsets``. With ``return_features``, also the fake and real feature rows (N, D) they were
    computed from, as ``(result, fake_features, real_features)``: what a bootstrap over images resamples.
    """
    _check_images("real", real)
    _check_images("fake", fake)
    if real.shape != fake.shape:
        raise ValueError(f"real and fake images differ in shape: real {real.shape}, fake {fake.shape}")
    if kid_subset_size < 2:
        raise ValueError(f"kid_subset_size must be at least 2; got {kid_subset_size}")
    resolved = _Resolved(extractor, network, inception_weights, cache_dir, cache_key, batch_size, verbose)
    # torch-fidelity refuses a KID subset larger than the set; small test sets use all their images.
    subset = min(kid_subset_size, len(real))
    with resolved.feature_extractor() as feat_extractor:
        real_features = resolved.reference(real, feat_extractor)
        fake_features = resolved.features(fake, feat_extractor)
    result = {
        **fid_kid_of_features(fake_features, real_features, subset, verbose),
        "features": extractor,
        "feature_weights_sha256": resolved.weights_hash,
        "num_images": len(real),
        "kid_subset_size": subset,
        "kid_subsets": KID_SUBSETS,
    }
    if return_features:
        return result, np.asarray(fake_features, np.float32), np.asarray(real_features, np.float32)
    return result


def fid_kid_of_features(fake_features: torch.Tensor | np.ndarray, real_features: torch.Tensor | np.ndarray,
                        kid_subset_size: int, verbose: bool = False) -> dict[str, float]:
    """FID, KID mean and KID std of two sets of feature rows, by torch-fidelity's own metric code in the
    order its calculate_metrics calls it (input1 = fake): what :func:`fid_kid` computes from the features
    it extracts, and what a subset of its rows (``csfgan.protocol.bins``) is measured with."""
    fake = torch.as_tensor(np.asarray(fake_features, np.float32))
    real = torch.as_tensor(np.asarray(real_features, np.float32))
    fid = tfm.fid_statistics_to_metric(tfm.fid_features_to_statistics(fake), tfm.fid_features_to_statistics(real),
                                       verbose)
    kid = tfk.kid_features_to_metric(fake, real, kid_subsets=KID_SUBSETS,
                                     kid_subset_size=min(kid_subset_size, len(real)), verbose=verbose)
    return {"fid": float(fid[KEY_METRIC_FID]), "kid_mean": float(kid[KEY_METRIC_KID_MEAN]),
            "kid_std": float(kid[KEY_METRIC_KID_STD])}
