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
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import ndimage

from csfgan.data import synthetic
from csfgan.data.dataset import InpaintingDataset
from csfgan.data.prepared import PreparedData
from csfgan.data.text import encode_captions, tokenize

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


def attribute_metrics(model, data: PreparedData, test: InpaintingDataset, fakes: np.ndarray, *, seed: int,
                      batch_size: int = 64, checks: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Both accuracies for a model (an :class:`csfgan.evaluate.InpaintingModel`) on ``test``.

    ``fakes`` are the model's uint8 outputs for ``test`` with its recorded captions. ``checks``, if
    given, receives every check as parallel arrays (test image, part, correct), under
    ``attribute_*`` and ``counterfactual_*``, for the per-image statistics of the tables.
    """
    dataset = data.name
    parts = data.manifest["parts"]
    split = test.split
    part_of_attribute = synthetic.colour_attributes(dataset)
    attribute_of_part = {p: a for a, p in part_of_attribute.items()}
    palette = list(synthetic.colour_palette())
    rng = np.random.default_rng(seed)
    masks = test.masks(np.arange(len(split))).numpy()[:, 0] > 0.5

    correct, total = 0, 0
    per_part: dict[str, list[int]] = {}
    records: list[tuple[int, int, bool]] = []
    edits: list[tuple[int, list[str], dict[str, str]]] = []
    for i in range(len(split)):
        caption = split.captions[i][int(test.caption_choice[i])]
        labels = np.asarray(split.part_masks[i])
        tokens = tokenize(caption)
        changes: dict[str, str] = {}
        for part, colour, position in caption_colours(dataset, caption):
            pixels = _shown_in_hole(labels == parts.index(part) + 1, masks[i])
            if not pixels.any():
                continue
            ok = _colour_of(fakes[i], pixels) == colour
            records.append((i, parts.index(part), ok))
            correct += ok
            total += 1
            per_part.setdefault(part, [0, 0])
            per_part[part][0] += ok
            per_part[part][1] += 1
            if part in attribute_of_part and attribute_of_part[part] not in changes:
                new = palette[int(rng.integers(len(palette) - 1))]
                new = palette[-1] if new == colour else new  # uniform over the other colours
                tokens[position] = new
                changes[attribute_of_part[part]] = new
        if changes:
            edits.append((i, tokens, changes))

    out: dict[str, Any] = {
        "attribute_accuracy": correct / total if total else float("nan"),
        "attribute_mentions": total,
        "attribute_accuracy_by_part": {p: c / n for p, (c, n) in sorted(per_part.items())},
        "attribute_chance": 1.0 / len(palette),
    }
    counterfactual, edit_records = _counterfactual(model, data, test, edits, masks, parts, batch_size)
    out.update(counterfactual)
    if checks is not None:
        for name, rows in (("attribute", records), ("counterfactual", edit_records)):
            table = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
            checks[f"{name}_image"], checks[f"{name}_part"] = table[:, 0], table[:, 1]
            checks[f"{name}_correct"] = table[:, 2].astype(bool)
        checks["parts"] = np.asarray(parts)
    return out


def _counterfactual(model, data, test, edits, masks, parts, batch_size) -> tuple[dict[str, Any], list]:
    split = test.split
    resolution = data.resolution
    hits, count, psnrs = 0, 0, []
    records: list[tuple[int, int, bool]] = []
    for start in range(0, len(edits), batch_size):
        chunk = edits[start:start + batch_size]
        idx = np.array([e[0] for e in chunk])
        batch = test.batch(idx)
        tokens, lengths = encode_captions([[" ".join(e[1])] for e in chunk], model.vocab, data.max_words)
        composite, _ = model.inpaint(batch["image"], batch["mask"], torch.from_numpy(tokens[:, 0]).long(),
                                     torch.from_numpy(lengths[:, 0]).long())
        outputs = ((composite.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        for row, (i, _, changes) in enumerate(chunk):
            scene = synthetic.edit_scene(split.scenes[i], changes)
            truth, labels = synthetic.render(scene, resolution)
            hole = masks[i]
            diff = outputs[row][hole].astype(np.float64) - truth[hole]
            psnrs.append(10 * np.log10(255.0**2 / max(np.mean(diff**2), 1e-10)))
            for attribute, colour in changes.items():
                part = synthetic.colour_attributes(data.name)[attribute]
                pixels = _shown_in_hole(labels == parts.index(part) + 1, hole)
                if pixels.any():
                    ok = _colour_of(outputs[row], pixels) == colour
                    records.append((i, parts.index(part), ok))
                    hits += ok
                    count += 1
    return {
        "counterfactual_accuracy": hits / count if count else float("nan"),
        "counterfactual_edits": count,
        "counterfactual_psnr_hole": float(np.mean(psnrs)) if psnrs else float("nan"),
    }, records
