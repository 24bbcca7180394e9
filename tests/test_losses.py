"""The losses of Section 3.4 (Eq. 6-12) against hand values, and their gradients to the generator."""

from __future__ import annotations

import dataclasses
import math
import os

import pytest
import torch
import torch.nn.functional as F
import torchvision

from csfgan.config import LossConfig, apply_variant, load_scale, load_variant
from csfgan.errors import UserError
from csfgan.losses import (
    GeneratorLoss,
    PerceptualLoss,
    PerceptualWeightsError,
    discriminator_loss,
    edge_loss,
    generator_gan_loss,
    kl_divergence,
    reconstruction_loss,
    sentence_snr,
    sobel,
    text_matching_loss,
    total_variation_loss,
)
from csfgan.models.damsm import DamsmImageEncoder, sent_loss, words_loss
from csfgan.models.discriminators import GlobalDiscriminator, WordLevelDiscriminator
from csfgan.models.generator import Generator
from csfgan.provenance import file_sha256
from tests.test_models import inputs


def tiny_extractor(x):
    """A stand-in for the DAMSM image encoder: differentiable, parameter-free feature maps."""
    return [F.avg_pool2d(x, 2), x.mean(1, keepdim=True)]


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A randomly initialised torchvision VGG16 state_dict, saved as the hub file would be."""
    path = tmp_path_factory.mktemp("vgg") / "random-vgg16.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.vgg16().state_dict(), path)
    return path


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """A torch hub cache without VGG16, whatever this machine has."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub"


# --------------------------------------------------------------------------------------------
# Pixel-space terms


def test_reconstruction_loss_is_mean_absolute_error():
    real, fake = torch.tensor([[0.0, 1.0], [2.0, 3.0]]), torch.tensor([[1.0, 1.0], [0.0, 3.0]])
    assert reconstruction_loss(real, fake).item() == pytest.approx((1 + 0 + 2 + 0) / 4)  # Eq. 6


def test_total_variation_by_hand():
    image = torch.tensor([[0.0, 1.0], [3.0, 5.0]])[None, None]
    # above: |3 - 0|, |5 - 1| -> mean 3.5; left: |1 - 0|, |5 - 3| -> mean 1.5
    assert total_variation_loss(image).item() == pytest.approx(5.0)
    assert total_variation_loss(torch.full((1, 3, 4, 4), 0.3)).item() == 0


def test_sobel_edge_loss_by_hand():
    step = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])[None, None]
    # at the single interior pixel: ∂x = 1·1 + 2·1 + 1·1 = 4, ∂y = 0
    assert sobel(step).flatten().tolist() == [4.0, 0.0]
    assert edge_loss(step, step).item() == 0
    assert edge_loss(step, torch.zeros_like(step)).item() == pytest.approx((4 + 0) / 2)  # Eq. 9
    assert edge_loss(step, step.transpose(2, 3)).item() == pytest.approx((4 + 4) / 2)  # ∂x ↔ ∂y
    rgb = torch.rand(2, 3, 8, 8)
    assert sobel(rgb).shape == (2, 6, 6, 6)
    assert edge_loss(rgb, rgb).item() == 0
    # per channel: an edge in one colour channel only is still an edge
    assert (
        edge_loss(rgb, rgb + torch.linspace(0, 1, 8).view(1, 1, 1, 8) * torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1)) > 0
    )


def test_kl_divergence_by_hand():
    assert kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3)).item() == 0
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(2.0)]])
    # per element 0.5 (μ² + σ² − 1 − log σ²): 0.5, 0.5 (1 − log 2)
    assert kl_divergence(mu, logvar).item() == pytest.approx((0.5 + 0.5 * (1 - math.log(2))) / 2)


# --------------------------------------------------------------------------------------------
# Adversarial terms (Eq. 10-11)


