"""FID and KID through torch-fidelity, on TF-Inception or on the pipeline's DAMSM image-encoder features.

Two feature extractors, and every result names the one it used (``features``), so a table can say
"FID (DAMSM features)" instead of passing one number off as the other:

* ``inception-v3-compat``: torch-fidelity's port of the TF-Inception graph (pool3, 2048-d) that
  published FIDs use. Its weights are never downloaded from here: they come from torch-fidelity's
  torch-hub cache file or a configured path (:func:`inception_weights_available`), and without
  them the caller must choose the DAMSM features explicitly.
* ``damsm-image-encoder``: the global feature of the pipeline's own DAMSM image encoder (any
  ``nn.Module`` with ``global_features(images in [-1, 1], (B, 3, H, W)) -> (B, D)``), registered
  with torch-fidelity as a feature extractor so the metric code is torch-fidelity's either way.
  Images are fed at their own resolution: the encoder was trained at the scale's resolution.

Reference features of the real test set are cached by torch-fidelity (``cache_root``,
``input2_cache_name``) under a name derived from everything that affects them: a caller label (the
dataset), the extractor's weights hash, the resolution, N and a digest of the images themselves.
:func:`reference_features` fills that cache once (edm's ``fid.py ref``); :func:`fid_kid` computes
the metrics against it (``calc``) and recomputes only on a miss. Images reach torch-fidelity as
in-memory uint8 datasets: no PNG round trip.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch_fidelity
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor
from torch_fidelity.utils import create_feature_extractor, extract_featuresdict_from_input_id_cached

from csfgan.errors import UserError

INCEPTION = "inception-v3-compat"
DAMSM = "damsm-image-encoder"
FEATURE_EXTRACTORS = (INCEPTION, DAMSM)
# The file torch-fidelity itself downloads into the torch-hub cache; looked for, never fetched.
INCEPTION_WEIGHTS_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
KID_SUBSETS = 100  # torch-fidelity's default, recorded in every result


def inception_weights_available(path: str | os.PathLike | None = None) -> str | None:
    """The TF-Inception weights file to use, or ``None`` if there is none on this machine.

    With ``path`` (a configured weights file) that file must exist: a configured path that is
    missing is a configuration error, not a reason to fall back to other features silently.
    Without it, torch-fidelity's torch-hub cache file is used if present.
    """
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise UserError(
                f"Inception weights file {path} (feature_extractor_weights_path) does not exist; fix the path, "
                f"or leave it unset to use torch-fidelity's cache file {_hub_inception_path()} if present"
            )
        return str(path)
    hub = _hub_inception_path()
    return str(hub) if hub.is_file() else None


def _hub_inception_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILENAME


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


# ---------------------------------------------------------------- DAMSM features as a torch-fidelity extractor

# torch-fidelity builds extractors itself, from the registered class and its keyword arguments, so
# a live module cannot be passed in directly. fid_kid puts the encoder here for the duration of one
# call, under a unique key handed to the extractor as the ``damsm_encoder_key`` keyword (which
# calculate_metrics forwards untouched to the extractor's constructor).
_ENCODERS: dict[str, nn.Module] = {}
_encoder_tokens = itertools.count()


@contextlib.contextmanager
def _registered_encoder(encoder: nn.Module, weights_hash: str) -> Iterator[str]:
    key = f"{weights_hash[:16]}-{next(_encoder_tokens)}"
    was_training = encoder.training
    _ENCODERS[key] = encoder
    encoder.eval()  # features of a frozen encoder: no dropout, BatchNorm running statistics
    try:
        yield key
    finally:
        del _ENCODERS[key]
        encoder.train(was_training)


class DamsmImageEncoderFeatures(FeatureExtractorBase):
    """Global DAMSM image-encoder features of uint8 images, for torch-fidelity's FID/KID.

    The encoder is held outside this module's parameter tree on purpose: torch-fidelity calls
    ``requires_grad_(False)``, ``eval()`` and ``cuda()`` on the extractor, and those must not reach
    into (and silently change) the caller's encoder. Batches are moved to the encoder's device.
    """

    FEATURE = "global"

    def __init__(self, name, features_list, damsm_encoder_key=None, **kwargs):
        super().__init__(name, features_list)
        if damsm_encoder_key not in _ENCODERS:
            raise ValueError(
                f"no image encoder registered under {damsm_encoder_key!r}: use csfgan.metrics.fid.fid_kid "
                f"(which registers it) rather than torch-fidelity's feature_extractor={DAMSM!r} directly"
            )
        object.__setattr__(self, "_encoder", _ENCODERS[damsm_encoder_key])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3):
            raise ValueError(f"expected uint8 images (B, 3, H, W); got {getattr(x, 'dtype', type(x))} {tuple(x.shape)}")
        param = next(itertools.chain(self._encoder.parameters(), self._encoder.buffers()), None)
        device = param.device if param is not None else torch.device("cpu")
        images = x.to(device, torch.float32) / 127.5 - 1.0  # uint8 [0, 255] -> the encoder's [-1, 1]
        features = self._encoder.global_features(images)
        if features.dim() != 2 or features.shape[0] != x.shape[0]:
            raise ValueError(f"global_features must return (B, D) = ({x.shape[0]}, D); got {tuple(features.shape)}")
        return (features.to(torch.float32),)

    @staticmethod
    def get_provided_features_list():
        return (DamsmImageEncoderFeatures.FEATURE,)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        if metric == "isc":
            raise ValueError("the DAMSM image encoder has no class logits; Inception Score needs Inception")
        return DamsmImageEncoderFeatures.FEATURE

    @staticmethod
    def can_be_compiled():
        return False  # arbitrary user modules; compilation would only add start-up time here

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros((1, 3, 64, 64), dtype=torch.uint8)


if DAMSM not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(DAMSM, DamsmImageEncoderFeatures)


# ---------------------------------------------------------------- inputs and the torch-fidelity call


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
    # torch-fidelity joins the cache name into a file name: no path separators or odd characters.
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "real"


class _Resolved:
    """The torch-fidelity keyword arguments for one extractor, plus what a result must record."""

    def __init__(self, extractor, image_encoder, inception_weights, cache_dir, cache_key, batch_size, verbose):
        if extractor not in FEATURE_EXTRACTORS:
            raise ValueError(f"unknown feature extractor {extractor!r}; use one of {FEATURE_EXTRACTORS}")
        if cache_key is not None and cache_dir is None:
            raise ValueError("cache_key was given without cache_dir: say where the reference features are cached")
        self.extractor = extractor
        self.cache_dir = cache_dir
        self.cache_key = cache_key
        self.image_encoder = None
        self.kwargs = dict(
            feature_extractor=extractor,
            batch_size=batch_size,
            verbose=verbose,
            # torch-fidelity's switch for num_workers=0 (it changes nothing else for FID/KID): serving
            # in-memory uint8 arrays, DataLoader worker processes would only add start-up cost.
            save_cpu_ram=True,
            cache=cache_dir is not None,
            cache_root=None if cache_dir is None else str(cache_dir),
        )
        if extractor == INCEPTION:
            weights = inception_weights_available(inception_weights)
            if weights is None:
                raise UserError(
                    f"no TF-Inception weights on this machine (looked for {_hub_inception_path()}) and they are "
                    f"never downloaded here: configure a weights file, or compute FID on {DAMSM!r} features "
                    f"and label it so"
                )
            self.weights_hash = _weights_file_hash(weights)
            self.kwargs["feature_extractor_weights_path"] = weights
            self.kwargs["cuda"] = torch.cuda.is_available()
        else:
            if image_encoder is None or not callable(getattr(image_encoder, "global_features", None)):
                raise ValueError(f"{DAMSM!r} features need image_encoder: an nn.Module with global_features(images)")
            self.image_encoder = image_encoder
            self.weights_hash = module_weights_hash(image_encoder)
            param = next(itertools.chain(image_encoder.parameters(), image_encoder.buffers()), None)
            # Move batches to GPU only if the encoder lives there; the extractor moves them anyway.
            self.kwargs["cuda"] = param is not None and param.is_cuda

    def reference_name(self, real: np.ndarray) -> str | None:
        """torch-fidelity's cache name for the real set (it appends extractor, layer and kind)."""
        if self.cache_dir is None:
            return None
        _, h, w, _ = real.shape
        label = _slug(self.cache_key or "real")
        return f"{label}-w{self.weights_hash[:12]}-{h}x{w}-n{len(real)}-d{_images_digest(real)[:12]}"

    @contextlib.contextmanager
    def extractor_kwargs(self) -> Iterator[dict]:
        if self.image_encoder is None:
            yield dict(self.kwargs)
            return
        with _registered_encoder(self.image_encoder, self.weights_hash) as key:
            yield dict(self.kwargs, damsm_encoder_key=key)


