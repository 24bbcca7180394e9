"""Drawing a dataset's species: train species covering every attribute value, test species never seen."""

from __future__ import annotations

import numpy as np

from csfgan.data.synthetic.datasets import _dataset_id, _spec


def species(dataset: str, seed: int) -> dict[str, list[dict[str, str]]]:
    """The dataset's species for ``seed``: ``{"train": [attrs, ...], "test": [...]}``.

    Train species are drawn until every value of every attribute occurs among them; test species
    are drawn until each is a combination of colours that no train species has.
    """
    spec = _spec(dataset)
    rng = np.random.default_rng([seed, _dataset_id(dataset), 7919])
    names = list(spec.values)

    def draw() -> dict[str, str]:
        while True:
            attrs = {a: str(spec.values[a][int(rng.integers(len(spec.values[a])))]) for a in names}
            if spec.species_ok(attrs):
                return attrs

    def colours(attrs: dict[str, str]) -> tuple[str, ...]:
        return tuple(attrs[a] for a in spec.colour_attributes)

    for _ in range(1000):
        train = [draw() for _ in range(spec.train_species)]
        if all({t[a] for t in train} == set(spec.values[a]) for a in names):
            break
    else:  # pragma: no cover - probability vanishes for the species counts used
        raise RuntimeError(f"{dataset}: could not cover every attribute value in training")
    seen = {colours(t) for t in train}
    test: list[dict[str, str]] = []
    while len(test) < spec.test_species:
        attrs = draw()
        if colours(attrs) not in seen:
            seen.add(colours(attrs))
            test.append(attrs)
    return {"train": train, "test": test}
