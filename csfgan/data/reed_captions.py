"""Reed et al. (2016) captions for CUB-200-2011 and Oxford-102: 10 per image, with the class split.

The archives (``cvpr2016_cub.tar.gz``, ``cvpr2016_flowers.tar.gz``) are distributed through a file
host that needs a browser, so they are never downloaded here: the user puts them in the downloads
folder (or passes their path). Inside, the layout is::

    cvpr2016_cub/text_c10/<class>/<image>.txt      one caption per line (10 lines)
    cvpr2016_cub/trainvalclasses.txt               the 150 training classes, one per line
    cvpr2016_cub/testclasses.txt                   the 50 test classes

(``cvpr2016_flowers/text_c10/class_00001/image_06734.txt``, 82 / 20 classes, for flowers.) The top
folder's name is not relied on: the root is the folder that holds ``text_c10`` and the split files.
Only those are extracted (the archives also hold large precomputed features).

Captions are read as AttnGAN reads them: UTF-8, one per line, lines without a word skipped, the
``\\ufffd\\ufffd`` pairs found in some CUB captions replaced by a space, the first 10 kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from csfgan.data.download import DataSourceError, extract_archive, extraction_dir, md5sum
from csfgan.data.text import tokenize

CAPTIONS_PER_IMAGE = 10
TEXT_DIR = "text_c10"
TRAIN_CLASSES = "trainvalclasses.txt"
TEST_CLASSES = "testclasses.txt"
REPOSITORY = "https://github.com/reedscot/cvpr2016"


@dataclass(frozen=True)
class CaptionSource:
    dataset: str
    archive_name: str  # the file name Reed et al. publish it under
    description: str


CAPTION_SOURCES: dict[str, CaptionSource] = {
    "cub": CaptionSource("cub", "cvpr2016_cub.tar.gz", "CUB-200-2011 captions (Reed et al. 2016)"),
    "oxford102": CaptionSource("oxford102", "cvpr2016_flowers.tar.gz", "Oxford-102 captions (Reed et al. 2016)"),
}


class CaptionProblem(Exception):
    """A caption file that is missing or has too few captions (skippable by configuration)."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def default_archive_path(dataset: str, downloads_dir: Path) -> Path:
    return Path(downloads_dir) / CAPTION_SOURCES[dataset].archive_name


def resolve_archive(dataset: str, captions_archive: Path | str | None, downloads_dir: Path) -> Path:
    """The caption archive's path, or a :class:`DataSourceError` saying where to get it and put it."""
    src = CAPTION_SOURCES[dataset]
    default = default_archive_path(dataset, downloads_dir)
    path = Path(captions_archive) if captions_archive else default
    if path.is_file():
        return path
    said = f"is not at {default} and no other path was given" if not captions_archive else f"is not at {path}"
    raise DataSourceError(
        f"the caption archive {src.archive_name} ({src.description}) {said}. It cannot be downloaded "
        f"automatically (its file host needs a browser): get {src.archive_name} from the Google Drive "
        f"link in the README of Reed et al.'s repository {REPOSITORY} (icml2016/cvpr2016 code), put it "
        f"at {default} (or anywhere, and pass its path as the captions archive), then prepare again."
    )


