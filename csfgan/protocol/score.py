"""``csfgan score``: a folder of any method's outputs measured under an exported protocol, by the code
``csfgan evaluate`` measures our runs with (:func:`csfgan.measure.measure`: the same FID/KID network and
cached reference statistics, PSNR/SSIM of image and hole, R-precision on the independent DAMSM pair,
attribute and, where counterfactual outputs are present, counterfactual accuracy).

Order, so that a bad input writes nothing: the protocol folder is checked against its manifest and the
prepared data (:func:`csfgan.protocol.folder.read_protocol`), the predictions against the manifest
(:func:`csfgan.protocol.predictions.read_predictions`: every problem listed by file), the metric
networks are loaded, everything is measured, and only then are the outputs written, as a run's are:

    OUT/metrics.json          every metric, with what it was measured with; ``ci95``: a bootstrap over the
                              test images (:data:`BOOTSTRAP` resamples: percentile interval and SE) of each
                              metric; ``area_bins`` on the irregular protocol (csfgan.protocol.bins)
    OUT/eval/per_image.npz    the per-image arrays (csfgan.metrics.per_image), for the tables' paired intervals

OUT defaults to ``results/external/<dataset>/<name>/<mask>`` (``center`` or ``irregular``), where the
tables look for the workflow's external rows.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from csfgan.errors import UserError
from csfgan.io import remove_stale_temporaries, replace_dir, temporary_dir, write_json, writing
from csfgan.lock import command_line, output_lock
from csfgan.measure import load_metric_networks, measure
from csfgan.metrics import per_image
from csfgan.protocol.bins import area_bins
from csfgan.protocol.folder import read_protocol
from csfgan.protocol.predictions import read_predictions
from csfgan.provenance import provenance

BOOTSTRAP = 1000
BOOTSTRAP_SEED = 0
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def check_name(name: str, where: str = "--name") -> str:
    if not NAME.match(name or ""):
        raise UserError(f"{where} {name!r}: a method name is letters, digits and . _ + - (it names its folder), "
                        f"starting with a letter or digit")
    return name


def default_out(name: str, dataset: str, mask: str) -> Path:
    return Path("results") / "external" / dataset / name / mask


def bootstrap_intervals(arrays: dict[str, np.ndarray], resamples: int = BOOTSTRAP,
                        seed: int = BOOTSTRAP_SEED) -> dict[str, dict[str, float]]:
    """Each metric over ``resamples`` resamples of the test images (with replacement, seeded), from the
    per-image arrays: its bootstrap SE and 2.5 / 97.5 % percentiles. FID and KID resample the feature rows
    of fakes and reals together (csfgan.variance's replicates; KID there uses all images as one subset)."""
    from csfgan.variance import bootstrap_weights, fid_replicates, kid_replicates, mean_replicates, ratio_replicates

    weights = bootstrap_weights(len(arrays["keys"]), resamples, seed)
    replicates = {"fid": fid_replicates(arrays["fid_fake_features"], arrays["fid_real_features"], weights),
                  "kid_mean": kid_replicates(arrays["fid_fake_features"], arrays["fid_real_features"], weights),
                  "r_precision": mean_replicates(arrays["r_precision_hit"], weights)}
    for key in per_image.MEAN_METRICS:
        replicates[key] = mean_replicates(arrays[key], weights)
    for metric in per_image.RATIO_METRICS:
        values = per_image.per_image_values(arrays, metric)
        if values is not None:
            replicates[metric] = ratio_replicates(*values, weights)
    return {k: {"se": float(np.nanstd(r, ddof=1)), "low": float(np.nanpercentile(r, 2.5)),
                "high": float(np.nanpercentile(r, 97.5)), "resamples": resamples} for k, r in replicates.items()}


def folder_sha256(folder: Path) -> str:
    """One digest of every (not hidden) file of a predictions folder, names and bytes: which outputs were scored."""
    from csfgan.protocol.predictions import output_files

    digest = hashlib.sha256()
    for name in sorted(output_files(Path(folder))):
        digest.update(name.encode() + b"\0")
        digest.update(hashlib.sha256((Path(folder) / name).read_bytes()).digest())
    return digest.hexdigest()


def score(protocol_dir: Path, predictions: Path, name: str, out: Path | None = None, *, dataset: Path | None = None,
          feature_net: Path | None = None, eval_text_encoder: Path | None = None,
          inception_weights_path: str | None = None, device: str = "cpu", composite: bool = False,
          batch_size: int = 64, bootstrap: int = BOOTSTRAP) -> tuple[dict[str, Any], Path]:
    """Score ``predictions`` under the protocol folder ``protocol_dir``; returns the metrics and OUT."""
    started = time.perf_counter()
    check_name(name)
    protocol, manifest = read_protocol(Path(protocol_dir), dataset)
    outputs = read_predictions(Path(predictions), protocol, manifest, composite=composite)
    out = Path(out) if out is not None else default_out(name, protocol.data.name, protocol.mask)
    nets = load_metric_networks(protocol.data, feature_net=feature_net, eval_text_encoder=eval_text_encoder,
                                inception_weights_path=inception_weights_path, device=device)
    metrics, arrays = measure(protocol, outputs.images, outputs.counterfactuals, nets, batch_size=batch_size)
    metrics["ci95"] = bootstrap_intervals(arrays, bootstrap)
    if protocol.mask != "center":
        metrics["area_bins"] = area_bins(arrays, protocol.holes)
    metrics.update({
        "method": name, "external": True, "protocol_folder": str(protocol_dir), "predictions": str(predictions),
        "predictions_sha256": folder_sha256(Path(predictions)),
        "counterfactual_outputs": outputs.counterfactuals is not None,
        "composited_by_scorer": composite, "composited_files": len(outputs.composited),
        "score_seconds": round(time.perf_counter() - started, 2), "provenance": provenance(),
    })
    _publish(out, metrics, arrays)
    return metrics, out


def _publish(out: Path, metrics: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """OUT/eval (per_image.npz) swapped in whole, then OUT/metrics.json, each atomically, under OUT's lock."""
    with output_lock(out, command_line()):
        remove_stale_temporaries(out.parent, (out.name,))
        with writing(out):
            out.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(out, ("eval", "metrics.json"))
            tmp = temporary_dir(out / "eval")
            try:
                per_image.save(tmp, arrays)
                replace_dir(tmp, out / "eval")
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        write_json(out / "metrics.json", metrics)
