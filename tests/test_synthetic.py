"""The embedded synthetic datasets: species, captions that tell the truth, the hole, edits, bytes."""

import json

import numpy as np
import pytest
from scipy import ndimage

from csfgan.config import load_scale
from csfgan.data import synthetic as S
from csfgan.data.prepared import PreparedData, PreparedDataError
from csfgan.data.text import Vocabulary, tokenize

DATASETS = ("synth-birds", "synth-flowers")

# Written out independently of the generator: which part a caption noun names. A colour word is
# attached to the next part noun after it, or after "is"/"are" ("mostly") to the one before it.
PART_NOUNS = {
    "synth-birds": {
        "bird": "body",
        "body": "body",
        "crown": "crown",
        "wing": "wing",
        "wings": "wing",
        "wingbars": "wing_bars",
        "belly": "belly",
        "breast": "belly",
        "chest": "belly",
        "beak": "beak",
        "bill": "beak",
        "tail": "tail",
    },
    "synth-flowers": {
        "flower": "petals",
        "petal": "petals",
        "petals": "petals",
        "stamen": "stamen",
        "stamens": "stamen",
        "center": "stamen",
        "pistil": "stamen",
    },
}


def caption_colours(dataset: str, caption: str) -> list[tuple[str, str]]:
    """(part, colour word) for every palette word in ``caption``."""
    nouns = PART_NOUNS[dataset]
    tokens = tokenize(caption)
    found = []
    for i, token in enumerate(tokens):
        if token not in S.colour_palette():
            continue
        before = tokens[i - 1] if i else ""
        predicative = before in ("is", "are") or (before == "mostly" and i > 1 and tokens[i - 2] in ("is", "are"))
        order = reversed(tokens[:i]) if predicative else tokens[i + 1 :]
        part = next((nouns[t] for t in order if t in nouns), None)
        assert part is not None, f"colour {token!r} in {caption!r} names no part"
        found.append((part, token))
    return found


def described_parts(dataset: str, caption: str) -> set[str]:
    return {PART_NOUNS[dataset][t] for t in tokenize(caption) if t in PART_NOUNS[dataset]}


def part_colour(image: np.ndarray, part_mask: np.ndarray) -> str:
    """Nearest palette name to the part's mean colour, away from its antialiased rim if it has an
    inside (a 64 px beak may not)."""
    inside = ndimage.binary_erosion(part_mask)
    pixels = image[inside] if inside.any() else image[part_mask]
    return S.nearest_colour(pixels.mean(axis=0))


def hole(resolution: int) -> tuple[slice, slice]:
    return slice(resolution // 4, 3 * resolution // 4), slice(resolution // 4, 3 * resolution // 4)


@pytest.fixture(scope="module")
def smoke():
    return load_scale("smoke")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, smoke):
    """Both sets at the smoke scale, once with one worker and once with two."""
    root = tmp_path_factory.mktemp("synthetic")
    out = {}
    for dataset in DATASETS:
        for workers in (1, 2):
            path = root / f"{dataset}-w{workers}"
            S.prepare_synthetic(dataset, path, smoke, workers=workers)
            out[dataset, workers] = path
    return out


def test_public_tables():
    assert set(S.DATASETS) == set(DATASETS)
    palette = S.colour_palette()
    assert len(palette) >= 10 and all(len(rgb) == 3 for rgb in palette.values())
    for dataset in DATASETS:
        parts = S.parts(dataset)
        for attribute, part in S.colour_attributes(dataset).items():
            assert part in parts, (attribute, part)
        assert S.part_words(dataset) == PART_NOUNS[dataset]
    assert S.colour_attributes("synth-birds")["wing_colour"] == "wing"
    with pytest.raises(ValueError, match="synth-birds.*synth-flowers"):
        S.parts("cub-synthetic")
    with pytest.raises(ValueError, match="known: synth-birds, synth-flowers"):
        S.prepare_synthetic("birds", None, load_scale("smoke"))


