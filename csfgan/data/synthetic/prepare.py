"""Preparing a synthetic dataset: every image of every species rendered into the prepared format."""

from __future__ import annotations

from pathlib import Path

from csfgan.config import ScaleConfig
from csfgan.data.prepared import SPLITS, PreparedWriter, check_existing
from csfgan.data.synthetic.captions import CAPTIONS_PER_IMAGE
from csfgan.data.synthetic.datasets import _spec, attribute_values, colour_attributes, part_words, parts
from csfgan.data.synthetic.palette import _PALETTE
from csfgan.data.synthetic.render import render
from csfgan.data.synthetic.scene import draw_scene, image_seed, scene_captions
from csfgan.data.synthetic.spec import GENERATOR_VERSION
from csfgan.data.synthetic.species import species
from csfgan.signals import worker_pool


def _make_record(task: tuple) -> tuple:
    dataset, seed, split, position, class_id, index, attrs, resolution = task
    scene = draw_scene(dataset, attrs, class_id, image_seed(dataset, seed, split, class_id, index))
    image, mask = render(scene, resolution)
    captions = scene_captions(scene)
    key = f"{split}/species{class_id:03d}/{index:04d}"
    return split, position, image, mask, captions, class_id, key, attrs, scene


def prepare_synthetic(dataset: str, out: Path, scale: ScaleConfig, workers: int = 1) -> None:
    """Render ``dataset`` at the scale's resolution into the prepared format at ``out``."""
    spec = _spec(dataset)
    data = scale.data
    config = {
        "dataset": dataset,
        "resolution": scale.resolution,
        "images_per_class_train": data.images_per_class_train,
        "images_per_class_test": data.images_per_class_test,
        "images_per_class_val": data.images_per_class_val,
        "seed": data.seed,
        "generator_version": GENERATOR_VERSION,
        "captions_per_image": CAPTIONS_PER_IMAGE,
        "max_words": scale.text.max_words,
    }
    if check_existing(out, config):
        return
    all_species = species(dataset, data.seed)
    split_species = {"train": all_species["train"], "test": all_species["test"], "val": all_species["train"]}
    per_class = {"train": data.images_per_class_train, "test": data.images_per_class_test,
                 "val": data.images_per_class_val}
    tasks = []
    class_ids: dict[str, list[int]] = {}
    first_id = {"train": 0, "test": len(all_species["train"]), "val": 0}
    for split in ("train", "test", "val"):  # the order of the tasks before val existed, then val
        class_ids[split] = []
        position = 0
        for j, attrs in enumerate(split_species[split]):
            class_id = first_id[split] + j
            class_ids[split].append(class_id)
            for index in range(per_class[split]):
                tasks.append((dataset, data.seed, split, position, class_id, index, attrs, scale.resolution))
                position += 1
    counts = {s: len(class_ids[s]) * per_class[s] for s in SPLITS}

    with PreparedWriter(
        out, dataset=dataset, resolution=scale.resolution, config=config, max_words=scale.text.max_words
    ) as writer:
        writers = {s: writer.split(s, counts[s], with_parts=True) for s in SPLITS}

        def put(record: tuple) -> None:
            split, position, image, mask, captions, class_id, key, attrs, scene = record
            writers[split].put(position, image, captions, class_id, key, part_mask=mask, attributes=attrs, scene=scene)

        if workers <= 1:
            for task in tasks:
                put(_make_record(task))
        else:
            with worker_pool("fork", workers) as pool:
                for record in pool.imap_unordered(_make_record, tasks, chunksize=64):
                    put(record)
        writer.finish(
            seed=data.seed,
            generator_version=GENERATOR_VERSION,
            stands_in_for=spec.stands_in_for,
            parts=parts(dataset),
            palette={k: list(v) for k, v in _PALETTE.items()},
            colour_attributes=colour_attributes(dataset),
            attribute_values=attribute_values(dataset),
            part_words=part_words(dataset),
            species={
                s: [{"class_id": c, "attributes": a} for c, a in zip(class_ids[s], all_species[s], strict=True)]
                for s in ("train", "test")
            },
            split={
                "by": "class (test) and image (val)",
                "train": f"{len(all_species['train'])} species x {per_class['train']} images",
                "test": f"{len(all_species['test'])} other species x {per_class['test']} images, colour "
                        f"combinations never seen in training; for the final numbers only",
                "val": f"the {len(all_species['train'])} train species x {per_class['val']} further images "
                       f"(image seeds disjoint from train's), for tuning and checkpoint choice",
                "counts": counts,
            },
        )
