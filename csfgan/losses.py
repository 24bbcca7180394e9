"""The CSF-GAN losses (Section 3.4, Eq. 6-12) and the generator objective that combines them.

Conventions:

* ``real`` is the original image I, ``fake`` the inpainting result I' (the composite
  ``I · (1 − M) + G · M``, as the paper defines I'), both in [−1, 1].
* ``‖·‖₁`` is taken as the mean absolute error (per element), as common implementations do, so
  the λ weights do not depend on the resolution.
* Adversarial terms work on logits (global D) and log-probabilities (word-level D), in the
  softplus / log1mexp forms that never take the log of a rounded probability. By default the
  generator's adversarial terms keep the graph to the generator (Eq. 10 trains G through D);
  ``loss.detach_adversarial`` gives the authors' public code, which detaches the output there, so its
  generator never receives adversarial gradient. Detaching the fake batch for the discriminator step
  is the caller's job.
* ``GeneratorLoss`` builds only the terms whose weight is > 0 (no VGG is built when λ_per = λ_style = 0).
* Where the authors' code departs from the paper, a key selects it (``loss.gan_form``,
  ``loss.tv_form``, ``loss.edge_operator``, ``loss.style``, ``loss.perceptual_imagenet_normalize``,
  ``loss.detach_adversarial``); the defaults are the paper's and ``csfgan.readings`` records which
  reading a run follows.
* Besides Eq. 12 the generator is trained with the text-matching loss Section 3.1 names (the DAMSM
  word and sentence loss of the output, weight 0.001 in the authors' code; ``text_matching_loss``).
  The KL term of conditioning augmentation is in neither the paper nor the authors' code and is off
  by default (``loss.kl``; variant ``kl``). docs/deviations.md lists every such choice.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from csfgan.config import CHOICES, LossConfig, ScaleConfig
from csfgan.errors import UserError
from csfgan.models.damsm import DamsmImageEncoder, sent_loss, words_loss
from csfgan.models.discriminators import (
    GlobalDiscriminator,
    WordLevelDiscriminator,
    judges_pairs,
    log_one_minus_exp,
)

# A perceptual feature extractor: images in [-1, 1] (B, 3, H, W) -> a list of feature maps.
FeatureExtractor = Callable[[Tensor], Sequence[Tensor]]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NO_FALLBACK = ("", "none")


class PerceptualWeightsError(UserError):
    """The perceptual loss has no network it may use; the message says what was tried."""


def reconstruction_loss(real: Tensor, fake: Tensor) -> Tensor:
    """L_rec = ‖I − I'‖₁ (Eq. 6)."""
    return F.l1_loss(fake, real)


def total_variation_loss(image: Tensor) -> Tensor:
    """L_tv: mean |difference| of every pixel with its neighbour above plus with its neighbour to the
    left (Hong et al., 2019; the second part of the inpainting loss, Eq. 8)."""
    above = (image[..., 1:, :] - image[..., :-1, :]).abs().mean()
    left = (image[..., :, 1:] - image[..., :, :-1]).abs().mean()
    return above + left


# The authors' TotalVariationLoss kernel: up + left − 2 · centre, per channel.
_AUTHORS_TV_KERNEL = torch.tensor([[0.0, 1.0, 0.0], [1.0, -2.0, 0.0], [0.0, 0.0, 0.0]])


def authors_hole_tv_loss(image: Tensor, mask: Tensor) -> Tensor:
    """L_tv as the authors' code computes it (``loss.tv_form: authors-hole``), not Eq. 8's: each channel
    convolved (zero padding 1) with [[0, 1, 0], [1, −2, 0], [0, 0, 0]] (the pixel above plus the pixel
    to the left minus twice the pixel), multiplied by the hole ``mask`` (B, 1, H, W), then the mean
    |·| over every element, hole or not, as their code takes it."""
    c = image.shape[1]
    kernel = _AUTHORS_TV_KERNEL.to(image)[None, None].expand(c, 1, 3, 3)
    return (F.conv2d(image, kernel, padding=1, groups=c) * mask).abs().mean()


