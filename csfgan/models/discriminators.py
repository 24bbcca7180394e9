"""The global image discriminator D(I) and the word-level local discriminator D(I, w) (Section 3.3).

Both use DCGAN-style stacks of 4×4 stride-2 convolutions with LeakyReLU(0.2), widths
``min(disc_base · 2^(k−1), disc_max)``. They use spectral normalisation (Miyato et al., 2018) instead
of BatchNorm: real and fake images reach the discriminator in separate batches, and batch statistics
would let it tell them apart by the statistics alone.

``GlobalDiscriminator`` returns logits; ``WordLevelDiscriminator`` returns ``log D(I, w)`` directly
(Eq. 5 is a product of probabilities, not a logit). The losses in ``csfgan.losses`` take both forms
and use ``log_one_minus_exp`` for ``log(1 − D(I, w))``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from csfgan.config import ScaleConfig


def _down_stack(cfg: ScaleConfig, num_down: int) -> tuple[nn.Sequential, int]:
    """``num_down`` spectrally normalised 4×4 stride-2 convs from RGB; returns the stack and its width."""
    base, cap = cfg.model.disc_base_channels, cfg.model.disc_max_channels
    layers: list[nn.Module] = []
    cin = 3
    for k in range(1, num_down + 1):
        cout = min(base * 2 ** (k - 1), cap)
        layers += [spectral_norm(nn.Conv2d(cin, cout, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
        cin = cout
    return nn.Sequential(*layers), cin


class GlobalDiscriminator(nn.Module):
    """D(I): the whole (composited) image down to 4×4, then a 4×4 conv to one logit per image."""

    def __init__(self, cfg: ScaleConfig):
        super().__init__()
        self.features, width = _down_stack(cfg, cfg.num_layers - 2)
        self.classifier = spectral_norm(nn.Conv2d(width, 1, 4))

    def forward(self, image: Tensor) -> Tensor:
        """``image`` (B, 3, H, W) in [−1, 1] -> logits (B,)."""
        return self.classifier(self.features(image)).flatten()


def log_one_minus_exp(log_p: Tensor) -> Tensor:
    """``log(1 − p)`` from ``log p`` without cancellation (Mächler, 2012).

    ``log(−expm1(x))`` is accurate near ``x = 0`` and ``log1p(−exp(x))`` for ``x < −log 2``; each branch
    sees an input clamped to its own range so the branch ``torch.where`` discards cannot produce
    inf/NaN gradients. ``log p`` is clamped just below 0 (by the dtype's eps), so ``p = 1`` gives a
    large finite value instead of −inf.
    """
    x = log_p.clamp(max=-torch.finfo(log_p.dtype).eps)
    near_zero = torch.log(-torch.expm1(x.clamp(min=-math.log(2))))
    far = torch.log1p(-torch.exp(x.clamp(max=-math.log(2))))
    return torch.where(x > -math.log(2), near_zero, far)


class WordLevelDiscriminator(nn.Module):
    """D(I, w) (Eq. 4-5): does each word of the caption show up in the hole region of the image?

    * ``v``: a conv feature map of the whole image (so the features see the hole's context), at
      1/16 of the image side (8×8 cells in the paper's 128 px hole), but never coarser than 8×8.
    * sub-regions ``j``: the feature cells of the hole. The mask is area-downsampled to the feature
      grid and each cell weighted by the fraction of it that is hole: for the centre hole, which is
      aligned to the grid, this is exactly cropping the hole's cells; cells of a free-form mask count
      in proportion to their overlap.
    * Eq. 4: ``β_{j,i} = σ(W_i · v_j + b_i)`` with ``W_i ∈ R^{1×C}`` and ``b_i`` from two linear
      projections of the word embedding ``w_i``.
    * word self-attention (Nam et al., 2018): ``α_i = softmax_i(u_i · ū)`` over the real words, where
      ``u_i = P w_i`` and ``ū`` is the temporal average of ``u`` over the real words. TAGAN's text
      encoder is trainable inside its discriminator; ours is frozen, so ``P`` (initialised to the
      identity, i.e. TAGAN's form) lets the discriminator learn which words matter.
    * Eq. 5: ``D(I, w) = Π_i (Σ_j β_{j,i})^{α_i}``. The paper sums over the N sub-regions, so D can
      exceed 1 and ``log(1 − D)`` in Eq. 11 would be undefined; we use the mean over the sub-regions
      (sum / N), making ``D ∈ (0, 1)``. Because Σ_i α_i = 1 this only shifts ``log D`` by ``log N``.
      The product is computed in log space: ``log D = Σ_i α_i log(mean_j β_{j,i})``.
    """

    def __init__(self, cfg: ScaleConfig):
        super().__init__()
        word_dim = cfg.text.hidden_dim
        # Stride 16, but keep at least an 8x8 grid (stride 2^(N-3)) so small images still have cells.
        self.num_down = max(1, min(4, cfg.num_layers - 3))
        self.features, channels = _down_stack(cfg, self.num_down)
        self.word_weight = nn.Linear(word_dim, channels)  # W_i, Eq. 4
        self.word_bias = nn.Linear(word_dim, 1)  # b_i, Eq. 4
        self.word_attention_proj = nn.Linear(word_dim, word_dim, bias=False)  # P
        nn.init.eye_(self.word_attention_proj.weight)

    def region_features(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """-> (features ``v`` (B, C, N_all) over all cells, hole weight of each cell (B, N_all))."""
        v = self.features(image)
        weights = F.adaptive_avg_pool2d(mask, v.shape[-2:]).flatten(1)
        if bool((weights.sum(1) <= 0).any()):
            raise ValueError("word-level discriminator: a mask has no hole; D(I, w) is defined on the hole region")
        return v.flatten(2), weights

    def word_attention(self, words: Tensor, word_mask: Tensor) -> Tensor:
        """α (B, T): word importance, summing to 1 over the real words, exactly 0 on padding."""
        u = self.word_attention_proj(words.transpose(1, 2))  # (B, T, D)
        real = (~word_mask).unsqueeze(-1).to(u.dtype)
        u_bar = (u * real).sum(1) / real.sum(1).clamp(min=1)  # temporal average over real words
        scores = torch.einsum("btd,bd->bt", u, u_bar)
        scores = scores.masked_fill(word_mask, torch.finfo(scores.dtype).min)
        return F.softmax(scores, dim=1)

    def word_scores(self, v: Tensor, words: Tensor) -> Tensor:
        """``W_i · v_j + b_i`` (B, T, N_all), the logits of β_{j,i} (Eq. 4)."""
        wt = words.transpose(1, 2)
        return torch.einsum("btc,bcn->btn", self.word_weight(wt), v) + self.word_bias(wt)

    def forward(self, image: Tensor, mask: Tensor, words: Tensor, word_mask: Tensor) -> Tensor:
        """``image`` (B, 3, H, W), ``mask`` (B, 1, H, W) 1 in the hole, ``words`` (B, D, T),
        ``word_mask`` (B, T) True at padding -> ``log D(I, w)`` (B,), always < 0."""
        v, weights = self.region_features(image, mask)
        log_beta = F.logsigmoid(self.word_scores(v, words))  # log β_{j,i}, (B, T, N_all)
        # log mean_j β_{j,i} over the hole's cells, weighted by hole coverage (log 0 = −inf drops a cell).
        log_mean = torch.logsumexp(log_beta + weights.log()[:, None, :], dim=2) - weights.sum(1, keepdim=True).log()
        alpha = self.word_attention(words, word_mask)
        return (alpha * log_mean).sum(1)  # log D = Σ_i α_i log(mean_j β_{j,i}), Eq. 5
