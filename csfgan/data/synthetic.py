"""The embedded datasets ``synth-birds`` and ``synth-flowers``: procedurally drawn stand-ins for
CUB-200-2011 and Oxford-102 whose every pixel has a known part and colour.

A *species* is a fixed combination of named attributes (crown, wing, belly, ... colours for birds;
petal colour, shape and count, stamen colour, centre size for flowers). Species are drawn once per
dataset seed and split by class (150/50 and 82/20, as the real benchmarks): every colour a part can
take occurs in training, but each test species is a colour combination never seen in training, so
a model must compose what it learned from the words.

An image is made in two steps so that it can be redrawn with edited attributes:

* ``draw_scene`` turns a seed into a JSON-serialisable *scene*: the species' attributes, the pose,
  the background seed and the per-image colour jitter;
* ``render(scene, resolution)`` is a pure function of the scene: image and per-part label mask.
  Editing a colour (``edit_scene``) and rendering again changes only that part's pixels, which is
  the ground truth for counterfactual evaluation.

Objects are placed so that the paper's centre hole (the middle half of each side) hides the parts
whose colour only the caption can tell: the bird's wing and belly, the flower's stamen and most of
its petals. Captions are generated from templates in the style of Reed et al.'s, each naming a
different subset of the attributes; every colour word is the palette name of the part it precedes
(``a red crown``) or, after ``is``/``are``, of the part named before it (``the wings are blue``).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from csfgan.config import ScaleConfig
from csfgan.data.prepared import SPLITS, PreparedWriter, check_existing
from csfgan.data.text import tokenize

# Bump whenever a change could alter a rendered byte, a caption or a species: prepared data records
# it, and ``check_existing`` then refuses to mix old and new.
GENERATOR_VERSION = "1"

CAPTIONS_PER_IMAGE = 10
# Captions must fit AttnGAN's 18-token limit whole, or truncation would drop attributes the
# faithfulness metrics assume the text encoder saw.
MAX_CAPTION_WORDS = 18

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
NO_WING_BARS = "none"
# Largest per-channel offset of a part's rendered colour from its palette value.
COLOUR_JITTER = 10

# Part of every image's seed: val images are new draws of the train species (split id 2), so they are
# disjoint from the train images, which stay exactly what they were before the val split existed.
_SPLIT_IDS = {"train": 0, "test": 1, "val": 2}


def colour_palette() -> dict[str, tuple[int, int, int]]:
    return dict(_PALETTE)


def nearest_colour(rgb: Any) -> str:
    """The palette name closest to ``rgb`` (Euclidean in RGB): how metrics read a part's colour."""
    rgb = np.asarray(rgb, dtype=np.float64)
    names = list(_PALETTE)
    dist = ((np.array([_PALETTE[n] for n in names], dtype=np.float64) - rgb) ** 2).sum(axis=1)
    return names[int(np.argmin(dist))]


@dataclass(frozen=True)
class SyntheticSpec:
    name: str
    stands_in_for: str
    parts: tuple[str, ...]
    # attribute -> part it colours; values are palette names (wing bars may also be "none").
    colour_attributes: dict[str, str]
    # every attribute -> its allowed values, in a fixed order
    values: dict[str, tuple[str, ...]]
    train_species: int
    test_species: int
    # Parts the centre hole hides: every caption names the colour of at least one of them.
    hidden_parts: tuple[str, ...]
    # Caption nouns -> the part they denote, for reading captions back (faithfulness metrics).
    part_words: dict[str, str]
    draw_pose: Callable[[dict[str, str], np.random.Generator], dict[str, Any]]
    # Paints the object on a canvas and records, in ``layout``, geometry the renderer needs.
    draw_object: Callable[[_Canvas, dict[str, str], dict[str, Any], dict[str, Any]], None]
    compose_captions: Callable[[dict[str, str], np.random.Generator, int], list[str]]
    species_ok: Callable[[dict[str, str]], bool]


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


# ------------------------------------------------------------------------------------------------
# Backgrounds: soft, out-of-focus photographs' worth of sky and foliage. Drawn at low resolution and
# blurred, then upsampled, so they cost little and look the same at every output resolution.


