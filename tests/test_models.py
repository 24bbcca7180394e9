"""The CSF-GAN networks against Section 3: shapes, composite, fusion placement, Eq. 2, 3 and 5."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from csfgan.config import VARIANTS_DIR, apply_variant, load_scale, load_variant, parse_overrides
from csfgan.data.masks import center_box, center_mask
from csfgan.losses import GeneratorLoss, discriminator_loss
from csfgan.models.damsm import DamsmImageEncoder
from csfgan.models.discriminators import GlobalDiscriminator, WordLevelDiscriminator, log_one_minus_exp
from csfgan.models.fusion import SentenceFusion, WordFusion
from csfgan.models.generator import Generator, dilated_padding, encoder_channels
from csfgan.models.params import (
    AUTHORS_GENERATOR_MODULES,
    AUTHORS_GENERATOR_PARAMETERS,
    PAPER_REPORTED_PARAMETERS,
    count_parameters,
    parameter_breakdown,
)

B, T = 2, 6


def smoke(variant: str = "full", **model):
    cfg = apply_variant(load_scale("smoke"), load_variant(variant))
    if model:
        cfg.model = dataclasses.replace(cfg.model, **model)
        cfg.validate("test")
    return cfg


def inputs(cfg, seed: int = 0):
    """A batch of images in [-1, 1], centre masks, and text features with padding in sample 1."""
    g = torch.Generator().manual_seed(seed)
    r, d = cfg.resolution, cfg.text.hidden_dim
    image = torch.rand(B, 3, r, r, generator=g) * 2 - 1
    mask = torch.from_numpy(center_mask(r, cfg.data.hole_fraction)).expand(B, 1, r, r).contiguous()
    sent = torch.randn(B, d, generator=g)
    words = torch.randn(B, d, T, generator=g)
    word_mask = torch.zeros(B, T, dtype=torch.bool)
    word_mask[1, 4:] = True  # sample 1 has 4 words and 2 padding tokens
    return image, mask, sent, words, word_mask


def randomise_(module: torch.nn.Module, seed: int = 0) -> None:
    """Replace the γ = 1, β = 0 initialisation so the tests exercise the text-dependent path."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


# --------------------------------------------------------------------------------------------
# Generator


@pytest.mark.parametrize("dilation", [1, 2, 3, 4])
def test_dilated_conv_exactly_halves_the_side(dilation):
    conv = torch.nn.Conv2d(1, 1, 4, stride=2, padding=dilated_padding(dilation), dilation=dilation)
    for side in (2, 4, 8, 32):
        assert conv(torch.zeros(1, 1, side, side)).shape[-1] == side // 2


def test_generator_has_log2_resolution_layers_counting_the_input_conv():
    """Layers as the authors count: the input conv is layer 1, then the side halves down to 2×2."""
    cfg = smoke()
    g = Generator(cfg)
    assert cfg.num_layers == math.log2(cfg.resolution) == 5
    assert len(g.encoder) == cfg.num_layers - 1  # layers 2..5
    assert len(g.decoder) == cfg.num_layers  # one level per layer 2..5, and one for the 1×1 level
    assert encoder_channels(cfg) == [8, 16, 32, 32, 32]  # base 8, doubling per layer, cap 32
    sizes = []
    hooks = [layer.act.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:]))) for layer in g.encoder]
    hooks.append(g.innermost.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:]))))
    g(*inputs(cfg))
    for h in hooks:
        h.remove()
    assert sizes == [(16, 16, 16), (32, 8, 8), (32, 4, 4), (32, 2, 2), (32, 1, 1)]  # then the authors' 1×1


def test_prose_order_stops_at_two_by_two():
    """``model.block_order: prose``: the generator before round three, one decoder level per layer."""
    g = Generator(smoke(block_order="prose"))
    assert g.innermost is None and len(g.encoder) == len(g.decoder) == 4


