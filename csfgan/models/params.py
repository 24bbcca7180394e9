"""Trainable-parameter counts of the CSF-GAN networks (Table 2).

The paper's 82.29 M is the generator alone: instantiating the authors' InpaintNet gives 82,285,971
parameters (their discriminators add 5.66 M more). So the generator is compared with it, and the
discriminators and the frozen text encoder are counted separately, never added in.

At the paper scale (``load_scale("paper")`` + variant ``full``) our generator in the authors' block
order (``model.block_order: code``, the default) has exactly 82,285,971 parameters, module for module
the authors' (``AUTHORS_GENERATOR_MODULES``; tests/test_models.py compares every entry). Options
that deviate keep their delta documented: ``model.mask_channel: true`` adds 576 (a 4th input
channel of the 3×3 stem); ``model.block_order: prose`` (the paper's "3×3 followed by 4×4 dilated",
2×2 innermost, with ``shared_conditioning: false`` and the mask channel: the generator before
fidelity round three) has 82,795,475, +0.62 %, at 2.18× the forward FLOPs.

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
# The authors' InpaintNet (RefineNet) by module, counted from their code at 256 px, in
# ``parameter_breakdown``'s keys: en_1; en_2..en_8 without their modulation layers; en_9; de_9..de_1;
# CA_NET with the modulation of en_2, en_4 (sentence) and en_6, en_8 (word attention + 1×1 γ/β).
AUTHORS_GENERATOR_MODULES = {
    "generator.stem": 1_792,
    "generator.encoder": 32_077_824,
    "generator.innermost": 4_194_816,
    "generator.conditioning": 102_800,
    "generator.sentence_fusion": 257_280,
    "generator.word_fusion": 1_312_768,
    "generator.decoder": 44_338_691,
}


def count_parameters(module: nn.Module | None) -> int:
    """Number of trainable parameters (``requires_grad``) of ``module``; 0 for None."""
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def parameter_breakdown(cfg: ScaleConfig) -> dict[str, int]:
    """Trainable parameters of the generator (by part, then whole) and of each discriminator.

    Keys: ``generator.stem`` (layer 1, the input conv), ``generator.encoder`` (layers 2..N without
    their fusions), ``generator.innermost`` (the code order's level N + 1; 0 in the prose order),
    ``generator.conditioning`` (the shared conditioning augmentation; 0 when each sentence-fusion layer
    has its own, counted in ``sentence_fusion`` then), ``generator.decoder`` (decoder levels + output
    conv), ``generator.sentence_fusion``, ``generator.word_fusion``, ``generator.text_projection``,
    ``generator`` (what the paper's 82.29 M counts),
    ``global_discriminator``, ``word_level_discriminator`` (0 when the variant has none) and
    ``discriminators``. No grand total: the paper's figure is the generator's, and adding the
    discriminators to it compared unlike with like. The frozen text encoder is counted by its owner.
    """
    with torch.device("meta"):
        g = Generator(cfg)
        d = GlobalDiscriminator(cfg)
        wd = WordLevelDiscriminator(cfg) if cfg.model.word_level_discriminator else None
    out = {
        "generator.stem": count_parameters(g.stem),
        "generator.encoder": count_parameters(g.encoder),
        "generator.innermost": count_parameters(g.innermost),
        "generator.conditioning": count_parameters(g.conditioning),
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
