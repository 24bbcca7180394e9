"""The readings of the authors' code (cjfdl-lab/CSF-GAN) behind the config keys of fidelity round three:
the patch and centre-mean discriminators, the relativistic least-squares GAN form, the Laplacian edge,
the hole TV, the style loss, unnormalised VGG inputs, the detached adversarial input and the update
order, each against hand values or the parameter counts of the authors' networks."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from csfgan.config import LossConfig, apply_variant, load_scale, load_variant, parse_overrides
from csfgan.losses import (
    GeneratorLoss,
    PerceptualLoss,
    authors_hole_tv_loss,
    discriminator_loss,
    edge_loss,
    generator_gan_loss,
    gram_matrix,
    laplacian_rgb,
    relativistic_ls_discriminator_loss,
    relativistic_ls_generator_loss,
    style_loss,
)
from csfgan.models.discriminators import GlobalDiscriminator, WordLevelDiscriminator, log_one_minus_exp
from csfgan.models.generator import Generator
from csfgan.models.params import count_parameters
from csfgan.step import Models, training_step
from tests.test_models import B, T, inputs

PAPER_PATCH_D_PARAMETERS = 2_767_809  # the authors' PatchDiscriminator.discriminator, 6 input channels
PAPER_CENTRE_MEAN_WLD_PARAMETERS = 2_888_385  # its local_discriminator + gen_weight


def smoke(*overrides: str, variant: str = "full"):
    return parse_overrides(apply_variant(load_scale("smoke"), load_variant(variant)), list(overrides))


def paper(*overrides: str):
    return parse_overrides(apply_variant(load_scale("paper"), load_variant("full")), list(overrides))


def only(cfg, **weights):
    """``cfg`` with every generator loss weight 0 except ``weights``."""
    zero = dict(rec=0.0, per=0.0, tv=0.0, edge=0.0, gan=0.0, match=0.0, kl=0.0, style=0.0)
    cfg.loss = dataclasses.replace(cfg.loss, **{**zero, **weights})
    return cfg


@pytest.fixture(autouse=True)
def empty_hub(tmp_path, monkeypatch):
    """No VGG16 in the torch hub cache, whatever this machine has: the perceptual fallback is used."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


def tiny_extractor(x):
    return [F.avg_pool2d(x, 2), x.mean(1, keepdim=True)]


# --------------------------------------------------------------------------------------------
# Discriminators


def test_paper_scale_patch_discriminator_has_the_authors_parameter_count():
    cfg = paper("loss.gan_form=relativistic-ls")
    with torch.device("meta"):
        d = GlobalDiscriminator(cfg)
        logits = d.score(torch.empty(2, 3, 256, 256), torch.empty(2, 3, 256, 256))
    assert d.in_channels == 6
    assert count_parameters(d) == PAPER_PATCH_D_PARAMETERS
    assert logits.shape == (2, 30 * 30)  # 256 -> 128 -> 64 -> 32 -> 31 -> 30
    with torch.device("meta"):  # the BCE form judges single images: 3 input channels, 16·64·3 fewer weights
        assert count_parameters(GlobalDiscriminator(paper())) == PAPER_PATCH_D_PARAMETERS - 3 * 64 * 16


def test_paper_scale_centre_mean_word_discriminator_has_the_authors_parameter_count():
    cfg = paper("model.word_discriminator_regions=centre-mean")
    with torch.device("meta"):
        wd = WordLevelDiscriminator(cfg)
        v = wd.features(wd.centre_crop(torch.empty(2, 3, 256, 256)))
    assert count_parameters(wd) == PAPER_CENTRE_MEAN_WLD_PARAMETERS
    assert v.shape == (2, 512, 8, 8)  # the 128² centre crop to 8×8
    assert wd.word_condition.out_features == 512 + 1


