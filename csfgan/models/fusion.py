"""The Semantic Fusion Module (SFM, Section 3.2): sentence-level (Eq. 1-2) and word-level (Eq. 3) fusion.

Both fusions play the role of a conditional batch normalisation: the visual features ``v`` are
standardised with batch statistics (mean and variance over the batch and spatial dimensions, per
channel, i.e. ``BatchNorm2d(affine=False)``; running estimates are kept for eval mode, so a single
image can be inpainted) and then scaled and shifted by text-derived ``γ_c`` and ``β_c`` (Eq. 2).

Initialisation: the projections producing γ start with zero weights and a bias of one, and those
producing β with zero weights and bias, so every fused layer starts as plain batch normalisation
(γ = 1, β = 0) and text conditioning cannot destabilise the first steps. Their weights still get
gradient at once (∂L/∂W = ∂L/∂γ · c̄ᵀ), so the conditioning is learned from the first step on
(DF-GAN initialises its affine text modulation the same way).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _init_modulation(gamma: nn.Module, beta: nn.Module) -> None:
    """γ = 1, β = 0 at initialisation (see the module docstring)."""
    nn.init.zeros_(gamma.weight)
    nn.init.ones_(gamma.bias)
    nn.init.zeros_(beta.weight)
    nn.init.zeros_(beta.bias)


class ConditioningAugmentation(nn.Module):
    """StackGAN's conditioning augmentation: ``c = μ(s) + exp(logvar(s) / 2) · ε``, ε ~ N(0, I).

    ``glu=True`` is the authors' CA_NET: a linear layer to ``4 · cond`` features, a gated linear unit
    (Dauphin et al., 2017) halving them, then μ and log σ² of ``cond`` each. ``glu=False`` maps the
    sentence linearly to μ and log σ² (no activation: StackGAN's ReLU would force σ ≥ 1). ``c`` is
    sampled in train and eval mode alike, as in StackGAN/AttnGAN and the authors' code: the diversity
    it gives is part of the model; evaluation fixes the RNG seed instead. The KL term
    ``KL(N(μ, σ²) ‖ N(0, I))`` is computed from the returned ``mu, logvar`` by
    ``csfgan.losses.kl_divergence``.
    """

    def __init__(self, sentence_dim: int, condition_dim: int, glu: bool = False):
        super().__init__()
        self.condition_dim = condition_dim
        self.glu = glu
        self.fc = nn.Linear(sentence_dim, (4 if glu else 2) * condition_dim)

    def forward(self, sent: Tensor, eps: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        h = self.fc(sent)
        if self.glu:
            h = F.glu(h, dim=1)  # first half gated by the sigmoid of the second
        mu, logvar = h.chunk(2, dim=1)
        if eps is None:
            eps = torch.randn_like(mu)
        return mu + torch.exp(0.5 * logvar) * eps, mu, logvar


class SentenceFusion(nn.Module):
    """Sentence-level fusion (Eq. 1-2): ``v̄ = γ_c · (v − μ(v)) / σ(v) + β_c`` with γ_c = W(c̄), β_c = B(c̄).

    ``c̄ = [c; z]`` is the conditioning-augmented sentence vector ``c`` concatenated with noise
    ``z ~ N(0, 1)``. With ``own_conditioning`` the layer has its own augmentation and noise (Figure
    3(a) draws the CA inside the fusion block); without it the caller passes ``c̄``, which the
    authors' code computes once (one CA, one z) for both sentence-fusion layers
    (``model.shared_conditioning``).
    """

    def __init__(self, channels: int, sentence_dim: int, condition_dim: int, noise_dim: int,
                 own_conditioning: bool = True):
        super().__init__()
        self.noise_dim = noise_dim
        self.ca = ConditioningAugmentation(sentence_dim, condition_dim) if own_conditioning else None
        self.norm = nn.BatchNorm2d(channels, affine=False)  # μ(v), σ(v) over batch and space (Eq. 2)
        self.gamma = nn.Linear(condition_dim + noise_dim, channels)  # W(·), Eq. 1
        self.beta = nn.Linear(condition_dim + noise_dim, channels)  # B(·), Eq. 1
        _init_modulation(self.gamma, self.beta)

    def forward(
        self, v: Tensor, sent: Tensor | None = None, *, c_bar: Tensor | None = None, z: Tensor | None = None,
        eps: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``v`` (B, C, H, W) and ``sent`` (B, D), or ``c_bar`` (B, cond + noise) when the
        conditioning is shared -> (v̄ (B, C, H, W), μ, log σ² (B, cond); both None when shared)."""
        mu = logvar = None
        if self.ca is not None:
            c, mu, logvar = self.ca(sent, eps)
            c_bar = torch.cat([c, draw_noise(c, self.noise_dim, z)], dim=1)
        elif c_bar is None:
            raise ValueError("SentenceFusion without its own conditioning augmentation needs c_bar")
        gamma = self.gamma(c_bar)[:, :, None, None]  # Eq. 1
        beta = self.beta(c_bar)[:, :, None, None]
        return gamma * self.norm(v) + beta, mu, logvar  # Eq. 2


def draw_noise(c: Tensor, noise_dim: int, z: Tensor | None = None) -> Tensor:
    """``z`` (B, noise_dim) ~ N(0, 1), drawn on ``c``'s device and dtype unless given."""
    if z is None:
        z = torch.randn(c.shape[0], noise_dim, device=c.device, dtype=c.dtype)
    return z


class WordFusion(nn.Module):
    """Word-level fusion (Eq. 3, then Eq. 2 with spatially varying γ_c, β_c).

    For every sub-region j (a spatial position of ``v``) the word context is
    ``wc_j = Σ_i α_{j,i} w'_i`` with ``α_{j,i} = softmax_i(v_j^T w'_i)``. The words are first
    projected to the visual channel count (``w'_i = P w_i``, a bias-free 1×1 as in AttnGAN), since
    ``h_{j,i} = v_j^T w_i`` needs equal dimensions. Padded words get exactly zero weight.
    ``v_j`` in the dot product is the batch-standardised feature: raw conv outputs have an arbitrary
    scale that drifts during training and would saturate the softmax. Two 1×1 convolutions map
    ``wc`` to γ_c and β_c.
    """

    def __init__(self, channels: int, word_dim: int):
        super().__init__()
        self.word_proj = nn.Conv1d(word_dim, channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gamma = nn.Conv2d(channels, channels, 1)
        self.beta = nn.Conv2d(channels, channels, 1)
        _init_modulation(self.gamma, self.beta)

    def attention(self, v: Tensor, words: Tensor, word_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 3. ``v`` (B, C, H, W) standardised, ``words`` (B, D, T), ``word_mask`` (B, T) True at padding.

        Returns the context ``wc`` (B, C, H, W) and the attention ``α`` (B, T, H, W), which sums to 1
        over the words at every position.
        """
        b, c, h, w = v.shape
        wp = self.word_proj(words)  # (B, C, T)
        scores = torch.bmm(v.flatten(2).transpose(1, 2), wp)  # h_{j,i}: (B, N, T)
        # The most negative finite value, not -inf: a padded word's weight underflows to exactly 0,
        # and a caption that is all padding gives uniform weights instead of NaN.
        scores = scores.masked_fill(word_mask[:, None, :], torch.finfo(scores.dtype).min)
        alpha = F.softmax(scores, dim=2)  # α_{j,i}
        wc = torch.bmm(wp, alpha.transpose(1, 2)).view(b, c, h, w)  # wc_j = Σ_i α_{j,i} w'_i
        return wc, alpha.transpose(1, 2).reshape(b, -1, h, w)

    def forward(self, v: Tensor, words: Tensor, word_mask: Tensor) -> tuple[Tensor, Tensor]:
        """-> (v̄ (B, C, H, W), word attention maps (B, T, H, W))."""
        v_hat = self.norm(v)
        wc, alpha = self.attention(v_hat, words, word_mask)
        return self.gamma(wc) * v_hat + self.beta(wc), alpha  # Eq. 2 with word-level γ_c, β_c