def test_code_order_is_the_authors_block_order():
    """The authors' layer: 4×4 dilated stride-2 conv, then the 3×3 at the lower resolution; their
    decoder level: 3×3 stride-1 transposed conv, then 4×4 stride-2; a 3×3 transposed conv to RGB."""
    from csfgan.models.generator import DilatedStridedConv2d

    g = Generator(smoke())
    for layer in g.encoder:
        convs = [m for m in layer.conv if isinstance(m, torch.nn.Conv2d)]
        assert [(type(m), m.kernel_size, m.stride) for m in convs] == [
            (DilatedStridedConv2d, (4, 4), (2, 2)), (torch.nn.Conv2d, (3, 3), (1, 1))]
        assert convs[0].dilation == (2, 2) and convs[1].in_channels == convs[1].out_channels
    inner = g.decoder[0][0]
    assert isinstance(inner, torch.nn.ConvTranspose2d) and (inner.kernel_size, inner.stride) == ((4, 4), (2, 2))
    for level in g.decoder[1:]:
        convs = [m for m in level if isinstance(m, torch.nn.ConvTranspose2d)]
        assert [(m.kernel_size, m.stride) for m in convs] == [((3, 3), (1, 1)), ((4, 4), (2, 2))]
    assert isinstance(g.to_rgb[0], torch.nn.ConvTranspose2d) and g.to_rgb[0].kernel_size == (3, 3)
    assert g.stem[0].in_channels == 3 and len(g.stem) == 1  # the masked image, no activation
    assert Generator(smoke(mask_channel=True)).stem[0].in_channels == 4


def test_prose_decoder_mirrors_the_encoder():
    """Prose order: per level a 4×4 stride-2 transposed conv and a 3×3 conv (the encoder: a 3×3 conv
    and a 4×4 dilated stride-2 conv); the dilated conv takes the subsampled fast path."""
    from csfgan.models.generator import DilatedStridedConv2d

    g = Generator(smoke(block_order="prose"))
    for layer in g.encoder:
        kernels = [(type(m), m.kernel_size) for m in layer.conv if isinstance(m, torch.nn.Conv2d)]
        assert kernels == [(torch.nn.Conv2d, (3, 3)), (DilatedStridedConv2d, (4, 4))]
        assert layer.conv[-1].dilation == (2, 2) and layer.conv[-1].stride == (2, 2)
    for level in g.decoder:
        convs = [m for m in level if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
        assert [(type(m), m.kernel_size) for m in convs] == [(torch.nn.ConvTranspose2d, (4, 4)),
                                                             (torch.nn.Conv2d, (3, 3))]
        assert convs[0].stride == (2, 2)


def test_generator_output_shape_range_and_composite():
    cfg = smoke()
    image, mask, sent, words, word_mask = inputs(cfg)
    raw, composite, aux = Generator(cfg)(image, mask, sent, words, word_mask)
    assert raw.shape == composite.shape == image.shape
    assert raw.abs().max() <= 1
    keep = mask.expand_as(image) == 0
    assert torch.equal(composite[keep], image[keep])  # unmasked pixels exactly the input
    assert torch.equal(composite[~keep], raw[~keep])
    assert list(aux["ca_mu"]) == list(aux["ca_logvar"]) == ["2+3"]  # one CA shared by layers 2 and 3
    assert aux["ca_mu"]["2+3"].shape == (B, cfg.model.condition_dim)
    _, _, aux = Generator(smoke(shared_conditioning=False))(image, mask, sent, words, word_mask)
    assert list(aux["ca_mu"]) == list(aux["ca_logvar"]) == [2, 3]  # one per layer, keyed by layer


def test_shared_conditioning_is_the_authors_ca_with_glu_and_one_z():
    """One CA (linear to 4·cond, GLU, μ and log σ²) and one z: both fusion layers get the same [c; z]."""
    cfg = smoke()
    g = Generator(cfg)
    randomise_(g.sentence_fusion)
    seen = []
    for m in g.sentence_fusion.values():
        m.gamma.register_forward_hook(lambda mod, i, o: seen.append(i[0]))
    image, mask, sent, words, word_mask = inputs(cfg)
    torch.manual_seed(5)
    _, _, aux = g(image, mask, sent, words, word_mask)
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])  # one [c; z] for both layers
    cond = cfg.model.condition_dim
    h = sent @ g.conditioning.fc.weight.T + g.conditioning.fc.bias
    assert h.shape[1] == 4 * cond
    gated = h[:, : 2 * cond] * torch.sigmoid(h[:, 2 * cond:])  # GLU
    torch.testing.assert_close(aux["ca_mu"]["2+3"], gated[:, :cond])
    torch.testing.assert_close(aux["ca_logvar"]["2+3"], gated[:, cond:])
    assert all(m.ca is None for m in g.sentence_fusion.values())


