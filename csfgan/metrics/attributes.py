"""Text faithfulness on the synthetic sets, where every pixel's part and colour is known.

* Caption-attribute accuracy: for each colour the chosen caption gives a part ("a red wing"), the
  inpainted pixels of that part inside the hole are classified against the palette (nearest name to
  their mean colour); the fraction that agree with the caption.
* Counterfactual accuracy: the caption's colours of hidden parts are changed to other palette
  colours and the original masked image is inpainted with the edited caption; the fraction of edited
  parts whose inpainted colour is the *new* colour. The renderer redraws the same scene with the
  edit, which is the ground truth the output is compared with (its hole PSNR is reported too).
  A model that ignores the text, or copies colours from the visible context, scores near chance.

A part counts as shown in the hole where at least ``MIN_PART_PIXELS`` of its pixels, away from its
antialiased rim, fall inside the hole.

What is checked is fixed before any output exists (:func:`plan_checks`: the checks and the edited
captions depend on the data, captions, holes and a seed only), so ``csfgan evaluate`` and ``csfgan
score`` check any method's outputs alike, and ``csfgan protocol export`` writes the edits out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from csfgan.data import synthetic
from csfgan.data.prepared import PreparedData
from csfgan.data.text import tokenize

MIN_PART_PIXELS = 6


def caption_colours(dataset: str, caption: str) -> list[tuple[str, str, int]]:
    """``(part, colour, token position)`` for each palette word of a synthetic caption.

    The captions' grammar: a colour names the next part noun ("a red crown and black wings"), or,
    after "is"/"are" (optionally "mostly"), the part named before it ("the wings are blue").
    """
    nouns = synthetic.part_words(dataset)
    palette = synthetic.colour_palette()
    tokens = tokenize(caption)
    found = []
    for i, token in enumerate(tokens):
        if token not in palette:
            continue
        before = tokens[i - 1] if i else ""
        predicative = before in ("is", "are") or (before == "mostly" and i > 1 and tokens[i - 2] in ("is", "are"))
        order = reversed(tokens[:i]) if predicative else tokens[i + 1:]
        part = next((nouns[t] for t in order if t in nouns), None)
        if part is not None:
            found.append((part, token, i))
    return found


def _shown_in_hole(part_mask: np.ndarray, hole: np.ndarray) -> np.ndarray:
    inside = ndimage.binary_erosion(part_mask) & hole
    return inside if inside.sum() >= MIN_PART_PIXELS else np.zeros_like(inside)


def _colour_of(image: np.ndarray, pixels: np.ndarray) -> str:
    return synthetic.nearest_colour(image[pixels].reshape(-1, 3).mean(axis=0))


@dataclass(frozen=True)
class Counterfactual:
    """One edited caption of a protocol item: the caption's colours of hidden parts changed.

    ``item`` indexes the split, ``caption`` is the edited text (the original's tokens joined by spaces,
    one colour word replaced per changed part), ``changes`` maps a colour attribute to its new colour:
    what the edit asks the fill to show.
    """

    item: int
    caption: str
    changes: dict[str, str]


@dataclass(frozen=True)
class Checks:
    """What both accuracies check on a set of test images, captions and holes, fixed before any output
    exists, so any method's outputs are checked alike: each caption colour of a part shown in the hole
    (``attribute``: item, part index, colour) and each counterfactual edit."""

    parts: tuple[str, ...]
    attribute: tuple[tuple[int, int, str], ...]
    counterfactuals: tuple[Counterfactual, ...]
    chance: float


def plan_checks(data: PreparedData, split: str, captions: list[str], holes: np.ndarray, *, seed: int) -> Checks:
    """The attribute checks and counterfactual edits of ``captions`` (one per image of ``split``) under
    ``holes`` (N, H, W) bool. ``seed`` draws each edit's new colour, uniformly among the other palette
    colours, in image order: the edits depend on the data, captions, holes and seed only."""
    dataset = data.name
    parts = list(data.manifest["parts"])
    part_masks = data.split(split).part_masks
    attribute_of_part = {p: a for a, p in synthetic.colour_attributes(dataset).items()}
    palette = list(synthetic.colour_palette())
    rng = np.random.default_rng(seed)
    checks: list[tuple[int, int, str]] = []
    edits: list[Counterfactual] = []
    for i, caption in enumerate(captions):
        labels = np.asarray(part_masks[i])
        tokens = tokenize(caption)
        changes: dict[str, str] = {}
        for part, colour, position in caption_colours(dataset, caption):
            if not _shown_in_hole(labels == parts.index(part) + 1, holes[i]).any():
                continue
            checks.append((i, parts.index(part), colour))
            if part in attribute_of_part and attribute_of_part[part] not in changes:
                new = palette[int(rng.integers(len(palette) - 1))]
                new = palette[-1] if new == colour else new  # uniform over the other colours
                tokens[position] = new
                changes[attribute_of_part[part]] = new
        if changes:
            edits.append(Counterfactual(i, " ".join(tokens), changes))
    return Checks(tuple(parts), tuple(checks), tuple(edits), 1.0 / len(palette))


def _records(rows: list[tuple[int, int, bool]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    table = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
    return table[:, 0], table[:, 1], table[:, 2].astype(bool)


def attribute_accuracy(data: PreparedData, split: str, checks: Checks, holes: np.ndarray, fakes: np.ndarray,
                       per_image: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Caption-attribute accuracy of ``fakes`` (uint8, one per image, for the planned captions).

    ``per_image``, if given, receives every check as parallel arrays ``attribute_image``,
    ``attribute_part``, ``attribute_correct`` (and ``parts``), for the tables' per-image statistics.
    """
    part_masks = data.split(split).part_masks
    rows: list[tuple[int, int, bool]] = []
    per_part: dict[str, list[int]] = {}
    for i, part, colour in checks.attribute:
        pixels = _shown_in_hole(np.asarray(part_masks[i]) == part + 1, holes[i])
        ok = _colour_of(fakes[i], pixels) == colour
        rows.append((i, part, ok))
        counts = per_part.setdefault(checks.parts[part], [0, 0])
        counts[0] += ok
        counts[1] += 1
    correct = sum(ok for _, _, ok in rows)
    if per_image is not None:
        per_image["attribute_image"], per_image["attribute_part"], per_image["attribute_correct"] = _records(rows)
        per_image["parts"] = np.asarray(checks.parts)
    return {
        "attribute_accuracy": correct / len(rows) if rows else float("nan"),
        "attribute_mentions": len(rows),
        "attribute_accuracy_by_part": {p: c / n for p, (c, n) in sorted(per_part.items())},
        "attribute_chance": checks.chance,
    }


