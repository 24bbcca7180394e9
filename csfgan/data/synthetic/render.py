"""Rendering a scene: image, majority part mask and per-part coverage, a pure function of the scene."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from csfgan.data.synthetic.backgrounds import _background, _flower_background
from csfgan.data.synthetic.birds import _paint_branch
from csfgan.data.synthetic.canvas import _box, _Canvas, _rot
from csfgan.data.synthetic.datasets import _spec
from csfgan.data.synthetic.palette import _PALETTE


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
