"""Hole masks: the paper's centre square and seeded irregular free-form masks (Figure 9).

Masks are float32 arrays (H, W) with 1 inside the hole (pixels to inpaint) and 0 where the image is
kept, so the composite is ``I * (1 - M) + G * M``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def center_box(resolution: int, fraction: float = 0.5) -> tuple[int, int]:
    """``(start, stop)`` of the centred square hole along each axis (128 of 256 at fraction 0.5)."""
    side = int(round(resolution * fraction))
    start = (resolution - side) // 2
    return start, start + side


def center_mask(resolution: int, fraction: float = 0.5) -> np.ndarray:
    start, stop = center_box(resolution, fraction)
    mask = np.zeros((resolution, resolution), dtype=np.float32)
    mask[start:stop, start:stop] = 1.0
    return mask


def irregular_mask(
    resolution: int,
    rng: np.random.Generator,
    *,
    max_strokes: int = 5,
    max_vertices: int = 8,
    min_coverage: float = 0.15,
    max_coverage: float = 0.5,
) -> np.ndarray:
    """A free-form mask of random thick strokes (in the style of DeepFill v2's training masks).

    Strokes are drawn until the hole covers at least ``min_coverage`` of the image; a stroke that
    would push coverage past ``max_coverage`` is discarded, so the hole size stays comparable to the
    centre square's 25 %.
    """
    scale = resolution / 256.0
    canvas = Image.new("L", (resolution, resolution), 0)
    for _ in range(64):
        trial = canvas.copy()
        draw = ImageDraw.Draw(trial)
        for _ in range(int(rng.integers(1, max_strokes + 1))):
            width = max(2, int(rng.integers(12, 40) * scale))
            x, y = (int(v) for v in rng.integers(0, resolution, size=2))
            points = [(x, y)]
            for _ in range(int(rng.integers(2, max_vertices + 1))):
                angle = rng.uniform(0, 2 * np.pi)
                length = rng.uniform(20, 70) * scale
                x = int(np.clip(x + length * np.cos(angle), 0, resolution - 1))
                y = int(np.clip(y + length * np.sin(angle), 0, resolution - 1))
                points.append((x, y))
            draw.line(points, fill=255, width=width, joint="curve")
            for px, py in points:
                r = width // 2
                draw.ellipse((px - r, py - r, px + r, py + r), fill=255)
        coverage = np.asarray(trial).mean() / 255.0
        if coverage <= max_coverage:
            canvas = trial
            if coverage >= min_coverage:
                break
    return (np.asarray(canvas) > 127).astype(np.float32)


def mask_for(index: int, resolution: int, kind: str, fraction: float, seed: int) -> np.ndarray:
    """The mask for item ``index``: fixed for "center", seeded per item for "irregular"."""
    if kind == "center":
        return center_mask(resolution, fraction)
    if kind == "irregular":
        return irregular_mask(resolution, np.random.default_rng([seed, index]))
    raise ValueError(f"unknown mask kind {kind!r}; use 'center' or 'irregular'")
