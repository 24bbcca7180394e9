"""Trainable-parameter counts of the CSF-GAN networks (Table 2).

At the paper scale (``load_scale("paper")`` + variant ``full``: 256 px, base 64, cap 512) the model
has 84.17 M trainable parameters (generator 70.06 M, global D 11.15 M, word-level D 2.95 M) against
the paper's reported 82.29 M (+2.3 %). The count includes both discriminators and excludes the
text encoder (pretrained with DAMSM and frozen, so not trainable). Readings that were weighed:

* encoder widths ``min(64 · 2^(k−1), 512)`` after layer k (pix2pix's 64, 128, 256, 512, ...) with a
  decoder of transposed convs only: the reading used here, +2.3 %;
* widths ``min(64 · 2^k, 512)`` (128, 256, 512, ... after layer 1): the generator alone is ~85 M and
  with the discriminators ~99 M (+20 %);
* a mirrored decoder that also has a 3×3 conv per layer: +10 M, ~94 M with the discriminators.

Build with ``torch.device("meta")`` so counting the 256 px model costs no memory or init time.
"""

from __future__ import annotations

import torch
from torch import nn

from csfgan.config import ScaleConfig
from csfgan.models.discriminators import GlobalDiscriminator, WordLevelDiscriminator
from csfgan.models.generator import Generator

PAPER_REPORTED_PARAMETERS = 82.29e6  # Table 2, CSF-GAN on CUB-200-2011


def count_parameters(module: nn.Module | None) -> int:
    """Number of trainable parameters (``requires_grad``) of ``module``; 0 for None."""
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def parameter_breakdown(cfg: ScaleConfig) -> dict[str, int]:
    """Trainable parameters of the generator (by part), the discriminators and their total.

    Keys: ``generator.encoder`` (input conv + encoder layers), ``generator.decoder`` (transposed
    convs + output conv), ``generator.sentence_fusion``, ``generator.word_fusion``,
    ``generator.text_projection``, ``generator``, ``global_discriminator``,
    ``word_level_discriminator`` (0 when the variant has none), ``total``. The text encoder is not
    included: it is frozen, and its owner adds it where it is trainable.
    """
    with torch.device("meta"):
        g = Generator(cfg)
        d = GlobalDiscriminator(cfg)
        wd = WordLevelDiscriminator(cfg) if cfg.model.word_level_discriminator else None
    out = {
        "generator.encoder": count_parameters(g.stem) + count_parameters(g.encoder),
        "generator.decoder": count_parameters(g.decoder) + count_parameters(g.to_rgb),
        "generator.sentence_fusion": count_parameters(g.sentence_fusion),
        "generator.word_fusion": count_parameters(g.word_fusion),
        "generator.text_projection": count_parameters(g.text_projection),
        "generator": count_parameters(g),
        "global_discriminator": count_parameters(d),
        "word_level_discriminator": count_parameters(wd),
    }
    parts = sum(v for k, v in out.items() if k.startswith("generator."))
    assert parts == out["generator"], "every generator parameter belongs to exactly one part"
    out["total"] = out["generator"] + out["global_discriminator"] + out["word_level_discriminator"]
    return out
