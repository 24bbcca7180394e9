"""Which reading each paper-versus-code setting of a run follows: the paper, the authors' code, or neither.

The rule (docs/deviations.md): where the paper is explicit, its reading is the default, unless the
paper's own figures identify the code's version (Table 2's 82.29 M is the authors' generator to the
parameter, so the code's block order is the default); where the paper is silent, the authors' code
decides. ``READINGS`` lists every setting where the two differ or where the paper is silent, with the
value each reading gives it. ``run_readings`` classifies a resolved config setting by setting, and
``summary`` names the whole run: ``paper`` (every setting as the rule says, the "CSF-GAN (paper)"
row), ``authors-code`` (every setting as the released code trains), or ``mixed``, listing the
settings that follow the authors' code where the paper's reading is the default (and any that
follow neither). Training records both in the run, so a variant that mixes readings says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from csfgan.config import ScaleConfig, flatten, to_dict


@dataclass(frozen=True)
class Reading:
    paper: Any  # the paper's value; None where the paper is silent
    code: Any  # what the authors' code does
    # Why the default is what it is: "paper" (explicit), "figures" (the paper's own numbers identify the
    # code's version) or "silent" (the authors' code decides).
    basis: str

    @property
    def default(self) -> Any:
        return self.paper if self.basis == "paper" else self.code


READINGS: dict[str, Reading] = {
    "model.block_order": Reading("prose", "code", "figures"),  # Table 2's count is the code's network
    "model.mask_channel": Reading(None, False, "silent"),
    "model.shared_conditioning": Reading(None, True, "silent"),
    "model.global_discriminator": Reading(None, "patch", "silent"),
    "model.word_discriminator_regions": Reading("hole-grid", "centre-mean", "paper"),  # Eq. 4-5, sub-regions j
    "loss.per": Reading(0.5, 0.05, "paper"),  # Implementation Details
    "loss.perceptual_layers": Reading(None, ["pool1", "pool2", "pool3"], "silent"),  # "selected VGG layers"
    "loss.perceptual_imagenet_normalize": Reading(True, False, "paper"),  # "a pre-trained VGG": its input contract
    "loss.style": Reading(0.0, 3.0, "paper"),  # Eq. 12 has no style term
    "loss.tv_form": Reading("image", "authors-hole", "paper"),  # Section 3.4: every pixel, above and left
    "loss.edge_operator": Reading("sobel", "laplacian-rgb", "paper"),  # Eq. 9: a Sobel operator
    "loss.gan_form": Reading("bce", "relativistic-ls", "paper"),  # Eq. 10-11
    "loss.detach_adversarial": Reading(False, True, "paper"),  # Eq. 10 trains G through D
    "train.update_order": Reading(None, "g-first", "silent"),
    "train.flip": Reading(None, True, "silent"),  # RandomHorizontalFlip
    "train.grayscale": Reading(None, 0.1, "silent"),  # RandomGrayscale
}


def classify(key: str, value: Any) -> str:
    """``default`` (as the rule says), ``authors-code`` (the code's value where the paper's is the
    default), ``paper`` (the paper's prose where the figures identify the code's), or ``other``."""
    r = READINGS[key]
    if value == r.default:
        return "default"
    if value == r.code:
        return "authors-code"
    if r.paper is not None and value == r.paper:
        return "paper"
    return "other"


def run_readings(cfg: ScaleConfig) -> dict[str, dict[str, Any]]:
    """Per setting: its value, the reading it follows and the basis of the default."""
    flat = flatten(to_dict(cfg))
    return {key: {"value": flat[key], "follows": classify(key, flat[key]), "basis": r.basis}
            for key, r in READINGS.items()}


def summary(cfg: ScaleConfig) -> str:
    """``paper``, ``authors-code`` or ``mixed (...)``: the reading of the whole run (module docstring)."""
    flat = flatten(to_dict(cfg))
    if all(flat[k] == r.default for k, r in READINGS.items()):
        return "paper"
    if all(flat[k] == r.code for k, r in READINGS.items()):
        return "authors-code"
    departures = {k: classify(k, flat[k]) for k in READINGS if flat[k] != READINGS[k].default}
    return "mixed (" + ", ".join(f"{k}: {how}" for k, how in departures.items()) + ")"
