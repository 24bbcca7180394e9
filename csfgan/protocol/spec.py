"""The evaluation protocol in memory: the test images, holes, captions and counterfactual edits a method
is measured on. ``csfgan evaluate`` builds it for our runs, ``csfgan protocol export`` writes it out and
``csfgan score`` rebuilds it to check an exported folder against it, so every method sees the same items.

Two protocols, each fixed by its name, :data:`VERSION` and the settings it records:

    csfgan-center     the paper's centre square (``hole_fraction`` of the side; Tables 1-4)
    csfgan-irregular  seeded free-form strokes (csfgan.data.masks.irregular_mask, Figure 9's masks):
                      item i's mask is drawn from the seed ``[IRREGULAR_MASK_SEED, i]``

Item i's caption is chosen by :func:`csfgan.data.dataset.seeded_caption_choice` with ``caption_seed``
(the scale's ``eval.caption_seed``); on the synthetic sets the counterfactual edits are drawn by
:func:`csfgan.metrics.attributes.plan_checks` with the same seed. :data:`VERSION` changes whenever this
code would give other items for the same settings, so numbers under one version are comparable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from csfgan.data.dataset import seeded_caption_choice
from csfgan.data.masks import center_mask, mask_for
from csfgan.data.prepared import PreparedData, PreparedSplit
from csfgan.errors import UserError
from csfgan.metrics.attributes import Checks, Counterfactual, plan_checks

NAMES = {"center": "csfgan-center", "irregular": "csfgan-irregular"}
VERSION = 1
# csfgan.report.figures draws Figure 9's irregular masks per test index with its figure seed, 0.
IRREGULAR_MASK_SEED = 0
HOLE_FILL = 127  # the grey the masked inputs carry in the hole (the figures' HOLE_GREY)
SPLITS = ("test", "val")


class ProtocolError(UserError):
    """A protocol cannot be built, or an exported folder is not the protocol it says it is."""


def has_checks(data: PreparedData) -> bool:
    """Whether the attribute and counterfactual checks exist: the synthetic sets, whose renderer knows every part."""
    return data.manifest.get("generator_version") is not None and "parts" in data.manifest


@dataclass
class Protocol:
    data: PreparedData
    split: str
    mask: str
    hole_fraction: float
    caption_seed: int
    holes: np.ndarray  # (N, H, W) bool, True in the hole
    caption_index: np.ndarray  # (N,) which of each image's captions
    checks: Checks | None  # the synthetic sets' attribute checks and counterfactual edits

    @property
    def name(self) -> str:
        return NAMES[self.mask]

    @property
    def mask_seed(self) -> int | None:
        return IRREGULAR_MASK_SEED if self.mask == "irregular" else None

    @property
    def prepared(self) -> PreparedSplit:
        return self.data.split(self.split)

    def __len__(self) -> int:
        return len(self.caption_index)

    @property
    def ids(self) -> list[str]:
        """Item ids: the split index, zero-padded, as ``evaluate`` numbers its images."""
        return [f"{i:05d}" for i in range(len(self))]

    @property
    def captions(self) -> list[str]:
        texts = self.prepared.captions
        return [texts[i][int(c)] for i, c in enumerate(self.caption_index)]

    @property
    def counterfactuals(self) -> tuple[Counterfactual, ...]:
        return () if self.checks is None else self.checks.counterfactuals

    def real(self) -> np.ndarray:
        """The ground truth, uint8 (N, H, W, 3)."""
        return np.asarray(self.prepared.images)

    def inputs(self) -> np.ndarray:
        """The masked inputs a method sees: the real image with the hole filled by :data:`HOLE_FILL`."""
        return masked_inputs(self.real(), self.holes)

    def settings(self) -> dict[str, Any]:
        """What fixes the items, beside the data: recorded in the manifest and in every metrics file."""
        return {"protocol": self.name, "protocol_version": VERSION, "split": self.split, "mask": self.mask,
                "hole_fraction": self.hole_fraction, "mask_seed": self.mask_seed, "caption_seed": self.caption_seed,
                "hole_fill": HOLE_FILL}


def masked_inputs(real: np.ndarray, holes: np.ndarray) -> np.ndarray:
    return np.where(holes[..., None], np.uint8(HOLE_FILL), real).astype(np.uint8)


def holes_for(mask: str, count: int, resolution: int, hole_fraction: float) -> np.ndarray:
    if mask == "center":
        return np.broadcast_to(center_mask(resolution, hole_fraction) > 0.5, (count, resolution, resolution)).copy()
    if mask == "irregular":
        return np.stack([mask_for(i, resolution, "irregular", hole_fraction, IRREGULAR_MASK_SEED) > 0.5
                         for i in range(count)])
    raise ProtocolError(f"mask {mask!r}: choose one of {', '.join(NAMES)}")


def build(data: PreparedData, split: str = "test", *, mask: str = "center", hole_fraction: float = 0.5,
          caption_seed: int = 1234) -> Protocol:
    """The protocol of ``split`` of ``data`` under these settings (the scale's ``data.hole_fraction`` and
    ``eval.caption_seed`` for our runs)."""
    if split not in SPLITS:
        raise ProtocolError(f"split {split!r}: a protocol is over one of {', '.join(SPLITS)} (never train)")
    if not 0 < hole_fraction < 1:
        raise ProtocolError(f"hole fraction {hole_fraction}: give a fraction of the side between 0 and 1")
    prepared = data.split(split)
    holes = holes_for(mask, len(prepared), data.resolution, hole_fraction)
    choice = seeded_caption_choice(prepared.lengths, caption_seed)
    checks = None
    if has_checks(data):
        captions = [prepared.captions[i][int(c)] for i, c in enumerate(choice)]
        checks = plan_checks(data, split, captions, holes, seed=caption_seed)
    return Protocol(data, split, mask, float(hole_fraction), int(caption_seed), holes, choice, checks)
