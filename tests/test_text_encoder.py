"""The BiLSTM text encoder: shapes, padding, packed sequences, user captions."""

import pytest
import torch

from csfgan.config import load_scale
from csfgan.data.text import PAD_ID, CaptionError, Vocabulary
from csfgan.models.text import TextEncoder, encode_text, padding_mask

CFG = load_scale("smoke").text
D = CFG.hidden_dim


def make_encoder(vocab_size: int = 20) -> TextEncoder:
    torch.manual_seed(0)
    return TextEncoder(vocab_size, CFG).eval()


def toy_batch():
    lengths = torch.tensor([5, 2, 7])
    tokens = torch.full((3, 7), PAD_ID)
    for i, n in enumerate(lengths.tolist()):
        tokens[i, :n] = torch.arange(2, 2 + n) + i
    return tokens, lengths


def test_shapes_and_zero_padding():
    encoder = make_encoder()
    tokens, lengths = toy_batch()
    words, sent = encoder(tokens, lengths)
    assert words.shape == (3, D, 7) and sent.shape == (3, D)
    assert (words[0, :, 5:] == 0).all() and (words[1, :, 2:] == 0).all()
    assert (words[0, :, :5].abs().sum(0) > 0).all()  # real words are not zero
    assert torch.equal(padding_mask(tokens), tokens == PAD_ID)


def test_sentence_is_the_final_state_of_each_direction():
    encoder = make_encoder()
    tokens, lengths = toy_batch()
    words, sent = encoder(tokens, lengths)
    half = D // 2
    for i, n in enumerate(lengths.tolist()):
        # forward direction ends at the last real word, the backward one at the first word
        torch.testing.assert_close(sent[i, :half], words[i, :half, n - 1])
        torch.testing.assert_close(sent[i, half:], words[i, half:, 0])


def test_appended_padding_changes_nothing():
    encoder = make_encoder()
    tokens, lengths = toy_batch()
    longer = torch.cat([tokens, torch.full((3, 11), PAD_ID)], dim=1)
    words, sent = encoder(tokens, lengths)
    words2, sent2 = encoder(longer, lengths)
    assert words2.shape == (3, D, 18)
    torch.testing.assert_close(words2[:, :, :7], words)
    assert (words2[:, :, 7:] == 0).all()
    torch.testing.assert_close(sent2, sent)


def test_batch_order_does_not_matter():
    # pack_padded_sequence(enforce_sorted=False) must unsort back to the caller's order
    encoder = make_encoder()
    tokens, lengths = toy_batch()
    perm = torch.tensor([2, 0, 1])
    words, sent = encoder(tokens, lengths)
    words_p, sent_p = encoder(tokens[perm], lengths[perm])
    torch.testing.assert_close(words_p, words[perm])
    torch.testing.assert_close(sent_p, sent[perm])


def test_empty_caption_is_a_clear_error():
    encoder = make_encoder()
    tokens, lengths = toy_batch()
    lengths[1] = 0
    with pytest.raises(ValueError, match=r"caption\(s\) \[1\] .* length 0"):
        encoder(tokens, lengths)


def test_gradients_flow_to_embeddings_and_lstm():
    encoder = make_encoder().train()
    tokens, lengths = toy_batch()
    words, sent = encoder(tokens, lengths)
    (words.sum() + sent.sum()).backward()
    assert encoder.embedding.weight.grad.abs().sum() > 0
    assert encoder.embedding.weight.grad[PAD_ID].abs().sum() == 0  # padding never embeds
    assert all(p.grad is not None for p in encoder.rnn.parameters())


def test_encode_text_one_caption():
    vocab = Vocabulary.build(["this bird has a red wing", "a blue belly"])
    encoder = TextEncoder(len(vocab), CFG).train()
    enc = encode_text(encoder, vocab, "This bird has a RED wing!", CFG.max_words)
    assert enc.tokens.shape == (1, CFG.max_words) and enc.length.tolist() == [6]
    assert enc.words.shape == (1, D, CFG.max_words) and enc.sent.shape == (1, D)
    assert enc.mask[0, 6:].all() and not enc.mask[0, :6].any()
    assert encoder.training  # the caller's mode is restored
    again = encode_text(encoder, vocab, "this bird has a red wing", CFG.max_words)
    torch.testing.assert_close(again.sent, enc.sent)  # eval mode: no dropout
    with pytest.raises(CaptionError, match="no words"):
        encode_text(encoder, vocab, "?!", CFG.max_words)
    with pytest.raises(CaptionError, match="at most 18"):
        encode_text(encoder, vocab, "red " * 19, CFG.max_words)
    with pytest.raises(CaptionError, match="vocabulary"):
        encode_text(encoder, vocab, "zebra stripes", CFG.max_words)