@pytest.mark.parametrize("dataset", DATASETS)
def test_species_split_by_class_into_new_colour_combinations(dataset):
    species = S.species(dataset, seed=0)
    spec = S.DATASETS[dataset]
    assert (len(species["train"]), len(species["test"])) == (spec.train_species, spec.test_species)
    colour_attrs = list(S.colour_attributes(dataset))

    def combo(attrs):
        return tuple(attrs[a] for a in colour_attrs)

    train_combos = {combo(a) for a in species["train"]}
    assert not train_combos & {combo(a) for a in species["test"]}, "a test species repeats a train colouring"
    # ... yet each single value of each attribute was seen in training.
    for attribute, values in S.attribute_values(dataset).items():
        assert {a[attribute] for a in species["train"]} == set(values), attribute
    assert species == S.species(dataset, seed=0)
    assert species != S.species(dataset, seed=1)


@pytest.mark.parametrize("dataset", DATASETS)
def test_prepared_layout_and_disjoint_classes(prepared, smoke, dataset):
    data = PreparedData(prepared[dataset, 1])
    spec = S.DATASETS[dataset]
    train, test = data.split("train"), data.split("test")
    per = smoke.data
    assert len(train) == spec.train_species * per.images_per_class_train
    assert len(test) == spec.test_species * per.images_per_class_test
    assert train.images.shape[1:] == (smoke.resolution, smoke.resolution, 3)
    assert train.part_masks.shape == train.images.shape[:3]
    assert not set(train.class_ids.tolist()) & set(test.class_ids.tolist())
    m = data.manifest
    assert m["generator_version"] == S.GENERATOR_VERSION and m["parts"] == S.parts(dataset)
    assert m["colour_attributes"] == S.colour_attributes(dataset)
    assert [s["class_id"] for s in m["species"]["test"]] == sorted(set(test.class_ids.tolist()))
    # val: further images of the train species, none of them a train image.
    val = data.split("val")
    assert len(val) == spec.train_species * per.images_per_class_val
    assert set(val.class_ids.tolist()) == set(train.class_ids.tolist())
    assert not {v["background_seed"] for v in val.scenes} & {t["background_seed"] for t in train.scenes}
    train_bytes = {np.asarray(im).tobytes() for im in train.images}
    assert not any(np.asarray(im).tobytes() in train_bytes for im in val.images)
    assert m["split"]["counts"] == {"train": len(train), "val": len(val), "test": len(test)}
    for split in (train, val, test):
        assert all(len(c) == S.CAPTIONS_PER_IMAGE for c in split.captions)
        assert int(split.part_masks.max()) <= len(S.parts(dataset))
        assert split.attributes[0] == split.scenes[0]["attributes"]


@pytest.mark.parametrize("dataset", DATASETS)
def test_captions_name_distinct_subsets_within_the_word_limit(prepared, dataset):
    split = PreparedData(prepared[dataset, 1]).split("train")
    for captions in split.captions[:200]:
        subsets = {frozenset(caption_colours(dataset, c)) | frozenset(tokenize(c)) for c in captions}
        assert len(subsets) == len(captions), captions
        for caption in captions:
            assert len(tokenize(caption)) <= 18, caption
            assert caption_colours(dataset, caption), f"{caption!r} names no colour"


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_colour_word_is_the_rendered_colour_of_its_part(prepared, dataset):
    parts = S.parts(dataset)
    split = PreparedData(prepared[dataset, 1]).split("test")
    checked = 0
    for scene, captions in list(zip(split.scenes, split.captions, strict=True))[::2]:
        assert captions == S.scene_captions(scene)
        image, mask = S.render(scene, 64)
        for caption in captions:
            for part, word in caption_colours(dataset, caption):
                seen = part_colour(image, mask == parts.index(part) + 1)
                assert seen == word, f"{caption!r}: the {part} is rendered {seen}"
                checked += 1
    assert checked > 200


@pytest.mark.parametrize("dataset", DATASETS)
def test_the_hole_hides_a_part_every_caption_describes(prepared, smoke, dataset):
    parts = S.parts(dataset)
    for split_name in ("train", "test"):
        split = PreparedData(prepared[dataset, 1]).split(split_name)
        rows, cols = hole(smoke.resolution)
        for mask, captions in zip(split.part_masks, split.captions, strict=True):
            share = {}
            for k, part in enumerate(parts, start=1):
                pixels = mask == k
                if pixels.any():
                    share[part] = pixels[rows, cols].sum() / pixels.sum()
            for caption in captions:
                hidden = max(share.get(p, 0.0) for p in described_parts(dataset, caption))
                assert hidden >= 0.5, f"{caption!r}: no described part is mostly inside the hole"


