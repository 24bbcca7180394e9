"""The caption grammar both datasets share: how many captions, how long, and the composer that picks
pairwise different attribute subsets, each naming a part the centre hole hides."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from csfgan.data.text import tokenize

CAPTIONS_PER_IMAGE = 10
# Captions must fit AttnGAN's 18-token limit whole, or truncation would drop attributes the
# faithfulness metrics assume the text encoder saw.
MAX_CAPTION_WORDS = 18


_AN = re.compile(r"\ba ([aeiou])")


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _compose_captions(
    rng: np.random.Generator,
    count: int,
    mentionable: list[str],
    hidden: list[str],
    compose: Callable[[list[str]], str | None],
    sizes: tuple[int, ...],
) -> list[str]:
    """``count`` captions naming pairwise different attribute subsets, each including the colour of
    a part the centre hole hides (the words are what make the hidden part recoverable)."""
    captions: list[str] = []
    seen: set[frozenset[str]] = set()
    for _ in range(2000):
        k = min(int(rng.choice(sizes)), len(mentionable))
        first = _pick(rng, hidden)
        others = [a for a in mentionable if a != first]
        chosen = [first, *(others[i] for i in rng.permutation(len(others))[: k - 1])]
        chosen = [a for a in mentionable if a in chosen]  # canonical order reads naturally
        key = frozenset(chosen)
        if key in seen:
            continue
        text = compose(chosen)
        if text is None or len(tokenize(text)) > MAX_CAPTION_WORDS:
            continue
        text = _AN.sub(r"an \1", text)
        seen.add(key)
        captions.append(text)
        if len(captions) == count:
            return captions
    raise RuntimeError(f"could not compose {count} distinct captions from {mentionable}")