_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel(image: Tensor) -> Tensor:
    """Sobel gradients of every channel: (B, C, H, W) -> (B, 2C, H−2, W−2), [∂x of each channel, ∂y ...].

    Per channel rather than on grayscale: a caption's colour can differ from its surroundings in hue
    at equal luminance, and a grayscale edge map would not see that edge. Only interior pixels (a
    complete 3×3 stencil) are used, so the image border creates no artificial edges.
    """
    c = image.shape[1]
    kx = _SOBEL_X.to(image)
    kernels = torch.stack([kx, kx.t()])[:, None].repeat(c, 1, 1, 1)  # (2C, 1, 3, 3): x, y per channel
    grads = F.conv2d(image, kernels, groups=c)  # channel c -> outputs 2c (x), 2c + 1 (y)
    return torch.cat([grads[:, 0::2], grads[:, 1::2]], dim=1)


_LAPLACIAN_8 = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 8.0, -1.0], [-1.0, -1.0, -1.0]]) / 3


def laplacian_rgb(image: Tensor) -> Tensor:
    """The authors' EdgeLoss operator: a 3→3 conv (zero padding 1) whose every (output, input) pair is
    the 8-neighbour Laplacian / 3, so each output channel is the Laplacian of the sum of the input
    channels; (B, 3, H, W) -> (B, 3, H, W)."""
    c = image.shape[1]
    kernel = _LAPLACIAN_8.to(image)[None, None].expand(c, c, 3, 3)
    return F.conv2d(image, kernel, padding=1)


EDGE_OPERATORS = {"sobel": sobel, "laplacian-rgb": laplacian_rgb}


def edge_loss(real: Tensor, fake: Tensor, operator: str = "sobel") -> Tensor:
    """L_edge = ‖S(I) − S(I')‖₁ (Eq. 9). ``operator`` (``loss.edge_operator``): ``"sobel"``, the paper's
    Sobel operator (default), or ``"laplacian-rgb"``, the authors' code's RGB-summed Laplacian."""
    op = EDGE_OPERATORS[operator]
    return F.l1_loss(op(fake), op(real))


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) of conditioning augmentation, averaged over elements as in
    StackGAN/AttnGAN (which weight it 1; here ``LossConfig.kl``, 0 unless a variant sets it)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).mean()


def text_matching_loss(
    image_encoder: DamsmImageEncoder,
    fake: Tensor,
    words: Tensor,
    sent: Tensor,
    word_mask: Tensor,
    class_ids: Tensor | None,
    gammas: tuple[float, float, float],
) -> Tensor:
    """The text-matching loss of Section 3.1: DAMSM word loss + sentence loss (AttnGAN Eq. 11-13,
    both directions each) between the output's DAMSM image features and its caption's word and
    sentence features, as the authors' code applies it to the output (weight 0.001).

    ``image_encoder`` is the frozen, pretrained DAMSM image encoder (the caller freezes it: gradient
    flows through it to ``fake`` but leaves its weights untouched); ``class_ids`` exclude captions of
    the same class from the negatives, as in DAMSM pretraining. Computed in fp32 (the matching scores
    go through softmax and log-sum-exp with γ up to 10).
    """
    regions, code = image_encoder(fake)
    return matching_loss(regions, code, words, sent, word_mask, class_ids, gammas)


def matching_loss(regions: Tensor, code: Tensor, words: Tensor, sent: Tensor, word_mask: Tensor,
                  class_ids: Tensor | None, gammas: tuple[float, float, float]) -> Tensor:
    """:func:`text_matching_loss` from the output's DAMSM region and global features."""
    g1, g2, g3 = gammas
    w0, w1 = words_loss(regions.float(), words.float(), word_mask, class_ids, g1, g2, g3)
    s0, s1 = sent_loss(code.float(), sent.float(), class_ids, g3)
    return w0 + w1 + s0 + s1


def sentence_snr(mu: Tensor, logvar: Tensor) -> Tensor:
    """Signal-to-noise ratio of the sentence branch's conditioning augmentation ``c = μ(s) + σ(s) ε``.

    The variance of μ over the batch's captions (what the caption contributes), over the mean CA noise
    variance σ², per dimension, averaged over the dimensions. Near 0 the sentence fusion's γ/β are
    driven by noise, not by the caption (what the KL term did here: 0.001 against 0.6–1.4 without it).
    """
    mu, var = mu.detach().float(), logvar.detach().float().exp()
    return (mu.var(dim=0) / var.mean(dim=0).clamp_min(1e-12)).mean()


GAN_FORMS = CHOICES["loss.gan_form"]


