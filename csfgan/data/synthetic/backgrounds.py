"""Out-of-focus backgrounds: sky, foliage and autumn behind the birds, leaves, grass and soil behind the flowers."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from csfgan.data.synthetic.canvas import _ellipse, _leaf_outline
from csfgan.data.synthetic.palette import _PALETTE, _jittered

# ------------------------------------------------------------------------------------------------
# Backgrounds: soft, out-of-focus photographs' worth of sky and foliage. Drawn at low resolution and
# blurred, then upsampled, so they cost little and look the same at every output resolution.


def _smooth_noise(rng: np.random.Generator, cells: int, size: int) -> np.ndarray:
    """A smooth random field in [0, 1] at ``size`` x ``size`` from a ``cells`` x ``cells`` lattice."""
    lattice = rng.random((cells, cells)).astype(np.float32)
    img = Image.fromarray((lattice * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 255.0


_UNIT_LEAF = _leaf_outline(0, 0, 1, 1, 0, n=10)
_UNIT_DISC = _ellipse(0, 0, 1, 1, 0, n=18)


def _draw_blobs(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    size: int,
    colours: list,
    count: int,
    radius: tuple[float, float],
    leafy: bool,
) -> None:
    """``count`` leaves or discs of jittered ``colours`` scattered over (and a little past) the frame."""
    if count == 0:
        return
    which = rng.integers(len(colours), size=count)
    cols = np.clip(np.asarray(colours, np.float64)[which] + rng.uniform(-18, 18, (count, 3)), 0, 255).astype(int)
    centres = rng.uniform(-0.1, 1.1, (count, 1, 2))
    r = rng.uniform(*radius, (count, 1, 1))
    angle = np.radians(rng.uniform(0, 360, (count, 1)))
    if leafy:
        shape = _UNIT_LEAF * [2.2, 0.8]
    else:
        shape = _UNIT_DISC * [1.0, 0.85]
    x = shape[None, :, 0] * np.cos(angle) - shape[None, :, 1] * np.sin(angle)
    y = shape[None, :, 0] * np.sin(angle) + shape[None, :, 1] * np.cos(angle)
    pts = (centres + r * np.stack([x, y], axis=-1)) * size
    for poly, col in zip(pts, cols, strict=True):
        draw.polygon(poly.ravel().tolist(), fill=tuple(col.tolist()))


def _blurred_blobs(
    rng: np.random.Generator,
    size: int,
    base: np.ndarray,
    colours: list,
    count: int,
    radius: tuple[float, float],
    leafy: bool,
    blur: float,
    discs: tuple[list, int, tuple[float, float]] | None = None,
) -> np.ndarray:
    """``base`` with leaves (or discs) drawn over it, plus optional ``discs`` (colours, count,
    radius range), all blurred as if out of focus."""
    img = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    _draw_blobs(draw, rng, size, colours, count, radius, leafy)
    if discs is not None:
        _draw_blobs(draw, rng, size, discs[0], discs[1], discs[2], False)
    img = img.filter(ImageFilter.GaussianBlur(blur * size))
    return np.asarray(img, dtype=np.float32)


def _background(kind: str, seed: int, size: int) -> np.ndarray:
    """float32 (size, size, 3) background of the given kind."""
    rng = np.random.default_rng(seed)
    low = 48  # working resolution of the out-of-focus layers
    y = np.linspace(0, 1, low, dtype=np.float32)[:, None, None]
    if kind == "sky":
        top = np.array(_jittered((70, 130, 205), rng, 25), np.float32)
        bottom = np.array(_jittered((185, 210, 235), rng, 15), np.float32)
        base = top + (bottom - top) * y
        base = np.broadcast_to(base, (low, low, 3)).copy()
        clouds = _smooth_noise(rng, 5, low)
        cover = np.clip((clouds - rng.uniform(0.45, 0.7)) * 3.0, 0, 1)[..., None]
        base = base * (1 - 0.8 * cover) + 245 * 0.8 * cover
        if rng.random() < 0.6:  # distant treeline in the lower part of the frame
            greens = [(60, 95, 50), (85, 115, 60), (45, 75, 45)]
            trees = np.zeros((low, low, 3), np.float32)
            trees[:] = np.array(greens[int(rng.integers(3))], np.float32)
            line = rng.uniform(0.7, 0.95) + 0.08 * (_smooth_noise(rng, 6, low)[0] - 0.5)
            under = (y[..., 0] > line[None, :]).astype(np.float32)[..., None]
            base = base * (1 - under) + trees * under
        base = _blurred_blobs(rng, low, base, [(235, 240, 245)], int(rng.integers(0, 4)), (0.05, 0.12), False, 0.03)
    else:
        greens = [(40, 80, 35), (70, 115, 45), (105, 140, 60), (30, 60, 35), (130, 150, 70)]
        if kind == "autumn":
            greens = [(120, 90, 40), (150, 110, 50), (90, 70, 35), (170, 140, 70), (80, 95, 45)]
        dark = np.array(_jittered(greens[3], rng, 15), np.float32)
        light = np.array(_jittered(greens[2], rng, 20), np.float32)
        field = _smooth_noise(rng, 4, low)[..., None]
        base = dark + (light - dark) * field
        if kind == "foliage" and rng.random() < 0.5:  # sky showing through the canopy
            gaps = np.clip((_smooth_noise(rng, 6, low) - 0.72) * 4, 0, 1)[..., None]
            base = base * (1 - gaps) + np.array((200, 215, 230), np.float32) * gaps
        base = _blurred_blobs(rng, low, base, greens, int(rng.integers(14, 28)), (0.04, 0.1), True, 0.018)
    img = Image.fromarray(base.clip(0, 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.float32)


def _flower_background(seed: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    low = 48
    kind = rng.choice(["leaves", "leaves", "grass", "soil"])
    if kind == "soil":
        dark, light = (70, 55, 40), (125, 100, 70)
        blobs = [(95, 75, 50), (60, 85, 40), (110, 130, 60), (140, 115, 80)]
    elif kind == "grass":
        dark, light = (50, 85, 35), (120, 150, 65)
        blobs = [(70, 120, 45), (140, 165, 80), (45, 80, 35), (95, 135, 50)]
    else:
        dark, light = (25, 50, 30), (80, 120, 55)
        blobs = [(35, 70, 35), (60, 105, 45), (95, 135, 60), (20, 45, 25), (120, 145, 70)]
    dark_a = np.array(_jittered(dark, rng, 15), np.float32)
    light_a = np.array(_jittered(light, rng, 15), np.float32)
    field = _smooth_noise(rng, 4, low)[..., None]
    base = dark_a + (light_a - dark_a) * field
    # A few far-away blossoms: colourful but desaturated and blurred, as in a garden photograph.
    blossoms = [0.5 * np.array(c) + 0.5 * np.array(light) for c in _PALETTE.values()]
    base = _blurred_blobs(
        rng,
        low,
        base,
        blobs,
        int(rng.integers(16, 30)),
        (0.04, 0.11),
        True,
        0.02,
        discs=(blossoms, int(rng.integers(0, 4)), (0.03, 0.06)),
    )
    img = Image.fromarray(base.clip(0, 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.float32)
