"""The palette: the only colour names captions use, their RGB values, and reading a name back from pixels."""

from __future__ import annotations

from typing import Any

import numpy as np

# Palette names are the only colour words captions use. The RGB values are spread out far enough
# (nearest pair about 80 apart) that shading, texture and jitter never move a part's mean colour
# closer to another name: a nearest-palette classifier recovers the name from pixels.
_PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (205, 35, 35),
    "orange": (238, 128, 24),
    "yellow": (242, 214, 40),
    "green": (48, 150, 52),
    "blue": (42, 84, 205),
    "purple": (125, 52, 165),
    "pink": (235, 110, 170),
    "brown": (118, 72, 32),
    "black": (26, 26, 28),
    "white": (242, 242, 238),
    "grey": (130, 130, 132),
}
COLOUR_NAMES = tuple(_PALETTE)
# Largest per-channel offset of a part's rendered colour from its palette value.
COLOUR_JITTER = 10


def colour_palette() -> dict[str, tuple[int, int, int]]:
    return dict(_PALETTE)


def nearest_colour(rgb: Any) -> str:
    """The palette name closest to ``rgb`` (Euclidean in RGB): how metrics read a part's colour."""
    rgb = np.asarray(rgb, dtype=np.float64)
    names = list(_PALETTE)
    dist = ((np.array([_PALETTE[n] for n in names], dtype=np.float64) - rgb) ** 2).sum(axis=1)
    return names[int(np.argmin(dist))]


def _jittered(rgb: Any, rng: np.random.Generator, amount: float) -> tuple[int, ...]:
    out = np.clip(np.asarray(rgb, np.float64) + rng.uniform(-amount, amount, 3), 0, 255)
    return tuple(int(v) for v in out)