def relativistic_ls_generator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The global adversarial term of the authors' code for G (``loss.gan_form: relativistic-ls``):
    relativistic average least squares, ``½ (E[(y_r − E y_f + 1)²] + E[(y_f − E y_r − 1)²])`` with
    ``y_r = D([I, I'])`` and ``y_f = D([I', I])`` (the pair on the channels); the means run over
    images and patches."""
    return ((real_logits - fake_logits.mean() + 1).pow(2).mean()
            + (fake_logits - real_logits.mean() - 1).pow(2).mean()) / 2


def relativistic_ls_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The authors' code's D counterpart of ``relativistic_ls_generator_loss``: the targets swapped,
    ``½ (E[(y_r − E y_f − 1)²] + E[(y_f − E y_r + 1)²])``."""
    return ((real_logits - fake_logits.mean() - 1).pow(2).mean()
            + (fake_logits - real_logits.mean() + 1).pow(2).mean()) / 2


def generator_global_gan_loss(fake_logits: Tensor, real_logits: Tensor | None = None, form: str = "bce") -> Tensor:
    """The global D's part of L_G: ``"bce"``, −E[log D(I')] = E[softplus(−logit)] (Eq. 10, averaged over
    the patches of a patch D), or ``"relativistic-ls"`` (the authors' code), which also needs
    ``real_logits`` = D([I, I'])."""
    if form == "bce":
        return F.softplus(-fake_logits).mean()
    if form == "relativistic-ls":
        if real_logits is None:
            raise ValueError("generator_gan_loss: the relativistic form needs the real pair's logits too")
        return relativistic_ls_generator_loss(real_logits, fake_logits)
    raise ValueError(f"loss.gan_form: unknown {form!r}; one of {', '.join(GAN_FORMS)}")


def generator_gan_loss(fake_logits: Tensor, fake_word_log_prob: Tensor | None = None, *,
                       real_logits: Tensor | None = None, form: str = "bce") -> Tensor:
    """L_G = −E[log D(I') + log D(I', w)] (Eq. 10), the D(I', w) term only when it is given.

    ``fake_logits`` are the global discriminator's logits, so −log D = softplus(−logit);
    ``fake_word_log_prob`` is log D(I', w) from the word-level discriminator. ``form`` (``loss.gan_form``)
    ``"relativistic-ls"`` replaces the global part by the authors' code's relativistic least squares
    (``fake_logits`` = D([I', I]), ``real_logits`` = D([I, I'])); the word part is −E[log D(I', w)]
    either way, as their code's BCE(D(I', w), 1).
    """
    loss = generator_global_gan_loss(fake_logits, real_logits, form)
    if fake_word_log_prob is not None:
        loss = loss - fake_word_log_prob.mean()
    return loss


def check_pairing(global_d: GlobalDiscriminator, form: str) -> None:
    """The relativistic form needs a D built for pairs and the BCE form one for single images; a mismatch
    (networks and loss from different configs) would silently score the wrong input."""
    if global_d.paired != judges_pairs(form):
        raise ValueError(f"loss.gan_form {form!r} with a global discriminator built for "
                         f"{'pairs' if global_d.paired else 'single images'}: build both from one config")


def word_discriminator_loss(real_word_log_prob: Tensor, fake_word_log_prob: Tensor) -> Tensor:
    """The word-level part of Eq. 11: −E[log D(I, w)] − E[log(1 − D(I', w))]."""
    return -real_word_log_prob.mean() - log_one_minus_exp(fake_word_log_prob).mean()


def discriminator_loss(
    real_logits: Tensor,
    fake_logits: Tensor,
    real_word_log_prob: Tensor | None = None,
    fake_word_log_prob: Tensor | None = None,
    *,
    form: str = "bce",
) -> Tensor:
    """L_D = −E[log D(I) + log D(I, w)] − E[log(1 − D(I')) + log(1 − D(I', w))] (Eq. 11).

    Eq. 11 as printed adds ``+E[log(1 − D(I'))]``; minimising that would push D(I') towards 1, so
    the sign is a typo: we minimise the standard cross-entropy. The word terms are used when both
    are given. With a patch D the logits are (B, patches) and the means run over both.

    ``form="relativistic-ls"`` (``loss.gan_form``) is the authors' code instead: ``real_logits`` =
    D([I, I']), ``fake_logits`` = D([I', I]), the global part ``relativistic_ls_discriminator_loss``
    and the word part halved, as their code averages its two BCE terms.
    """
    if (real_word_log_prob is None) != (fake_word_log_prob is None):
        raise ValueError("discriminator_loss: give both word-level log-probabilities (real and fake) or neither")
    if form == "bce":
        loss, word_weight = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean(), 1.0
    elif form == "relativistic-ls":
        loss, word_weight = relativistic_ls_discriminator_loss(real_logits, fake_logits), 0.5
    else:
        raise ValueError(f"loss.gan_form: unknown {form!r}; one of {', '.join(GAN_FORMS)}")
    if real_word_log_prob is not None:
        loss = loss + word_weight * word_discriminator_loss(real_word_log_prob, fake_word_log_prob)
    return loss


