"""Per-image metrics of an evaluated run: ``RUN/eval/per_image.npz``, what the tables' paired intervals need.

``csfgan evaluate`` writes it with the rest of ``RUN/eval`` (one atomic swap); the arrays follow the
test split's order, named by ``keys``, so two runs pair image by image:

    keys                         (N,) str    test image keys
    psnr, ssim, psnr_hole, ssim_hole   (N,) float64, as csfgan.metrics.pixel computes them
    attribute_image, attribute_part, attribute_correct             one entry per checked caption colour
    counterfactual_image, counterfactual_part, counterfactual_correct   one entry per checked edit
    parts                        (P,) str    part names that *_part indexes (synthetic sets only)

The attribute arrays exist only for datasets with part masks (the synthetic sets).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from csfgan.errors import UserError

FILE = "per_image.npz"
MEAN_METRICS = ("psnr", "ssim", "psnr_hole", "ssim_hole")  # means over images
RATIO_METRICS = {"attribute_accuracy": "attribute", "counterfactual_accuracy": "counterfactual"}  # hits / checks


class PerImageError(UserError, RuntimeError):
    """A run's per-image file is missing, unreadable or disagrees with its metrics.json."""


def save(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write into ``folder``: evaluate's staging folder, swapped into place with the rest of ``eval/``."""
    np.savez_compressed(Path(folder) / FILE, **arrays)


def load(run: Path) -> dict[str, np.ndarray]:
    path = Path(run) / "eval" / FILE
    if not path.is_file():
        raise PerImageError(f"{path}: missing per-image metrics (evaluated before they were saved); "
                            f"run `csfgan evaluate --run {run}` again")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise PerImageError(f"{path}: unreadable ({exc}); run `csfgan evaluate --run {run}` again") from exc


def per_image_values(arrays: dict[str, np.ndarray], metric: str) -> tuple[np.ndarray, np.ndarray | None] | None:
    """``(values, None)`` for a mean metric, ``(hits, checks)`` per image for a ratio metric; None if absent."""
    if metric in MEAN_METRICS:
        return (arrays[metric].astype(np.float64), None) if metric in arrays else None
    prefix = RATIO_METRICS.get(metric)
    if prefix is None or f"{prefix}_image" not in arrays:
        return None
    n = len(arrays["keys"])
    image = arrays[f"{prefix}_image"]
    hits = np.bincount(image, weights=arrays[f"{prefix}_correct"].astype(np.float64), minlength=n)
    checks = np.bincount(image, minlength=n).astype(np.float64)
    return hits, checks
