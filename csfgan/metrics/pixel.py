"""PSNR and SSIM (scikit-image) of composited inpaintings against the real images.

Both are computed on uint8 images with ``data_range=255``: over the whole image, as the paper
reports them, and inside the hole only, where the composite differs from the real image at all
(outside the hole a composite ``I * (1 - M) + G * M`` equals the real image, so whole-image numbers
mostly measure the hole's share of the image).

Choices, fixed here so every table means the same thing:

* Hole-only PSNR uses the MSE over the hole pixels (all three channels), i.e. scikit-image's PSNR
  of the gathered hole pixels.
* Hole-only SSIM averages scikit-image's full SSIM map (``full=True``, default 7x7 uniform window)
  over the hole pixels. Like scikit-image's own mean, it leaves out the 3 px image border, where the
  window is reflect-padded; so an all-image hole gives exactly the whole-image SSIM. Windows at the
  hole's edge straddle the real context: the hole SSIM includes how well the fill joins its
  surroundings, and differences up to 3 px outside the hole can affect it (for a composite there
  are none).
* PSNR of identical images is infinite. Per-image PSNR is clipped to ``PSNR_CAP_DB`` (100 dB) so
  that means (and confidence intervals over seeds) stay finite; the clip is monotone, so no image
  can rank below a worse one. 100 dB is an MSE of 6.5e-6 grey levels²: any non-zero uint8 error
  over fewer than 153,000 values (a 224x224 RGB image) scores below it, so there it only replaces
  "exact"; over more values, one grey level off in one value can tie with exact.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

PSNR_CAP_DB = 100.0
DATA_RANGE = 255
SSIM_WIN_SIZE = 7  # scikit-image's default, named so the border left out of the hole mean matches it
METRIC_NAMES = ("psnr", "ssim", "psnr_hole", "ssim_hole")


def _check_images(real: np.ndarray, fake: np.ndarray) -> None:
    for name, x in (("real", real), ("fake", fake)):
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            shape = getattr(x, "shape", None)
            dtype = getattr(x, "dtype", type(x).__name__)
            raise ValueError(f"{name} images must be a uint8 array (N, H, W, 3); got shape {shape}, dtype {dtype}")
    if real.shape != fake.shape:
        raise ValueError(f"real and fake images differ in shape: real {real.shape}, fake {fake.shape}")
    if len(real) == 0:
        raise ValueError("no images to compare (N = 0)")


def _hole_masks(hole: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The hole as a boolean (N, H, W) array; accepts (H, W) for one hole shared by every image.

    Besides booleans it accepts the 0/1 float masks of ``csfgan.data.masks`` (1 = hole); other
    values are refused rather than thresholded, since they mean the caller passed something else.
    """
    n, h, w = shape[:3]
    hole = np.asarray(hole)
    if hole.shape == (h, w):
        hole = np.broadcast_to(hole, (n, h, w))
    if hole.shape != (n, h, w):
        raise ValueError(f"hole mask must have shape (N, H, W) = {(n, h, w)} or (H, W) = {(h, w)}; got {hole.shape}")
    if hole.dtype != bool:
        values = np.unique(hole)
        if not np.isin(values, (0, 1)).all():
            raise ValueError(f"hole mask must be boolean or 0/1; found values {values[:8].tolist()}")
        hole = hole == 1
    empty = np.flatnonzero(~hole.reshape(n, -1).any(axis=1))
    if empty.size:
        raise ValueError(f"hole mask is empty for image(s) {empty[:10].tolist()}; hole metrics are undefined")
    return hole


def _psnr(real: np.ndarray, fake: np.ndarray) -> float:
    # Checked first so identical images take the cap without scikit-image's divide-by-zero warning.
    if np.array_equal(real, fake):
        return PSNR_CAP_DB
    return min(float(peak_signal_noise_ratio(real, fake, data_range=DATA_RANGE)), PSNR_CAP_DB)


def pixel_metrics_per_image(real: np.ndarray, fake: np.ndarray, hole: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image PSNR/SSIM of ``fake`` against ``real``, whole image and inside ``hole``.

    ``real``, ``fake``: uint8 (N, H, W, 3); ``hole``: boolean (N, H, W) or (H, W), True in the hole.
    Returns float64 arrays of length N under ``psnr``, ``ssim``, ``psnr_hole``, ``ssim_hole``.
    """
    _check_images(real, fake)
    holes = _hole_masks(hole, real.shape)
    n, h, w = real.shape[:3]
    pad = (SSIM_WIN_SIZE - 1) // 2
    interior = np.zeros((h, w), dtype=bool)
    interior[pad : h - pad, pad : w - pad] = True

    out = {name: np.empty(n, dtype=np.float64) for name in METRIC_NAMES}
    for i in range(n):
        r, f, m = real[i], fake[i], holes[i]
        out["psnr"][i] = _psnr(r, f)
        out["psnr_hole"][i] = _psnr(r[m], f[m])
        ssim, ssim_map = structural_similarity(
            r, f, channel_axis=-1, data_range=DATA_RANGE, win_size=SSIM_WIN_SIZE, full=True
        )
        out["ssim"][i] = ssim
        inside = m & interior
        if not inside.any():
            raise ValueError(
                f"image {i}: the hole lies entirely within {pad} px of the border, where SSIM is not averaged"
            )
        out["ssim_hole"][i] = ssim_map[inside].mean(dtype=np.float64)
    return out


def pixel_metrics(real: np.ndarray, fake: np.ndarray, hole: np.ndarray) -> dict[str, float]:
    """Means over images of :func:`pixel_metrics_per_image`: ``psnr``, ``ssim``, ``psnr_hole``, ``ssim_hole``."""
    per_image = pixel_metrics_per_image(real, fake, hole)
    return {name: float(values.mean()) for name, values in per_image.items()}
