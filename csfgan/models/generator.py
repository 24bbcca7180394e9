"""The one-stage CSF-GAN generator (Section 3.1): a UNet with dilated encoder layers and the SFM.

Layers are numbered as the authors count them: the first conv is layer 1. ``cfg.resolution`` = 2^N
gives N layers (``cfg.num_layers``), so 256 px has the paper's 8, with the side halving from layer 2
on: 256², 128², ..., 2². Base width b, cap m; layer L has ``min(b · 2^(L−1), m)`` channels (64, 128,
256, 512, 512, ... at the paper scale, the authors' widths).

Two block orders (``model.block_order``; docs/deviations.md):

* ``code`` (default): the authors' network, the one Table 2's 82.29 M counts (82,285,971 parameters
  at the paper scale, to the parameter). Layer 1 is a 3×3 conv of the masked image (3 channels, or 4
  with ``model.mask_channel``), no activation. Layers 2..N: a 4×4 dilated stride-2 conv to the
  layer's width, BatchNorm, LeakyReLU, then a 3×3 conv at the lower resolution, then BatchNorm (or the
  layer's fusion) and LeakyReLU. An innermost level N+1 halves 2² to 1² with a plain 4×4 stride-2 conv
  and LeakyReLU. The decoder undoes level N+1 with a 4×4 stride-2 transposed conv, then per level
  N..2 a 3×3 stride-1 transposed conv over [input; skip] at the lower resolution to the next
  shallower width and a 4×4 stride-2 transposed conv; a 3×3 transposed conv over [output; layer 1]
  gives RGB, then tanh. The expensive 3×3 convs run at the lower resolution of each level.
* ``prose``: Implementation Details' "3×3 convolution followed by a 4×4 dilated convolution" (the
  generator before fidelity round three): the 3×3 at the incoming (higher) resolution, a 2×2
  innermost level, a decoder of 4×4 transposed conv then 3×3 conv per level, a LeakyReLU after the
  stem. 2.2× the FLOPs of ``code`` at 256 px.

In both:

* SFM: sentence-level fusion (Eq. 1-2) and/or word-level fusion (Eq. 3) take the place of the
  normalisation closing the layers named in ``cfg.model.sentence_fusion_layers`` /
  ``word_fusion_layers``: at 256 px layers 2, 4 (128², 32²) and 6, 8 (8², 2²), as in the paper. A
  layer with both applies the sentence fusion first (coarse, global condition), then the word fusion.
  With ``model.shared_conditioning`` one conditioning augmentation (with the authors' GLU) and one z
  serve every sentence-fusion layer, as in the authors' code; otherwise each layer has its own.
* baseline text path (``cfg.model.bottleneck_text``): the sentence vector through a linear layer to
  ``condition_dim`` features, broadcast over the innermost level and concatenated to it: our stand-in
  for the modified MMFL baseline of the ablation.

Norms and activations are the authors' (pix2pix's): BatchNorm + LeakyReLU(0.2) in the encoder,
BatchNorm + ReLU in the decoder. BatchNorm matches the batch statistics the fusions use (Eq. 2).
Training therefore needs a batch of at least 2; eval mode uses running statistics and works on a
single image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from csfgan.config import ScaleConfig
from csfgan.models.fusion import ConditioningAugmentation, SentenceFusion, WordFusion, draw_noise

# Recorded in every generator checkpoint and training state and checked when one is loaded: weights
# of another layout must fail with this name, not with a list of mismatched tensor shapes.
GENERATOR_ARCHITECTURE = "unet-v3"
ARCHITECTURE_CHANGES = {
    None: "the v1 generator (layers counted from the first dilated layer, 1×1 bottleneck, decoder of "
          "transposed convs only, narrower widths)",
    "unet-v2": "the v2 generator (the prose block order only, a 4-channel stem, a conditioning "
               "augmentation per sentence-fusion layer, the discriminators before fidelity round three)",
}


def layer_width(cfg: ScaleConfig, layer: int) -> int:
    """``min(b · 2^(L−1), m)``: the width of layer L (1 = the input conv; N + 1 = the code order's 1×1 level)."""
    return min(cfg.model.base_channels * 2 ** (layer - 1), cfg.model.max_channels)


def encoder_channels(cfg: ScaleConfig) -> list[int]:
    """``[c_1, ..., c_N]``: the width of each layer, layer 1 being the input conv."""
    return [layer_width(cfg, k) for k in range(1, cfg.num_layers + 1)]


def check_architecture(found: str | None, where: str) -> None:
    """Raise ``CheckpointError`` unless ``found`` (a checkpoint's ``architecture``) is this code's."""
    if found == GENERATOR_ARCHITECTURE:
        return
    from csfgan.checkpoint import CheckpointError

    was = ARCHITECTURE_CHANGES.get(found, f"generator architecture {found!r}")
    raise CheckpointError(
        f"{where}: holds {was}; this code builds generator architecture {GENERATOR_ARCHITECTURE!r} "
        f"(model.block_order 'code': the authors' network block for block, 1×1 innermost level at 256 px; "
        f"'prose': the paper's prose order; see docs/deviations.md). Retrain the run"
    )


def dilated_padding(dilation: int) -> int:
    """Padding that makes a 4×4 stride-2 conv with this dilation exactly halve an even side.

    The effective kernel is ``3d + 1``; the output side ``⌊(H + 2p − 3d − 1) / 2⌋ + 1`` equals ``H / 2``
    when ``2p − 3d − 1`` is −1 or −2, i.e. ``p = ⌊3d / 2⌋`` (1 for d = 1, 3 for d = 2).
    """
    return (3 * dilation) // 2


class DilatedStridedConv2d(nn.Conv2d):
    """A strided, dilated convolution computed only on the input pixels it reads.

    With stride s and a dilation d that is a multiple of s, every tap lands on ``s·o + d·k − p``, which
    is ``−p`` modulo s: the kernel never sees the other (s² − 1)/s² of the input. Taking those pixels
    first (``x[..., r::s, r::s]``) turns the layer into a stride-1 convolution with dilation d/s on
    1/s² of the data, the same sums of the same products (tests compare it with ``nn.Conv2d`` for
    d = 1 to 4). The encoder's d = s = 2 layer then runs 2–4× faster forward and backward on a CPU,
    where oneDNN's dilated-and-strided backward kernel is slow. Any other case (d not a multiple of s,
    non-square settings, padding other than zeros) runs ``nn.Conv2d``'s own forward. Parameters and
    state-dict keys are ``nn.Conv2d``'s.
    """

    def forward(self, x: Tensor) -> Tensor:
        square = all(len(set(v)) == 1 for v in (self.stride, self.dilation, self.padding, self.kernel_size))
        if not square or self.padding_mode != "zeros" or self.dilation[0] % self.stride[0]:
            return super().forward(x)
        (s, _), (d, _), (p, _), (k, _) = self.stride, self.dilation, self.padding, self.kernel_size
        h, w = x.shape[-2:]
        out_h, out_w = ((n + 2 * p - d * (k - 1) - 1) // s + 1 for n in (h, w))
        r = -p % s  # the residue every tap lands on
        q, m = (p + r) // s, d // s  # zero padding before the kept pixels; the remaining dilation
        y = x[:, :, r::s, r::s]
        # After the last kept pixel: enough zeros for the last output's taps (none if they stop short).
        pad_h, pad_w = (max(0, o - 1 + m * (k - 1) - q - (n - 1))
                        for o, n in zip((out_h, out_w), y.shape[-2:], strict=True))
        y = F.pad(y, (q, pad_w, q, pad_h))
        return F.conv2d(y, self.weight, self.bias, dilation=m, groups=self.groups)[:, :, :out_h, :out_w]


class EncoderLayer(nn.Module):
    """3×3 conv → BN → LeakyReLU → 4×4 dilated stride-2 conv to the layer's width, then (norm or
    fusion) → LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int, out_norm: bool):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.LeakyReLU(0.2),
            DilatedStridedConv2d(
                in_channels,
                out_channels,
                4,
                stride=2,
                padding=dilated_padding(dilation),
                dilation=dilation,
                # A bias would be cancelled by the normalisation that follows (if any follows).
                bias=not out_norm,
            ),
        )
        # Fused layers normalise inside the fusion (Eq. 2); the generator passes out_norm=False then.
        self.norm = nn.BatchNorm2d(out_channels) if out_norm else nn.Identity()
        self.act = nn.LeakyReLU(0.2)


class DecoderLevel(nn.Sequential):
    """4×4 stride-2 transposed conv → BN → ReLU → 3×3 conv → BN → ReLU: doubles the side, mirroring
    one encoder layer (the authors' decoder has a 3×3 and a 4×4 (de)convolution per layer)."""

    def __init__(self, in_channels: int, channels: int, out_channels: int):
        super().__init__(
            nn.ConvTranspose2d(in_channels, channels, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


class CodeEncoderLayer(nn.Module):
    """The authors' encoder layer: 4×4 dilated stride-2 conv to the layer's width → BN → LeakyReLU →
    3×3 conv at the lower resolution, then (norm or fusion) → LeakyReLU. Biases as the authors' (on)."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int, out_norm: bool):
        super().__init__()
        self.conv = nn.Sequential(
            DilatedStridedConv2d(in_channels, out_channels, 4, stride=2, padding=dilated_padding(dilation),
                                 dilation=dilation),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.2),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.norm = nn.BatchNorm2d(out_channels) if out_norm else nn.Identity()
        self.act = nn.LeakyReLU(0.2)


class CodeDecoderLevel(nn.Sequential):
    """The authors' decoder level: 3×3 stride-1 transposed conv over [input; skip] to ``out_channels``
    → BN → ReLU → 4×4 stride-2 transposed conv → BN → ReLU: the 3×3 runs before the side doubles."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.ConvTranspose2d(in_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.ConvTranspose2d(out_channels, out_channels, 4, stride=2, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


class Generator(nn.Module):
    def __init__(self, cfg: ScaleConfig):
        super().__init__()
        m = cfg.model
        n = cfg.num_layers
        ch = [0, *encoder_channels(cfg)]  # ch[L]: width of layer L (1-based, as the config counts)
        word_dim = sent_dim = cfg.text.hidden_dim
        sentence_layers, word_layers = set(m.sentence_fusion_layers), set(m.word_fusion_layers)
        self.resolution = cfg.resolution
        self.code_order = m.block_order == "code"
        self.mask_channel = m.mask_channel
        stem_in = 4 if m.mask_channel else 3

        # Layer 1, then encoder[i] = layer i + 2.
        if self.code_order:
            self.stem = nn.Sequential(nn.Conv2d(stem_in, ch[1], 3, padding=1))
        else:
            self.stem = nn.Sequential(nn.Conv2d(stem_in, ch[1], 3, padding=1), nn.LeakyReLU(0.2))
        self.encoder = nn.ModuleList()
        for k in range(2, n + 1):
            fused = k in sentence_layers or k in word_layers
            if self.code_order:
                self.encoder.append(CodeEncoderLayer(ch[k - 1], ch[k], m.dilation, out_norm=not fused))
            else:
                self.encoder.append(EncoderLayer(ch[k - 1], ch[k], m.dilation, out_norm=not fused and k < n))
        # The authors' level N + 1: 2² -> 1² at 256 px, no norm (one value per channel and image).
        inner = layer_width(cfg, n + 1)
        self.innermost = (nn.Sequential(nn.Conv2d(ch[n], inner, 4, stride=2, padding=1), nn.LeakyReLU(0.2))
                          if self.code_order else None)

        shared = m.shared_conditioning and bool(sentence_layers)
        self.conditioning = ConditioningAugmentation(sent_dim, m.condition_dim, glu=True) if shared else None
        self.noise_dim = m.noise_dim
        # Keyed by the layer number, as in the config.
        self.sentence_fusion = nn.ModuleDict({
            str(k): SentenceFusion(ch[k], sent_dim, m.condition_dim, m.noise_dim, own_conditioning=not shared)
            for k in sorted(sentence_layers)
        })
        self.word_fusion = nn.ModuleDict({str(k): WordFusion(ch[k], word_dim) for k in sorted(word_layers)})
        self.text_projection = nn.Linear(sent_dim, m.condition_dim) if m.bottleneck_text else None
        text_width = m.condition_dim if m.bottleneck_text else 0

        if self.code_order:
            # decoder[0] undoes level N + 1; decoder[i] (i >= 1) undoes layer N + 1 - i over [input; skip].
            self.decoder = nn.ModuleList([nn.Sequential(
                nn.ConvTranspose2d(inner + text_width, ch[n], 4, stride=2, padding=1), nn.BatchNorm2d(ch[n]),
                nn.ReLU())])
            self.decoder.extend(CodeDecoderLevel(2 * ch[k], ch[k - 1]) for k in range(n, 1, -1))
            self.to_rgb = nn.Sequential(nn.ConvTranspose2d(2 * ch[1], 3, 3, padding=1), nn.Tanh())
        else:
            # decoder[0] undoes layer N, ..., decoder[N-2] undoes layer 2; all but the innermost take the
            # previous output concatenated with the skip of the encoder layer they undo.
            self.decoder = nn.ModuleList(
                DecoderLevel(ch[n] + text_width if k == n else 2 * ch[k], ch[k], ch[k - 1]) for k in range(n, 1, -1)
            )
            self.to_rgb = nn.Sequential(nn.Conv2d(2 * ch[1], 3, 3, padding=1), nn.Tanh())

    def forward(
        self, image: Tensor, mask: Tensor, sent: Tensor, words: Tensor, word_mask: Tensor
    ) -> tuple[Tensor, Tensor, dict]:
        """Inpaint ``image`` (B, 3, H, W) in [−1, 1] where ``mask`` (B, 1, H, W) is 1.

        ``sent`` (B, D), ``words`` (B, D, T), ``word_mask`` (B, T) True at padding (the text encoder's
        outputs). Returns ``(G, I', aux)``: the raw output ``G``, the composite
        ``I' = I · (1 − M) + G · M`` and ``aux`` with ``ca_mu`` / ``ca_logvar`` ({key: (B, cond)}: one
        entry per sentence-fusion layer keyed by its number, or one keyed ``"2+4"`` (the layers it
        serves) when the conditioning is shared; for the optional KL term and the sentence branch's
        signal-to-noise ratio) and ``word_attention`` ({layer: (B, T, h, w)}, Figure 8).
        """
        if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2:] != image.shape[2:]:
            raise ValueError(
                f"mask must be (B, 1, H, W) matching the image {tuple(image.shape)}, got {tuple(mask.shape)}"
            )
        if image.shape[-1] != self.resolution or image.shape[-2] != self.resolution:
            raise ValueError(f"generator built for {self.resolution} px, got image {tuple(image.shape)}")
        aux: dict = {"ca_mu": {}, "ca_logvar": {}, "word_attention": {}}
        masked = image * (1 - mask)
        x = self.stem(torch.cat([masked, mask], dim=1) if self.mask_channel else masked)
        c_bar = None
        if self.conditioning is not None:
            c, mu, logvar = self.conditioning(sent)
            key = "+".join(self.sentence_fusion)
            aux["ca_mu"][key], aux["ca_logvar"][key] = mu, logvar
            c_bar = torch.cat([c, draw_noise(c, self.noise_dim)], dim=1)  # [c; z], one z for every layer
        skips = [x]  # skips[L - 1]: the output of layer L
        for k, layer in enumerate(self.encoder, start=2):
            x = layer.conv(x)
            if str(k) in self.sentence_fusion:
                x, mu, logvar = self.sentence_fusion[str(k)](x, sent, c_bar=c_bar)
                if mu is not None:
                    aux["ca_mu"][k], aux["ca_logvar"][k] = mu, logvar
            if str(k) in self.word_fusion:
                x, aux["word_attention"][k] = self.word_fusion[str(k)](x, words, word_mask)
            x = layer.act(layer.norm(x))
            skips.append(x)
        if self.innermost is not None:
            x = self.innermost(x)

        if self.text_projection is not None:
            t = self.text_projection(sent)[:, :, None, None].expand(-1, -1, *x.shape[2:])
            x = torch.cat([x, t], dim=1)
        # Code order: decoder[0] maps level N + 1 back to layer N's side, then level i reads skip N + 1 - i.
        # Prose order: decoder[0] undoes layer N itself, then level i reads skip N - i.
        offset = 0 if self.code_order else 1
        for i, up in enumerate(self.decoder):
            if i > 0:
                x = torch.cat([x, skips[len(skips) - i - offset]], dim=1)
            x = up(x)
        raw = self.to_rgb(torch.cat([x, skips[0]], dim=1))
        return raw, masked + raw * mask, aux
