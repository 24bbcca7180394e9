"""What a synthetic dataset is (``SyntheticSpec``) and the generator's version, which prepared data records."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from csfgan.data.synthetic.canvas import _Canvas

# Bump whenever a change could alter a rendered byte, a caption or a species: prepared data records
# it, and ``check_existing`` then refuses to mix old and new.
GENERATOR_VERSION = "1"


@dataclass(frozen=True)
class SyntheticSpec:
    name: str
    stands_in_for: str
    parts: tuple[str, ...]
    # attribute -> part it colours; values are palette names (wing bars may also be "none").
    colour_attributes: dict[str, str]
    # every attribute -> its allowed values, in a fixed order
    values: dict[str, tuple[str, ...]]
    train_species: int
    test_species: int
    # Parts the centre hole hides: every caption names the colour of at least one of them.
    hidden_parts: tuple[str, ...]
    # Caption nouns -> the part they denote, for reading captions back (faithfulness metrics).
    part_words: dict[str, str]
    draw_pose: Callable[[dict[str, str], np.random.Generator], dict[str, Any]]
    # Paints the object on a canvas and records, in ``layout``, geometry the renderer needs.
    draw_object: Callable[[_Canvas, dict[str, str], dict[str, Any], dict[str, Any]], None]
    compose_captions: Callable[[dict[str, str], np.random.Generator, int], list[str]]
    species_ok: Callable[[dict[str, str]], bool]