def test_gan_losses_match_the_probability_forms():
    logits_real, logits_fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    word_real, word_fake = torch.tensor([-0.2, -1.5]), torch.tensor([-0.7, -0.01])
    d = torch.sigmoid
    expected_g = -(torch.log(d(logits_fake)) + word_fake).mean()  # Eq. 10
    torch.testing.assert_close(generator_gan_loss(logits_fake, word_fake), expected_g)
    torch.testing.assert_close(generator_gan_loss(logits_fake), -torch.log(d(logits_fake)).mean())
    expected_d = (
        -(torch.log(d(logits_real)) + word_real).mean()
        - (torch.log(1 - d(logits_fake)) + torch.log(1 - word_fake.exp())).mean()
    )  # Eq. 11
    torch.testing.assert_close(discriminator_loss(logits_real, logits_fake, word_real, word_fake), expected_d)
    with pytest.raises(ValueError, match="both"):
        discriminator_loss(logits_real, logits_fake, word_real, None)


def test_gan_losses_are_finite_for_saturated_discriminators():
    big = torch.tensor([100.0, -100.0], requires_grad=True)
    loss = generator_gan_loss(big) + discriminator_loss(
        big, big, torch.tensor([-1e-9, -200.0]), torch.tensor([0.0, -200.0])
    )
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(big.grad).all()


# --------------------------------------------------------------------------------------------
# Perceptual loss (Eq. 7): where its network comes from is recorded, never silently substituted


def test_perceptual_loss_loads_vgg16_from_the_configured_file(vgg_file, empty_hub):
    loss = PerceptualLoss(LossConfig(perceptual_weights_path=str(vgg_file)))
    assert loss.source == f"vgg16:sha256:{file_sha256(vgg_file)[:16]}" and loss.weights_file == str(vgg_file)
    saved = torch.load(vgg_file, weights_only=True)
    for i in (0, 14):  # conv1_1 and conv3_3 carry the file's weights
        torch.testing.assert_close(loss.vgg.features[i].weight, saved[f"features.{i}.weight"])
    assert len(loss.vgg.features) == 17  # up to pool3, the deepest default layer (the authors')
    assert not any(p.requires_grad for p in loss.parameters())
    real = torch.rand(2, 3, 32, 32) * 2 - 1
    fake = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_()
    assert loss(real, real).item() == 0
    value = loss(real, fake)
    value.backward()
    assert value > 0 and fake.grad.abs().sum() > 0


def test_perceptual_loss_uses_the_imagenet_file_in_the_torch_cache(vgg_file, empty_hub):
    target = empty_hub / "checkpoints" / os.path.basename(torchvision.models.VGG16_Weights.IMAGENET1K_V1.url)
    target.parent.mkdir(parents=True)
    target.symlink_to(vgg_file)
    loss = PerceptualLoss(LossConfig(perceptual_layers=["relu1_2"]))
    assert loss.source == f"vgg16-imagenet:sha256:{file_sha256(target)[:16]}"
    assert len(loss.vgg.features) == 4


def test_perceptual_source_names_the_weights_by_content_not_by_place(vgg_file, empty_hub, tmp_path, monkeypatch):
    """A retry on a node whose TORCH_HOME is elsewhere is the same run (the source is in the run's identity);
    other bytes are another source."""
    name = os.path.basename(torchvision.models.VGG16_Weights.IMAGENET1K_V1.url)
    sources = []
    for hub in (empty_hub, tmp_path / "other-node-hub"):
        (hub / "checkpoints").mkdir(parents=True, exist_ok=True)
        (hub / "checkpoints" / name).write_bytes(vgg_file.read_bytes())
        monkeypatch.setattr(torch.hub, "get_dir", lambda hub=hub: str(hub))
        loss = PerceptualLoss(LossConfig(perceptual_layers=["relu1_2"]))
        assert loss.weights_file == str(hub / "checkpoints" / name)
        sources.append(loss.source)
    assert sources[0] == sources[1] and str(tmp_path) not in sources[0]
    altered = dict(torch.load(vgg_file, weights_only=True))
    altered["features.0.bias"] = altered["features.0.bias"] + 1
    other = tmp_path / "altered.pth"
    torch.save(altered, other)
    assert PerceptualLoss(LossConfig(perceptual_weights_path=str(other))).source.split(":", 1)[1] != \
        sources[0].split(":", 1)[1]


def test_perceptual_loss_falls_back_to_the_named_network_and_records_it(empty_hub):
    loss = PerceptualLoss(LossConfig(), fallback=tiny_extractor)
    assert loss.source == "damsm-image-encoder" and loss.vgg is None
    encoder = torch.nn.Conv2d(3, 2, 1)  # a module fallback stays the caller's: not in the loss's parameters
    module_loss = PerceptualLoss(LossConfig(), fallback=lambda x: [encoder(x)])
    assert list(module_loss.parameters()) == [] and PerceptualLoss(LossConfig(), fallback=encoder).state_dict() == {}
    real, fake = torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    assert loss(real, fake).item() == pytest.approx(2.0)  # |1 − 0| on each of the two feature maps


