"""The synthetic datasets by name and what each has: parts, colour attributes, attribute values, caption nouns."""

from __future__ import annotations

from csfgan.data.synthetic.birds import BIRDS
from csfgan.data.synthetic.flowers import FLOWERS
from csfgan.data.synthetic.spec import SyntheticSpec

# The order numbers the datasets (``_dataset_id``), which is part of every species and image seed.
DATASETS: dict[str, SyntheticSpec] = {BIRDS.name: BIRDS, FLOWERS.name: FLOWERS}


def _spec(dataset: str) -> SyntheticSpec:
    if dataset not in DATASETS:
        raise ValueError(f"unknown synthetic dataset {dataset!r}; known: {', '.join(DATASETS)}")
    return DATASETS[dataset]


def parts(dataset: str) -> list[str]:
    return list(_spec(dataset).parts)


def colour_attributes(dataset: str) -> dict[str, str]:
    return dict(_spec(dataset).colour_attributes)


def attribute_values(dataset: str) -> dict[str, list[str]]:
    return {k: list(v) for k, v in _spec(dataset).values.items()}


def part_words(dataset: str) -> dict[str, str]:
    return dict(_spec(dataset).part_words)


def _dataset_id(dataset: str) -> int:
    return list(DATASETS).index(dataset) + 1
