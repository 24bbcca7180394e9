"""The one-stage CSF-GAN generator (Section 3.1): a UNet with dilated encoder layers and the SFM.

Architecture (``cfg.resolution`` = 2^N, base width b, cap m):

* input: the masked image ``I · (1 − M)`` and the mask ``M`` stacked as 4 channels, so the network
  knows which zeros are hole and which are dark pixels; a 3×3 conv lifts them to ``b`` channels.
* encoder: N layers, each a 3×3 conv then a 4×4 dilated stride-2 conv (Implementation Details),
  halving the side, so 256 px gives the paper's 8 layers down to 1×1. Layer k has
  ``min(b · 2^(k−1), m)`` channels (64, 128, 256, 512, 512, ... at the paper scale): pix2pix's widths
  after every downsampling, and the reading whose parameter count lands near the paper's 82.29 M
  (see ``csfgan/models/params.py``).
* SFM: sentence-level fusion (Eq. 1-2) and/or word-level fusion (Eq. 3) take the place of the
  normalisation after the dilated conv of the encoder layers named in
  ``cfg.model.sentence_fusion_layers`` / ``word_fusion_layers`` (1-based). A layer with both applies
  the sentence fusion first (coarse, global condition), then the word fusion (fine, per position).
* baseline text path (``cfg.model.bottleneck_text``): the sentence vector through a linear layer to
  ``condition_dim`` features, broadcast over the 1×1 bottleneck and concatenated to it: our stand-in
  for the modified MMFL baseline of the ablation.
* decoder: mirrors the encoder with 4×4 stride-2 transposed convs (the paper: "deconvolution"), each
  taking the previous decoder output concatenated with the skip from the encoder layer of the same
  size; a 3×3 conv over the last decoder output and the input conv's features gives RGB, then tanh.

Norms and activations are pix2pix's: BatchNorm + LeakyReLU(0.2) in the encoder (no norm on the 1×1
innermost layer unless fused, since its statistics are over the batch only), BatchNorm + ReLU in the
decoder. BatchNorm matches the batch statistics the fusions use (Eq. 2). Training therefore needs a
batch of at least 2; eval mode uses running statistics and works on a single image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from csfgan.config import ScaleConfig
from csfgan.models.fusion import SentenceFusion, WordFusion


def encoder_channels(cfg: ScaleConfig) -> list[int]:
    """``[c_0, c_1, ..., c_N]``: the input conv's width, then each encoder layer's output width."""
    base, cap = cfg.model.base_channels, cfg.model.max_channels
    return [base] + [min(base * 2 ** (k - 1), cap) for k in range(1, cfg.num_layers + 1)]


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
    """3×3 conv → BN → LeakyReLU → 4×4 dilated stride-2 conv, then (norm or fusion) → LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int, out_norm: bool):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.2),
            DilatedStridedConv2d(
                out_channels,
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


class DecoderLayer(nn.Sequential):
    """4×4 stride-2 transposed conv → BN → ReLU (pix2pix's up block), doubling the side."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


class Generator(nn.Module):
    def __init__(self, cfg: ScaleConfig):
        super().__init__()
        m = cfg.model
        n = cfg.num_layers
        ch = encoder_channels(cfg)
        word_dim = sent_dim = cfg.text.hidden_dim
        sentence_layers, word_layers = set(m.sentence_fusion_layers), set(m.word_fusion_layers)
        self.resolution = cfg.resolution

        self.stem = nn.Sequential(nn.Conv2d(4, ch[0], 3, padding=1), nn.LeakyReLU(0.2))
        self.encoder = nn.ModuleList()
        for k in range(1, n + 1):
            fused = k in sentence_layers or k in word_layers
            out_norm = not fused and k < n
            self.encoder.append(EncoderLayer(ch[k - 1], ch[k], m.dilation, out_norm))
        # Keyed by the 1-based encoder layer, as in the config.
        self.sentence_fusion = nn.ModuleDict(
            {str(k): SentenceFusion(ch[k], sent_dim, m.condition_dim, m.noise_dim) for k in sorted(sentence_layers)}
        )
        self.word_fusion = nn.ModuleDict({str(k): WordFusion(ch[k], word_dim) for k in sorted(word_layers)})
        self.text_projection = nn.Linear(sent_dim, m.condition_dim) if m.bottleneck_text else None

        bottleneck = ch[n] + (m.condition_dim if m.bottleneck_text else 0)
        # decoder[0] undoes encoder layer N, ..., decoder[N-1] undoes layer 1; all but the innermost
        # take the previous output concatenated with the skip of the encoder layer of the same size.
        self.decoder = nn.ModuleList(
            DecoderLayer(bottleneck if k == n else 2 * ch[k], ch[k - 1]) for k in range(n, 0, -1)
        )
        self.to_rgb = nn.Sequential(nn.Conv2d(2 * ch[0], 3, 3, padding=1), nn.Tanh())

    def forward(
        self, image: Tensor, mask: Tensor, sent: Tensor, words: Tensor, word_mask: Tensor
    ) -> tuple[Tensor, Tensor, dict]:
        """Inpaint ``image`` (B, 3, H, W) in [−1, 1] where ``mask`` (B, 1, H, W) is 1.

        ``sent`` (B, D), ``words`` (B, D, T), ``word_mask`` (B, T) True at padding (the text encoder's
        outputs). Returns ``(G, I', aux)``: the raw output ``G``, the composite
        ``I' = I · (1 − M) + G · M`` and ``aux`` with ``ca_mu`` / ``ca_logvar`` (lists, one per sentence
        fusion layer, for the KL term) and ``word_attention`` ({layer: (B, T, h, w)}, Figure 8).
        """
        if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2:] != image.shape[2:]:
            raise ValueError(
                f"mask must be (B, 1, H, W) matching the image {tuple(image.shape)}, got {tuple(mask.shape)}"
            )
        if image.shape[-1] != self.resolution or image.shape[-2] != self.resolution:
            raise ValueError(f"generator built for {self.resolution} px, got image {tuple(image.shape)}")
        aux: dict = {"ca_mu": [], "ca_logvar": [], "word_attention": {}}
        x = self.stem(torch.cat([image * (1 - mask), mask], dim=1))
        skips = [x]
        for k, layer in enumerate(self.encoder, start=1):
            x = layer.conv(x)
            if str(k) in self.sentence_fusion:
                x, mu, logvar = self.sentence_fusion[str(k)](x, sent)
                aux["ca_mu"].append(mu)
                aux["ca_logvar"].append(logvar)
            if str(k) in self.word_fusion:
                x, attention = self.word_fusion[str(k)](x, words, word_mask)
                aux["word_attention"][k] = attention
            x = layer.act(layer.norm(x))
            skips.append(x)

        if self.text_projection is not None:
            t = self.text_projection(sent)[:, :, None, None].expand(-1, -1, *x.shape[2:])
            x = torch.cat([x, t], dim=1)
        for i, up in enumerate(self.decoder):
            if i > 0:
                x = torch.cat([x, skips[len(self.decoder) - i]], dim=1)
            x = up(x)
        raw = self.to_rgb(torch.cat([x, skips[0]], dim=1))
        return raw, image * (1 - mask) + raw * mask, aux