def reference_features(
    real: np.ndarray,
    *,
    extractor: str,
    image_encoder: nn.Module | None = None,
    inception_weights: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike,
    cache_key: str | None = None,
    batch_size: int = 64,
    verbose: bool = False,
) -> np.ndarray:
    """Features (N, D) of the real set, computed once and cached where :func:`fid_kid` looks for them.

    The ``ref`` half of edm's split: a workflow runs it once per dataset before the per-run ``calc``
    (:func:`fid_kid` with the same ``extractor``, encoder/weights, ``cache_dir`` and ``cache_key``).
    """
    if cache_dir is None:
        raise ValueError("reference_features needs cache_dir: caching them is its whole purpose")
    _check_images("real", real)
    resolved = _Resolved(extractor, image_encoder, inception_weights, cache_dir, cache_key, batch_size, verbose)
    with resolved.extractor_kwargs() as kwargs:
        kwargs.update(input2=UInt8ImageDataset(real), input2_cache_name=resolved.reference_name(real))
        layer = FEATURE_EXTRACTORS_REGISTRY[extractor].get_default_feature_layer_for_metric("fid")
        feat_extractor = create_feature_extractor(extractor, [layer], **kwargs)
        # Input slot 2 with its cache name: exactly the lookup fid_kid's calculate_metrics makes.
        features = extract_featuresdict_from_input_id_cached(2, feat_extractor, **kwargs)[layer]
    return features.numpy()


