"""Scenes: one image's species, pose, background and jitter drawn from its seed, as JSON; edits and captions."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from csfgan.data.synthetic.captions import CAPTIONS_PER_IMAGE
from csfgan.data.synthetic.datasets import _dataset_id, _spec
from csfgan.data.synthetic.palette import COLOUR_JITTER, _jittered
from csfgan.data.synthetic.spec import GENERATOR_VERSION

# Part of every image's seed: val images are new draws of the train species (split id 2), so they are
# disjoint from the train images, which stay exactly what they were before the val split existed.
_SPLIT_IDS = {"train": 0, "test": 1, "val": 2}


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


def image_seed(dataset: str, seed: int, split: str, class_id: int, index: int) -> list[int]:
    """Each image's own seed, so results do not depend on the number or order of workers."""
    return [seed, _dataset_id(dataset), _SPLIT_IDS[split], class_id, index]
