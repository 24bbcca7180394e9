"""Every metric of Tables 1 and 3 on one method's outputs under one protocol: the one measuring code of
``csfgan evaluate`` (our generator's outputs) and ``csfgan score`` (a folder of anyone's outputs).

:func:`measure` takes the protocol (:mod:`csfgan.protocol.spec`), the composited uint8 outputs (one per
item), the counterfactual outputs where there are any, and the metric networks (:func:`load_metric_networks`):

* PSNR and SSIM of the image and of the hole (csfgan.metrics.pixel, scikit-image);
* FID and KID on TF-Inception when its weights are here, else on the species classifier of ``csfgan
  train-features``, against the real split's cached reference features (csfgan.metrics.fid);
* R-precision with a DAMSM text + image encoder pair (``--eval-text-encoder``) on the outputs as saved
  (uint8), against 99 mismatched captions of other classes;
* on the synthetic sets, caption-attribute accuracy and, given counterfactual outputs, counterfactual
  accuracy (csfgan.metrics.attributes).

It returns the metrics and the per-image arrays (csfgan.metrics.per_image: PSNR/SSIM per image, every
attribute and counterfactual check, the FID/KID feature rows and the R-precision hits), which the tables'
paired intervals and the bootstrap resample.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from csfgan.damsm import load_text_encoder
from csfgan.data.prepared import PreparedData
from csfgan.errors import UserError
from csfgan.metrics import per_image
from csfgan.metrics.attributes import attribute_accuracy, counterfactual_accuracy
from csfgan.metrics.feature_net import describe, load_feature_net
from csfgan.metrics.fid import FEATURE_NET, INCEPTION, fid_kid, inception_weights_available
from csfgan.metrics.pixel import pixel_metrics_per_image
from csfgan.models.damsm import mismatched_candidates, r_precision_hits
from csfgan.protocol.spec import Protocol
from csfgan.provenance import file_sha256

R_PRECISION_CANDIDATES = 99


class MetricNetworkError(UserError):
    """A metric network is missing, or is one the generator was trained with."""


@dataclass
class MetricNetworks:
    """The networks the metrics are measured with, none of them a training target, and what to record."""

    device: torch.device
    inception_weights: str | None
    fid_net: torch.nn.Module | None
    fid_record: dict[str, Any] | None
    eval_text: torch.nn.Module
    eval_image: torch.nn.Module
    rp_record: dict[str, Any]


def load_metric_networks(data: PreparedData, *, feature_net: Path | None, eval_text_encoder: Path | None,
                         inception_weights_path: str | None = None, device: str | torch.device = "cpu",
                         scale: str = "SCALE") -> MetricNetworks:
    """The FID/KID network (TF-Inception if its weights are here, else ``feature_net``) and the
    R-precision DAMSM pair, loaded for ``data``; a missing one stops with the command that makes it."""
    from csfgan.runtime import resolve_device

    device = resolve_device(str(device))
    weights = inception_weights_available(inception_weights_path)
    fid_net = fid_record = None
    if weights is None:
        if feature_net is None:
            raise MetricNetworkError(
                "no TF-Inception weights here, so FID needs --feature-net: train it with `csfgan train-features "
                f"--data {data.root} --scale {scale} --out results/feature_net/{data.name}.pt`"
            )
        fid_net, ckpt = load_feature_net(Path(feature_net), data)
        fid_net.to(device)
        net_metrics = ckpt.get("metrics", {})
        fid_record = {
            "description": describe(ckpt), "path": str(feature_net), "sha256": file_sha256(Path(feature_net)),
            "used_in_training_losses": False,
            **{k: net_metrics.get(k) for k in ("held_out_accuracy", "chance", "steps", "train_seconds")},
        }
    if eval_text_encoder is None:
        raise MetricNetworkError(
            "R-precision needs --eval-text-encoder: a DAMSM pair pretrained independently of the one any generator "
            f"was conditioned on, e.g. `csfgan pretrain-text --data {data.root} --seed 1 --out "
            f"results/text_encoder/{data.name}.eval.pt`"
        )
    path = Path(eval_text_encoder)
    text, image, _, ckpt = load_text_encoder(path, vocab=data.vocab)
    record = {"path": str(path), "sha256": file_sha256(path), "dataset": ckpt.get("dataset"), "seed": ckpt.get("seed"),
              "description": f"DAMSM pair pretrained on {ckpt.get('dataset')} with seed {ckpt.get('seed')}"}
    return MetricNetworks(device, weights, fid_net, fid_record, text.to(device).eval(), image.to(device).eval(), record)


def fid_cache_dir(data: PreparedData) -> Path:
    return data.root.parent / ".fid-cache"


def to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> (B, 3, H, W) float in [−1, 1], as the prepared images are read."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


@torch.inference_mode()
def _r_precision(protocol: Protocol, fakes: np.ndarray, nets: MetricNetworks, batch_size: int) -> torch.Tensor:
    prepared = protocol.prepared
    n = len(protocol)
    image_codes, sentence_codes = [], []
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(n, start + batch_size))
        cap = protocol.caption_index[idx]
        tokens = torch.from_numpy(prepared.tokens[idx, cap].astype(np.int64)).to(nets.device)
        lengths = torch.from_numpy(prepared.lengths[idx, cap].astype(np.int64)).to(nets.device)
        image_codes.append(nets.eval_image.global_features(to_unit(fakes[idx]).to(nets.device)).cpu())
        sentence_codes.append(nets.eval_text(tokens, lengths)[1].cpu())
    candidates = mismatched_candidates(prepared.class_ids, R_PRECISION_CANDIDATES, seed=protocol.caption_seed)
    return r_precision_hits(torch.cat(image_codes), torch.cat(sentence_codes), torch.arange(n),
                            torch.from_numpy(candidates))


def measure(protocol: Protocol, fakes: np.ndarray, counterfactuals: np.ndarray | None, nets: MetricNetworks, *,
            batch_size: int = 64) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The metrics of ``fakes`` (uint8 (N, H, W, 3), the composited outputs in item order) and, if given,
    ``counterfactuals`` (one per ``protocol.counterfactuals``), and their per-image arrays."""
    data, split, n = protocol.data, protocol.split, len(protocol)
    real = protocol.real()
    metrics: dict[str, Any] = {"dataset": data.name, f"{split}_images": n, "resolution": data.resolution,
                               **protocol.settings()}
    arrays: dict[str, np.ndarray] = {"keys": np.asarray(protocol.prepared.keys, dtype=str),
                                     **pixel_metrics_per_image(real, fakes, protocol.holes)}
    metrics.update({k: float(arrays[k].mean()) for k in per_image.MEAN_METRICS})

    extractor = INCEPTION if nets.inception_weights else FEATURE_NET
    fid, arrays["fid_fake_features"], arrays["fid_real_features"] = fid_kid(
        real, fakes, extractor=extractor, network=nets.fid_net, inception_weights=nets.inception_weights,
        cache_dir=fid_cache_dir(data), cache_key=f"{data.name}-{split}", return_features=True)
    metrics.update({k: fid[k] for k in ("fid", "kid_mean", "kid_std")})
    metrics["fid_features"] = fid["features"]
    metrics["fid_details"] = {k: v for k, v in fid.items() if k not in ("fid", "kid_mean", "kid_std")}
    if nets.fid_record is not None:
        metrics["fid_feature_net"] = dict(nets.fid_record)

    hits = _r_precision(protocol, fakes, nets, batch_size)
    arrays["r_precision_hit"] = hits.numpy()
    metrics["r_precision"] = float(hits.float().mean())
    metrics["r_precision_candidates"] = R_PRECISION_CANDIDATES + 1
    metrics["r_precision_encoder"] = dict(nets.rp_record)

    if protocol.checks is not None:
        metrics.update(attribute_accuracy(data, split, protocol.checks, protocol.holes, fakes, arrays))
        if counterfactuals is not None:
            metrics.update(counterfactual_accuracy(data, split, protocol.checks, protocol.holes, counterfactuals,
                                                   arrays))
    return metrics, arrays