def test_patch_discriminator_layout_and_the_old_dcgan_reading():
    cfg = smoke()
    d = GlobalDiscriminator(cfg)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.stride[0], c.out_channels) for c in convs] == [(2, 8), (2, 16), (2, 32), (1, 32), (1, 1)]  # cap 32
    assert all(c.kernel_size == (4, 4) and c.padding == (1, 1) and c.bias is not None for c in convs)
    norms = [m for m in d.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    assert len(norms) == 3 and not any(n.affine for n in norms)
    assert not any("parametrizations" in name for name, _ in d.named_parameters())  # no spectral norm
    image = inputs(cfg)[0]
    assert d(image).shape == (B, 2 * 2)  # 32 -> 16 -> 8 -> 4 -> 3 -> 2: a map of logits, flattened
    assert d.score(image, None).shape == (B, 4)  # single images: the partner is not used
    old = GlobalDiscriminator(smoke("model.global_discriminator=dcgan-sn"))
    assert old(image).shape == (B,) and any("parametrizations" in n for n, _ in old.named_parameters())


def test_relativistic_discriminator_judges_pairs_on_the_channels():
    cfg = smoke("loss.gan_form=relativistic-ls")
    d = GlobalDiscriminator(cfg).eval()
    a, b = inputs(cfg, 0)[0], inputs(cfg, 1)[0]
    torch.testing.assert_close(d.score(a, b), d(torch.cat([a, b], 1)))
    assert not torch.allclose(d.score(a, b), d.score(b, a))
    with pytest.raises(ValueError, match="partner"):
        d.score(a)


def test_centre_mean_word_discriminator_by_loops():
    """log D = Σ_i α_i log min(β_i + 1e-7, 1) over all T words, padding included (the authors' code)."""
    cfg = smoke("model.word_discriminator_regions=centre-mean")
    wd = WordLevelDiscriminator(cfg).double()
    wd.requires_grad_(False)
    image, mask, _, words, word_mask = (x.double() if x.is_floating_point() else x for x in inputs(cfg))
    words[1, :, 4:] = 0  # padding positions as the text encoder leaves them
    log_d = wd(image, mask, words, word_mask)
    assert log_d.shape == (B,) and (log_d < 0).all()

    v = wd.features(image[:, :, 8:24, 8:24]).mean(dim=(2, 3))  # 32 px: the 16² centre crop
    lin = wd.word_condition
    for b in range(B):
        mean_word = words[b].mean(1)  # over all T positions
        e = [math.exp(float(mean_word @ words[b, :, i])) for i in range(T)]
        alpha = [x / sum(e) for x in e]
        d_naive = 1.0
        for i in range(T):
            wb = lin.weight @ words[b, :, i] + lin.bias
            beta = 1 / (1 + math.exp(-(float(wb[:-1] @ v[b]) + float(wb[-1]))))
            d_naive *= min(beta + 1e-7, 1.0) ** alpha[i]
        assert math.exp(float(log_d[b])) == pytest.approx(d_naive, rel=1e-9)
        if b == 1:  # padding words weigh in: exp(w̄ · 0) / Σ > 0
            assert all(a > 0 for a in alpha[4:]) and alpha[4] == pytest.approx(1 / sum(e))
    attention = wd.centre_mean_attention(words)
    assert (attention[1, 4:] > 0).all()
    torch.testing.assert_close(attention.sum(1), torch.ones(B, dtype=torch.double))


def test_centre_mean_word_discriminator_sees_only_the_centre_crop():
    cfg = smoke("model.word_discriminator_regions=centre-mean")
    wd = WordLevelDiscriminator(cfg)
    image, mask, _, words, word_mask = inputs(cfg)
    outside, inside = image.clone(), image.clone()
    outside[:, :, :8] = 0.9  # the top quarter
    inside[:, :, 12, 12] = -0.9
    torch.testing.assert_close(wd(outside, mask, words, word_mask), wd(image, mask, words, word_mask))
    assert not torch.allclose(wd(inside, mask, words, word_mask), wd(image, mask, words, word_mask))
    assert torch.isfinite(log_one_minus_exp(wd(image, mask, words, word_mask))).all()


# --------------------------------------------------------------------------------------------
# The relativistic least-squares form


def test_relativistic_least_squares_by_hand():
    y_r, y_f = torch.tensor([1.0, 2.0]), torch.tensor([0.0, -1.0])  # means 1.5 and −0.5
    # D: ½ (mean((y_r + 0.5 − 1)²) + mean((y_f − 1.5 + 1)²)) = ½ ((0.25 + 2.25)/2 + (0.25 + 2.25)/2)
    assert relativistic_ls_discriminator_loss(y_r, y_f).item() == pytest.approx(1.25)
    # G: ½ (mean((y_r + 0.5 + 1)²) + mean((y_f − 1.5 − 1)²)) = ½ ((6.25 + 12.25)/2 + (6.25 + 12.25)/2)
    assert relativistic_ls_generator_loss(y_r, y_f).item() == pytest.approx(9.25)
    # Patch maps: the means run over images and patches alike.
    assert relativistic_ls_generator_loss(y_r.view(1, 2), y_f.view(2, 1)).item() == pytest.approx(9.25)

    word_real, word_fake = torch.tensor([-0.2, -1.5]), torch.tensor([-0.7, -0.01])
    word_d = (-word_real.mean() - torch.log(1 - word_fake.exp()).mean()).item()
    got_d = discriminator_loss(y_r, y_f, word_real, word_fake, form="relativistic-ls").item()
    assert got_d == pytest.approx(1.25 + word_d / 2)  # the authors halve their two BCE terms
    got_g = generator_gan_loss(y_f, word_fake, real_logits=y_r, form="relativistic-ls").item()
    assert got_g == pytest.approx(9.25 - word_fake.mean().item())  # BCE(D(I', w), 1)
    with pytest.raises(ValueError, match="real pair"):
        generator_gan_loss(y_f, form="relativistic-ls")
    with pytest.raises(ValueError, match="gan_form"):
        discriminator_loss(y_r, y_f, form="hinge")


def test_generator_loss_feeds_the_relativistic_pairs():
    cfg = only(smoke("loss.gan_form=relativistic-ls"), gan=1.0)
    torch.manual_seed(0)
    g, d, wd = Generator(cfg), GlobalDiscriminator(cfg).eval(), WordLevelDiscriminator(cfg).eval()
    image, mask, sent, words, word_mask = inputs(cfg)
    _, fake, aux = g(image, mask, sent, words, word_mask)
    _, logged = GeneratorLoss(cfg)(image, fake, aux=aux, global_d=d, word_d=wd, mask=mask, words=words,
                                   word_mask=word_mask)
    with torch.no_grad():
        expected = relativistic_ls_generator_loss(d(torch.cat([image, fake], 1)), d(torch.cat([fake, image], 1)))
    torch.testing.assert_close(logged["gan_global"], expected)
    torch.testing.assert_close(logged["gan"], logged["gan_global"] + logged["gan_word"])


# --------------------------------------------------------------------------------------------
# Pixel-space terms of the authors' code


def test_laplacian_rgb_edge_loss_by_hand():
    delta = torch.zeros(1, 3, 3, 3)
    delta[0, 0, 1, 1] = 1.0
    lap = laplacian_rgb(delta)
    expected = torch.full((3, 3), -1 / 3)
    expected[1, 1] = 8 / 3  # zero padding: every neighbour of the centre sees −1/3 of it
    for c in range(3):  # every output channel is the same RGB-summed Laplacian
        torch.testing.assert_close(lap[0, c], expected)
    assert edge_loss(delta, torch.zeros_like(delta), "laplacian-rgb").item() == pytest.approx((8 / 3 + 8 / 3) / 9)
    # Summed over RGB: equal and opposite edges in two channels cancel (a per-channel operator would not).
    opposite = torch.zeros(1, 3, 5, 5)
    opposite[0, 0, 2, 2], opposite[0, 1, 2, 2] = 1.0, -1.0
    assert edge_loss(opposite, torch.zeros_like(opposite), "laplacian-rgb").item() == 0
    assert edge_loss(opposite, torch.zeros_like(opposite), "sobel").item() > 0
    # A constant image: the interior is flat, only the zero padding makes border values (same for both).
    flat = torch.full((1, 3, 4, 4), 0.5)
    assert laplacian_rgb(flat)[0, 0, 1:3, 1:3].abs().max().item() == pytest.approx(0, abs=1e-6)


def test_authors_hole_tv_by_hand():
    image = torch.arange(9.0).view(1, 1, 3, 3)  # [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    padded = F.pad(image, (1, 1, 1, 1))[0, 0]
    # above + left − 2 · centre at each pixel, zero outside the image
    grad = [[float(padded[y, x + 1] + padded[y + 1, x] - 2 * padded[y + 1, x + 1]) for x in range(3)]
            for y in range(3)]
    assert grad == [[0, -2, -3], [-6, -4, -4], [-9, -4, -4]]
    full = torch.ones(1, 1, 3, 3)
    assert authors_hole_tv_loss(image, full).item() == pytest.approx(36 / 9)
    centre = torch.zeros(1, 1, 3, 3)
    centre[0, 0, 1, 1] = 1
    assert authors_hole_tv_loss(image, centre).item() == pytest.approx(4 / 9)  # mean over all 9, hole or not
    rgb = image.expand(2, 3, 3, 3)  # per channel, the mask broadcast over channels
    assert authors_hole_tv_loss(rgb, centre.expand(2, 1, 3, 3)).item() == pytest.approx(4 / 9)

    cfg = only(smoke("loss.tv_form=authors-hole"), tv=1.0)
    real = torch.zeros(1, 3, 32, 32)
    with pytest.raises(ValueError, match="mask"):
        GeneratorLoss(cfg)(real, real)
    _, logged = GeneratorLoss(cfg)(real, torch.ones(1, 3, 32, 32), mask=torch.ones(1, 1, 32, 32))
    # A constant 1: 0 inside, −1 on the first row and column (one neighbour is padding), −2 at the corner.
    assert logged["tv"].item() == pytest.approx((2 * 31 + 2) / 32**2)


def test_style_loss_by_hand_and_through_the_fallback_features():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)  # C = 2, H·W = 2
    torch.testing.assert_close(gram_matrix(f), torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]) / 4)
    zeros = torch.zeros_like(f)
    assert style_loss([f], [zeros]).item() == pytest.approx((1.25 + 2.75 + 2.75 + 6.25) / 4)
    assert style_loss([f, 2 * f], [zeros, zeros]).item() == pytest.approx(13 / 4 * (1 + 4))  # summed over layers
    assert style_loss([f, 2 * f], [f, 2 * f]).item() == 0

    cfg = only(smoke("loss.style=3.0"), style=3.0)
    loss = GeneratorLoss(cfg, perceptual_fallback=tiny_extractor)
    assert loss.terms == ("style",) and loss.perceptual is not None  # the features are built for style alone
    image = inputs(cfg)[0]
    total, logged = loss(image, image.clone())
    assert total.item() == 0 and logged["style"].item() == 0
    fake = (image.flip(-1) * 0.5).requires_grad_()
    total, logged = loss(image, fake)
    total.backward()
    assert total.item() == pytest.approx(3.0 * logged["style"].item()) and fake.grad.abs().sum() > 0