# --------------------------------------------------------------------------------------------
# Perceptual loss (Eq. 7)


def _vgg16_layer_names() -> list[str]:
    """Names of ``torchvision.models.vgg16().features`` entries: conv1_1, relu1_1, ..., pool5."""
    names, block, conv = [], 1, 0
    for v in torchvision.models.vgg.cfgs["D"]:
        if v == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 0
        else:
            conv += 1
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
    return names


def imagenet_vgg16_cache_path() -> Path:
    """Where torchvision keeps VGG16_Weights.IMAGENET1K_V1 in the torch hub cache."""
    url = torchvision.models.VGG16_Weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _load_state_dict(path: Path) -> dict:
    """A state_dict from ``path`` (tensors only: ``weights_only``, so loading runs no pickled code)."""
    try:
        try:  # mmap: the classifier's ~470 MB in a full VGG16 file are never read
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # files in the legacy (non-zip) format cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        from csfgan.checkpoint import describe_load_error

        raise UserError(f"{path}: cannot be read as a PyTorch state_dict ({describe_load_error(exc)})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected a state_dict, got {type(state).__name__}")
    return state


class VGG16Features(nn.Module):
    """Frozen ``vgg16().features`` up to the deepest requested layer, returning those layers' outputs.

    Inputs are in [−1, 1]; with ``imagenet_normalize`` (``loss.perceptual_imagenet_normalize``, the
    default) they are mapped to [0, 1] and ImageNet-normalised as VGG was trained; without it they
    enter VGG as they are, as the authors' code feeds them.
    """

    def __init__(self, layers: Sequence[str], weights_path: Path, imagenet_normalize: bool = True):
        super().__init__()
        self.imagenet_normalize = imagenet_normalize
        names = _vgg16_layer_names()
        unknown = [name for name in layers if name not in names]
        if unknown or not layers:
            raise UserError(
                f"loss.perceptual_layers: unknown VGG16 layer(s) {unknown or layers}; valid: {', '.join(names)}"
            )
        self.indices = sorted(names.index(name) for name in layers)
        features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])[: self.indices[-1] + 1]
        for i, m in enumerate(features):
            if isinstance(m, nn.ReLU):
                features[i] = nn.ReLU(inplace=False)  # the outputs we keep must not be overwritten
        state = _load_state_dict(weights_path)
        wanted = {k: state.get(f"features.{k}") for k in features.state_dict()}
        missing = [k for k, v in wanted.items() if v is None]
        if missing:
            raise UserError(
                f"{weights_path}: not a torchvision VGG16 state_dict (missing features.{missing[0]} and "
                f"{len(missing) - 1} more); save one with torch.save(torchvision.models.vgg16().state_dict(), path)"
            )
        features.load_state_dict(wanted)
        self.features = features.requires_grad_(False)  # no dropout/BN in VGG features: mode-free
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: Tensor) -> list[Tensor]:
        x = ((image + 1) / 2 - self.mean) / self.std if self.imagenet_normalize else image
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.indices:
                out.append(x)
        return out


_WEIGHTS_IDS: dict[tuple[str, int, int], str] = {}


def _weights_id(path: Path) -> str:
    """``sha256:<first 16 hex digits>`` of a weights file, hashed once per process (VGG16's is 528 MB)."""
    from csfgan.provenance import file_sha256

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _WEIGHTS_IDS:
        _WEIGHTS_IDS[key] = f"sha256:{file_sha256(path)[:16]}"
    return _WEIGHTS_IDS[key]