def test_perceptual_loss_can_be_told_to_use_the_fallback_even_with_vgg(vgg_file):
    cfg = LossConfig(perceptual_network="damsm-image-encoder", perceptual_weights_path=str(vgg_file))
    assert PerceptualLoss(cfg, fallback=tiny_extractor).source == "damsm-image-encoder"


@pytest.mark.parametrize("fallback_name", ["", "none"])
def test_perceptual_loss_without_weights_or_fallback_is_a_clear_error(empty_hub, fallback_name):
    with pytest.raises(PerceptualWeightsError, match="names no fallback"):
        PerceptualLoss(LossConfig(perceptual_fallback=fallback_name), fallback=tiny_extractor)


def test_perceptual_loss_with_a_named_fallback_that_was_not_passed_is_an_error(empty_hub):
    with pytest.raises(PerceptualWeightsError, match="no such network was passed"):
        PerceptualLoss(LossConfig())


def test_perceptual_loss_rejects_bad_paths_files_layers_and_networks(tmp_path, vgg_file, empty_hub):
    with pytest.raises(PerceptualWeightsError, match="no such file"):
        PerceptualLoss(LossConfig(perceptual_weights_path=str(tmp_path / "missing.pth")), fallback=tiny_extractor)
    other = tmp_path / "other.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), other)
    with pytest.raises(UserError, match="not a torchvision VGG16 state_dict"):
        PerceptualLoss(LossConfig(perceptual_weights_path=str(other)))
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(UserError, match="cannot be read as a PyTorch state_dict"):
        PerceptualLoss(LossConfig(perceptual_weights_path=str(tmp_path / "junk.pth")))
    with pytest.raises(UserError, match="unknown VGG16 layer"):
        PerceptualLoss(LossConfig(perceptual_weights_path=str(vgg_file), perceptual_layers=["relu9_9"]))
    with pytest.raises(PerceptualWeightsError, match="unknown"):
        PerceptualLoss(LossConfig(perceptual_network="resnet50"))


# --------------------------------------------------------------------------------------------
# The generator objective (Eq. 12)


def smoke_cfg(variant="full", **loss):
    cfg = apply_variant(load_scale("smoke"), load_variant(variant))
    cfg.loss = dataclasses.replace(cfg.loss, **loss)
    return cfg


def damsm_encoder(cfg):
    """A frozen DAMSM image encoder of the scale's shape (random weights: the wiring is what is tested)."""
    torch.manual_seed(1)
    enc = DamsmImageEncoder(cfg.resolution, cfg.text.hidden_dim, cfg.text.damsm.image_channels)
    return enc.eval().requires_grad_(False)


def test_generator_loss_builds_only_weighted_terms(empty_hub):
    cfg = smoke_cfg(per=0.0, tv=0.0, match=0.0)
    loss = GeneratorLoss(cfg)  # no VGG, no fallback, and no error: the perceptual term is not built
    assert loss.terms == ("rec", "edge", "gan") and loss.perceptual is None
    cfg = smoke_cfg(per=0.0, tv=0.0, kl=1.0)  # the kl variant's weight
    assert GeneratorLoss(cfg, damsm_image=damsm_encoder(cfg)).terms == ("rec", "edge", "gan", "match", "kl")
    # No CA, no KL even when asked; no DAMSM encoder needed without the text-matching term.
    assert GeneratorLoss(smoke_cfg("baseline", per=0.0, match=0.0, kl=1.0)).terms == ("rec", "tv", "edge", "gan")
    with pytest.raises(PerceptualWeightsError):
        GeneratorLoss(smoke_cfg(), damsm_image=damsm_encoder(cfg))  # λ_per > 0 and nothing to compute it with
    with pytest.raises(UserError, match="loss.match is 0.001: the text-matching loss needs the pretrained DAMSM"):
        GeneratorLoss(smoke_cfg(per=0.0))


