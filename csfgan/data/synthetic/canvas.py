"""Drawing primitives: geometry in image fractions and the canvas that paints part labels and shading."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

# ------------------------------------------------------------------------------------------------
# Geometry helpers (all coordinates are fractions of the image side until drawn).


def _rot(x: np.ndarray, y: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return x * c - y * s, x * s + y * c


def _ellipse(cx: float, cy: float, a: float, b: float, angle: float = 0.0, n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = _rot(a * np.cos(t), b * np.sin(t), angle)
    return np.stack([cx + x, cy + y], axis=1)


class _Canvas:
    """Label and shade layers drawn at ``ss`` times the output resolution.

    Parts are painted as labels (painter's order decides occlusion); their colour comes later from
    one lookup, so editing a colour cannot move a single edge. The shade layer carries texture
    (feather lines, petal outlines) as a multiplicative factor, 240 meaning 1.0.
    """

    SHADE_ONE = 240.0

    def __init__(self, size: int, flip: bool, centre_x: float):
        self.size = size
        self.flip = flip
        self.centre_x = centre_x
        self.labels = Image.new("L", (size, size), 0)
        self.shade = Image.new("L", (size, size), int(self.SHADE_ONE))
        self.dl = ImageDraw.Draw(self.labels)
        self.ds = ImageDraw.Draw(self.shade)

    def px(self, pts: np.ndarray) -> list[float]:
        """Flat [x0, y0, x1, y1, ...] canvas coordinates, as PIL takes them."""
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2) * self.size
        if self.flip:
            pts[:, 0] = 2 * self.centre_x * self.size - pts[:, 0]
        return pts.ravel().tolist()

    def w(self, width: float) -> int:
        return max(1, int(round(width * self.size)))

    def polygon(
        self, pts: np.ndarray, label: int, shade: int = 240, outline: int | None = None, outline_width: float = 0.0
    ) -> None:
        p = self.px(pts)
        self.dl.polygon(p, fill=label)
        self.ds.polygon(p, fill=shade)
        if outline is not None:
            self.ds.line(p + p[:2], fill=outline, width=self.w(outline_width), joint="curve")

    def line(self, pts: np.ndarray, label: int | None, width: float, shade: int = 240) -> None:
        p = self.px(pts)
        if label is not None:
            self.dl.line(p, fill=label, width=self.w(width), joint="curve")
        self.ds.line(p, fill=shade, width=self.w(width), joint="curve")

    def shade_line(self, pts: np.ndarray, width: float, shade: int) -> None:
        self.ds.line(self.px(pts), fill=shade, width=self.w(width), joint="curve")

    def clipped(self, pts: np.ndarray, label: int, inside: int, shade: int = 240) -> None:
        """Paint ``label`` over the polygon only where ``inside`` is already painted (belly within
        the body, bars within the wing), so a marking never spills past its part's silhouette."""
        where = np.asarray(self.labels) == inside
        shape = Image.new("L", (self.size, self.size), 0)
        ImageDraw.Draw(shape).polygon(self.px(pts), fill=255)
        where = Image.fromarray(np.where(where, np.asarray(shape), np.uint8(0)))
        self.labels.paste(label, mask=where)
        self.shade.paste(shade, mask=where)


def _leaf_outline(cx: float, cy: float, length: float, width: float, angle: float, n: int = 16) -> np.ndarray:
    """A pointed leaf (both ends sharp), centred at (cx, cy)."""
    t = np.linspace(0, 1, n)
    x = (t - 0.5) * length
    half = 0.5 * width * np.sin(np.pi * t) ** 0.8
    xs = np.concatenate([x, x[::-1]])
    ys = np.concatenate([half, -half[::-1]])
    rx, ry = _rot(xs, ys, angle)
    return np.stack([cx + rx, cy + ry], axis=1)


def _box(p: list[float]) -> tuple[float, float, float, float]:
    xa, ya, xb, yb = p
    return (min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb))
