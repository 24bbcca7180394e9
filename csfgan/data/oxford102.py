"""Oxford-102 Flowers with Reed et al.'s captions, prepared as AttnGAN loads flowers.

Sources in the downloads folder: ``102flowers.tgz`` (``jpg/image_%05d.jpg``), ``imagelabels.mat``
(``labels``: the 1-based class of every image) and ``setid.mat`` (the official image-level split,
checked for consistency and recorded, not used), plus the caption archive
``cvpr2016_flowers.tar.gz``. The whole image is converted to RGB and resized to the scale's
resolution. The split is by class: Reed et al.'s 82 train+val / 20 test classes (7,034 / 1,155).
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

DATASET = "oxford102"
ARCHIVE = "102flowers.tgz"
LABELS = "imagelabels.mat"
SETID = "setid.mat"
PAPER_COUNTS = {"train": 7034, "test": 1155}
RESAMPLE = Image.Resampling.LANCZOS
PREPROCESSING = "whole image; RGB; LANCZOS resize to res x res (v1)"


def class_name(label: int) -> str:
    """Reed et al.'s folder name for a 1-based Oxford-102 label."""
    return f"class_{label:05d}"


def load_image(task: tuple[str, int]) -> np.ndarray:
    """Worker: open, convert to RGB, resize the whole image; uint8 (res, res, 3)."""
    path, resolution = task
    try:
        with Image.open(path) as img:
            img = img.convert("RGB").resize((resolution, resolution), RESAMPLE)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataSourceError(f"{path}: cannot read image ({exc}); the 102flowers archive may be corrupt") from exc
    return np.asarray(img, dtype=np.uint8)


def _loadmat(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises assorted errors for a damaged file
        raise DataSourceError(f"{path}: cannot read this MATLAB file ({exc}); download it again") from exc
    missing = [k for k in keys if k not in mat]
    if missing:
        raise DataSourceError(f"{path}: no variable(s) {missing} in it; is it the official {path.name}?")
    out = {}
    for k in keys:
        values = np.asarray(mat[k]).ravel()
        if values.size and (not np.all(np.isfinite(values)) or np.any(values != np.round(values))):
            raise DataSourceError(f"{path}: variable {k!r} holds non-integer values")
        out[k] = values.astype(np.int64)
    return out


def read_labels(labels_path: Path, setid_path: Path) -> tuple[np.ndarray, dict[str, int]]:
    """The 1-based labels of images 1..N, after checking setid.mat partitions exactly those images."""
    labels = _loadmat(labels_path, ("labels",))["labels"]
    if labels.size == 0 or labels.min() < 1:
        raise DataSourceError(f"{labels_path}: 'labels' must be 1-based class numbers, got min {labels.min(initial=0)}")
    setid = _loadmat(setid_path, ("trnid", "valid", "tstid"))
    ids = np.concatenate(list(setid.values()))
    if len(ids) != labels.size or set(ids.tolist()) != set(range(1, labels.size + 1)):
        raise DataSourceError(
            f"{setid_path}: trnid/valid/tstid do not partition images 1..{labels.size} of {labels_path.name}; "
            f"one of the two files is not the official one"
        )
    return labels, {k: int(v.size) for k, v in setid.items()}


def find_root(extracted: Path) -> Path:
    """The folder holding ``jpg/`` (the archive's top level in the official file)."""
    candidates = sorted((p.parent for p in extracted.rglob("jpg") if p.is_dir()), key=lambda p: (len(p.parts), str(p)))
    if not candidates:
        raise DataSourceError(
            f"{extracted}: no jpg/ folder in the extracted {ARCHIVE}; is it the official archive? "
            f"Delete {extracted} and {ARCHIVE} and download again"
        )
    return candidates[0]


def prepare_oxford102(
    out: Path,
    scale,
    downloads_dir: Path,
    captions_archive: Path | str | None = None,
    workers: int = 1,
    *,
    md5s: dict[str, str] | None = None,
    progress: bool = True,
) -> Path:
    """Prepare Oxford-102 at ``scale.resolution`` into ``out``; return ``out``.

    ``downloads_dir`` holds ``102flowers.tgz``, ``imagelabels.mat`` and ``setid.mat``
    (``csfgan download --dataset oxford102``); ``captions_archive`` is the path of
    ``cvpr2016_flowers.tar.gz`` (default: in ``downloads_dir``). Returns at once if ``out`` already
    holds this exact preparation. ``md5s`` overrides expected checksums by file name (tests).
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

    labels, setid_sizes = read_labels(sources[LABELS][0], sources[SETID][0])
    archive_path, archive_md5 = sources[ARCHIVE]
    extracted = extract_archive(archive_path, extraction_dir(downloads_dir, ARCHIVE), md5=archive_md5)
    root = find_root(extracted)
    captions = ReedCaptions.open(DATASET, cap_archive, downloads_dir, captions_md5)
    class_names = [class_name(k) for k in range(1, int(labels.max()) + 1)]
    captions.check_classes(sorted({class_name(int(k)) for k in labels}), f"{sources[LABELS][0]}")
    records = []
    for i, label in enumerate(labels.tolist(), 1):
        key = f"jpg/image_{i:05d}.jpg"
        records.append(
            ImageRecord(
                key=key,
                path=root / key,
                class_id=label - 1,
                class_name=class_name(label),
                caption_dir=class_name(label),
                caption_stem=f"image_{i:05d}",
                task=(str(root / key), scale.resolution),
            )
        )
    return write_real(
        out,
        dataset=DATASET,
        scale=scale,
        config=config,
        captions=captions,
        records=records,
        loader=load_image,
        listing=f"{sources[LABELS][0]} (images 1..{labels.size})",
        extracted=extracted,
        sources=checksums,
        manifest={
            "class_names": class_names,
            "preprocessing": PREPROCESSING,
            "official_image_split_sizes": setid_sizes,
            # A mirror's own bytes, accepted in place of the official files' MD5s (recorded, never silent).
            "md5_overrides": dict(sorted((md5s or {}).items())),
        },
        paper_counts=PAPER_COUNTS,
        workers=workers,
        progress=progress,
    )
