"""``synth-birds``: the parts, attributes and species rules of a perched bird, its pose, its drawing, the
branch it stands on and its caption templates."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from csfgan.data.synthetic.backgrounds import _smooth_noise
from csfgan.data.synthetic.canvas import _Canvas, _ellipse, _rot
from csfgan.data.synthetic.captions import _compose_captions, _join, _pick
from csfgan.data.synthetic.palette import COLOUR_NAMES
from csfgan.data.synthetic.spec import SyntheticSpec

NO_WING_BARS = "none"
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


def _bird_species_ok(attrs: dict[str, str]) -> bool:
    # Bars the colour of the wing would be invisible yet named in captions.
    return attrs["wing_bars"] != attrs["wing_colour"]


BIRDS = SyntheticSpec(
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
)