def test_vgg_inputs_unnormalised_as_the_authors_feed_them(tmp_path):
    torch.manual_seed(0)
    block1 = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])[:5]  # up to pool1
    path = tmp_path / "vgg-block1.pth"
    torch.save({f"features.{k}": v for k, v in block1.state_dict().items()}, path)
    image = torch.rand(2, 3, 16, 16) * 2 - 1
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    for normalise, seen in ((False, image), (True, ((image + 1) / 2 - mean) / std)):
        lc = LossConfig(perceptual_weights_path=str(path), perceptual_layers=["pool1"],
                        perceptual_imagenet_normalize=normalise)
        (out,) = PerceptualLoss(lc).features(image)
        with torch.no_grad():
            torch.testing.assert_close(out, block1(seen))


# --------------------------------------------------------------------------------------------
# Detached adversarial input


@pytest.mark.parametrize("gan_form", ["bce", "relativistic-ls"])
@pytest.mark.parametrize("detach", [True, False])
def test_detached_adversarial_input_gives_the_generator_no_gan_gradient(gan_form, detach):
    cfg = only(smoke(f"loss.gan_form={gan_form}", f"loss.detach_adversarial={str(detach).lower()}"), gan=1.0)
    torch.manual_seed(0)
    g, d, wd = Generator(cfg), GlobalDiscriminator(cfg), WordLevelDiscriminator(cfg)
    image, mask, sent, words, word_mask = inputs(cfg)
    _, fake, aux = g(image, mask, sent, words, word_mask)
    total, logged = GeneratorLoss(cfg)(image, fake, aux=aux, global_d=d, word_d=wd, mask=mask, words=words,
                                       word_mask=word_mask)
    assert torch.isfinite(logged["gan"]) and logged["gan"] > 0  # logged either way
    params = [p for p in g.parameters() if p.requires_grad]
    grads = torch.autograd.grad(total, params, allow_unused=True, retain_graph=True)
    g_norm = sum(float(x.abs().sum()) for x in grads if x is not None)
    if detach:
        assert g_norm == 0
    else:
        assert g_norm > 0
    # The discriminators' path is there in both cases (D is not what is detached).
    assert any(x.abs().sum() > 0 for x in torch.autograd.grad(total, list(d.parameters())))


