"""Trainable-parameter counts of the CSF-GAN networks (Table 2).

The paper's 82.29 M is the generator alone: instantiating the authors' InpaintNet gives 82,285,971
parameters (their discriminators add 5.66 M more). So the generator is compared with it, and the
discriminators and the frozen text encoder are counted separately, never added in. At the paper
scale (``load_scale("paper")`` + variant ``full``: 256 px, base 64, cap 512) our generator has
82,795,475 (+0.62 %); the global and word-level discriminators have 11.15 M and 2.95 M.

We could read the authors' layer list only through its description (3×3 conv and 4×4 dilated conv per
encoder layer, 3×3 and 4×4 (de)convolutions per decoder layer, 8 layers counting the input conv,
widths 64, 128, 256, 512, ...). Readings weighed, generator alone, fusion included:

* the reading used: 7 downsampling layers after the input conv (2×2 bottleneck), the 4×4 dilated conv
  widening, decoder levels of a 4×4 transposed conv over [input; skip] then a 3×3 conv narrowing:
  82.80 M (+0.6 %);
* the same with the 3×3 conv widening instead: 86.3 M; the decoder's transposed conv narrowing: 76.5 M;
* 8 downsampling layers (to 1×1) with these widths: 84.8 M with transposed convs only, 86.5-104 M
  with a 3×3 conv per decoder level, 81.4 M only if skips are added instead of concatenated;
* the v1 generator (8 downsampling layers, widths 64, 64, 128, ..., transposed convs only): 70.06 M.

Build with ``torch.device("meta")`` so counting the 256 px model costs no memory or init time.
"""

from __future__ import annotations

import torch
from torch import nn

from csfgan.config import ScaleConfig
from csfgan.models.discriminators import GlobalDiscriminator, WordLevelDiscriminator
from csfgan.models.generator import Generator

PAPER_REPORTED_PARAMETERS = 82.29e6  # Table 2, CSF-GAN on CUB-200-2011: the generator alone
AUTHORS_GENERATOR_PARAMETERS = 82_285_971  # the authors' InpaintNet, as instantiated from their code


def count_parameters(module: nn.Module | None) -> int:
    """Number of trainable parameters (``requires_grad``) of ``module``; 0 for None."""
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def parameter_breakdown(cfg: ScaleConfig) -> dict[str, int]:
    """Trainable parameters of the generator (by part, then whole) and of each discriminator.

    Keys: ``generator.encoder`` (input conv + encoder layers), ``generator.decoder`` (decoder levels
    + output conv), ``generator.sentence_fusion``, ``generator.word_fusion``,
    ``generator.text_projection``, ``generator`` (what the paper's 82.29 M counts),
    ``global_discriminator``, ``word_level_discriminator`` (0 when the variant has none) and
    ``discriminators``. No grand total: the paper's figure is the generator's, and adding the
    discriminators to it compared unlike with like. The frozen text encoder is counted by its owner.
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
    out["discriminators"] = out["global_discriminator"] + out["word_level_discriminator"]
    return out