def fid_kid(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    extractor: str,
    image_encoder: nn.Module | None = None,
    inception_weights: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    cache_key: str | None = None,
    kid_subset_size: int = 1000,
    batch_size: int = 64,
    verbose: bool = False,
) -> dict:
    """FID and KID of ``fake`` against ``real`` (both uint8 (N, H, W, 3), same shape) via torch-fidelity.

    ``extractor`` is ``"inception-v3-compat"`` (weights from ``inception_weights`` or the torch-hub
    cache; never downloaded) or ``"damsm-image-encoder"`` (needs ``image_encoder``); the argument
    the other extractor needs is ignored. With ``cache_dir``, the real set's features are cached
    (keyed by ``cache_key``, weights hash, resolution, N and image digest) and reused; the fakes are
    never cached. KID uses ``KID_SUBSETS`` subsets of ``min(kid_subset_size, N)`` images (with
    N <= kid_subset_size every subset is the whole set, so ``kid_std`` is 0).

    Returns ``fid``, ``kid_mean``, ``kid_std`` and what they were measured with: ``features`` (the
    extractor name, for labelling), ``feature_weights_sha256``, ``num_images``, ``kid_subset_size``,
    ``kid_subsets``.
    """
    _check_images("real", real)
    _check_images("fake", fake)
    if real.shape != fake.shape:
        raise ValueError(f"real and fake images differ in shape: real {real.shape}, fake {fake.shape}")
    if kid_subset_size < 2:
        raise ValueError(f"kid_subset_size must be at least 2; got {kid_subset_size}")
    resolved = _Resolved(extractor, image_encoder, inception_weights, cache_dir, cache_key, batch_size, verbose)
    # torch-fidelity refuses a KID subset larger than the set; small test sets use all their images.
    subset = min(kid_subset_size, len(real))
    with resolved.extractor_kwargs() as kwargs:
        metrics = torch_fidelity.calculate_metrics(
            input1=UInt8ImageDataset(fake),
            input2=UInt8ImageDataset(real),
            input2_cache_name=resolved.reference_name(real),
            fid=True,
            kid=True,
            kid_subset_size=subset,
            kid_subsets=KID_SUBSETS,
            **kwargs,
        )
    return {
        "fid": float(metrics[torch_fidelity.KEY_METRIC_FID]),
        "kid_mean": float(metrics[torch_fidelity.KEY_METRIC_KID_MEAN]),
        "kid_std": float(metrics[torch_fidelity.KEY_METRIC_KID_STD]),
        "features": extractor,
        "feature_weights_sha256": resolved.weights_hash,
        "num_images": len(real),
        "kid_subset_size": subset,
        "kid_subsets": KID_SUBSETS,
    }