class PerceptualLoss(nn.Module):
    """L_per = Σ_{j∈J} ‖φ_j(I) − φ_j(I')‖₁ (Eq. 7).

    φ is VGG16 (``loss.perceptual_network: vgg16``) with weights from, in order:
    ``loss.perceptual_weights_path`` (which must then load: a path given and broken is an error), or
    torchvision's ImageNet file in the torch hub cache. Nothing is ever downloaded. When neither
    exists, the network named by ``loss.perceptual_fallback`` is used, and it must be passed in as
    ``fallback`` (a ``FeatureExtractor``, e.g. the pretrained DAMSM image encoder; it receives
    [−1, 1] images and must be frozen by the caller). Setting ``perceptual_network`` to the fallback's
    name uses it even where VGG16 is available, for runs comparable across machines.

    ``.source`` records what was used, by content, never by where it lies: ``vgg16-imagenet:sha256:<hex>``,
    ``vgg16:sha256:<hex>`` (the weights file's SHA-256) or the fallback's name; it is part of a run's
    identity, so a retry on a node whose torch hub cache is elsewhere is the same run. ``.weights_file``
    says where the weights were read (recorded, not compared). Runs and tables must report the source.
    """

    def __init__(self, cfg: LossConfig, fallback: FeatureExtractor | None = None):
        super().__init__()
        # Set with object.__setattr__ so an nn.Module fallback is not registered as a submodule: it
        # stays out of this loss's parameters and state_dict; the caller owns (and freezes) it.
        object.__setattr__(self, "_fallback", None)
        self.vgg: VGG16Features | None = None
        self.weights_file: str | None = None
        fallback_name = (cfg.perceptual_fallback or "").strip()
        has_fallback_name = fallback_name.lower() not in NO_FALLBACK

        norm = cfg.perceptual_imagenet_normalize
        if cfg.perceptual_network == "vgg16":
            if cfg.perceptual_weights_path:
                path = Path(cfg.perceptual_weights_path).expanduser()
                if not path.is_file():
                    raise PerceptualWeightsError(f"loss.perceptual_weights_path: no such file {path}")
                self.vgg, self.source = VGG16Features(cfg.perceptual_layers, path, norm), f"vgg16:{_weights_id(path)}"
                self.weights_file = str(path)
                return
            cached = imagenet_vgg16_cache_path()
            if cached.is_file():
                self.vgg = VGG16Features(cfg.perceptual_layers, cached, norm)
                self.source, self.weights_file = f"vgg16-imagenet:{_weights_id(cached)}", str(cached)
                return
            tried = f"no VGG16 weights: loss.perceptual_weights_path is unset and {cached} does not exist"
        elif has_fallback_name and cfg.perceptual_network == fallback_name:
            tried = f"loss.perceptual_network is {fallback_name!r}"
        else:
            raise PerceptualWeightsError(
                f"loss.perceptual_network {cfg.perceptual_network!r} is unknown: use 'vgg16' or the "
                f"name of loss.perceptual_fallback ({fallback_name!r})"
            )

        if not has_fallback_name:
            raise PerceptualWeightsError(
                f"perceptual loss: {tried}, and loss.perceptual_fallback names no fallback network. Put the "
                f"torchvision VGG16 ImageNet file at {imagenet_vgg16_cache_path()}, set "
                "loss.perceptual_weights_path, name a fallback, or set loss.per: 0"
            )
        if fallback is None:
            raise PerceptualWeightsError(
                f"perceptual loss: {tried}; loss.perceptual_fallback is {fallback_name!r} but no such network "
                "was passed to PerceptualLoss(fallback=...)"
            )
        object.__setattr__(self, "_fallback", fallback)
        self.source = fallback_name

    def features(self, image: Tensor) -> Sequence[Tensor]:
        return self.vgg(image) if self.vgg is not None else self._fallback(image)

    def uses(self, extractor: FeatureExtractor) -> bool:
        """Whether the features come from ``extractor`` (the fallback passed in, not VGG16)."""
        return self.vgg is None and self._fallback == extractor

    def feature_pair(self, real: Tensor, fake: Tensor, fake_features: Sequence[Tensor] | None = None,
                     ) -> tuple[Sequence[Tensor], list[Tensor]]:
        """(φ(I'), φ(I)): the output's features with their graph, the real image's without one.
        ``fake_features``: ``self.features(fake)`` when the caller already has them."""
        with torch.no_grad():
            targets = [t.detach() for t in self.features(real)]
        return (self.features(fake) if fake_features is None else fake_features), targets

    def forward(self, real: Tensor, fake: Tensor, fake_features: Sequence[Tensor] | None = None) -> Tensor:
        """``fake_features``: ``self.features(fake)`` when the caller already has them."""
        return perceptual_distance(*self.feature_pair(real, fake, fake_features))


