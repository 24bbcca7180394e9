"""DAMSM (AttnGAN, Xu et al. 2018, Sec. 3.3): image encoder, word/sentence matching losses, R-precision.

The Deep Attentional Multimodal Similarity Model matches an image and a caption at two levels:

- word level: each word attends over the image's local region features; the region-context vector
  of each word is compared with the word (cosine), and the words are aggregated into one matching
  score R(Q, D) (AttnGAN Eq. 7-10);
- sentence level: the cosine of the image's global feature and the sentence vector (Eq. 13).

Both scores are scaled by γ3 and turned into a classification of the matching caption among the
batch's captions (and of the matching image among the batch's images) with a cross-entropy
(Eq. 11-12), masking out the other captions of the same class, which are not negatives.

AttnGAN's image encoder is ImageNet Inception-v3 (``Mixed_6e`` regions, ``Mixed_7c`` global). There
are no ImageNet weights on our machines, so :class:`DamsmImageEncoder` is a small CNN trained from
scratch jointly with the text encoder; it keeps Inception's interface (a grid of region features
and a global feature, both projected to the text dimension).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(0.2, inplace=True),
    )


def region_side(resolution: int) -> int:
    """Side of the region grid: 4 at 32 px, 8 at 64 px, 16 from 128 px (AttnGAN: 17 at 299 px)."""
    return max(4, min(16, resolution // 8))


class DamsmImageEncoder(nn.Module):
    """From-scratch stand-in for AttnGAN's ``CNN_ENCODER``.

    A stride-1 stem, stride-2 stages down to the region grid (:func:`region_side`), one 3x3 context
    conv there (so a region sees its neighbours), then:

    - ``emb_features``: 1x1 conv to the text dimension -> region features ``(B, D, h, w)``;
    - one more stride-2 stage, global average pooling, ``emb_cnn_code`` linear -> global ``(B, D)``.

    Widths double per stage and the last (global) stage has ``channels``
    (``cfg.text.damsm.image_channels``). Images are in [-1, 1]; any resolution >= 32 works, the grid
    scales with the input.
    """

    def __init__(self, resolution: int, out_dim: int, channels: int = 256):
        super().__init__()
        if resolution < 32:
            raise ValueError(f"the DAMSM image encoder needs images of at least 32 px, got {resolution}")
        self.resolution = resolution
        self.out_dim = out_dim
        self.channels = channels
        down = int(math.log2(resolution // region_side(resolution)))
        widths = [max(8, channels >> (down - k)) for k in range(down + 1)]  # last == channels
        stem = max(8, widths[0] // 2)
        blocks = [_conv(3, stem, 1)]
        cin = stem
        for w in widths[:-1]:
            blocks.append(_conv(cin, w, 2))
            cin = w
        blocks.append(_conv(cin, cin, 1))  # context at the region grid
        self.blocks = nn.ModuleList(blocks)
        self.emb_features = nn.Conv2d(cin, out_dim, 1, bias=False)
        self.global_block = _conv(cin, widths[-1], 2)
        self.emb_cnn_code = nn.Linear(widths[-1], out_dim)

    def config(self) -> dict[str, int]:
        """What rebuilds this module (stored in checkpoints)."""
        return {"resolution": self.resolution, "out_dim": self.out_dim, "channels": self.channels}

    def _trunk(self, images: torch.Tensor) -> list[torch.Tensor]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (batch, 3, H, W), got shape {tuple(images.shape)}")
        feats = []
        x = images
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Intermediate feature maps, shallow to deep (perceptual-loss fallback and FID features)."""
        feats = self._trunk(images)
        return [*feats, self.global_block(feats[-1])]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Region features ``(B, D, h, w)`` and global feature ``(B, D)`` (AttnGAN: features, cnn_code)."""
        _, regions, code = self.features_and_embeddings(images)
        return regions, code

    def features_and_embeddings(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """``features(images)`` and ``forward(images)`` from one pass through the trunk.

        The generator loss needs both of the same output when the perceptual loss falls back to this
        network and the text-matching loss is on; one pass instead of two is 14 % of a default-scale
        training step (README, Performance), with the same products and sums.
        """
        feats = self._trunk(images)
        pooled = self.global_block(feats[-1])
        regions = self.emb_features(feats[-1])
        code = self.emb_cnn_code(pooled.mean(dim=(2, 3)))
        return [*feats, pooled], regions, code

    def global_features(self, images: torch.Tensor) -> torch.Tensor:
        return self(images)[1]


# --------------------------------------------------------------------------------------------
# Word-level matching (AttnGAN Eq. 7-10).


def word_attention(scores: torch.Tensor, word_mask: torch.Tensor | None) -> torch.Tensor:
    """Eq. 8: normalise the word-region scores ``s (..., T, N)`` over the words, per region.

    Padded words (``word_mask`` True, broadcast to ``(..., T)``) get exactly zero weight.
    """
    if word_mask is not None:
        scores = scores.masked_fill(word_mask[..., None], float("-inf"))
    return scores.softmax(dim=-2)


def region_attention(normalised: torch.Tensor, gamma1: float) -> torch.Tensor:
    """Eq. 9: attention α of each word over the N regions, sharpened by γ1."""
    return (gamma1 * normalised).softmax(dim=-1)


def func_attention(
    words: torch.Tensor, regions: torch.Tensor, gamma1: float, word_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """AttnGAN's ``func_attention`` for matched pairs.

    ``words (B, D, T)`` attend over ``regions (B, D, h, w)``; returns the region-context vectors
    ``c (B, D, T)`` and the attention maps ``(B, T, h, w)``.
    """
    b, d, h, w = regions.shape
    context = regions.reshape(b, d, h * w)
    scores = words.transpose(1, 2) @ context  # Eq. 7: s = e^T v, (B, T, N)
    alpha = region_attention(word_attention(scores, word_mask), gamma1)
    return context @ alpha.transpose(1, 2), alpha.reshape(b, -1, h, w)


def word_match_scores(
    regions: torch.Tensor,
    words: torch.Tensor,
    word_mask: torch.Tensor,
    gamma1: float,
    gamma2: float,
) -> torch.Tensor:
    """Word-level matching score R(Q_j, D_i) of every image i with every caption j: ``(B_img, B_cap)``.

    ``regions (B_img, D, h, w)``, ``words (B_cap, D, T)``, ``word_mask (B_cap, T)`` True at padding.
    All pairs at once; equal to AttnGAN's per-caption loop (a test checks this). The region-context
    vectors c = V α are never formed: c·e = Σ_n α_n s_n and |c|² = α (VᵀV) αᵀ need only the
    (pairs, T, N) scores, not (pairs, T, D) vectors, which is ~4x less work at D = 256, N = 64.
    """
    bi, d, h, w = regions.shape
    bc, _, t = words.shape
    v = regions.reshape(bi, d, h * w)  # (Bi, D, N)
    e = words.transpose(1, 2).reshape(1, bc * t, d)  # every word of every caption
    scores = (e @ v).view(bi, bc, t, h * w)  # Eq. 7: s = eᵀv for every pair, (Bi, Bc, T, N)
    alpha = region_attention(word_attention(scores, word_mask[None]), gamma1)  # Eq. 8-9
    dot = (alpha * scores).sum(-1)  # c·e, (Bi, Bc, T)
    gram = v.transpose(1, 2) @ v  # VᵀV, (Bi, N, N)
    c_sq = ((alpha.view(bi, bc * t, -1) @ gram).view_as(alpha) * alpha).sum(-1)
    e_sq = (words * words).sum(1)  # (Bc, T)
    # AttnGAN's cosine_similarity: x·y / max(|x||y|, eps). Clamping before the square roots keeps
    # the gradient finite at all-zero (padded) words, whose scores are masked out below anyway.
    norms = c_sq.clamp_min(1e-16).sqrt() * e_sq.clamp_min(1e-16).sqrt()
    relevance = dot / norms.clamp_min(1e-8)  # R(c_i, e_i)
    # Eq. 10: R(Q, D) = log(sum_i exp(γ2 R(c_i, e_i)))^(1/γ2) over the caption's real words.
    # (AttnGAN's released code omits the 1/γ2; we follow the paper's equation. It only rescales
    # the logits, which γ3 then scales again.)
    relevance = relevance.masked_fill(word_mask[None], float("-inf"))
    return torch.logsumexp(gamma2 * relevance, dim=-1) / gamma2


# --------------------------------------------------------------------------------------------
# Losses (AttnGAN Eq. 11-13 and ``words_loss`` / ``sent_loss`` in its code).


def same_class_mask(class_ids: torch.Tensor | None, batch: int) -> torch.Tensor | None:
    """True at off-diagonal pairs of the same class: not negatives, excluded from the softmax."""
    if class_ids is None:
        return None
    class_ids = class_ids.reshape(-1)
    if class_ids.numel() != batch:
        raise ValueError(f"{class_ids.numel()} class ids for a batch of {batch}")
    same = class_ids[:, None] == class_ids[None, :]
    return same & ~torch.eye(batch, dtype=torch.bool, device=class_ids.device)


def matching_losses(
    similarity: torch.Tensor, gamma3: float, class_ids: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the matching pair in both directions (Eq. 11-12).

    ``similarity[i, j]`` scores image i with caption j (diagonal = matching pairs). Returns
    ``(loss_image_to_text, loss_text_to_image)``: ``-log P(Q_i | D_i)`` with the softmax over the
    captions of the batch, and ``-log P(D_i | Q_i)`` with the softmax over its images.
    """
    batch = similarity.shape[0]
    logits = gamma3 * similarity
    mask = same_class_mask(class_ids, batch)
    if mask is not None:
        logits = logits.masked_fill(mask, float("-inf"))
    labels = torch.arange(batch, device=similarity.device)
    return F.cross_entropy(logits, labels), F.cross_entropy(logits.t(), labels)