@pytest.mark.parametrize("scale", ["smoke", "default", "paper"])
def test_shipped_scales_follow_the_paper_kl_off_text_matching_on(scale):
    """Neither the paper nor the authors' code has the CA KL term; Section 3.1 trains with the
    text-matching loss (0.001 in the authors' code). The variants switch them the other way."""
    cfg = load_scale(scale)
    assert cfg.loss.kl == 0.0 and cfg.loss.match == 0.001
    for variant in ("full", "baseline", "sfm", "wld"):
        assert apply_variant(cfg, load_variant(variant)).loss.kl == 0.0
    assert apply_variant(cfg, load_variant("kl")).loss.kl == 1.0
    assert apply_variant(cfg, load_variant("no-match")).loss.match == 0.0


def test_text_matching_loss_is_the_damsm_word_and_sentence_loss_of_the_output():
    cfg = smoke_cfg()
    enc = damsm_encoder(cfg)
    image, mask, sent, words, word_mask = inputs(cfg)
    class_ids = torch.tensor([3, 7])
    d = cfg.text.damsm
    regions, code = enc(image)
    expected = sum(words_loss(regions, words, word_mask, class_ids, d.gamma1, d.gamma2, d.gamma3)) + sum(
        sent_loss(code, sent, class_ids, d.gamma3))
    got = text_matching_loss(enc, image, words, sent, word_mask, class_ids, (d.gamma1, d.gamma2, d.gamma3))
    torch.testing.assert_close(got, expected)


def test_one_damsm_pass_serves_the_perceptual_and_matching_terms_as_two_passes_would(empty_hub):
    """With the perceptual fallback on the DAMSM image encoder that L_match uses, the loss runs that
    encoder once over the output: the same terms and the same gradient to the generator as the two
    separate passes (a stand-in extractor of equal outputs, which is not shared, gives those)."""
    only = {name: 0.0 for name in ("tv", "edge", "gan", "kl")}
    cfg = smoke_cfg(**only, per=0.5, match=0.5)
    enc = damsm_encoder(cfg)
    shared = GeneratorLoss(cfg, perceptual_fallback=enc.features, damsm_image=enc)
    separate = GeneratorLoss(cfg, perceptual_fallback=lambda x: enc.features(x), damsm_image=enc)
    assert shared.shares_damsm_pass and not separate.shares_damsm_pass
    image, mask, sent, words, word_mask = inputs(cfg)
    results = []
    for loss in (shared, separate):
        torch.manual_seed(0)
        g = Generator(cfg)
        _, fake, aux = g(image, mask, sent, words, word_mask)
        total, logged = loss(image, fake, aux=aux, words=words, word_mask=word_mask, sent=sent)
        total.backward()
        results.append((logged, [p.grad.clone() for p in g.parameters() if p.grad is not None]))
    (logged_a, grads_a), (logged_b, grads_b) = results
    assert logged_a.keys() == logged_b.keys() == {"rec", "per", "match", "total"}
    for name in logged_a:
        torch.testing.assert_close(logged_a[name], logged_b[name])
    assert len(grads_a) == len(grads_b) > 0
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(a, b)
    assert all(p.grad is None for p in enc.parameters())


def test_text_matching_term_trains_the_generator_not_the_damsm_encoder(empty_hub):
    """λ_match alone: gradient reaches the generator through the frozen DAMSM image encoder, whose
    weights receive none; its weight scales the total; at weight 0 the term is absent."""
    only = {name: 0.0 for name in ("rec", "per", "tv", "edge", "gan", "kl")}
    cfg = smoke_cfg(**only, match=0.5)
    enc = damsm_encoder(cfg)
    torch.manual_seed(0)
    g = Generator(cfg)
    loss = GeneratorLoss(cfg, damsm_image=enc)
    assert loss.terms == ("match",) and not list(loss.parameters())  # the encoder is not the loss's
    image, mask, sent, words, word_mask = inputs(cfg)
    _, fake, aux = g(image, mask, sent, words, word_mask)
    total, logged = loss(image, fake, aux=aux, words=words, word_mask=word_mask, sent=sent)
    assert total.item() == pytest.approx(0.5 * logged["match"].item()) and logged["match"] > 0
    total.backward()
    assert g.to_rgb[0].weight.grad.abs().sum() > 0 and g.stem[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in enc.parameters())
    assert "match" not in GeneratorLoss(smoke_cfg(**{**only, "rec": 1.0}, match=0.0)).terms
    with pytest.raises(ValueError, match="sent"):
        loss(image, fake, aux=aux, words=words, word_mask=word_mask)