@pytest.mark.parametrize("dataset", DATASETS)
def test_counterfactual_edit_changes_only_the_edited_part(dataset):
    species = S.species(dataset, seed=0)["test"]
    parts = S.parts(dataset)
    names = list(S.colour_palette())
    for n in range(4):
        scene = S.draw_scene(dataset, species[n], 1000 + n, seed=[5, n])
        image, mask = S.render(scene, 64)
        for attribute, part in S.colour_attributes(dataset).items():
            old = scene["attributes"][attribute]
            if old not in names:
                continue  # wing bars absent: adding them is a change of shape, not of colour
            new = names[(names.index(old) + 3) % len(names)]
            edited = S.edit_scene(scene, {attribute: new})
            assert scene["attributes"][attribute] == old, "edit_scene must not touch its input"
            image2, mask2 = S.render(edited, 64)
            assert np.array_equal(mask, mask2)
            changed = (image != image2).any(axis=2)
            own = mask == parts.index(part) + 1
            # The part's own pixels plus its antialiased rim (pixels it covers only partly).
            touched = S.part_coverage(scene, 64)[parts.index(part) + 1] > 0
            assert not (changed & ~touched).any(), f"editing {attribute} changed pixels outside the {part}"
            assert (touched & ~ndimage.binary_dilation(own, iterations=2)).sum() <= 3
            assert changed[own].mean() > 0.9
            assert part_colour(image2, own) == new


def test_edit_scene_refuses_unknown_names():
    scene = S.draw_scene("synth-birds", S.species("synth-birds", 0)["train"][0], 0, seed=1)
    with pytest.raises(ValueError, match="'tail_length'"):
        S.edit_scene(scene, {"tail_length": "long"})
    with pytest.raises(ValueError, match="'turquoise'.*wing_colour"):
        S.edit_scene(scene, {"wing_colour": "turquoise"})
    assert S.edit_scene(scene, {"wing_bars": "none"})["attributes"]["wing_bars"] == "none"


@pytest.mark.parametrize("dataset", DATASETS)
def test_scene_is_json_and_rendering_is_pure(dataset):
    scene = S.draw_scene(dataset, S.species(dataset, 0)["train"][3], 3, seed=[0, 1, 2])
    again = json.loads(json.dumps(scene))
    assert again == scene
    a, b = S.render(scene, 32), S.render(again, 32)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[0].dtype == np.uint8 and a[0].shape == (32, 32, 3) and a[1].shape == (32, 32)


@pytest.mark.parametrize("dataset", DATASETS)
def test_rerun_is_byte_identical_whatever_the_worker_count(prepared, dataset):
    one, two = prepared[dataset, 1], prepared[dataset, 2]
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    for rel in files:
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel


@pytest.mark.parametrize("dataset", DATASETS)
def test_vocabulary_comes_from_train_captions_only(prepared, dataset):
    data = PreparedData(prepared[dataset, 1])
    train_caps = [c for caps in data.split("train").captions for c in caps]
    assert data.vocab == Vocabulary.build(train_caps)
    test_words = {t for caps in data.split("test").captions for c in caps for t in tokenize(c)}
    only_test = test_words - {t for c in train_caps for t in tokenize(c)}
    assert not only_test & set(data.vocab.words)
    # Every colour is seen in training, so no colour word of a test caption is unknown.
    assert set(S.colour_palette()) <= set(data.vocab.words)


def test_prepare_again_is_a_no_op_and_another_config_is_refused(prepared, smoke):
    out = prepared["synth-flowers", 1]
    stamp = (out / "train" / "images.npy").stat().st_mtime_ns
    S.prepare_synthetic("synth-flowers", out, smoke)
    assert (out / "train" / "images.npy").stat().st_mtime_ns == stamp
    other = load_scale("smoke")
    other.data.seed = 7
    with pytest.raises(PreparedDataError, match="seed"):
        S.prepare_synthetic("synth-flowers", out, other)
