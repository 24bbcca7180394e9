"""DAMSM: image encoder, word/sentence matching losses, R-precision, pretraining and its checkpoint."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from csfgan.config import load_scale
from csfgan.damsm import (
    KIND,
    TextEncoderCheckpointError,
    load_text_encoder,
    metrics_path,
    pretrain_text,
)
from csfgan.data.prepared import PreparedData, PreparedWriter
from csfgan.data.text import PAD_ID, Vocabulary
from csfgan.models.damsm import (
    DamsmImageEncoder,
    func_attention,
    mismatched_candidates,
    r_precision,
    sent_loss,
    word_attention,
    words_loss,
)
from csfgan.models.text import TextEncoder, padding_mask

SMOKE = load_scale("smoke")
COLOURS = ["red", "blue", "green", "yellow", "black", "white", "grey", "brown", "orange"]
RGB = np.array(
    [[200, 30, 30], [30, 30, 200], [30, 160, 30], [220, 220, 30], [10, 10, 10], [240, 240, 240], [128, 128, 128],
     [120, 70, 20], [250, 140, 0]], dtype=np.uint8,
)  # fmt: skip


def write_birds(out, resolution=32, train_classes=5, test_classes=4, per_class=4):
    """A tiny prepared set: each class is a wing colour, drawn as a patch on noise, named in the captions."""
    rng = np.random.default_rng(0)
    with PreparedWriter(out, dataset="tiny-birds", resolution=resolution, config={"t": 1}, max_words=18) as w:
        for split, first, classes in (("train", 0, train_classes), ("test", train_classes, test_classes)):
            s = w.split(split, classes * per_class)
            for i in range(classes * per_class):
                c = first + i // per_class
                image = rng.integers(0, 80, (resolution, resolution, 3), dtype=np.uint8)
                image[resolution // 4 : resolution // 2, resolution // 4 :] = RGB[c]
                caps = [f"this bird has a {COLOURS[c]} wing", f"a small bird with {COLOURS[c]} wings and a short beak"]
                s.put(i, image, caps, class_id=c, key=f"{split}/{i}")
        w.finish(seed=0)
    return out


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("damsm")
    data = write_birds(root / "data")
    out = root / "text" / "encoder.pt"
    metrics = pretrain_text(data, SMOKE, out, seed=0, workers=1)
    return data, out, metrics


# --------------------------------------------------------------------------------------------
# Image encoder


@pytest.mark.parametrize(("resolution", "side"), [(32, 4), (64, 8), (256, 16)])
def test_image_encoder_shapes(resolution, side):
    enc = DamsmImageEncoder(resolution, out_dim=24, channels=32).eval()
    images = torch.rand(2, 3, resolution, resolution) * 2 - 1
    regions, code = enc(images)
    assert regions.shape == (2, 24, side, side) and code.shape == (2, 24)
    torch.testing.assert_close(enc.global_features(images), code)
    feats = enc.features(images)
    sizes = [f.shape[-1] for f in feats]
    assert sizes[0] == resolution and sizes[-1] == side // 2 and sizes == sorted(sizes, reverse=True)
    assert feats[-1].shape[1] == 32  # the last stage has damsm.image_channels


def test_image_encoder_refuses_tiny_images():
    with pytest.raises(ValueError, match="at least 32 px"):
        DamsmImageEncoder(16, out_dim=8)


# --------------------------------------------------------------------------------------------
# Attention and word loss


def test_padded_words_get_no_attention():
    torch.manual_seed(0)
    words = torch.randn(2, 6, 5)
    regions = torch.randn(2, 6, 3, 3)
    mask = torch.tensor([[False, False, False, True, True], [False] * 5])
    scores = words.transpose(1, 2) @ regions.flatten(2)
    weights = word_attention(scores, mask)  # Eq. 8: over words, per region
    assert (weights[0, 3:] == 0).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2, 9))
    # Garbage in the padded slots changes nothing for the real words.
    noisy = words.clone()
    noisy[0, :, 3:] = 100.0
    context, attn = func_attention(noisy, regions, 4.0, mask)
    trimmed, attn_t = func_attention(words[:1, :, :3], regions[:1], 4.0)
    torch.testing.assert_close(context[0, :, :3], trimmed[0])
    torch.testing.assert_close(attn[0, :3], attn_t[0])
    assert attn.shape == (2, 5, 3, 3)


def test_words_loss_ignores_padding_width_and_contents():
    torch.manual_seed(1)
    regions = torch.randn(3, 8, 4, 4)
    lengths = torch.tensor([4, 2, 3])
    words = torch.randn(3, 8, 4)
    mask = torch.arange(4)[None] >= lengths[:, None]
    words = words.masked_fill(mask[:, None], 0.0)
    loss = words_loss(regions, words, mask, None, 4.0, 5.0, 10.0)
    wide = torch.cat([words, torch.randn(3, 8, 6)], dim=2)  # 6 more padded slots holding noise
    wide_mask = torch.cat([mask, torch.ones(3, 6, dtype=torch.bool)], dim=1)
    wide_loss = words_loss(regions, wide, wide_mask, None, 4.0, 5.0, 10.0)
    torch.testing.assert_close(torch.stack(wide_loss), torch.stack(loss))


def attngan_words_loss(img_features, words_emb, cap_lens, class_ids, gamma1, gamma2, gamma3):
    """A literal port of AttnGAN's per-caption ``words_loss`` loop and ``func_attention`` (with Eq. 10's 1/γ2)."""
    batch = words_emb.shape[0]
    ih, iw = img_features.shape[2:]
    similarities = []
    for i in range(batch):
        n = int(cap_lens[i])
        word = words_emb[i, :, :n].unsqueeze(0).repeat(batch, 1, 1)  # batch x nef x n
        context = img_features.reshape(batch, -1, ih * iw)
        attn = torch.bmm(context.transpose(1, 2), word)  # batch x sourceL x n
        attn = attn.reshape(batch * ih * iw, n).softmax(dim=1).reshape(batch, ih * iw, n)
        attn = attn.transpose(1, 2).reshape(batch * n, ih * iw)
        attn = (attn * gamma1).softmax(dim=1).reshape(batch, n, ih * iw)
        wei_context = torch.bmm(context, attn.transpose(1, 2))  # batch x nef x n
        w = word.transpose(1, 2).reshape(batch * n, -1)
        c = wei_context.transpose(1, 2).reshape(batch * n, -1)
        row_sim = ((w * c).sum(1) / (w.norm(dim=1) * c.norm(dim=1)).clamp(min=1e-8)).reshape(batch, n)
        similarities.append(torch.log((row_sim * gamma2).exp().sum(dim=1, keepdim=True)) / gamma2)
    similarities = torch.cat(similarities, 1) * gamma3  # [image, caption]
    if class_ids is not None:
        same = class_ids[:, None] == class_ids[None, :]
        similarities = similarities.masked_fill(same & ~torch.eye(batch, dtype=torch.bool), float("-inf"))
    labels = torch.arange(batch)
    return F.cross_entropy(similarities, labels), F.cross_entropy(similarities.t(), labels)


@pytest.mark.parametrize("class_ids", [None, torch.tensor([0, 1, 0, 2, 1])])
def test_words_loss_matches_attngans_loop(class_ids):
    torch.manual_seed(2)
    regions = torch.randn(5, 16, 3, 3, requires_grad=True)
    lengths = torch.tensor([4, 2, 6, 1, 3])
    mask = torch.arange(6)[None] >= lengths[:, None]
    words = torch.randn(5, 16, 6).masked_fill(mask[:, None], 0.0).requires_grad_()
    mine = words_loss(regions, words, mask, class_ids, 4.0, 5.0, 10.0)
    ref = attngan_words_loss(regions, words, lengths, class_ids, 4.0, 5.0, 10.0)
    torch.testing.assert_close(torch.stack(mine), torch.stack(ref))
    g_mine = torch.autograd.grad(sum(mine), (regions, words))
    g_ref = torch.autograd.grad(sum(ref), (regions, words))
    for a, b in zip(g_mine, g_ref, strict=True):
        torch.testing.assert_close(a, b)
        assert torch.isfinite(a).all()


def test_word_loss_decreases_on_a_toy_batch():
    torch.manual_seed(0)
    cfg = dataclasses.replace(SMOKE.text, dropout=0.0)
    text = TextEncoder(12, cfg)
    image = DamsmImageEncoder(32, cfg.hidden_dim, 32)
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    lengths = torch.tensor([5, 3, 4, 2])
    tokens = torch.randint(2, 12, (4, 6))
    tokens[torch.arange(6)[None] >= lengths[:, None]] = PAD_ID
    opt = torch.optim.Adam([*text.parameters(), *image.parameters()], lr=2e-3, betas=(0.5, 0.999))
    losses = []
    for _ in range(8):
        regions, _ = image(images)
        words, _ = text(tokens, lengths)
        w0, w1 = words_loss(regions, words, padding_mask(tokens), None, 4.0, 5.0, 10.0)
        loss = w0 + w1
        assert torch.isfinite(loss)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.7 * losses[0], losses


# --------------------------------------------------------------------------------------------
# Sentence loss against a hand computation


def _cos(u, v):
    return sum(a * b for a, b in zip(u, v, strict=True)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))


def _ce(row, target):
    return -(row[target] - math.log(sum(math.exp(x) for x in row)))


@pytest.mark.parametrize("class_ids", [None, [0, 0, 1]])
def test_sentence_loss_by_hand(class_ids):
    imgs = [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]
    sents = [[3.0, 1.0], [-1.0, 1.0], [1.0, 2.0]]
    g3 = 10.0
    score = [[g3 * _cos(imgs[i], sents[j]) for j in range(3)] for i in range(3)]
    if class_ids is not None:  # image 0 and caption 1 (and 1, 0) share a class: not negatives
        score[0][1] = score[1][0] = -math.inf
    image_to_text = sum(_ce(score[i], i) for i in range(3)) / 3
    text_to_image = sum(_ce([score[i][j] for i in range(3)], j) for j in range(3)) / 3
    ids = None if class_ids is None else torch.tensor(class_ids)
    s0, s1 = sent_loss(torch.tensor(imgs), torch.tensor(sents), ids, g3)
    assert s0.item() == pytest.approx(image_to_text, rel=1e-5)
    assert s1.item() == pytest.approx(text_to_image, rel=1e-5)
    assert image_to_text != pytest.approx(text_to_image)  # the two directions really differ


# --------------------------------------------------------------------------------------------
# R-precision


def test_r_precision_by_hand():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    text = torch.tensor([[1.0, 0.1], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # image 0: true text 1 (cos 1) beats 2 and 3; image 1: true 2 beats 0 and 1;
    # image 2: true 0 (cos .77) loses to text 3 (cos 1).
    cand = torch.tensor([[2, 3], [0, 1], [3, 1]])
    assert r_precision(image, text, torch.tensor([1, 2, 0]), cand) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="contains its true caption"):
        r_precision(image, text, torch.tensor([1, 2, 0]), torch.tensor([[1, 3], [0, 1], [3, 1]]))


def test_candidates_prefer_other_classes():
    classes = np.repeat(np.arange(3), 10)
    few = mismatched_candidates(classes, 15, seed=3)
    assert few.shape == (30, 15)
    assert (classes[few] != classes[:, None]).all()
    many = mismatched_candidates(classes, 25, seed=3)
    assert (many != np.arange(30)[:, None]).all()  # never itself
    assert ((classes[many] != classes[:, None]).sum(axis=1) == 20).all()  # all 20 others, then 5 same
    assert all(len(set(row)) == 25 for row in many)
    np.testing.assert_array_equal(few, mismatched_candidates(classes, 15, seed=3))
    assert mismatched_candidates(classes, 99).shape == (30, 29)  # fewer items than candidates


# --------------------------------------------------------------------------------------------
# Pretraining end to end and the checkpoint


def test_pretrain_writes_checkpoint_and_metrics(pretrained):
    data, out, metrics = pretrained
    assert out.is_file() and not list(out.parent.glob(".*"))  # atomic: no temporary left behind
    on_disk = json.loads(metrics_path(out).read_text())
    assert metrics_path(out).name == "encoder.metrics.json"
    assert on_disk == json.loads(json.dumps(metrics))
    assert 0.0 <= metrics["r_precision"] <= 1.0 and len(metrics["r_precision_runs"]) == 5
    assert metrics["candidates"] == 16 and metrics["chance"] == pytest.approx(1 / 16)  # 16 test images
    assert metrics["loss_history"] and all(math.isfinite(v) for v in metrics["final_losses"].values())
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["kind"] == KIND and ckpt["dataset"] == "tiny-birds" and ckpt["resolution"] == 32
    assert ckpt["vocab"] == PreparedData(data).vocab.words
    assert ckpt["text_config"]["hidden_dim"] == SMOKE.text.hidden_dim
    assert len(ckpt["data_manifest_sha"]) == 64 and set(ckpt["versions"]) == {"torch", "csfgan"}


def test_pretrain_is_reproducible(pretrained, tmp_path):
    data, _, metrics = pretrained
    again = pretrain_text(data, SMOKE, tmp_path / "again.pt", seed=0, workers=1)
    assert again["loss_history"] == metrics["loss_history"]
    assert again["r_precision_runs"] == metrics["r_precision_runs"]


def test_load_round_trip(pretrained):
    data, out, _ = pretrained
    prepared = PreparedData(data)
    text, image, vocab, ckpt = load_text_encoder(out, vocab=prepared.vocab, text_cfg=SMOKE.text)
    assert vocab == prepared.vocab and not text.training and not image.training
    assert not any(p.requires_grad for p in [*text.parameters(), *image.parameters()])
    for mine, saved in ((text, ckpt["text_encoder"]), (image, ckpt["image_encoder"])):
        for key, value in mine.state_dict().items():
            assert torch.equal(value, saved[key]), key
    regions, code = image(torch.zeros(2, 3, 32, 32))
    assert regions.shape == (2, SMOKE.text.hidden_dim, 4, 4)


def test_load_errors_name_the_file(pretrained, tmp_path):
    data, out, _ = pretrained
    prepared = PreparedData(data)
    with pytest.raises(TextEncoderCheckpointError, match=r"nope\.pt: no such text-encoder checkpoint"):
        load_text_encoder(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(TextEncoderCheckpointError, match=r"garbage\.pt: not a readable torch checkpoint"):
        load_text_encoder(garbage)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(out.read_bytes()[:2000])
    with pytest.raises(TextEncoderCheckpointError, match=r"truncated\.pt: not a readable torch checkpoint"):
        load_text_encoder(truncated)
    other = tmp_path / "generator.pt"
    torch.save({"kind": "csfgan-generator", "generator": {}}, other)
    with pytest.raises(TextEncoderCheckpointError, match=r"generator\.pt: not a text-encoder .*'csfgan-generator'"):
        load_text_encoder(other)
    words = list(prepared.vocab.words)
    words[5], words[6] = "zebra", "stripes"
    with pytest.raises(
        TextEncoderCheckpointError, match=r"encoder\.pt: vocabulary mismatch: 2 of \d+ words differ.*pretrained on this"
    ):
        load_text_encoder(out, vocab=Vocabulary(words))
    other_cfg = dataclasses.replace(SMOKE.text, hidden_dim=64)
    with pytest.raises(
        TextEncoderCheckpointError, match=r"encoder\.pt: .*text\.hidden_dim: checkpoint 32 vs config 64"
    ):
        load_text_encoder(out, text_cfg=other_cfg)
    with pytest.raises(TextEncoderCheckpointError, match=r"text\.embedding_dim: checkpoint 32 vs config 300"):
        load_text_encoder(out, text_cfg=load_scale("default").text)
    # How it was pretrained is not part of compatibility: another DAMSM schedule loads.
    other_schedule = dataclasses.replace(SMOKE.text, damsm=dataclasses.replace(SMOKE.text.damsm, epochs=99))
    load_text_encoder(out, text_cfg=other_schedule)


def test_pretrain_refuses_data_of_another_resolution(pretrained):
    data, out, _ = pretrained
    with pytest.raises(Exception, match="holds 32 px images but scale 'default' is 64 px"):
        pretrain_text(data, load_scale("default"), out.parent / "x.pt")