def counterfactual_accuracy(data: PreparedData, split: str, checks: Checks, holes: np.ndarray, outputs: np.ndarray,
                            per_image: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Counterfactual accuracy of ``outputs`` (uint8, one per ``checks.counterfactuals``, each the
    inpainting of its item's masked image with the edited caption). The renderer redraws each scene
    with the edit: the edited parts are read where that scene shows them in the hole, and the hole
    PSNR against it is reported too. ``per_image`` receives ``counterfactual_image``, ``_part``,
    ``_correct``."""
    prepared = data.split(split)
    part_of = synthetic.colour_attributes(data.name)
    psnrs: list[float] = []
    rows: list[tuple[int, int, bool]] = []
    for output, edit in zip(outputs, checks.counterfactuals, strict=True):
        truth, labels = synthetic.render(synthetic.edit_scene(prepared.scenes[edit.item], edit.changes),
                                         data.resolution)
        hole = holes[edit.item]
        diff = output[hole].astype(np.float64) - truth[hole]
        psnrs.append(10 * np.log10(255.0**2 / max(np.mean(diff**2), 1e-10)))
        for attribute, colour in edit.changes.items():
            part = checks.parts.index(part_of[attribute])
            pixels = _shown_in_hole(labels == part + 1, hole)
            if pixels.any():
                rows.append((edit.item, part, _colour_of(output, pixels) == colour))
    if per_image is not None:
        per_image["counterfactual_image"], per_image["counterfactual_part"], per_image["counterfactual_correct"] = (
            _records(rows))
    hits = sum(ok for _, _, ok in rows)
    return {
        "counterfactual_accuracy": hits / len(rows) if rows else float("nan"),
        "counterfactual_edits": len(rows),
        "counterfactual_psnr_hole": float(np.mean(psnrs)) if psnrs else float("nan"),
    }