def perceptual_distance(fake_features: Sequence[Tensor], real_features: Sequence[Tensor]) -> Tensor:
    """Σ_j ‖φ_j(I) − φ_j(I')‖₁ over the selected layers (Eq. 7)."""
    return sum(F.l1_loss(f, t) for f, t in zip(fake_features, real_features, strict=True))


def gram_matrix(features: Tensor) -> Tensor:
    """``F Fᵀ / (C · H · W)`` per image: (B, C, H, W) -> (B, C, C) (the authors' StyleLoss.gram)."""
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def style_loss(fake_features: Sequence[Tensor], real_features: Sequence[Tensor]) -> Tensor:
    """L_style = Σ_j ‖G(φ_j(I')) − G(φ_j(I))‖₁ with G the Gram matrix, over the perceptual loss's layers:
    the authors' code's StyleLoss (weight 3.0 there, ``loss.style``); not in the paper's Eq. 12, so
    off by default. Computed in fp32 (autocast off): each Gram entry sums H·W products."""
    device = fake_features[0].device.type
    with torch.autocast(device, enabled=False):
        return sum(F.l1_loss(gram_matrix(f.float()), gram_matrix(t.float()))
                   for f, t in zip(fake_features, real_features, strict=True))


# --------------------------------------------------------------------------------------------
# The generator objective (Eq. 12)