def _smooth_noise(rng: np.random.Generator, cells: int, size: int) -> np.ndarray:
    """A smooth random field in [0, 1] at ``size`` x ``size`` from a ``cells`` x ``cells`` lattice."""
    lattice = rng.random((cells, cells)).astype(np.float32)
    img = Image.fromarray((lattice * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 255.0


def _jittered(rgb: Any, rng: np.random.Generator, amount: float) -> tuple[int, ...]:
    out = np.clip(np.asarray(rgb, np.float64) + rng.uniform(-amount, amount, 3), 0, 255)
    return tuple(int(v) for v in out)


def _leaf_outline(cx: float, cy: float, length: float, width: float, angle: float, n: int = 16) -> np.ndarray:
    """A pointed leaf (both ends sharp), centred at (cx, cy)."""
    t = np.linspace(0, 1, n)
    x = (t - 0.5) * length
    half = 0.5 * width * np.sin(np.pi * t) ** 0.8
    xs = np.concatenate([x, x[::-1]])
    ys = np.concatenate([half, -half[::-1]])
    rx, ry = _rot(xs, ys, angle)
    return np.stack([cx + rx, cy + ry], axis=1)


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


# ------------------------------------------------------------------------------------------------
# Birds


BIRD_PARTS = ("body", "crown", "wing", "wing_bars", "belly", "beak", "tail", "eye", "legs")
_B = {name: i + 1 for i, name in enumerate(BIRD_PARTS)}
_BIRD_SIZE = {"small": 0.84, "medium": 0.96, "large": 1.08}


def _draw_bird_pose(attrs: dict[str, str], rng: np.random.Generator) -> dict[str, Any]:
    return {
        "x": rng.uniform(0.46, 0.54),
        "y": rng.uniform(0.47, 0.53),
        "scale": _BIRD_SIZE[attrs["size"]] * rng.uniform(0.95, 1.05),
        # Perched birds hold the body tilted, head up; degrees, tail end downwards.
        "tilt": rng.uniform(10, 38),
        "flip": bool(rng.random() < 0.5),
        "head_lift": rng.uniform(-0.02, 0.02),
        "beak_angle": rng.uniform(-15, 12),
        "tail_angle": rng.uniform(-14, 14),
        "wing_droop": rng.uniform(-0.015, 0.02),
        "belly_fullness": rng.uniform(0.9, 1.1),
        "branch_angle": rng.uniform(-14, 14),
        "branch_width": rng.uniform(0.045, 0.07),
        "branch_twig": bool(rng.random() < 0.5),
        "background": str(rng.choice(["sky", "sky", "foliage", "foliage", "autumn"])),
    }


def _draw_bird(cv: _Canvas, attrs: dict[str, str], pose: dict[str, Any], layout: dict[str, Any]) -> None:
    """Paint one perched bird facing left (``cv`` mirrors it when the pose is flipped).

    Local frame: u along the body axis towards the tail, v across it (down), in image fractions of
    a medium bird; the head, beak and crown are placed upright in the image frame, as real birds
    keep their heads level whatever the body's tilt.
    """
    s, tilt = pose["scale"], pose["tilt"]
    cx, cy = pose["x"], pose["y"]

    def T(u: Any, v: Any, angle: float = 0.0) -> np.ndarray:
        x, y = _rot(np.asarray(u, dtype=np.float64) * s, np.asarray(v, dtype=np.float64) * s, tilt + angle)
        return np.stack([cx + x, cy + y], axis=-1)

    body_a, body_b = 0.21, 0.125
    t = np.linspace(0, 2 * np.pi, 56, endpoint=False)
    body = T(body_a * np.cos(t), body_b * np.sin(t))
    layout["body"] = {"cx": cx, "cy": cy, "a": body_a * s, "b": body_b * s, "tilt": tilt}

    # Legs reach straight down from under the body to the branch; the branch is background.
    foot_y = float(T(0.0, body_b)[1]) + 0.045 * s
    leg_x = [float(T(du, body_b * 0.9)[0]) for du in (-0.05, 0.03)]
    b_ang = pose["branch_angle"]
    bx, by = _rot(np.array([-1.0, 1.0]), np.array([0.0, 0.0]), b_ang)
    layout["branch"] = {
        "p0": [cx + bx[0], foot_y + by[0]],
        "p1": [cx + bx[1], foot_y + by[1]],
        "width": pose["branch_width"] * s,
        "twig": pose["branch_twig"],
    }
    slope = math.tan(math.radians(b_ang))
    leg_w = 0.014 * s
    for lx in leg_x:
        ly = foot_y + slope * (lx - cx)
        top = [lx, float(T(0.0, body_b * 0.6)[1])]
        cv.line(np.array([top, [lx, ly]]), _B["legs"], leg_w)
        for toe in (-0.025, 0.02):  # toes wrap the branch
            cv.line(np.array([[lx, ly], [lx + toe * s, ly + 0.006 * s]]), _B["legs"], leg_w * 0.8)

    # Tail: a fan of feathers leaving the rump, its angle independent of the body's.
    ta = pose["tail_angle"]
    tail = np.concatenate(
        [
            T([0.13, 0.36, 0.385], [-0.045, -0.055, 0.0], ta),
            T([0.36, 0.13], [0.055, 0.06], ta),
        ]
    )
    cv.polygon(tail, _B["tail"], 240, outline=200, outline_width=0.006 * s)
    for dv in (-0.015, 0.012):
        cv.shade_line(T([0.22, 0.37], [dv * 0.6, dv * 1.6], ta), 0.005 * s, 215)

    cv.polygon(body, _B["body"], 240)

    # Belly: the lower front of the body, from throat to vent.
    full = pose["belly_fullness"]
    belly = T(*_ellipse(-0.05, 0.075, 0.19 * full, 0.1 * full, -8).T)
    cv.clipped(belly, _B["belly"], inside=_B["body"])

    # Wing: folded along the back, rounded at the shoulder, primaries tapering past the rump.
    n = 28
    tt = np.linspace(0, 1, n)
    u = -0.12 + 0.44 * tt
    prof = np.sin(np.pi * np.clip(tt, 0, 1) ** 0.6) ** 0.9
    v0 = -0.03 + pose["wing_droop"] + 0.03 * tt
    upper = v0 - 0.035 * prof
    lower = v0 + 0.075 * prof
    wing = np.concatenate([T(u, upper), T(u[::-1], lower[::-1])])
    cv.polygon(wing, _B["wing"], 240, outline=195, outline_width=0.006 * s)
    # Primary feather edges: darker lines along the folded tip.
    sel = tt > 0.55
    for k, frac in enumerate((0.25, 0.55)):
        vv = v0 + (-0.035 + 0.11 * frac) * prof
        cv.shade_line(T(u[sel], vv[sel]), 0.005 * s, 205 + 5 * k)
    # Covert edges: a scalloped line across the shoulder.
    cv.shade_line(
        T(
            -0.03 + 0.02 * np.sin(np.linspace(0, 3 * np.pi, 9)) + np.linspace(0, 0.14, 9),
            np.linspace(-0.02, 0.06, 9) + pose["wing_droop"],
        ),
        0.004 * s,
        222,
    )
    if attrs["wing_bars"] != NO_WING_BARS:
        for centre in (0.03, 0.1):
            bar = T(
                [centre - 0.015, centre + 0.015, centre + 0.035, centre + 0.005],
                [
                    -0.09 + pose["wing_droop"],
                    -0.09 + pose["wing_droop"],
                    0.09 + pose["wing_droop"],
                    0.09 + pose["wing_droop"],
                ],
            )
            cv.clipped(bar, _B["wing_bars"], inside=_B["wing"])

    # Head: a circle at the front of the shoulders, kept level.
    hr = 0.09 * s
    neck = T(-0.17, -0.075)
    hx, hy = float(neck[0]) - 0.02 * s, float(neck[1]) - 0.035 * s + pose["head_lift"] * s
    layout["head"] = {"cx": hx, "cy": hy, "r": hr}
    cv.polygon(_ellipse(hx, hy, hr, hr * 0.95, 0, 40), _B["body"], 240)
    # Crown: the cap from forehead to nape, the top arc of the head closed by a chord.
    # Slightly outside the head's outline, so no rim of face colour shows around the cap.
    ang = np.radians(np.linspace(190, 342, 24))
    cap = np.stack([hx + 1.03 * hr * np.cos(ang), hy + 0.98 * hr * np.sin(ang)], axis=1)
    cap = np.concatenate([cap, [[hx + 0.55 * hr, hy - 0.2 * hr], [hx - 0.6 * hr, hy - 0.05 * hr]]])
    cv.polygon(cap, _B["crown"], 240)
    # Beak: a cone from the face, short and deep or long and thin.
    long_beak = attrs["beak_length"] == "long"
    length = hr * (1.2 if long_beak else 0.72)
    depth = hr * (0.5 if long_beak else 0.68)
    ba = pose["beak_angle"]
    base_x = hx - 0.8 * hr
    bxs, bys = _rot(np.array([0.1 * hr, -length, 0.1 * hr]), np.array([-depth / 2, 0.05 * hr, depth / 2]), -ba)
    beak = np.stack([base_x + bxs, hy + 0.12 * hr + bys], axis=1)
    # No outline: the beak is only a few pixels at 64 px and must still read as its colour.
    cv.polygon(beak, _B["beak"], 240)
    cv.shade_line(np.array([beak[1], [base_x + 0.1 * hr, hy + 0.12 * hr]]), 0.003 * s, 222)
    # Eye with a catchlight (a tiny white disc painted after colouring).
    er = 0.2 * hr
    ex, ey = hx - 0.38 * hr, hy + 0.02 * hr
    cv.polygon(_ellipse(ex, ey, er, er, 0, 20), _B["eye"], 240)
    layout["catchlight"] = {"cx": ex - 0.3 * er, "cy": ey - 0.3 * er, "r": 0.32 * er}


def _paint_branch(
    img: np.ndarray,
    size: int,
    flip: bool,
    centre_x: float,
    branch: dict[str, Any],
    bark: tuple[int, int, int],
    rng: np.random.Generator,
) -> None:
    """A bark-textured branch across the frame under the bird's feet (background, label 0)."""
    (x0, y0), (x1, y1) = branch["p0"], branch["p1"]
    if flip:
        x0, x1 = 2 * centre_x - x0, 2 * centre_x - x1
    dx, dy = x1 - x0, y1 - y0
    norm = math.hypot(dx, dy)
    nx, ny = -dy / norm, dx / norm
    half = branch["width"] / 2
    # Only the band of rows the branch (and its twig) can touch is computed: the rest is most of
    # the image and would cost most of the render time.
    ends = [y0 + (x - x0) * dy / dx for x in (0.0, 1.0)]
    top, bottom = min(ends) - 0.3 * branch["twig"] - 2 * half, max(ends) + 2 * half
    r0, r1 = max(0, int(top * size)), min(size, int(math.ceil(bottom * size)) + 1)
    if r1 <= r0:
        return
    img = img[r0:r1]
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    X, Y = c[None, :], c[r0:r1, None]
    # Signed distance across the branch; the bird stands on its upper edge.
    d = (X - x0) * nx + (Y - y0) * ny - half
    along = (X - x0) * (dx / norm) + (Y - y0) * (dy / norm)
    cover = np.clip((half - np.abs(d)) * size + 0.5, 0, 1)
    if branch["twig"]:
        tx0, ty0 = x0 + 0.75 * dx, y0 + 0.75 * dy
        tdx, tdy = (0.25 if not flip else -0.25), -0.22
        tnorm = math.hypot(tdx, tdy)
        tnx, tny = -tdy / tnorm, tdx / tnorm
        t_along = ((X - tx0) * tdx + (Y - ty0) * tdy) / tnorm
        t_d = (X - tx0) * tnx + (Y - ty0) * tny
        t_half = half * 0.45 * np.clip(1 - t_along / tnorm, 0, 1)
        twig = np.clip((t_half - np.abs(t_d)) * size + 0.5, 0, 1) * (t_along > 0)
        cover = np.maximum(cover, twig)
    if not cover.any():
        return
    round_shade = 0.75 + 0.35 * np.clip(1 - (d / half) ** 2, 0, 1)
    streaks = 0.85 + 0.3 * _smooth_noise(rng, 24, size)[r0:r1]
    ridge = 0.92 + 0.08 * np.sin(along * 140 + 6 * _smooth_noise(rng, 10, size)[r0:r1])
    col = np.array(bark, np.float32) * (round_shade * streaks * ridge)[..., None]
    img[:] = img * (1 - cover[..., None]) + col * cover[..., None]


def _bird_captions(attrs: dict[str, str], rng: np.random.Generator, count: int) -> list[str]:
    bars = attrs["wing_bars"] != NO_WING_BARS
    size_word = {"small": "small", "medium": "medium sized", "large": "large"}[attrs["size"]]

    def np_phrase(a: str, chosen: set[str]) -> str | None:
        c = attrs.get(a)
        if a == "crown_colour":
            return _pick(rng, [f"a {c} crown", f"a {c} crown", f"{c} crown feathers"])
        if a == "wing_colour":
            return _pick(rng, [f"{c} wings", f"{c} wings", f"{c} wing feathers", f"{c} colored wings"])
        if a == "wing_bars":
            return f"{c} wingbars"
        if a == "belly_colour":
            return _pick(rng, [f"a {c} belly", f"a {c} belly", f"a {c} breast", f"a {c} chest"])
        if a == "tail_colour":
            return _pick(rng, [f"a {c} tail", f"{c} tail feathers"])
        if a == "body_colour":
            return _pick(rng, [f"a {c} body", f"a mostly {c} body"])
        if a == "beak_colour":
            noun = _pick(rng, ["beak", "beak", "bill"])
            if "beak_length" in chosen:
                return f"a {attrs['beak_length']} {c} {noun}"
            return f"a {c} {noun}"
        if a == "beak_length":
            if "beak_colour" in chosen:
                return None  # said together with the colour
            return _pick(
                rng,
                [
                    f"a {attrs['beak_length']} beak",
                    f"a {attrs['beak_length']} pointed beak",
                    f"a {attrs['beak_length']} bill",
                ],
            )
        raise AssertionError(a)

    def predicate(a: str, chosen: set[str]) -> str | None:
        c = attrs.get(a)
        poss = _pick(rng, ["the", "its"])
        if a == "crown_colour":
            return f"{poss} crown is {c}"
        if a == "wing_colour":
            return f"{poss} wings are {c}"
        if a == "wing_bars":
            return f"{poss} wingbars are {c}"
        if a == "belly_colour":
            return f"{poss} {_pick(rng, ['belly', 'breast'])} is {c}"
        if a == "tail_colour":
            return f"{poss} tail is {c}"
        if a == "body_colour":
            return f"{poss} body is {c}"
        if a == "beak_colour":
            if "beak_length" in chosen:
                return f"{poss} beak is {c} and {attrs['beak_length']}"
            return f"{poss} {_pick(rng, ['beak', 'bill'])} is {c}"
        if a == "beak_length":
            return None if "beak_colour" in chosen else f"{poss} beak is {attrs['beak_length']}"
        raise AssertionError(a)

    def opener(size: bool, body: bool) -> str:
        c = attrs["body_colour"]
        if size and body:
            return _pick(
                rng,
                [
                    f"a {size_word} {c} bird with",
                    f"this is a {size_word} {c} bird with",
                    f"this {size_word} bird is mostly {c} and has",
                ],
            )
        if size:
            return _pick(
                rng, [f"a {size_word} bird with", f"this {size_word} bird has", f"this is a {size_word} bird with"]
            )
        if body:
            return _pick(
                rng,
                [
                    f"a {c} bird with",
                    f"this bird is {c} with",
                    f"this bird is mostly {c} with",
                    f"this is a {c} bird with",
                    f"this {c} bird has",
                ],
            )
        return _pick(
            rng, ["this bird has", "a bird with", "the bird has", "this is a bird with", "this particular bird has"]
        )

    mentionable = [
        "body_colour",
        "crown_colour",
        "wing_colour",
        "belly_colour",
        "beak_colour",
        "beak_length",
        "tail_colour",
        "size",
    ] + (["wing_bars"] if bars else [])
    hidden = ["wing_colour", "belly_colour"] + (["wing_bars"] if bars else [])

    def compose(chosen: list[str]) -> str | None:
        rest = [a for a in chosen if a not in ("size", "body_colour")]
        if "size" not in chosen and rng.random() < 0.3:
            # Predicate style: "the wings are blue and the belly is white".
            preds = [p for a in chosen if (p := predicate(a, set(chosen))) is not None]
            return _join(preds)
        head = opener("size" in chosen, "body_colour" in chosen)
        nps = [p for a in rest if (p := np_phrase(a, set(chosen))) is not None]
        if not nps:
            return None
        return f"{head} {_join(nps)}"

    return _compose_captions(rng, count, mentionable, hidden, compose, sizes=(2, 3, 3, 4))


FLOWER_PARTS = ("petals", "stamen", "stem", "leaves")
_F = {name: i + 1 for i, name in enumerate(FLOWER_PARTS)}
_PETAL_COUNTS = {"five": 5, "eight": 8, "many": 16}


def _draw_flower_pose(attrs: dict[str, str], rng: np.random.Generator) -> dict[str, Any]:
    return {
        "x": rng.uniform(0.45, 0.55),
        "y": rng.uniform(0.44, 0.53),
        "radius": rng.uniform(0.24, 0.34),
        "rotation": rng.uniform(0, 360),
        # Viewed a little from the side: the flower plane is squashed along one direction.
        "squash": rng.uniform(0.72, 1.0),
        "squash_angle": rng.uniform(-30, 30),
        "petal_jitter": [float(v) for v in rng.uniform(-1, 1, 16)],
        "stem_bend": rng.uniform(-0.12, 0.12),
        "leaves": int(rng.integers(1, 3)),
        "leaf_side": bool(rng.random() < 0.5),
        "leaf_at": [float(v) for v in rng.uniform(0.45, 0.8, 2)],
        "leaf_length": [float(v) for v in rng.uniform(0.14, 0.22, 2)],
        "anther_seed": int(rng.integers(2**31)),
        "flip": bool(rng.random() < 0.5),
    }


def _petal_profile(shape: str, t: np.ndarray) -> np.ndarray:
    """Half-width along the petal (t = 0 at the base, 1 at the tip), relative to the widest point."""
    if shape == "rounded":
        return np.sin(np.pi * np.clip(t, 0, 1) ** 1.4) ** 0.55
    if shape == "pointed":
        return np.minimum(t / 0.4, (1 - t) / 0.6).clip(0, 1) ** 0.75
    if shape == "narrow":
        return 0.45 * np.sin(np.pi * np.clip(t, 0, 1)) ** 0.3
    raise ValueError(shape)


def _draw_flower(cv: _Canvas, attrs: dict[str, str], pose: dict[str, Any], layout: dict[str, Any]) -> None:
    cx, cy, R = pose["x"], pose["y"], pose["radius"]
    squash, sq_ang = pose["squash"], pose["squash_angle"]

    def plane(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Flower-plane offsets -> image points, foreshortened by the viewing angle."""
        x, y = _rot(x, y, -sq_ang)
        x, y = _rot(x, y * squash, sq_ang)
        return np.stack([cx + x, cy + y], axis=1)

    # Stem: a curved stalk from behind the flower to the bottom edge.
    t = np.linspace(0, 1, 14)
    bend = pose["stem_bend"]
    sx = cx + bend * np.sin(np.pi * t * 0.8) + 0.3 * bend * t
    sy = cy + (1.08 - cy) * t
    stem = np.stack([sx, sy], axis=1)
    cv.line(stem, _F["stem"], 0.024)
    cv.shade_line(stem + [0.004, 0], 0.006, 215)
    for k in range(pose["leaves"]):
        at = pose["leaf_at"][k]
        i = int(at * (len(t) - 1))
        side = 1 if (k % 2 == 0) == pose["leaf_side"] else -1
        length = pose["leaf_length"][k]
        # Leaves rise at 35 degrees from the stem, to whichever side.
        angle = -35 if side > 0 else 180 + 35
        lx0, ly0 = stem[i]
        lcx = lx0 + side * 0.5 * length * math.cos(math.radians(35))
        lcy = ly0 - 0.5 * length * math.sin(math.radians(35))
        leaf = _leaf_outline(lcx, lcy, length, length * 0.38, angle)
        cv.polygon(leaf, _F["leaves"], 240, outline=215, outline_width=0.004)
        tip = np.array(
            [lcx + side * 0.45 * length * math.cos(math.radians(35)), lcy - 0.45 * length * math.sin(math.radians(35))]
        )
        cv.shade_line(np.array([[lx0, ly0], tip]), 0.004, 215)

    count = _PETAL_COUNTS[attrs["petal_count"]]
    centre_r = R * (0.36 if attrs["centre_size"] == "large" else 0.22)
    rings = (
        [(count // 2, R, 0.0, 222), (count - count // 2, R * 0.8, 0.5, 246)] if count > 8 else [(count, R, 0.0, 240)]
    )
    tt = np.linspace(0, 1, 22)
    jit = pose["petal_jitter"]
    j = 0
    for n_petals, reach, offset, shade in rings:
        # Neighbouring petals overlap a little; the outline keeps them apart visually.
        width = 1.15 * math.pi * reach / n_petals
        if attrs["petal_shape"] == "narrow":
            width *= 1.1
        base = centre_r * 0.6
        for i in range(n_petals):
            ang = pose["rotation"] + 360.0 * (i + offset) / n_petals + 6 * jit[j % 16]
            length = (reach - base) * (1 + 0.06 * jit[(j + 5) % 16])
            j += 1
            half = 0.5 * width * _petal_profile(attrs["petal_shape"], tt)
            along = base + length * tt
            xs = np.concatenate([along, along[::-1]])
            ys = np.concatenate([half, -half[::-1]])
            xs, ys = _rot(xs, ys, ang)
            pts = plane(xs, ys)
            cv.polygon(pts, _F["petals"], shade, outline=198, outline_width=0.005)
            # A midvein, as most petals show one.
            vx, vy = _rot(np.array([base + 0.1 * length, base + 0.75 * length]), np.zeros(2), ang)
            cv.shade_line(plane(vx, vy), 0.003, shade - 12)
    layout["flower"] = {"cx": cx, "cy": cy, "R": R, "squash": squash, "squash_angle": sq_ang}

    disc = plane(*_ellipse(0, 0, centre_r, centre_r, 0, 36).T)
    cv.polygon(disc, _F["stamen"], 236, outline=205, outline_width=0.004)
    # Anthers: dots scattered over the disc, lighter and darker in equal measure so the disc's mean
    # colour stays its palette colour.
    arng = np.random.default_rng(pose["anther_seed"])
    n_dots = int(14 + 40 * centre_r / 0.12)
    rr = centre_r * np.sqrt(arng.random(n_dots)) * 0.85
    aa = arng.uniform(0, 2 * np.pi, n_dots)
    dots = plane(rr * np.cos(aa), rr * np.sin(aa))
    dot_r = max(centre_r * 0.09, 0.004)
    for k, (x, y) in enumerate(dots):
        box = _box(cv.px(np.array([[x - dot_r, y - dot_r], [x + dot_r, y + dot_r]])))
        cv.ds.ellipse(box, fill=255 if k % 2 else 214)


def _flower_captions(attrs: dict[str, str], rng: np.random.Generator, count: int) -> list[str]:
    pc, sc = attrs["petal_colour"], attrs["stamen_colour"]
    shape, number, csize = attrs["petal_shape"], attrs["petal_count"], attrs["centre_size"]

    def centre_noun() -> str:
        return _pick(rng, ["stamen", "center", "center", "pistil"])

    def petals_np(chosen: set[str], with_colour: bool) -> str | None:
        words = []
        if "petal_count" in chosen:
            words.append(number)
        if "petal_shape" in chosen:
            words.append(shape)
        if with_colour and "petal_colour" in chosen:
            words.append(pc)
        if not words:
            return None
        return " ".join(words + ["petals"])

    def centre_np(chosen: set[str]) -> str | None:
        words = []
        if "centre_size" in chosen:
            words.append(csize)
        if "stamen_colour" in chosen:
            if rng.random() < 0.25 and "centre_size" not in chosen:
                return f"{sc} stamens"
            words.append(sc)
        if not words:
            return None
        return "a " + " ".join(words + [centre_noun()])

    def compose(chosen: list[str]) -> str | None:
        ch = set(chosen)
        style = rng.random()
        if style < 0.25 and "petal_colour" in ch and "petal_count" not in ch:
            # "the petals are pink and pointed and the center is large and yellow"
            parts = [f"the petals are {pc}" + (f" and {shape}" if "petal_shape" in ch else "")]
            if "stamen_colour" in ch:
                parts.append(f"the {centre_noun()} is {sc}" + (f" and {csize}" if "centre_size" in ch else ""))
            elif "centre_size" in ch:
                parts.append(f"the {centre_noun()} is {csize}")
            return " and ".join(parts)
        if style < 0.45 and "petal_colour" in ch:
            # The petal colour in the opener: "a pink flower with ...", "this flower is pink in color ..."
            heads = [
                f"a {pc} flower with",
                f"this {pc} flower has",
                f"this flower is {pc} with",
                f"this flower is {pc} in color and has",
            ]
            if not ch & {"petal_count", "petal_shape"}:
                heads.append(f"the petals of this flower are {pc} with")
            head = _pick(rng, heads)
            nps = [p for p in (petals_np(ch, False), centre_np(ch)) if p]
            if not nps:
                return None
            return f"{head} {_join(nps)}"
        if style < 0.6 and "petal_colour" in ch and ("petal_count" in ch or "petal_shape" in ch):
            # "this flower has many petals that are pink and a yellow center"
            lead = petals_np(ch, False)
            tail = centre_np(ch)
            text = f"{_pick(rng, ['this flower has', 'the flower has', 'a flower with'])} {lead} that are {pc}"
            return text + (f" and {tail}" if tail else "")
        head = _pick(rng, ["this flower has", "a flower with", "the flower has", "this is a flower with"])
        nps = [p for p in (petals_np(ch, True), centre_np(ch)) if p]
        if not nps:
            return None
        return f"{head} {_join(nps)}"

    mentionable = ["petal_colour", "petal_shape", "petal_count", "stamen_colour", "centre_size"]
    hidden = ["petal_colour", "stamen_colour"]
    return _compose_captions(rng, count, mentionable, hidden, compose, sizes=(1, 2, 2, 3, 3, 4))


_AN = re.compile(r"\ba ([aeiou])")


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _compose_captions(
    rng: np.random.Generator,
    count: int,
    mentionable: list[str],
    hidden: list[str],
    compose: Callable[[list[str]], str | None],
    sizes: tuple[int, ...],
) -> list[str]:
    """``count`` captions naming pairwise different attribute subsets, each including the colour of
    a part the centre hole hides (the words are what make the hidden part recoverable)."""
    captions: list[str] = []
    seen: set[frozenset[str]] = set()
    for _ in range(2000):
        k = min(int(rng.choice(sizes)), len(mentionable))
        first = _pick(rng, hidden)
        others = [a for a in mentionable if a != first]
        chosen = [first, *(others[i] for i in rng.permutation(len(others))[: k - 1])]
        chosen = [a for a in mentionable if a in chosen]  # canonical order reads naturally
        key = frozenset(chosen)
        if key in seen:
            continue
        text = compose(chosen)
        if text is None or len(tokenize(text)) > MAX_CAPTION_WORDS:
            continue
        text = _AN.sub(r"an \1", text)
        seen.add(key)
        captions.append(text)
        if len(captions) == count:
            return captions
    raise RuntimeError(f"could not compose {count} distinct captions from {mentionable}")


def _bird_species_ok(attrs: dict[str, str]) -> bool:
    # Bars the colour of the wing would be invisible yet named in captions.
    return attrs["wing_bars"] != attrs["wing_colour"]


def _flower_species_ok(attrs: dict[str, str]) -> bool:
    return attrs["stamen_colour"] != attrs["petal_colour"]


DATASETS: dict[str, SyntheticSpec] = {
    "synth-birds": SyntheticSpec(
        name="synth-birds",
        stands_in_for="CUB-200-2011",
        parts=BIRD_PARTS,
        colour_attributes={
            "body_colour": "body",
            "crown_colour": "crown",
            "wing_colour": "wing",
            "wing_bars": "wing_bars",
            "belly_colour": "belly",
            "beak_colour": "beak",
            "tail_colour": "tail",
        },
        values={
            "body_colour": COLOUR_NAMES,
            "crown_colour": COLOUR_NAMES,
            "wing_colour": COLOUR_NAMES,
            "wing_bars": (NO_WING_BARS, *COLOUR_NAMES),
            "belly_colour": COLOUR_NAMES,
            "beak_colour": COLOUR_NAMES,
            "tail_colour": COLOUR_NAMES,
            "beak_length": ("short", "long"),
            "size": ("small", "medium", "large"),
        },
        train_species=150,
        test_species=50,
        hidden_parts=("wing", "belly", "wing_bars"),
        part_words={
            "bird": "body",
            "body": "body",
            "crown": "crown",
            "wing": "wing",
            "wings": "wing",
            "wingbars": "wing_bars",
            "belly": "belly",
            "breast": "belly",
            "chest": "belly",
            "beak": "beak",
            "bill": "beak",
            "tail": "tail",
        },
        draw_pose=_draw_bird_pose,
        draw_object=_draw_bird,
        compose_captions=_bird_captions,
        species_ok=_bird_species_ok,
    ),
    "synth-flowers": SyntheticSpec(
        name="synth-flowers",
        stands_in_for="Oxford-102",
        parts=FLOWER_PARTS,
        colour_attributes={"petal_colour": "petals", "stamen_colour": "stamen"},
        values={
            "petal_colour": COLOUR_NAMES,
            "petal_shape": ("rounded", "pointed", "narrow"),
            "petal_count": tuple(_PETAL_COUNTS),
            "stamen_colour": COLOUR_NAMES,
            "centre_size": ("small", "large"),
        },
        train_species=82,
        test_species=20,
        hidden_parts=("stamen", "petals"),
        part_words={
            "flower": "petals",
            "petals": "petals",
            "petal": "petals",
            "stamen": "stamen",
            "stamens": "stamen",
            "center": "stamen",
            "pistil": "stamen",
        },
        draw_pose=_draw_flower_pose,
        draw_object=_draw_flower,
        compose_captions=_flower_captions,
        species_ok=_flower_species_ok,
    ),
}


def _spec(dataset: str) -> SyntheticSpec:
    if dataset not in DATASETS:
        raise ValueError(f"unknown synthetic dataset {dataset!r}; known: {', '.join(DATASETS)}")
    return DATASETS[dataset]


def parts(dataset: str) -> list[str]:
    return list(_spec(dataset).parts)


def colour_attributes(dataset: str) -> dict[str, str]:
    return dict(_spec(dataset).colour_attributes)


def attribute_values(dataset: str) -> dict[str, list[str]]:
    return {k: list(v) for k, v in _spec(dataset).values.items()}


def part_words(dataset: str) -> dict[str, str]:
    return dict(_spec(dataset).part_words)


# ------------------------------------------------------------------------------------------------
# Species


def species(dataset: str, seed: int) -> dict[str, list[dict[str, str]]]:
    """The dataset's species for ``seed``: ``{"train": [attrs, ...], "test": [...]}``.

    Train species are drawn until every value of every attribute occurs among them; test species
    are drawn until each is a combination of colours that no train species has.
    """
    spec = _spec(dataset)
    rng = np.random.default_rng([seed, _dataset_id(dataset), 7919])
    names = list(spec.values)

    def draw() -> dict[str, str]:
        while True:
            attrs = {a: str(spec.values[a][int(rng.integers(len(spec.values[a])))]) for a in names}
            if spec.species_ok(attrs):
                return attrs

    def colours(attrs: dict[str, str]) -> tuple[str, ...]:
        return tuple(attrs[a] for a in spec.colour_attributes)

    for _ in range(1000):
        train = [draw() for _ in range(spec.train_species)]
        if all({t[a] for t in train} == set(spec.values[a]) for a in names):
            break
    else:  # pragma: no cover - probability vanishes for the species counts used
        raise RuntimeError(f"{dataset}: could not cover every attribute value in training")
    seen = {colours(t) for t in train}
    test: list[dict[str, str]] = []
    while len(test) < spec.test_species:
        attrs = draw()
        if colours(attrs) not in seen:
            seen.add(colours(attrs))
            test.append(attrs)
    return {"train": train, "test": test}


def _dataset_id(dataset: str) -> int:
    return list(DATASETS).index(dataset) + 1


# ------------------------------------------------------------------------------------------------
# Scenes and rendering


def _plain(obj: Any) -> Any:
    """JSON-safe copy with floats rounded, so a scene survives a JSON round trip unchanged."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return round(float(obj), 5)
    if isinstance(obj, (str, np.str_)):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def draw_scene(dataset: str, attributes: dict[str, str], class_id: int, seed: Any) -> dict[str, Any]:
    """A scene for one image of a species: pose, background and colour jitter drawn from ``seed``
    (an int or a sequence of ints for ``numpy.random.default_rng``)."""
    spec = _spec(dataset)
    rng = np.random.default_rng(seed)
    pose = spec.draw_pose(attributes, rng)
    jitter = {a: [int(v) for v in rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, 3)] for a in spec.colour_attributes}
    fixed = {}
    if dataset == "synth-birds":
        fixed = {
            "eye": _jittered((18, 16, 16), rng, 4),
            "legs": _jittered((95, 80, 70), rng, 20),
            # Bark varies in brightness far more than in hue.
            "bark": _jittered(np.array((105, 80, 55)) * rng.uniform(0.7, 1.3), rng, 8),
        }
    else:
        # Fresh greens, a little brighter than the shaded foliage behind, so the plant reads as one.
        fixed = {"stem": _jittered((75, 145, 50), rng, 15), "leaves": _jittered((70, 140, 45), rng, 18)}
    scene = {
        "dataset": dataset,
        "generator_version": GENERATOR_VERSION,
        "class_id": int(class_id),
        "attributes": dict(attributes),
        "pose": pose,
        "colour_jitter": jitter,
        "fixed_colours": {k: list(v) for k, v in fixed.items()},
        "background_seed": int(rng.integers(2**31)),
        "texture_seed": int(rng.integers(2**31)),
        "caption_seed": int(rng.integers(2**31)),
    }
    return _plain(scene)


def edit_scene(scene: dict[str, Any], changes: dict[str, str]) -> dict[str, Any]:
    """A copy of ``scene`` with some attributes changed; pose, background and noise stay the same."""
    spec = _spec(scene["dataset"])
    new = json.loads(json.dumps(scene))
    for attribute, value in changes.items():
        if attribute not in spec.values:
            raise ValueError(f"{spec.name} has no attribute {attribute!r}; attributes: {', '.join(spec.values)}")
        if value not in spec.values[attribute]:
            raise ValueError(f"{value!r} is not a value of {attribute!r}; allowed: {', '.join(spec.values[attribute])}")
        new["attributes"][attribute] = value
    return new


def scene_captions(scene: dict[str, Any], count: int = CAPTIONS_PER_IMAGE) -> list[str]:
    """The scene's captions; an edited scene gets the same sentence frames with the new words."""
    spec = _spec(scene["dataset"])
    return spec.compose_captions(scene["attributes"], np.random.default_rng(scene["caption_seed"]), count)


def supersampling(resolution: int) -> int:
    return 4 if resolution <= 128 else 2


def render(scene: dict[str, Any], resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Image (uint8 HxWx3) and part mask (uint8 HxW, 0 background, k = parts()[k-1]) of a scene.

    The object is drawn at 2-4x and box-filtered down, so its edges are antialiased; the mask takes
    each pixel's majority label at the fine scale. The background is out of focus anyway, so it is
    made at the output resolution and blended in by the object's coverage of each pixel.
    """
    image, mask, _ = _render(scene, resolution)
    return image, mask


def part_coverage(scene: dict[str, Any], resolution: int) -> np.ndarray:
    """float32 (len(parts) + 1, H, W): the share of each pixel covered by background (0) and by each
    part. A colour edit of part k can change exactly the pixels where ``coverage[k] > 0``, which
    includes antialiased rims that the majority mask gives to a neighbour."""
    return _render(scene, resolution)[2]


def _render(scene: dict[str, Any], resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    spec = _spec(scene["dataset"])
    ss = supersampling(resolution)
    size = resolution * ss
    pose = scene["pose"]
    attrs = scene["attributes"]
    tex = np.random.default_rng(scene["texture_seed"])
    layout: dict[str, Any] = {}
    cv = _Canvas(size, pose["flip"], pose["x"])
    spec.draw_object(cv, attrs, pose, layout)

    lut = np.zeros((len(spec.parts) + 1, 3), np.float32)
    for attribute, part in spec.colour_attributes.items():
        value = attrs[attribute]
        if value in _PALETTE:
            lut[spec.parts.index(part) + 1] = np.array(_PALETTE[value]) + scene["colour_jitter"][attribute]
    for part, rgb in scene["fixed_colours"].items():
        if part in spec.parts:
            lut[spec.parts.index(part) + 1] = rgb
    lut = lut.clip(0, 255)

    # Colouring and the box filter run in PIL's C loops: the fine canvas is the bulk of the work.
    palette = (lut * (255.0 / _Canvas.SHADE_ONE)).clip(0, 255).round().astype(np.uint8)
    coloured = cv.labels.copy()
    coloured.putpalette(palette.ravel().tolist() + [0] * (768 - palette.size))
    coloured = ImageChops.multiply(coloured.convert("RGB"), Image.merge("RGB", (cv.shade,) * 3))
    if spec.name == "synth-birds":
        c = layout["catchlight"]
        ImageDraw.Draw(coloured).ellipse(
            _box(cv.px(np.array([[c["cx"] - c["r"], c["cy"] - c["r"]], [c["cx"] + c["r"], c["cy"] + c["r"]]]))),
            fill=(235, 235, 235),
        )
    obj = np.asarray(coloured.reduce(ss), dtype=np.float32)

    # Each label's share of every output pixel (a histogram per ss x ss block); the mask is the
    # majority label.
    k = len(spec.parts) + 1
    block = (np.arange(resolution * resolution, dtype=np.int32) * k).reshape(resolution, 1, resolution, 1)
    labels = np.asarray(cv.labels).reshape(resolution, ss, resolution, ss)
    counts = np.bincount((labels + block).ravel(), minlength=resolution * resolution * k)
    shares = counts.reshape(resolution, resolution, k).transpose(2, 0, 1).astype(np.float32) / ss**2
    mask = shares.argmax(axis=0).astype(np.uint8)
    background_share = shares[0][..., None]

    if spec.name == "synth-birds":
        bg = _background(pose["background"], scene["background_seed"], resolution)
        _paint_branch(bg, resolution, pose["flip"], pose["x"], layout["branch"], scene["fixed_colours"]["bark"], tex)
    else:
        bg = _flower_background(scene["background_seed"], resolution)
    X, Y = _grid(resolution, pose["flip"], pose["x"])
    image = obj * _form_shading(spec.name, X, Y, layout)[..., None] + bg * background_share
    # Sensor grain, identical for every edit of the scene because it is drawn from the scene's seed.
    grain = np.random.default_rng(scene["texture_seed"] + 1).normal(0, 2.0, (resolution, resolution, 1))
    image = np.clip(image + grain.astype(np.float32) + 0.5, 0, 255).astype(np.uint8)
    return image, mask, shares


def _grid(size: int, flip: bool, centre_x: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in image fractions, unflipped into the object's own frame."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    x = c[None, :].repeat(size, 0)
    if flip:
        x = 2 * centre_x - x
    return x, c[:, None].repeat(size, 1)


def _box(p: list[float]) -> tuple[float, float, float, float]:
    xa, ya, xb, yb = p
    return (min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb))


def _form_shading(name: str, X: np.ndarray, Y: np.ndarray, layout: dict[str, Any]) -> np.ndarray:
    """Soft light from above on a rounded form; averages to about 1 over each part so the part's
    mean colour stays its palette colour."""
    if name == "synth-birds":
        b = layout["body"]
        dx, dy = X - b["cx"], Y - b["cy"]
        u, v = _rot(dx, dy, -b["tilt"])
        r2 = (u / (b["a"] * 1.3)) ** 2 + (v / (b["b"] * 1.4)) ** 2
        h = layout["head"]
        rh2 = ((X - h["cx"]) ** 2 + (Y - h["cy"]) ** 2) / (1.4 * h["r"]) ** 2
        r2 = np.minimum(r2, rh2)
        light = 1.0 - 0.04 * np.clip(v / b["b"], -1.5, 1.5)
        return (1.035 - 0.07 * np.clip(r2, 0, 1)) * light
    f = layout["flower"]
    r = np.sqrt((X - f["cx"]) ** 2 + (Y - f["cy"]) ** 2) / f["R"]
    # Petals darken towards their base, as cupped petals do in shadow.
    return np.where(r < 1.2, 0.9 + 0.14 * np.clip(r, 0, 1), 1.0).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Preparing a dataset


def image_seed(dataset: str, seed: int, split: str, class_id: int, index: int) -> list[int]:
    """Each image's own seed, so results do not depend on the number or order of workers."""
    return [seed, _dataset_id(dataset), _SPLIT_IDS[split], class_id, index]


def _make_record(task: tuple) -> tuple:
    dataset, seed, split, position, class_id, index, attrs, resolution = task
    scene = draw_scene(dataset, attrs, class_id, image_seed(dataset, seed, split, class_id, index))
    image, mask = render(scene, resolution)
    captions = scene_captions(scene)
    key = f"{split}/species{class_id:03d}/{index:04d}"
    return split, position, image, mask, captions, class_id, key, attrs, scene


def prepare_synthetic(dataset: str, out: Path, scale: ScaleConfig, workers: int = 1) -> None:
    """Render ``dataset`` at the scale's resolution into the prepared format at ``out``."""
    spec = _spec(dataset)
    data = scale.data
    config = {
        "dataset": dataset,
        "resolution": scale.resolution,
        "images_per_class_train": data.images_per_class_train,
        "images_per_class_test": data.images_per_class_test,
        "images_per_class_val": data.images_per_class_val,
        "seed": data.seed,
        "generator_version": GENERATOR_VERSION,
        "captions_per_image": CAPTIONS_PER_IMAGE,
        "max_words": scale.text.max_words,
    }
    if check_existing(out, config):
        return
    all_species = species(dataset, data.seed)
    split_species = {"train": all_species["train"], "test": all_species["test"], "val": all_species["train"]}
    per_class = {"train": data.images_per_class_train, "test": data.images_per_class_test,
                 "val": data.images_per_class_val}
    tasks = []
    class_ids: dict[str, list[int]] = {}
    first_id = {"train": 0, "test": len(all_species["train"]), "val": 0}
    for split in ("train", "test", "val"):  # the order of the tasks before val existed, then val
        class_ids[split] = []
        position = 0
        for j, attrs in enumerate(split_species[split]):
            class_id = first_id[split] + j
            class_ids[split].append(class_id)
            for index in range(per_class[split]):
                tasks.append((dataset, data.seed, split, position, class_id, index, attrs, scale.resolution))
                position += 1
    counts = {s: len(class_ids[s]) * per_class[s] for s in SPLITS}

    with PreparedWriter(
        out, dataset=dataset, resolution=scale.resolution, config=config, max_words=scale.text.max_words
    ) as writer:
        writers = {s: writer.split(s, counts[s], with_parts=True) for s in SPLITS}

        def put(record: tuple) -> None:
            split, position, image, mask, captions, class_id, key, attrs, scene = record
            writers[split].put(position, image, captions, class_id, key, part_mask=mask, attributes=attrs, scene=scene)

        if workers <= 1:
            for task in tasks:
                put(_make_record(task))
        else:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                for record in pool.imap_unordered(_make_record, tasks, chunksize=64):
                    put(record)
        writer.finish(
            seed=data.seed,
            generator_version=GENERATOR_VERSION,
            stands_in_for=spec.stands_in_for,
            parts=parts(dataset),
            palette={k: list(v) for k, v in _PALETTE.items()},
            colour_attributes=colour_attributes(dataset),
            attribute_values=attribute_values(dataset),
            part_words=part_words(dataset),
            species={
                s: [{"class_id": c, "attributes": a} for c, a in zip(class_ids[s], all_species[s], strict=True)]
                for s in ("train", "test")
            },
            split={
                "by": "class (test) and image (val)",
                "train": f"{len(all_species['train'])} species x {per_class['train']} images",
                "test": f"{len(all_species['test'])} other species x {per_class['test']} images, colour "
                        f"combinations never seen in training; for the final numbers only",
                "val": f"the {len(all_species['train'])} train species x {per_class['val']} further images "
                       f"(image seeds disjoint from train's), for tuning and checkpoint choice",
                "counts": counts,
            },
        )