def test_sentence_snr_is_caption_variance_over_noise_variance():
    """Var over the batch of the CA mean over the CA noise variance, per dimension, then averaged."""
    mu = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])  # per-dim batch variance 4, 4
    logvar = torch.log(torch.tensor([[1.0, 4.0], [1.0, 4.0], [1.0, 4.0]]))
    assert sentence_snr(mu, logvar).item() == pytest.approx((4 / 1 + 4 / 4) / 2)
    assert sentence_snr(torch.ones(4, 3), torch.zeros(4, 3)).item() == 0  # the same μ for every caption


ALL_TERMS = ("rec", "per", "tv", "edge", "gan", "kl")


@pytest.mark.parametrize("variant", ["full", "sfm"])
@pytest.mark.parametrize("term", ALL_TERMS)
def test_every_term_alone_sends_gradient_to_the_generator(variant, term, empty_hub):
    """With all other weights 0 each term trains the generator; L_G included (unlike the authors'
    code, which detaches the generator output in its GAN loss)."""
    cfg = smoke_cfg(variant, match=0.0, **{name: (1.0 if name == term else 0.0) for name in ALL_TERMS})
    torch.manual_seed(0)
    g, d = Generator(cfg), GlobalDiscriminator(cfg)
    wd = WordLevelDiscriminator(cfg) if cfg.model.word_level_discriminator else None
    loss = GeneratorLoss(cfg, perceptual_fallback=tiny_extractor)
    assert loss.terms == (term,)
    image, mask, sent, words, word_mask = inputs(cfg)
    _, fake, aux = g(image, mask, sent, words, word_mask)
    total, logged = loss(image, fake, aux=aux, global_d=d, word_d=wd, mask=mask, words=words, word_mask=word_mask)
    total.backward()
    assert set(logged) >= {term, "total"} and total.item() == pytest.approx(logged[term].item())
    if term == "kl":  # the KL term trains the conditioning augmentation only
        grads = [p.grad for p in g.conditioning.parameters()]  # the shared CA (model.shared_conditioning)
    else:
        grads = [g.to_rgb[0].weight.grad, g.stem[0].weight.grad, g.encoder[-1].conv[0].weight.grad]
    assert all(x is not None and x.abs().sum() > 0 for x in grads)


def test_word_level_adversarial_term_alone_trains_the_generator():
    """Only −log D(I', w): the word-level discriminator's signal reaches the generator by itself."""
    cfg = smoke_cfg("full")
    g, wd = Generator(cfg), WordLevelDiscriminator(cfg)
    image, mask, sent, words, word_mask = inputs(cfg)
    _, fake, _ = g(image, mask, sent, words, word_mask)
    (-wd(fake, mask, words, word_mask).mean()).backward()
    assert g.to_rgb[0].weight.grad.abs().sum() > 0 and g.word_fusion["4"].gamma.weight.grad.abs().sum() > 0


def test_generator_loss_logs_gan_parts_and_weights_the_total(empty_hub):
    cfg = smoke_cfg("full", kl=1.0)
    g, d, wd = Generator(cfg), GlobalDiscriminator(cfg), WordLevelDiscriminator(cfg)
    loss = GeneratorLoss(cfg, perceptual_fallback=tiny_extractor, damsm_image=damsm_encoder(cfg))
    image, mask, sent, words, word_mask = inputs(cfg)
    _, fake, aux = g(image, mask, sent, words, word_mask)
    total, logged = loss(
        image, fake, aux=aux, global_d=d.eval(), word_d=wd.eval(), mask=mask, words=words, word_mask=word_mask,
        sent=sent,
    )
    lc = cfg.loss
    expected = sum(getattr(lc, name) * logged[name] for name in (*ALL_TERMS, "match"))
    torch.testing.assert_close(total.detach(), expected)
    torch.testing.assert_close(logged["gan"], logged["gan_global"] + logged["gan_word"])
    with pytest.raises(ValueError, match="word_d"):
        loss(image, fake, aux=aux, global_d=d)
