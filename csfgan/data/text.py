"""Caption tokenisation and vocabulary, as AttnGAN does it.

Lower-case, ``\\w+`` tokens, at most ``max_words`` (18) words; words not in the vocabulary map to
``<unk>``. The vocabulary is built from the training captions only, so test-split words that never
occur in training are unknown, exactly as at evaluation time on the real benchmarks.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from csfgan.errors import UserError
from csfgan.tokens import PAD, PAD_ID, UNK, UNK_ID

_WORD = re.compile(r"\w+")


class CaptionError(UserError, ValueError):
    """A caption cannot be encoded; the message says which and why."""


def tokenize(caption: str) -> list[str]:
    return _WORD.findall(caption.lower())


class Vocabulary:
    def __init__(self, words: Sequence[str]):
        if list(words[:2]) != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD!r}, {UNK!r}; got {list(words[:2])}")
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise ValueError("vocabulary has duplicate words")

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> Vocabulary:
        counts = Counter(t for c in captions for t in tokenize(c))
        kept = sorted(w for w, n in counts.items() if n >= min_count)
        return cls([PAD, UNK, *kept])

    def __len__(self) -> int:
        return len(self.words)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.words == other.words

    def encode(self, caption: str, max_words: int, *, strict: bool = False) -> list[int]:
        """Token ids of ``caption``, cut to ``max_words``.

        ``strict`` (used for a user's own text) refuses an empty caption, one with no known word,
        and one longer than ``max_words`` instead of silently truncating it.
        """
        tokens = tokenize(caption)
        if strict:
            if not tokens:
                raise CaptionError(f"caption {caption!r} has no words")
            if len(tokens) > max_words:
                raise CaptionError(
                    f"caption has {len(tokens)} words; the text encoder takes at most {max_words} "
                    f"(AttnGAN's limit): shorten it"
                )
            if all(t not in self.index for t in tokens):
                raise CaptionError(
                    f"no word of {caption!r} is in the vocabulary ({len(self)} words from the "
                    f"training captions); describe the object with words such as colours and parts"
                )
        return [self.index.get(t, UNK_ID) for t in tokens[:max_words]]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.words[i] for i in ids if i != PAD_ID]

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.words, indent=0))

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        return cls(json.loads(Path(path).read_text()))


def encode_captions(
    captions: Sequence[Sequence[str]], vocab: Vocabulary, max_words: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pad-encode ``captions[image][k]`` into ``tokens (N, K, max_words)`` int32 and ``lengths (N, K)``.

    An all-padding caption would break the LSTM's packed sequence, so an empty caption is stored
    with length 0 and the loader refuses to serve it.
    """
    n = len(captions)
    k = max((len(c) for c in captions), default=0)
    tokens = np.full((n, k, max_words), PAD_ID, dtype=np.int32)
    lengths = np.zeros((n, k), dtype=np.int32)
    for i, per_image in enumerate(captions):
        for j, caption in enumerate(per_image):
            ids = vocab.encode(caption, max_words)
            tokens[i, j, : len(ids)] = ids
            lengths[i, j] = len(ids)
    return tokens, lengths