# --------------------------------------------------------------------------------------------
# Update order


class _Recording(GeneratorLoss):
    """A GeneratorLoss that records the discriminators' weights each call sees."""

    def forward(self, *args, global_d=None, word_d=None, **kwargs):
        self.seen = [p.detach().clone() for net in (global_d, word_d) for p in net.parameters()]
        return super().forward(*args, global_d=global_d, word_d=word_d, **kwargs)


def _d_params(models):
    return [p.detach().clone() for p in models.discriminator_parameters()]


@pytest.mark.parametrize("order", ["g-first", "d-first"])
def test_update_order_decides_which_discriminator_the_generator_step_sees(order):
    cfg = only(smoke(), rec=1.0, gan=1.0)
    torch.manual_seed(0)
    models = Models(cfg)
    assert models.update_order == "g-first"  # the default, train.update_order
    loss_fn = _Recording(cfg)
    opt_g = torch.optim.SGD(models.generator.parameters(), lr=0.1)
    opt_d = torch.optim.SGD(list(models.discriminator_parameters()), lr=0.1)
    image, mask, sent, words, word_mask = inputs(cfg)
    before = _d_params(models)
    manual = copy.deepcopy(models)

    torch.manual_seed(1)
    order_arg = {} if order == "g-first" else {"update_order": order}  # g-first: the models' default
    loss_d, _ = training_step(models, loss_fn, opt_g, opt_d, image, mask, words, sent, word_mask, **order_arg)
    after = _d_params(models)
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))  # D was updated
    expected = before if order == "g-first" else after
    assert all(torch.equal(s, e) for s, e in zip(loss_fn.seen, expected, strict=True))

    # The D step judged the output of the generator before its update, with D's weights before the step.
    torch.manual_seed(1)
    with torch.no_grad():
        _, fake, _ = manual.generator(image, mask, sent, words, word_mask)
        expected_d = discriminator_loss(manual.global_d(image), manual.global_d(fake),
                                        manual.word_d(image, mask, words, word_mask),
                                        manual.word_d(fake, mask, words, word_mask))
    torch.testing.assert_close(loss_d, expected_d)