def words_loss(
    regions: torch.Tensor,
    words: torch.Tensor,
    word_mask: torch.Tensor,
    class_ids: torch.Tensor | None,
    gamma1: float,
    gamma2: float,
    gamma3: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DAMSM word loss (L^w_1, L^w_2) for a batch of matched image-caption pairs."""
    return matching_losses(word_match_scores(regions, words, word_mask, gamma1, gamma2), gamma3, class_ids)


def sentence_similarity(image_codes: torch.Tensor, sent: torch.Tensor) -> torch.Tensor:
    """Eq. 13: cosine of every global image feature with every sentence vector, ``(B_img, B_cap)``."""
    a = F.normalize(image_codes, dim=-1, eps=1e-8)
    b = F.normalize(sent, dim=-1, eps=1e-8)
    return a @ b.t()


def sent_loss(
    image_codes: torch.Tensor, sent: torch.Tensor, class_ids: torch.Tensor | None, gamma3: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """DAMSM sentence loss (L^s_1, L^s_2)."""
    return matching_losses(sentence_similarity(image_codes, sent), gamma3, class_ids)


# --------------------------------------------------------------------------------------------
# R-precision (AttnGAN Sec. 4: rank the true caption among 100 by DAMSM similarity; R = 1).


def mismatched_candidates(class_ids: np.ndarray, count: int = 99, seed: int = 0) -> np.ndarray:
    """For each item, ``count`` other items by a seeded rule, preferring other classes.

    Returns ``(N, min(count, N - 1))`` indices; never the item itself. Same-class items are used
    only when there are fewer than ``count`` items of other classes.
    """
    class_ids = np.asarray(class_ids).reshape(-1)
    n = len(class_ids)
    k = min(count, n - 1)
    if k < 1:
        raise ValueError(f"R-precision needs at least 2 items, got {n}")
    rng = np.random.default_rng(seed)
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, 1024):  # blocks bound the (rows, N) key matrix
        rows = np.arange(start, min(n, start + 1024))
        # Random key in [0, 1), +1 for the same class (chosen last), +2 for the item itself (never).
        key = rng.random((len(rows), n))
        key += class_ids[rows, None] == class_ids[None, :]
        key[np.arange(len(rows)), rows] = 3.0
        out[rows] = np.argpartition(key, k - 1, axis=1)[:, :k]
    return out


def r_precision(
    image_feats: torch.Tensor, text_feats: torch.Tensor, true_index: torch.Tensor, candidates: torch.Tensor
) -> float:
    """Fraction of images whose true caption scores strictly above every mismatched candidate: the mean
    of :func:`r_precision_hits`."""
    return float(r_precision_hits(image_feats, text_feats, true_index, candidates).float().mean())


def r_precision_hits(
    image_feats: torch.Tensor, text_feats: torch.Tensor, true_index: torch.Tensor, candidates: torch.Tensor
) -> torch.Tensor:
    """Per image (N,) bool: does its true caption score strictly above every mismatched candidate?

    ``image_feats (N, D)`` and ``text_feats (M, D)`` (cosine similarity is used);
    ``true_index (N,)`` indexes ``text_feats``; ``candidates (N, K)`` are the mismatched captions'
    indices into ``text_feats`` (the true caption makes the K+1-th; chance = 1/(K+1)).
    """
    true_index = torch.as_tensor(true_index, dtype=torch.long).reshape(-1)
    candidates = torch.as_tensor(candidates, dtype=torch.long)
    n = image_feats.shape[0]
    if true_index.numel() != n or candidates.shape[0] != n:
        raise ValueError(f"{n} images but {true_index.numel()} true indices and {candidates.shape[0]} candidate rows")
    if (candidates == true_index[:, None]).any():
        raise ValueError("candidates must be mismatched captions: a row contains its true caption")
    img = F.normalize(image_feats.float(), dim=-1, eps=1e-8)
    txt = F.normalize(text_feats.float(), dim=-1, eps=1e-8)
    sims = img @ txt.t()  # (N, M)
    true_score = sims.gather(1, true_index[:, None])
    best_other = sims.gather(1, candidates).max(dim=1, keepdim=True).values
    return (true_score > best_other)[:, 0]
