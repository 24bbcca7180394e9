"""``synth-flowers``: the parts, attributes and species rules of a flower seen from the front, its pose, its
drawing and its caption templates."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from csfgan.data.synthetic.canvas import _box, _Canvas, _ellipse, _leaf_outline, _rot
from csfgan.data.synthetic.captions import _compose_captions, _join, _pick
from csfgan.data.synthetic.palette import COLOUR_NAMES
from csfgan.data.synthetic.spec import SyntheticSpec

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


def _flower_species_ok(attrs: dict[str, str]) -> bool:
    return attrs["stamen_colour"] != attrs["petal_colour"]


FLOWERS = SyntheticSpec(
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
)