def _wanted(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return TEXT_DIR in parts[:-1] or parts[-1] in (TRAIN_CLASSES, TEST_CLASSES)


def _read_class_list(path: Path) -> list[str]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataSourceError(f"{path}: not UTF-8 text ({exc})") from exc
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise DataSourceError(f"{path}: class list is empty")
    if len(set(names)) != len(names):
        raise DataSourceError(f"{path}: class list has duplicate entries")
    return names


class ReedCaptions:
    """An extracted caption archive: the class split and per-image caption files."""

    def __init__(self, dataset: str, archive: Path, archive_md5: str, root: Path):
        self.dataset = dataset
        self.archive = archive
        self.archive_md5 = archive_md5
        self.root = root
        self.text_dir = root / TEXT_DIR
        self.train_classes = _read_class_list(root / TRAIN_CLASSES)
        self.test_classes = _read_class_list(root / TEST_CLASSES)
        both = sorted(set(self.train_classes) & set(self.test_classes))
        if both:
            raise DataSourceError(f"{archive}: classes {both[:5]} are in both {TRAIN_CLASSES} and {TEST_CLASSES}")

    @classmethod
    def open(cls, dataset: str, archive: Path, downloads_dir: Path, archive_md5: str | None = None) -> ReedCaptions:
        """Extract (captions and split files only, safely, once) and locate the archive's root."""
        archive = Path(archive)
        digest = archive_md5 or md5sum(archive)
        dest = extract_archive(archive, extraction_dir(downloads_dir, archive.name), md5=digest, include=_wanted)
        roots = sorted(
            {p.parent for p in dest.rglob(TRAIN_CLASSES) if (p.parent / TEXT_DIR).is_dir()},
            key=lambda p: (len(p.parts), str(p)),
        )
        if not roots:
            src = CAPTION_SOURCES[dataset]
            raise DataSourceError(
                f"{archive}: no folder with {TEXT_DIR}/ and {TRAIN_CLASSES} inside; is it Reed et al.'s "
                f"{src.archive_name} (layout <top>/{TEXT_DIR}/<class>/<image>.txt, <top>/{TRAIN_CLASSES}, "
                f"<top>/{TEST_CLASSES})?"
            )
        if len(roots) > 1:
            raise DataSourceError(
                f"{archive}: several caption folders inside ({', '.join(map(str, roots))}); expected one"
            )
        return cls(dataset, archive, digest, roots[0])

    def check_classes(self, known: list[str], what: str) -> None:
        """Every class in the split files must be one of the dataset's classes."""
        unknown = [c for c in self.train_classes + self.test_classes if c not in set(known)]
        if unknown:
            raise DataSourceError(
                f"{self.archive}: its split files name classes {unknown[:5]} (of {len(unknown)}) that are "
                f"not in {what}; is this the caption archive for {CAPTION_SOURCES[self.dataset].archive_name}?"
            )

    def caption_path(self, class_dir: str, image_stem: str) -> Path:
        return self.text_dir / class_dir / f"{image_stem}.txt"

    def read(self, class_dir: str, image_stem: str) -> list[str]:
        """The image's first 10 captions.

        Raises :class:`CaptionProblem` for a missing file or one with fewer than 10 captions (the
        caller may skip the image) and :class:`DataSourceError` for bytes that are not UTF-8.
        """
        path = self.caption_path(class_dir, image_stem)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise CaptionProblem(path, "caption file missing") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataSourceError(
                f"{path}: caption file is not valid UTF-8 (byte {exc.start}: {raw[exc.start : exc.start + 4]!r}); "
                f"the caption archive {self.archive} is corrupt: get it again"
            ) from exc
        captions = []
        for line in text.splitlines():
            line = line.replace("\ufffd\ufffd", " ").strip()
            if tokenize(line):
                captions.append(line)
        if not captions:
            raise CaptionProblem(path, "caption file is empty")
        if len(captions) < CAPTIONS_PER_IMAGE:
            raise CaptionProblem(path, f"caption file has {len(captions)} captions, expected {CAPTIONS_PER_IMAGE}")
        return captions[:CAPTIONS_PER_IMAGE]


def caption_error(problems: list[tuple[str, CaptionProblem]]) -> DataSourceError:
    """One error for all caption problems, naming the first few files."""
    shown = "; ".join(f"{p.path}: {p.reason} (image {key})" for key, p in problems[:5])
    more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
    return DataSourceError(
        f"{len(problems)} image(s) have no usable captions: {shown}{more}. Get an intact caption archive, "
        f"or set data.skip_missing_captions: true in the scale to leave these images out (they are then "
        f"listed in the manifest's 'skipped')."
    )


# --------------------------------------------------------------------------------------------
# Shared preparation of the Reed-captioned real sets (CUB-200-2011, Oxford-102)


@dataclass(frozen=True)
class ImageRecord:
    """One source image: where it is, its class, where its captions are, and the worker's task."""

    key: str  # the image's relative path in the source archive
    path: Path
    class_id: int  # 0-based dataset class index
    class_name: str  # as in the split files
    caption_dir: str  # text_c10/<caption_dir>/<caption_stem>.txt
    caption_stem: str
    task: tuple  # picklable argument of the dataset's image loader


def preparation_config(dataset: str, scale, sources: dict[str, str], preprocessing: str) -> dict:
    """What makes two preparations identical (compared by ``check_existing``)."""
    return {
        "dataset": dataset,
        "resolution": scale.resolution,
        "max_words": scale.text.max_words,
        "captions_per_image": CAPTIONS_PER_IMAGE,
        "skip_missing_captions": bool(scale.data.skip_missing_captions),
        "images_per_class_val": scale.data.images_per_class_val,
        "val_seed": scale.data.seed,
        "preprocessing": preprocessing,
        "sources": dict(sorted(sources.items())),
    }


def hold_out_val(items: list, class_of, per_class: int, seed: int) -> tuple[list, list]:
    """Split the train classes' ``items`` into (train, val): ``per_class`` images of each class, drawn
    with ``seed``, go to val (at most all but one, so every train class keeps an image). Both keep
    the input order.

    Why images of the train classes and not held-out classes: val then means the same on every
    dataset (the synthetic sets render new images of their train species), and training keeps all
    150 / 82 classes; holding out, say, 15 classes would remove 10 % of the species the model learns
    from, a larger departure from the paper than a few images per class. The cost: val measures
    seen classes, the test split unseen ones (README, "Splits").
    """
    import numpy as np

    by_class: dict[int, list[int]] = {}
    for i, item in enumerate(items):
        by_class.setdefault(class_of(item), []).append(i)
    chosen: set[int] = set()
    for class_id, indices in sorted(by_class.items()):
        k = min(per_class, len(indices) - 1)
        if k > 0:
            picked = np.random.default_rng([seed, class_id]).choice(len(indices), k, replace=False)
            chosen.update(indices[j] for j in picked.tolist())
    return ([it for i, it in enumerate(items) if i not in chosen],
            [it for i, it in enumerate(items) if i in chosen])


def _imap(fn, tasks: list, workers: int):
    """``fn`` over ``tasks`` in order, in a pool of ``workers`` processes (inline for 1)."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield fn(task)
        return
    from csfgan.signals import worker_pool

    # spawn, not fork: the caller may hold torch threads, which fork can deadlock.
    with worker_pool("spawn", min(workers, len(tasks))) as pool:
        yield from pool.imap(fn, tasks, chunksize=16)


def write_real(
    out: Path,
    *,
    dataset: str,
    scale,
    config: dict,
    captions: ReedCaptions,
    records: list[ImageRecord],
    loader,
    listing: str,
    extracted: Path,
    sources: dict[str, str],
    manifest: dict,
    paper_counts: dict[str, int],
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Split ``records`` by the caption archive's class lists, read their captions, check their
    images exist, then load the images with ``loader`` (in a pool) straight into the prepared
    format. Nothing is written at ``out`` unless everything succeeds."""
    from tqdm import tqdm

    from csfgan.data.prepared import SPLITS, PreparedWriter

    split_of = {c: "train" for c in captions.train_classes} | {c: "test" for c in captions.test_classes}
    missing_images = [r for r in records if r.class_name in split_of and not r.path.is_file()]
    if missing_images:
        shown = ", ".join(str(r.path) for r in missing_images[:5])
        raise DataSourceError(
            f"{len(missing_images)} image(s) listed in {listing} are missing: {shown}"
            f"{' ...' if len(missing_images) > 5 else ''}. The source archive or its extraction {extracted} is "
            f"incomplete: delete {extracted} and prepare again; if the images are still missing, the "
            f"archive is not the official one: download it again."
        )

    by_split: dict[str, list[tuple[ImageRecord, list[str]]]] = {s: [] for s in SPLITS}
    problems: list[tuple[str, CaptionProblem]] = []
    unsplit: set[str] = set()
    for rec in records:
        split = split_of.get(rec.class_name)
        if split is None:
            unsplit.add(rec.class_name)
            continue
        try:
            caps = captions.read(rec.caption_dir, rec.caption_stem)
        except CaptionProblem as problem:
            problems.append((rec.key, problem))
            continue
        by_split[split].append((rec, caps))
    if problems and not scale.data.skip_missing_captions:
        raise caption_error(problems)
    train_class_images = len(by_split["train"])
    by_split["train"], by_split["val"] = hold_out_val(by_split["train"], lambda item: item[0].class_id,
                                                      scale.data.images_per_class_val, scale.data.seed)
    for split, items in by_split.items():
        if not items:
            raise DataSourceError(f"{dataset}: no usable images in the {split} split (check {captions.archive}"
                                  + ("; val needs a train class with two or more images)" if split == "val" else ")"))
    skipped = [
        {"key": key, "reason": p.reason, "caption_file": str(p.path.relative_to(captions.root))} for key, p in problems
    ]
    flat = [(split, i, rec, caps) for split in SPLITS for i, (rec, caps) in enumerate(by_split[split])]
    with PreparedWriter(
        out, dataset=dataset, resolution=scale.resolution, config=config, max_words=scale.text.max_words
    ) as w:
        writers = {split: w.split(split, len(by_split[split])) for split in SPLITS}
        images = _imap(loader, [rec.task for _, _, rec, _ in flat], workers)
        for (split, i, rec, caps), image in tqdm(
            zip(flat, images, strict=True),
            total=len(flat),
            desc=f"{dataset} images",
            unit="img",
            disable=None if progress else True,  # a bar on a terminal only
            leave=False,
        ):
            writers[split].put(i, image, caps, rec.class_id, rec.key)
        counts = {split: len(by_split[split]) for split in SPLITS}
        w.finish(
            sources=sources,
            split={
                "by": "class",
                "definition": f"Reed et al. (2016) {TRAIN_CLASSES} / {TEST_CLASSES} from {captions.archive.name}",
                "val": f"{scale.data.images_per_class_val} images of each train class (at most all but one), "
                       f"drawn with seed [{scale.data.seed}, class id], held out of the train split: train "
                       f"has {len(by_split['val'])} of {train_class_images} train-class images fewer than "
                       f"the paper trains on; val is for tuning and checkpoint choice, test for the final "
                       f"numbers only",
                "val_held_out_from_train": len(by_split["val"]),
                "train_classes": captions.train_classes,
                "test_classes": captions.test_classes,
                "unsplit_classes": sorted(unsplit),
                "counts": counts,
                "paper_counts": paper_counts,
            },
            skipped=skipped,
            skipped_count=len(skipped),
            seed=None,
            generator_version=None,
            **manifest,
        )
    return Path(out)
