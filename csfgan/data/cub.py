"""CUB-200-2011 with Reed et al.'s captions, prepared as AttnGAN / DF-GAN load it.

Sources: ``CUB_200_2011.tgz`` (MD5 97eceeb196236b17998738112f37df78) in the downloads folder and
the caption archive ``cvpr2016_cub.tar.gz``. Each image is cropped around its bounding-box centre to
a square of side 1.5 x the box's longer side, clipped to the image borders, converted to RGB
(grayscale and CMYK images exist) and resized to the scale's resolution. The split is by class:
Reed et al.'s 150 train+val classes / 50 test classes (8,855 / 2,933 images).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from csfgan.data.download import (
    DataSourceError,
    extract_archive,
    extraction_dir,
    md5sum,
    require_sources,
)
from csfgan.data.prepared import check_existing
from csfgan.data.reed_captions import (
    ImageRecord,
    ReedCaptions,
    preparation_config,
    resolve_archive,
    write_real,
)

DATASET = "cub"
ARCHIVE = "CUB_200_2011.tgz"
PAPER_COUNTS = {"train": 8855, "test": 2933}
RESAMPLE = Image.Resampling.LANCZOS
PREPROCESSING = "bbox-centre square crop r=int(0.75*max(w,h)) clipped; RGB; LANCZOS resize to res x res (v1)"


def crop_box(bbox: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    """AttnGAN's ``get_imgs`` crop: ``(x1, y1, x2, y2)`` around the box centre, clipped to the image.

    ``bbox`` is ``(x, y, w, h)`` already truncated to ints (AttnGAN reads bounding_boxes.txt with
    ``.astype(int)``).
    """
    x, y, w, h = bbox
    r = int(max(w, h) * 0.75)
    center_x = int((2 * x + w) / 2)
    center_y = int((2 * y + h) / 2)
    y1 = max(0, center_y - r)
    y2 = min(height, center_y + r)
    x1 = max(0, center_x - r)
    x2 = min(width, center_x + r)
    return x1, y1, x2, y2


def load_image(task: tuple[str, tuple[int, int, int, int], int]) -> np.ndarray:
    """Worker: open, convert to RGB, crop around the bounding box, resize; uint8 (res, res, 3)."""
    path, bbox, resolution = task
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataSourceError(f"{path}: cannot read image ({exc}); the CUB archive may be corrupt") from exc
    box = crop_box(bbox, img.width, img.height)
    if box[2] <= box[0] or box[3] <= box[1]:
        raise DataSourceError(
            f"{path}: bounding box {bbox} (bounding_boxes.txt) gives an empty crop {box} for a "
            f"{img.width}x{img.height} image"
        )
    img = img.crop(box).resize((resolution, resolution), RESAMPLE)
    return np.asarray(img, dtype=np.uint8)


def _read_table(path: Path, columns: int) -> dict[int, list[str]]:
    """``id -> fields`` from one of CUB's whitespace-separated ``<id> ...`` files."""
    if not path.is_file():
        raise DataSourceError(f"{path}: missing from the CUB archive; download CUB_200_2011.tgz again")
    table: dict[int, list[str]] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataSourceError(f"{path}: not UTF-8 text ({exc})") from exc
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=columns - 1) if columns == 2 else line.split()
        if len(fields) != columns:
            raise DataSourceError(f"{path}, line {n}: expected {columns} fields, got {line!r}")
        try:
            key = int(fields[0])
        except ValueError:
            raise DataSourceError(f"{path}, line {n}: id {fields[0]!r} is not an integer") from None
        if key in table:
            raise DataSourceError(f"{path}, line {n}: id {key} appears twice")
        table[key] = fields[1:]
    if not table:
        raise DataSourceError(f"{path}: empty")
    return table


def find_root(extracted: Path) -> Path:
    """The folder holding images.txt (``CUB_200_2011/`` in the official archive)."""
    candidates = sorted(
        (p.parent for p in extracted.rglob("images.txt") if (p.parent / "images").is_dir()),
        key=lambda p: (len(p.parts), str(p)),
    )
    if not candidates:
        raise DataSourceError(
            f"{extracted}: no CUB_200_2011 folder (images.txt and images/) in the extracted {ARCHIVE}; "
            f"is it the official archive? Delete {extracted} and {ARCHIVE} and download again"
        )
    return candidates[0]