def test_generator_does_not_see_the_hole_content():
    cfg = smoke()
    g = Generator(cfg).eval()
    image, mask, sent, words, word_mask = inputs(cfg)
    other = torch.where(mask.bool(), torch.rand_like(image), image)
    torch.manual_seed(0)
    a = g(image, mask, sent, words, word_mask)[0]
    torch.manual_seed(0)
    b = g(other, mask, sent, words, word_mask)[0]
    assert torch.equal(a, b)


def test_fusion_placement_follows_config():
    full = Generator(smoke("full"))
    assert set(full.sentence_fusion) == {"2", "3"} and set(full.word_fusion) == {"4", "5"}
    assert full.text_projection is None

    baseline = Generator(smoke("baseline"))
    assert not any(isinstance(m, (SentenceFusion, WordFusion)) for m in baseline.modules())
    assert baseline.text_projection is not None

    both = smoke("full", sentence_fusion_layers=[2], word_fusion_layers=[2, 5])
    g = Generator(both)
    assert set(g.sentence_fusion) == {"2"} and set(g.word_fusion) == {"2", "5"}
    # Fused layers normalise inside the fusion (Eq. 2); the others keep their BatchNorm.
    # The innermost layer (5, 2×2) has no norm of its own: here its word fusion normalises.
    assert [isinstance(layer.norm, torch.nn.BatchNorm2d) for layer in g.encoder] == [False, True, True, False]
    _, _, aux = g(*inputs(both))
    assert list(aux["ca_mu"]) == ["2"]
    assert {k: tuple(v.shape) for k, v in aux["word_attention"].items()} == {2: (B, T, 16, 16), 5: (B, T, 2, 2)}


def test_word_attention_maps_sum_to_one_and_ignore_padding():
    cfg = smoke()
    g = Generator(cfg)
    randomise_(g.word_fusion)
    _, _, aux = g(*inputs(cfg))
    for attention in aux["word_attention"].values():
        torch.testing.assert_close(attention.sum(1), torch.ones_like(attention.sum(1)))
        assert torch.all(attention[1, 4:] == 0)


@pytest.mark.parametrize("variant", sorted(p.stem for p in VARIANTS_DIR.glob("*.yaml")))
def test_every_variant_builds_and_runs_forward_backward(variant):
    cfg = smoke(variant)
    image, mask, sent, words, word_mask = inputs(cfg)
    g, d = Generator(cfg), GlobalDiscriminator(cfg)
    wd = WordLevelDiscriminator(cfg) if cfg.model.word_level_discriminator else None
    damsm = DamsmImageEncoder(cfg.resolution, cfg.text.hidden_dim, cfg.text.damsm.image_channels).eval()
    loss = GeneratorLoss(cfg, perceptual_fallback=lambda x: [F.avg_pool2d(x, 2)],
                         damsm_image=damsm.requires_grad_(False))

    _, fake, aux = g(image, mask, sent, words, word_mask)
    total, terms = loss(image, fake, aux=aux, global_d=d, word_d=wd, mask=mask, words=words, word_mask=word_mask,
                        sent=sent)
    total.backward()
    assert torch.isfinite(total) and ("gan_word" in terms) == (wd is not None)
    grads = [p.grad for p in g.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(x).all() for x in grads)
    assert g.to_rgb[0].weight.grad.abs().sum() > 0

    fake = fake.detach()
    word_real = wd(image, mask, words, word_mask) if wd else None
    word_fake = wd(fake, mask, words, word_mask) if wd else None
    d_loss = discriminator_loss(d.score(image, fake), d.score(fake, image), word_real, word_fake,
                                form=cfg.loss.gan_form)
    d_loss.backward()
    assert torch.isfinite(d_loss)


# --------------------------------------------------------------------------------------------
# Semantic Fusion Module


