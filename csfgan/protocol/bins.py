"""Metrics per mask-area bin, as LaMa reports its irregular-mask results: the items grouped by the fraction
of the image their hole covers (10 %-wide bins), each bin measured on its own items.

Per bin: the number of images, the mean of each per-image metric (PSNR/SSIM of image and hole), the
R-precision hits' mean and the attribute and counterfactual accuracies over the bin's checks, all from
the per-image arrays of :func:`csfgan.measure.measure`; FID and KID of the bin's fake rows against the
same items' real rows, by torch-fidelity's code (:func:`csfgan.metrics.fid.fid_kid_of_features`), from
the feature rows the whole set was measured with. A bin of fewer than :data:`MIN_FID_IMAGES` images has
no FID (a covariance of one row is not one); FIDs of small bins are biased upwards (FID's bias grows as
the number of images shrinks), so compare bins of one method with the same bins of another, not with
the whole set's FID.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from csfgan.metrics import per_image
from csfgan.metrics.fid import fid_kid_of_features

EDGES = tuple(round(0.1 * k, 1) for k in range(11))
MIN_FID_IMAGES = 2


def area_bins(arrays: dict[str, np.ndarray], holes: np.ndarray, kid_subset_size: int = 1000) -> list[dict[str, Any]]:
    """One dict per non-empty bin, in order of area: ``bin`` ("10-20%"), ``low``, ``high``, ``images`` and
    each metric the arrays allow."""
    area = holes.reshape(len(holes), -1).mean(axis=1)
    which = np.clip(np.searchsorted(EDGES, area, side="right") - 1, 0, len(EDGES) - 2)
    out = []
    for b in np.unique(which):
        sel = which == b
        low, high = EDGES[b], EDGES[b + 1]
        row: dict[str, Any] = {"bin": f"{low:.0%}-{high:.0%}", "low": low, "high": high, "images": int(sel.sum()),
                               "hole_area_mean": float(area[sel].mean())}
        for key in per_image.MEAN_METRICS:
            row[key] = float(arrays[key][sel].mean())
        row["r_precision"] = float(arrays["r_precision_hit"][sel].mean())
        for metric in per_image.RATIO_METRICS:
            values = per_image.per_image_values(arrays, metric)
            if values is not None and values[1][sel].sum() > 0:
                row[metric] = float(values[0][sel].sum() / values[1][sel].sum())
        if sel.sum() >= MIN_FID_IMAGES:
            row.update(fid_kid_of_features(arrays["fid_fake_features"][sel], arrays["fid_real_features"][sel],
                                           kid_subset_size))
        out.append(row)
    return out


COLUMNS = (("fid", "FID ↓", 2), ("kid_mean", "KID ↓", 4), ("psnr", "PSNR ↑", 2), ("ssim", "SSIM ↑", 3),
           ("psnr_hole", "hole PSNR ↑", 2), ("ssim_hole", "hole SSIM ↑", 3), ("r_precision", "R-precision ↑", 3),
           ("attribute_accuracy", "attribute acc. ↑", 3), ("counterfactual_accuracy", "counterfactual acc. ↑", 3))


def bins_table(scores: list[Path]) -> pd.DataFrame:
    """One row per scored method (``csfgan score`` metrics of the irregular protocol) and mask-area bin."""
    from csfgan.errors import UserError

    rows = []
    for path in scores:
        try:
            m = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"{path}: unreadable scores ({exc}); score the method again") from None
        if "area_bins" not in m:
            raise UserError(f"{path}: no area_bins (scored under {m.get('protocol')!r}); score it under the "
                            f"irregular protocol (csfgan protocol export --mask irregular)")
        for b in m["area_bins"]:
            rows.append({"dataset": m["dataset"], "method": m["method"], "protocol": m["protocol"],
                         "protocol_version": m["protocol_version"], "fid_features": m["fid_features"], **b})
    return pd.DataFrame.from_records(rows)


def render_bins(frame: pd.DataFrame) -> str:
    """The bins table as Markdown: a row per dataset, method and bin."""
    columns = [c for c in COLUMNS if c[0] in frame and frame[c[0]].notna().any()]
    lines = ["**Irregular masks (Figure 9's, protocol csfgan-irregular) by hole area**", "",
             "| Dataset | Method | hole area | images | " + " | ".join(h for _, h, _ in columns) + " |",
             "| :--- | :--- | :--- | ---: | " + " | ".join("---:" for _ in columns) + " |"]
    for _, r in frame.iterrows():
        cells = ["–" if pd.isna(r.get(k)) else f"{r[k]:.{d}f}" for k, _, d in columns]
        head = f"| {r['dataset']} | {r['method']} | {r['bin']} | {int(r['images'])} | "
        lines.append(head + " | ".join(cells) + " |")
    features = ", ".join(sorted(set(frame["fid_features"]))) if len(frame) else "–"
    lines += ["", f"- Each method's outputs under the irregular protocol, scored by `csfgan score` and grouped by the "
                  f"fraction of the image the hole covers (as LaMa reports them); every metric of a bin is over that "
                  f"bin's images only. FID and KID on {features} features; a bin's FID is biased upwards by its small "
                  f"number of images, so compare a bin with the same bin of another method, not with Table 1.",
              "- csfgan-<variant>-seed<k>: our run's generator (trained on centre holes) through `csfgan predict`; "
              "biharmonic and telea: the training-free peers, which ignore the caption."]
    return "\n".join(lines) + "\n"


def write_bins_table(scores: list[Path], out: Path) -> list[Path]:
    """``out``.md and ``out``.csv (each atomically) from these scores; returns the paths."""
    from csfgan.io import write_text

    frame = bins_table(scores)
    written = []
    for ext, text in (("md", render_bins(frame)), ("csv", frame.to_csv(index=False, lineterminator="\n"))):
        path = Path(f"{out}.{ext}")
        write_text(path, text)
        written.append(path)
    return written