class GeneratorLoss(nn.Module):
    """λ_rec L_rec + λ_per L_per + λ_tv L_tv + λ_edge L_edge + λ_G L_G (Eq. 12) + λ_match L_match
    (Section 3.1) + λ_kl KL (optional CA term, off by default) + λ_style L_style (the authors' code,
    off by default).

    Only terms with weight > 0 are built and computed; the KL term also needs sentence fusion (the
    conditioning augmentation lives there), the D(I', w) part of L_G the word-level discriminator
    (``model.word_level_discriminator``), and L_match the frozen DAMSM image encoder
    (``damsm_image``). L_per and L_style share one feature pass. ``terms`` lists what was built.
    The readings of the authors' code are selected by ``loss.tv_form``, ``loss.edge_operator``,
    ``loss.gan_form`` and ``loss.detach_adversarial`` (module docstring).
    """

    def __init__(self, cfg: ScaleConfig, perceptual_fallback: FeatureExtractor | None = None,
                 damsm_image: DamsmImageEncoder | None = None):
        super().__init__()
        lc = cfg.loss
        self.weights = {
            name: w
            for name, w in (
                ("rec", lc.rec),
                ("per", lc.per),
                ("tv", lc.tv),
                ("edge", lc.edge),
                ("gan", lc.gan),
                ("match", lc.match),
                ("kl", lc.kl if cfg.model.sentence_fusion_layers else 0.0),
                ("style", lc.style),
            )
            if w > 0
        }
        self.terms = tuple(self.weights)
        self.word_level = "gan" in self.weights and cfg.model.word_level_discriminator
        self.tv_form, self.edge_operator = lc.tv_form, lc.edge_operator
        self.gan_form, self.detach_adversarial = lc.gan_form, lc.detach_adversarial
        uses_features = "per" in self.weights or "style" in self.weights
        self.perceptual = PerceptualLoss(lc, perceptual_fallback) if uses_features else None
        damsm = cfg.text.damsm
        self.match_gammas = (damsm.gamma1, damsm.gamma2, damsm.gamma3)
        if "match" in self.weights and damsm_image is None:
            raise UserError(
                f"loss.match is {lc.match}: the text-matching loss needs the pretrained DAMSM image encoder "
                "(GeneratorLoss(damsm_image=...)); set loss.match: 0 to train without it"
            )
        # Not registered as a submodule (as the perceptual fallback): the caller owns and freezes it.
        object.__setattr__(self, "_damsm_image", damsm_image if "match" in self.weights else None)
        # Perceptual fallback and L_match on the same DAMSM image encoder: one pass over the output
        # serves both (DamsmImageEncoder.features_and_embeddings).
        self.shares_damsm_pass = (self.perceptual is not None and self._damsm_image is not None
                                  and self.perceptual.uses(self._damsm_image.features))

    def forward(
        self,
        real: Tensor,
        fake: Tensor,
        *,
        aux: dict | None = None,
        global_d: GlobalDiscriminator | None = None,
        word_d: WordLevelDiscriminator | None = None,
        mask: Tensor | None = None,
        words: Tensor | None = None,
        word_mask: Tensor | None = None,
        sent: Tensor | None = None,
        class_ids: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``real`` I and ``fake`` I' (the composite, with its graph to the generator).

        ``aux`` is the generator's aux output (for KL); ``global_d`` / ``word_d`` are the current
        discriminators (for L_G; the relativistic form pairs I' with ``real``), ``mask``, ``words``,
        ``word_mask`` what D(I', w) needs (``mask`` also the authors' hole TV); L_match also
        takes ``sent`` and the batch's ``class_ids`` (None: every other caption is a negative).
        Returns the weighted total and the unweighted value of every built term (detached, for
        logging), with ``gan_global`` / ``gan_word`` splitting ``gan``.
        """
        values: dict[str, Tensor] = {}
        fake_features = embeddings = None
        if self.shares_damsm_pass:
            fake_features, *embeddings = self._damsm_image.features_and_embeddings(fake)
        if "rec" in self.weights:
            values["rec"] = reconstruction_loss(real, fake)
        if self.perceptual is not None:
            fakes, targets = self.perceptual.feature_pair(real, fake, fake_features)
            if "per" in self.weights:
                values["per"] = perceptual_distance(fakes, targets)
            if "style" in self.weights:
                values["style"] = style_loss(fakes, targets)
        if "tv" in self.weights:
            if self.tv_form == "authors-hole":
                if mask is None:
                    raise ValueError("GeneratorLoss: loss.tv_form 'authors-hole' needs the mask")
                values["tv"] = authors_hole_tv_loss(fake, mask)
            else:
                values["tv"] = total_variation_loss(fake)
        if "edge" in self.weights:
            values["edge"] = edge_loss(real, fake, self.edge_operator)
        if "gan" in self.weights:
            if global_d is None:
                raise ValueError("GeneratorLoss: loss.gan > 0 needs global_d")
            check_pairing(global_d, self.gan_form)
            # The authors' code: the adversarial terms see the output detached, so no gradient reaches G.
            judged = fake.detach() if self.detach_adversarial else fake
            logits = global_d.score(judged, real)
            real_logits = global_d.score(real, judged) if self.gan_form == "relativistic-ls" else None
            word_log_prob = None
            if self.word_level:
                if word_d is None or mask is None or words is None or word_mask is None:
                    raise ValueError(
                        "GeneratorLoss: the word-level discriminator needs word_d, mask, words and word_mask"
                    )
                word_log_prob = word_d(judged, mask, words, word_mask)
            values["gan"] = generator_gan_loss(logits, word_log_prob, real_logits=real_logits, form=self.gan_form)
            extra = {"gan_global": generator_global_gan_loss(logits, real_logits, self.gan_form).detach()}
            if word_log_prob is not None:
                extra["gan_word"] = -word_log_prob.mean().detach()
        if "match" in self.weights:
            if words is None or word_mask is None or sent is None:
                raise ValueError("GeneratorLoss: loss.match > 0 needs words, word_mask and sent")
            if embeddings is None:
                values["match"] = text_matching_loss(self._damsm_image, fake, words, sent, word_mask, class_ids,
                                                     self.match_gammas)
            else:
                values["match"] = matching_loss(*embeddings, words, sent, word_mask, class_ids, self.match_gammas)
        if "kl" in self.weights:
            if not aux or not aux.get("ca_mu"):
                raise ValueError(
                    "GeneratorLoss: loss.kl > 0 with sentence fusion needs the generator's aux (ca_mu, ca_logvar)"
                )
            kls = [kl_divergence(aux["ca_mu"][k], aux["ca_logvar"][k]) for k in aux["ca_mu"]]
            values["kl"] = torch.stack(kls).mean()  # mean over fusion layers: λ_kl keeps one meaning

        total = sum((self.weights[name] * value for name, value in values.items()), real.new_zeros(()))
        logged = {name: value.detach() for name, value in values.items()}
        if "gan" in values:
            logged.update(extra)
        logged["total"] = total.detach()
        return total, logged