def test_sentence_fusion_equals_eq2_by_hand():
    c, d, cond, noise = 3, 4, 2, 2
    fusion = SentenceFusion(c, d, cond, noise)
    randomise_(fusion)
    g = torch.Generator().manual_seed(1)
    v, sent = torch.randn(B, c, 2, 3, generator=g), torch.randn(B, d, generator=g)
    z, eps = torch.randn(B, noise, generator=g), torch.randn(B, cond, generator=g)
    out, mu, logvar = fusion(v, sent, z=z, eps=eps)

    h = sent @ fusion.ca.fc.weight.T + fusion.ca.fc.bias
    mu_hand, logvar_hand = h[:, :cond], h[:, cond:]
    c_bar = torch.cat([mu_hand + torch.exp(logvar_hand / 2) * eps, z], 1)  # CA sample, then [c; z]
    gamma = c_bar @ fusion.gamma.weight.T + fusion.gamma.bias  # Eq. 1
    beta = c_bar @ fusion.beta.weight.T + fusion.beta.bias
    mean = v.mean(dim=(0, 2, 3), keepdim=True)  # batch and spatial statistics per channel
    var = ((v - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
    expected = gamma[:, :, None, None] * (v - mean) / torch.sqrt(var + fusion.norm.eps) + beta[:, :, None, None]

    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(mu, mu_hand)
    torch.testing.assert_close(logvar, logvar_hand)


def test_fusions_start_as_plain_batch_norm():
    v = torch.randn(B, 3, 4, 4)
    expected = torch.nn.functional.batch_norm(v, None, None, training=True)
    out, _, _ = SentenceFusion(3, 4, 2, 2)(v, torch.randn(B, 4))
    torch.testing.assert_close(out, expected)
    mask = torch.zeros(B, T, dtype=torch.bool)
    out, _ = WordFusion(3, 4)(v, torch.randn(B, 4, T), mask)
    torch.testing.assert_close(out, expected)


def test_word_fusion_equals_eq3_by_hand():
    c, d, h, w = 3, 4, 2, 2
    fusion = WordFusion(c, d)
    randomise_(fusion)
    fusion.requires_grad_(False)
    g = torch.Generator().manual_seed(2)
    v, words = torch.randn(B, c, h, w, generator=g), torch.randn(B, d, T, generator=g)
    word_mask = torch.zeros(B, T, dtype=torch.bool)
    word_mask[0, 3:] = True
    out, attention = fusion(v, words, word_mask)

    v_hat = F.batch_norm(v, None, None, training=True)
    proj = fusion.word_proj.weight[:, :, 0]  # (C, D)
    for b in range(B):
        real = [i for i in range(T) if not word_mask[b, i]]
        for y in range(h):
            for x in range(w):
                vj = v_hat[b, :, y, x]
                wi = {i: proj @ words[b, :, i] for i in real}
                e = {i: math.exp(float(vj @ wi[i])) for i in real}  # exp(h_{j,i}), h = v_j^T w_i
                alpha = {i: e[i] / sum(e.values()) for i in real}
                wc = sum(alpha[i] * wi[i] for i in real)  # Eq. 3
                gamma = fusion.gamma.weight[:, :, 0, 0] @ wc + fusion.gamma.bias
                beta = fusion.beta.weight[:, :, 0, 0] @ wc + fusion.beta.bias
                torch.testing.assert_close(out[b, :, y, x], gamma * vj + beta)  # Eq. 2
                for i in range(T):
                    assert float(attention[b, i, y, x]) == pytest.approx(alpha.get(i, 0.0), rel=1e-5, abs=0)
    assert torch.all(attention[0, 3:] == 0)  # padded words get exactly zero weight
    torch.testing.assert_close(attention.sum(1), torch.ones(B, h, w))


# --------------------------------------------------------------------------------------------
# Discriminators


def test_global_discriminator_gives_one_logit_per_image():
    cfg = smoke(global_discriminator="dcgan-sn")  # ours before round three; the patch D: test_authors_objective
    logits = GlobalDiscriminator(cfg)(inputs(cfg)[0])
    assert logits.shape == (B,)


def test_word_level_discriminator_equals_eq5_by_loops():
    cfg = smoke()
    # eval: spectral norm's power iteration would otherwise change the weights between calls
    wd = WordLevelDiscriminator(cfg).double().eval()
    randomise_(wd.word_attention_proj, seed=3)
    wd.requires_grad_(False)
    image, mask, _, words, word_mask = (x.double() if x.is_floating_point() else x for x in inputs(cfg))
    log_d = wd(image, mask, words, word_mask)

    v = wd.features(image)  # (B, C, 8, 8): stride 4 at 32 px
    stride = cfg.resolution // v.shape[-1]
    start, stop = center_box(cfg.resolution, cfg.data.hole_fraction)
    cells = [(y, x) for y in range(start // stride, stop // stride) for x in range(start // stride, stop // stride)]
    assert len(cells) == 16  # the 16 px hole = 4x4 cells
    for b in range(B):
        real = [i for i in range(T) if not word_mask[b, i]]
        u = {i: wd.word_attention_proj.weight @ words[b, :, i] for i in real}
        u_bar = sum(u.values()) / len(real)  # temporal average of the real words
        e = {i: math.exp(float(u[i] @ u_bar)) for i in real}
        alpha = {i: e[i] / sum(e.values()) for i in real}  # word self-attention
        d_naive = 1.0
        for i in real:
            w_i = wd.word_weight.weight @ words[b, :, i] + wd.word_weight.bias
            b_i = float(wd.word_bias.weight[0] @ words[b, :, i] + wd.word_bias.bias[0])
            beta_sum = sum(1 / (1 + math.exp(-(float(w_i @ v[b, :, y, x]) + b_i))) for y, x in cells)  # Eq. 4
            d_naive *= (beta_sum / len(cells)) ** alpha[i]  # Eq. 5, normalised by N
        assert math.exp(float(log_d[b])) == pytest.approx(d_naive, rel=1e-9)
        assert float(log_one_minus_exp(log_d[b])) == pytest.approx(math.log(1 - d_naive), rel=1e-9)


def test_word_level_discriminator_weights_cells_by_hole_coverage():
    cfg = smoke()
    wd = WordLevelDiscriminator(cfg).double().eval()
    image, _, _, words, word_mask = (x.double() if x.is_floating_point() else x for x in inputs(cfg))
    mask = torch.zeros(B, 1, 32, 32, dtype=torch.double)
    mask[:, :, 0:4, 0:4] = 1  # one full 4x4 cell
    mask[:, :, 4:6, 0:4] = 1  # half of the cell below it
    v, weights = wd.region_features(image, mask)
    assert weights[0, 0] == 1 and weights[0, 8] == 0.5 and weights[0].sum() == 1.5
    log_beta = F.logsigmoid(wd.word_scores(v, words))
    expected_mean = (log_beta[:, :, 0].exp() + 0.5 * log_beta[:, :, 8].exp()) / 1.5
    alpha = wd.word_attention(words, word_mask)
    torch.testing.assert_close(wd(image, mask, words, word_mask), (alpha * expected_mean.log()).sum(1))
    with pytest.raises(ValueError, match="no hole"):
        wd(image, torch.zeros_like(mask), words, word_mask)


def test_log_one_minus_exp_is_stable():
    log_p = torch.tensor([0.0, -1e-12, -1e-4, -0.5, -1.0, -30.0, -1e4], dtype=torch.double, requires_grad=True)
    out = log_one_minus_exp(log_p)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(log_p.grad).all()
    out = out.detach()
    for lp, o in zip(log_p.tolist()[2:], out.tolist()[2:], strict=True):
        assert o == pytest.approx(math.log1p(-math.exp(lp)), rel=1e-12, abs=1e-300)
    assert out[1] == pytest.approx(math.log(1e-12), rel=1e-6)
    f32 = log_one_minus_exp(torch.tensor([0.0, -1e-9]))
    assert torch.isfinite(f32).all()


# --------------------------------------------------------------------------------------------
# Parameter counts


def test_count_parameters_counts_trainable_only():
    layer = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    assert count_parameters(layer) == 16 + 10
    layer[0].requires_grad_(False)
    assert count_parameters(layer) == 10
    assert count_parameters(None) == 0


def test_parameter_breakdown_parts_add_up():
    full = parameter_breakdown(smoke("full"))
    parts = [k for k in full if k.startswith("generator.")]
    assert sum(full[k] for k in parts) == full["generator"] == count_parameters(Generator(smoke("full")))
    assert full["discriminators"] == full["global_discriminator"] + full["word_level_discriminator"]
    assert "total" not in full  # the paper's count is the generator's; nothing adds the discriminators to it
    base = parameter_breakdown(smoke("baseline"))
    assert base["generator.sentence_fusion"] == base["generator.word_fusion"] == base["word_level_discriminator"] == 0
    assert base["generator.text_projection"] > 0 and full["generator.text_projection"] == 0


def test_paper_scale_generator_is_the_authors_to_the_parameter():
    """Table 2's 82.29 M is the generator alone: the authors' InpaintNet, 82,285,971, module by module."""
    cfg = apply_variant(load_scale("paper"), load_variant("full"))
    counts = parameter_breakdown(cfg)
    assert counts["generator"] == AUTHORS_GENERATOR_PARAMETERS == 82_285_971
    assert round(counts["generator"] / 1e6, 2) == PAPER_REPORTED_PARAMETERS / 1e6
    assert {k: counts[k] for k in AUTHORS_GENERATOR_MODULES} == AUTHORS_GENERATOR_MODULES
    assert counts["generator.text_projection"] == 0


def test_paper_scale_kept_options_have_their_documented_deltas():
    """csfgan/models/params.py: the mask channel adds 576; the prose order (the generator before round
    three: its own CA per layer, the mask channel) has 82,795,475."""
    base = apply_variant(load_scale("paper"), load_variant("full"))
    with_mask = parse_overrides(base, ["model.mask_channel=true"])
    assert parameter_breakdown(with_mask)["generator"] - AUTHORS_GENERATOR_PARAMETERS == 576
    prose = parse_overrides(base, ["model.block_order=prose", "model.mask_channel=true",
                                   "model.shared_conditioning=false"])
    counts = parameter_breakdown(prose)
    assert counts["generator"] == 82_795_475
    assert (counts["generator.stem"] + counts["generator.encoder"], counts["generator.decoder"]) == (
        29_752_640, 51_369_987)


def generator_forward_gflop(cfg) -> float:
    """Forward FLOPs of one image through the generator (torch's FlopCounterMode, on the meta device)."""
    from torch.utils.flop_counter import FlopCounterMode

    r, d = cfg.resolution, cfg.text.hidden_dim
    with torch.device("meta"):
        g = Generator(cfg).eval()
        args = (torch.zeros(1, 3, r, r), torch.zeros(1, 1, r, r), torch.zeros(1, d), torch.zeros(1, d, T),
                torch.zeros(1, T, dtype=torch.bool))
        with FlopCounterMode(display=False) as counter:
            g(*args)
    return counter.get_total_flops() / 1e9


def test_generator_forward_flops_are_the_authors():
    """The authors' InpaintNet: 59.6 GFLOP per 256 px forward (FlopCounterMode, batch 1); the prose
    order 2.18× that; the default scale's generator under 0.09 GFLOP per 64 px image."""
    paper = apply_variant(load_scale("paper"), load_variant("full"))
    code = generator_forward_gflop(paper)
    assert abs(code / 59.6 - 1) < 0.02
    prose = generator_forward_gflop(parse_overrides(paper, ["model.block_order=prose"]))
    assert 2.1 < prose / code < 2.3
    assert generator_forward_gflop(apply_variant(load_scale("default"), load_variant("full"))) <= 0.09


def test_paper_scale_fuses_at_the_papers_resolutions():
    """Section 3.1 with the authors' layer numbering: sentence fusion at 128² and 32², word fusion at
    8² and 2² (layers 2, 4 and 6, 8) at 256 px; checked by running the paper-scale generator."""
    cfg = apply_variant(load_scale("paper"), load_variant("full"))
    assert (cfg.model.sentence_fusion_layers, cfg.model.word_fusion_layers) == ([2, 4], [6, 8])
    g = Generator(cfg)
    sides = {}
    for kind, modules in (("sentence", g.sentence_fusion), ("word", g.word_fusion)):
        for k, m in modules.items():
            m.register_forward_hook(lambda mod, i, o, key=(kind, int(k)): sides.__setitem__(key, o[0].shape[-1]))
    with torch.no_grad():
        g.eval()(*inputs(cfg))
    assert sides == {("sentence", 2): 128, ("sentence", 4): 32, ("word", 6): 8, ("word", 8): 2}


@pytest.mark.parametrize("scale", ["smoke", "default", "paper"])
def test_every_word_fusion_layer_attends_over_more_than_one_region(scale):
    """Eq. 3's per-region attention needs several regions: no shipped scale fuses words at 1×1."""
    cfg = load_scale(scale)
    sides = [cfg.resolution >> (k - 1) for k in cfg.model.word_fusion_layers]
    assert sides and min(sides) >= 2


def test_inference_layout_gives_the_same_output():
    """Evaluation runs the generator channels-last: a layout change only, the same numbers."""
    from csfgan.evaluate import INFERENCE_MEMORY_FORMAT, inference_forward

    cfg = smoke()
    gen = Generator(cfg).eval()
    randomise_(gen)
    x = inputs(cfg)
    torch.manual_seed(3)
    with torch.no_grad():
        _, expected, _ = gen(*x)
    gen.to(memory_format=INFERENCE_MEMORY_FORMAT)
    torch.manual_seed(3)
    _, got, aux = inference_forward(gen, *x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert aux["word_attention"]


def test_bf16_inference_keeps_known_pixels_exact():
    """eval.amp: convolutions in bf16; the hole carries bf16 rounding, the known pixels none."""
    from csfgan.evaluate import INFERENCE_MEMORY_FORMAT, inference_forward

    cfg = smoke()
    # Default initialisation: randomise_'s weights saturate tanh, where bf16 rounding can flip a sign.
    gen = Generator(cfg).eval()
    image, mask, *text = inputs(cfg)
    gen.to(memory_format=INFERENCE_MEMORY_FORMAT)
    torch.manual_seed(3)
    raw32, fp32, _ = inference_forward(gen, image, mask, *text)
    torch.manual_seed(3)
    raw16, bf16, _ = inference_forward(gen, image, mask, *text, amp=True)
    assert bf16.dtype == raw16.dtype == torch.float32
    known = mask.expand_as(image) == 0
    assert torch.equal(bf16[known], image[known])
    hole = ~known
    assert not torch.equal(bf16[hole], fp32[hole])  # the convolutions really ran in bf16
    # bf16 keeps 8 bits of mantissa: a few 1/256 steps of error on an output in [-1, 1].
    assert (bf16[hole] - fp32[hole]).abs().max() < 0.02
    assert torch.equal(fp32[hole], raw32[hole.expand_as(raw32)])


@pytest.mark.parametrize("dilation", [1, 2, 3, 4])
@pytest.mark.parametrize("side", [2, 7, 8, 9, 32])
def test_dilated_strided_conv_equals_nn_conv2d(dilation, side):
    """The subsampled form computes the same outputs and input gradients as the plain convolution."""
    from csfgan.models.generator import DilatedStridedConv2d

    for padding in (dilated_padding(dilation), 0, 1):
        torch.manual_seed(0)
        fast = DilatedStridedConv2d(3, 5, 4, stride=2, padding=padding, dilation=dilation)
        plain = torch.nn.Conv2d(3, 5, 4, stride=2, padding=padding, dilation=dilation)
        plain.load_state_dict(fast.state_dict())
        x = torch.randn(2, 3, side, side + 1, dtype=torch.float64, requires_grad=True)
        try:
            expected = plain.double()(x)
        except RuntimeError:  # the kernel does not fit this input at all
            continue
        got = fast.double()(x)
        torch.testing.assert_close(got, expected)
        torch.testing.assert_close(torch.autograd.grad(got.square().sum(), x)[0],
                                   torch.autograd.grad(expected.square().sum(), x)[0])


@pytest.mark.parametrize("options", [{"groups": 3}, {"padding_mode": "reflect"}, {"padding": (3, 1)}])
def test_dilated_strided_conv_other_settings_equal_nn_conv2d(options):
    """Groups go through the fast path; reflect padding and unequal padding take nn.Conv2d's forward."""
    from csfgan.models.generator import DilatedStridedConv2d

    kwargs = {"stride": 2, "dilation": 2, "padding": 3, **options}
    torch.manual_seed(0)
    fast = DilatedStridedConv2d(6, 6, 4, **kwargs)
    plain = torch.nn.Conv2d(6, 6, 4, **kwargs)
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(2, 6, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(fast.double()(x), plain.double()(x))