def read_records(root: Path, resolution: int) -> tuple[list[ImageRecord], list[str]]:
    """Every image of the dataset in images.txt order, and the class names by 0-based class id."""
    images = _read_table(root / "images.txt", 2)
    labels = _read_table(root / "image_class_labels.txt", 2)
    boxes = _read_table(root / "bounding_boxes.txt", 5)
    classes = _read_table(root / "classes.txt", 2)
    class_names = [classes[k][0] for k in sorted(classes)]
    class_index = {k: i for i, k in enumerate(sorted(classes))}
    records = []
    for image_id, (rel,) in images.items():
        for table, name in ((labels, "image_class_labels.txt"), (boxes, "bounding_boxes.txt")):
            if image_id not in table:
                raise DataSourceError(f"{root / name}: no entry for image {image_id} ({rel}) of images.txt")
        try:
            label = int(labels[image_id][0])
            # AttnGAN reads the boxes with pandas ``.astype(int)``: truncate.
            bbox = tuple(int(float(v)) for v in boxes[image_id])
        except ValueError:
            raise DataSourceError(
                f"{root}: malformed class label or bounding box for image {image_id} ({rel})"
            ) from None
        if label not in class_index:
            raise DataSourceError(
                f"{root / 'image_class_labels.txt'}: image {image_id} has class {label}, not in classes.txt"
            )
        rel_path = Path(rel)
        records.append(
            ImageRecord(
                key=rel,
                path=root / "images" / rel_path,
                class_id=class_index[label],
                class_name=class_names[class_index[label]],
                caption_dir=rel_path.parent.as_posix(),
                caption_stem=rel_path.stem,
                task=(str(root / "images" / rel_path), bbox, resolution),
            )
        )
    return records, class_names


def prepare_cub(
    out: Path,
    scale,
    downloads_dir: Path,
    captions_archive: Path | str | None = None,
    workers: int = 1,
    *,
    md5s: dict[str, str] | None = None,
    progress: bool = True,
) -> Path:
    """Prepare CUB-200-2011 at ``scale.resolution`` into ``out``; return ``out``.

    ``downloads_dir`` holds ``CUB_200_2011.tgz`` (``csfgan download --dataset cub``);
    ``captions_archive`` is the path of ``cvpr2016_cub.tar.gz`` (default: in ``downloads_dir``).
    Returns at once if ``out`` already holds this exact preparation. ``md5s`` overrides expected
    checksums by file name (tests).
    """
    out, downloads_dir = Path(out), Path(downloads_dir)
    sources = require_sources(DATASET, downloads_dir, md5s)
    cap_archive = resolve_archive(DATASET, captions_archive, downloads_dir)
    checksums = {name: md5 for name, (_, md5) in sources.items()}
    captions_md5 = md5sum(cap_archive)
    checksums[cap_archive.name] = captions_md5
    config = preparation_config(DATASET, scale, checksums, PREPROCESSING)
    if check_existing(out, config):
        return out

    archive_path, archive_md5 = sources[ARCHIVE]
    extracted = extract_archive(archive_path, extraction_dir(downloads_dir, ARCHIVE), md5=archive_md5)
    root = find_root(extracted)
    captions = ReedCaptions.open(DATASET, cap_archive, downloads_dir, captions_md5)
    records, class_names = read_records(root, scale.resolution)
    captions.check_classes(class_names, f"{root / 'classes.txt'}")
    return write_real(
        out,
        dataset=DATASET,
        scale=scale,
        config=config,
        captions=captions,
        records=records,
        loader=load_image,
        listing=str(root / "images.txt"),
        extracted=extracted,
        sources=checksums,
        manifest={"class_names": class_names,
                  # A mirror's own bytes, accepted in place of the official files' MD5s (recorded, never silent).
                  "md5_overrides": dict(sorted((md5s or {}).items())), "preprocessing": PREPROCESSING},
        paper_counts=PAPER_COUNTS,
        workers=workers,
        progress=progress,
    )
