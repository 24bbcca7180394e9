"""The global image discriminator D(I) and the word-level local discriminator D(I, w) (Section 3.3).

Each comes in two readings (``model.global_discriminator``, ``model.word_discriminator_regions``):

* ``GlobalDiscriminator``: ``"patch"`` (default) is the global branch of the authors' PatchDiscriminator,
  three 4×4 stride-2 convs and two 4×4 stride-1 convs with InstanceNorm, giving a map of logits, one
  per overlapping patch; ``"dcgan-sn"`` is ours before round three, a DCGAN-style stack of spectrally
  normalised 4×4 stride-2 convs down to one logit per image (Miyato et al., 2018: no batch statistics,
  since real and fake images arrive in separate batches). With ``loss.gan_form: relativistic-ls`` the
  input is a pair of images on the channels (6 channels), as the authors feed (x1, x2); ``score``
  builds that input.
* ``WordLevelDiscriminator``: ``"hole-grid"`` (default, Eq. 4-5 over the hole's cells of a feature grid)
  or ``"centre-mean"`` (the authors' local branch: the centre crop's features averaged to one vector).

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


def _down_stack(cfg: ScaleConfig, num_down: int, in_channels: int = 3) -> tuple[nn.Sequential, int]:
    """``num_down`` spectrally normalised 4×4 stride-2 convs from ``in_channels``; returns the stack and
    its width."""
    layers: list[nn.Module] = []
    cin = in_channels
    for cout in _widths(cfg, num_down):
        layers += [spectral_norm(nn.Conv2d(cin, cout, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
        cin = cout
    return nn.Sequential(*layers), cin


def _widths(cfg: ScaleConfig, count: int) -> list[int]:
    """``min(b · 2^k, cap)`` for k = 0 .. count−1, with b = ``disc_base_channels``, cap = ``disc_max_channels``."""
    base, cap = cfg.model.disc_base_channels, cfg.model.disc_max_channels
    return [min(base * 2**k, cap) for k in range(count)]


def _authors_conv(cin: int, cout: int, stride: int, norm: bool, act: bool) -> list[nn.Module]:
    """A 4×4 conv (padding 1, torch's default init and bias), optionally InstanceNorm and LeakyReLU(0.2)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, stride=stride, padding=1)]
    if norm:
        layers.append(nn.InstanceNorm2d(cout))  # affine=False: no parameters
    if act:
        layers.append(nn.LeakyReLU(0.2))
    return layers


def judges_pairs(gan_form: str) -> bool:
    """Whether the global D judges (image, partner) pairs under ``loss.gan_form``: the relativistic form
    of the authors' code."""
    return gan_form == "relativistic-ls"


class GlobalDiscriminator(nn.Module):
    """D(I) on the whole (composited) image, in the reading ``model.global_discriminator`` names.

    * ``"patch"``: the authors' PatchDiscriminator global branch, 4×4 convs (stride 2, 2, 2, 1, 1;
      padding 1) of widths b, 2b, 4b, 8b, 1 (capped at ``disc_max_channels``), InstanceNorm on the
      middle three, LeakyReLU(0.2) after all but the last. At 256 px the map is 30×30 logits, each
      judging one 70×70 patch; ``forward`` returns them flattened, (B, h·w), and the losses average
      over patches as over images.
    * ``"dcgan-sn"``: ours before round three, spectrally normalised stride-2 convs down to 4×4, then a
      4×4 conv to one logit per image; ``forward`` returns (B,).

    ``in_channels`` is 6 when the relativistic form judges pairs (``judges_pairs``), else 3.
    """

    def __init__(self, cfg: ScaleConfig):
        super().__init__()
        self.kind = cfg.model.global_discriminator
        self.paired = judges_pairs(cfg.loss.gan_form)
        self.in_channels = 6 if self.paired else 3
        if self.kind == "dcgan-sn":
            self.features, width = _down_stack(cfg, cfg.num_layers - 2, self.in_channels)
            self.classifier = spectral_norm(nn.Conv2d(width, 1, 4))
        elif self.kind == "patch":
            if cfg.resolution < 32:
                raise ValueError(f"model.global_discriminator 'patch' needs a resolution of at least 32 px "
                                 f"(three stride-2 and two 4×4 stride-1 convs), got {cfg.resolution}")
            w = _widths(cfg, 4)
            self.layers = nn.Sequential(
                *_authors_conv(self.in_channels, w[0], 2, norm=False, act=True),
                *_authors_conv(w[0], w[1], 2, norm=True, act=True),
                *_authors_conv(w[1], w[2], 2, norm=True, act=True),
                *_authors_conv(w[2], w[3], 1, norm=True, act=True),
                *_authors_conv(w[3], 1, 1, norm=False, act=False),
            )
        else:
            raise ValueError(f"model.global_discriminator: unknown {self.kind!r}")

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (B, in_channels, H, W) in [−1, 1] -> logits: (B, h·w) for ``patch``, (B,) for ``dcgan-sn``."""
        if self.kind == "dcgan-sn":
            return self.classifier(self.features(x)).flatten()
        return self.layers(x).flatten(1)

    def score(self, image: Tensor, partner: Tensor | None = None) -> Tensor:
        """The logits for ``image``: for pairs, of ``cat([image, partner])`` on the channels (the authors'
        relativistic D sees (fake, real) and (real, fake)); otherwise ``partner`` is ignored."""
        if not self.paired:
            return self(image)
        if partner is None:
            raise ValueError("GlobalDiscriminator: loss.gan_form 'relativistic-ls' judges pairs; "
                             "give the partner image")
        return self(torch.cat([image, partner], dim=1))


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

    Two readings of the sub-regions ``j`` (``model.word_discriminator_regions``): ``"hole-grid"``, the
    paper's (below), and ``"centre-mean"``, the authors' code (``centre_mean_log_prob``).

    ``"hole-grid"``:

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

    # β_i + eps before the clamp at 1, as the authors' code keeps log β finite.
    CENTRE_MEAN_EPS = 1e-7

    def __init__(self, cfg: ScaleConfig):
        super().__init__()
        word_dim = cfg.text.hidden_dim
        self.regions = cfg.model.word_discriminator_regions
        if self.regions == "centre-mean":
            self._build_centre_mean(cfg, word_dim)
            return
        if self.regions != "hole-grid":
            raise ValueError(f"model.word_discriminator_regions: unknown {self.regions!r}")
        # Stride 16, but keep at least an 8x8 grid (stride 2^(N-3)) so small images still have cells.
        self.num_down = max(1, min(4, cfg.num_layers - 3))
        self.features, channels = _down_stack(cfg, self.num_down)
        self.word_weight = nn.Linear(word_dim, channels)  # W_i, Eq. 4
        self.word_bias = nn.Linear(word_dim, 1)  # b_i, Eq. 4
        self.word_attention_proj = nn.Linear(word_dim, word_dim, bias=False)  # P
        nn.init.eye_(self.word_attention_proj.weight)

    def _build_centre_mean(self, cfg: ScaleConfig, word_dim: int) -> None:
        """The authors' local branch: four 4×4 stride-2 convs (b, 2b, 4b, 8b; InstanceNorm and
        LeakyReLU(0.2) as their code has them, none after the last) on the centre crop, and one linear
        map from a word to its (W_i, b_i) of Eq. 4."""
        if cfg.resolution < 32:
            raise ValueError(f"model.word_discriminator_regions 'centre-mean' needs a resolution of at least "
                             f"32 px (four stride-2 convs on the half-side centre crop), got {cfg.resolution}")
        w = _widths(cfg, 4)
        self.features = nn.Sequential(
            *_authors_conv(3, w[0], 2, norm=False, act=True),
            *_authors_conv(w[0], w[1], 2, norm=True, act=True),
            *_authors_conv(w[1], w[2], 2, norm=True, act=True),
            *_authors_conv(w[2], w[3], 2, norm=False, act=False),
        )
        self.word_condition = nn.Linear(word_dim, w[3] + 1)  # [W_i; b_i] from w_i in one map

    @staticmethod
    def centre_crop(image: Tensor) -> Tensor:
        """``image[..., H/4 : H − H/4, W/4 : W − W/4]``: the authors' fixed centre region (their hole)."""
        h, w = image.shape[-2:]
        return image[..., h // 4: h - h // 4, w // 4: w - w // 4]

    def centre_mean_attention(self, words: Tensor) -> Tensor:
        """α (B, T) of the authors' code: ``softmax_i(w̄ · w_i)``, w̄ the mean of ``words`` over all T
        positions; padding is not masked (their code has no mask there), so it gets weight too."""
        scores = torch.einsum("bdt,bd->bt", words, words.mean(2))
        return F.softmax(scores, dim=1)

    def centre_mean_log_prob(self, image: Tensor, words: Tensor) -> Tensor:
        """``log D`` of the authors' local branch: v = the spatial mean of the centre crop's features
        (B, C); β_i = σ(W_i · v + b_i); D = Π_i min(β_i + 1e-7, 1)^α_i over all T words. In log space:
        ``log(β + eps) = logaddexp(log σ, log eps)``, clamped at 0, so no rounded β reaches a log."""
        v = self.features(self.centre_crop(image)).mean(dim=(2, 3))  # (B, C)
        cond = self.word_condition(words.transpose(1, 2))  # (B, T, C + 1)
        logits = torch.einsum("btc,bc->bt", cond[..., :-1], v) + cond[..., -1]
        log_eps = math.log(self.CENTRE_MEAN_EPS)
        log_beta = torch.logaddexp(F.logsigmoid(logits), torch.full_like(logits, log_eps)).clamp(max=0)
        return (self.centre_mean_attention(words) * log_beta).sum(1)

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
        ``word_mask`` (B, T) True at padding -> ``log D(I, w)`` (B,), always < 0 for ``hole-grid``,
        ≤ 0 for ``centre-mean`` (which uses neither ``mask`` nor ``word_mask``: the authors crop the
        fixed centre and weigh every word position)."""
        if self.regions == "centre-mean":
            return self.centre_mean_log_prob(image, words)
        v, weights = self.region_features(image, mask)
        log_beta = F.logsigmoid(self.word_scores(v, words))  # log β_{j,i}, (B, T, N_all)
        # log mean_j β_{j,i} over the hole's cells, weighted by hole coverage (log 0 = −inf drops a cell).
        log_mean = torch.logsumexp(log_beta + weights.log()[:, None, :], dim=2) - weights.sum(1, keepdim=True).log()
        alpha = self.word_attention(words, word_mask)
        return (alpha * log_mean).sum(1)  # log D = Σ_i α_i log(mean_j β_{j,i}), Eq. 5