def test_authors_code_variant_trains_a_step_in_either_order():
    cfg = apply_variant(load_scale("smoke"), load_variant("authors-code"))
    image, mask, sent, words, word_mask = inputs(cfg)
    for order in ("g-first", "d-first"):
        torch.manual_seed(0)
        models = Models(cfg)
        loss_fn = GeneratorLoss(only(copy.deepcopy(cfg), rec=1.0, per=0.05, style=3.0, tv=0.1, edge=0.5, gan=0.002),
                                perceptual_fallback=tiny_extractor)
        opt_g = torch.optim.Adam(models.generator.parameters())
        opt_d = torch.optim.Adam(list(models.discriminator_parameters()))
        g_before = [p.detach().clone() for p in models.generator.parameters()]
        loss_d, terms = training_step(models, loss_fn, opt_g, opt_d, image, mask, words, sent, word_mask,
                                      update_order=order)
        assert torch.isfinite(loss_d) and all(torch.isfinite(v) for v in terms.values())
        assert {"style", "tv", "edge", "gan", "gan_global", "gan_word"} <= set(terms)
        assert any(not torch.equal(a, b) for a, b in zip(g_before, models.generator.parameters(), strict=True))
    with pytest.raises(ValueError, match="update_order"):
        training_step(models, loss_fn, opt_g, opt_d, image, mask, words, sent, word_mask, update_order="both")


def test_a_discriminator_and_loss_of_different_gan_forms_are_refused():
    cfg = only(smoke(), gan=1.0)
    paired = GlobalDiscriminator(smoke("loss.gan_form=relativistic-ls"))
    image, mask, sent, words, word_mask = inputs(cfg)
    with pytest.raises(ValueError, match="one config"):
        GeneratorLoss(cfg)(image, image, global_d=paired, word_d=None, mask=mask, words=words, word_mask=word_mask)
