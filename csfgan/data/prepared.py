"""The one prepared format every dataset is written in, and its reader.

    <root>/manifest.json            counts, split definition, seed, generator version, sources, config,
                                    and "files": every other file's bytes and sha256 (+ shape, dtype)
    <root>/vocab.json               vocabulary built from the training captions
    <root>/<split>/images.npy       uint8 (N, H, W, 3), memory-mapped when read
    <root>/<split>/class_ids.npy    int32 (N,)
    <root>/<split>/captions.json    N lists of captions (raw text)
    <root>/<split>/tokens.npy       int32 (N, K, max_words), 0-padded ids into vocab.json
    <root>/<split>/lengths.npy      int32 (N, K)
    <root>/<split>/keys.json        N image identifiers (source file name or scene id)
    synthetic sets also:
    <root>/<split>/part_masks.npy   uint8 (N, H, W): 0 background, k = k-th entry of manifest "parts"
    <root>/<split>/attributes.json  N dicts of attribute name -> value
    <root>/<split>/scenes.json      N scene descriptions from which the renderer redraws the image

The splits are ``train``, ``val`` (for tuning and checkpoint choice: images of the train classes,
disjoint from the train images) and ``test`` (class-disjoint, for the final numbers only).

Writing goes to a hidden sibling directory that is renamed into place only when complete, so an
interrupted ``prepare`` leaves nothing a later step could take for a finished dataset. Reading checks
every file's size (and each array's shape and dtype) against the manifest, so a truncated or
replaced file is an error, not a silently shorter dataset; :func:`verify` also checks the hashes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from csfgan.data.text import Vocabulary, encode_captions
from csfgan.errors import UserError
from csfgan.io import UNWRITABLE, OutputError, replace_dir, temporary_dir, write_json

# 2: the val split and the per-file sizes and hashes in the manifest.
FORMAT_VERSION = 2
SPLITS = ("train", "val", "test")


class PreparedDataError(UserError, RuntimeError):
    """Prepared data is missing, incomplete, or made with another config."""


# What PreparedWriter writes besides manifest.json. A folder holding nothing else is one of our
# preparations whose manifest was removed: Snakemake deletes a job's declared output (the manifest)
# before it runs the job again, and `prepare` must then redo the folder, not refuse it.
_TOP_FILES = frozenset({"vocab.json"})
_SPLIT_FILES = frozenset({"images.npy", "part_masks.npy", "class_ids.npy", "tokens.npy", "lengths.npy",
                          "captions.json", "keys.json", "attributes.json", "scenes.json"})


def _headless_preparation(out: Path) -> bool:
    """``out`` has no manifest and holds only files and split folders that ``PreparedWriter`` writes."""
    if (out / "manifest.json").exists():
        return False
    for p in out.iterdir():
        if p.is_file() and p.name in _TOP_FILES:
            continue
        if p.is_dir() and p.name in SPLITS and all(q.is_file() and q.name in _SPLIT_FILES for q in p.iterdir()):
            continue
        return False
    return True


def check_existing(out: Path, config: dict[str, Any]) -> bool:
    """True if ``out`` already holds this exact preparation; False if there is nothing to keep (absent,
    empty, or a preparation of ours without its manifest, which is redone); raise if it holds anything
    else."""
    out = Path(out)
    if _absent(out) or _headless_preparation(out):
        return False
    manifest = out / "manifest.json"
    if not manifest.is_file():
        raise PreparedDataError(
            f"{out} exists but has no manifest.json (not a prepared dataset, or a foreign folder): "
            f"delete it or choose another --out"
        )
    body = _read_manifest(manifest)
    if body.get("format_version") != FORMAT_VERSION:
        raise PreparedDataError(
            f"{out} was prepared by another csfgan (format version {body.get('format_version')}, this one "
            f"writes {FORMAT_VERSION}): delete {out} to prepare it again, or choose another --out"
        )
    old = body.get("config")
    if old != config:
        diff = sorted(k for k in set(old or {}) | set(config) if (old or {}).get(k) != config.get(k))
        raise PreparedDataError(
            f"{out} was prepared with a different config (differs in: {', '.join(diff)}): "
            f"delete {out} to prepare it again, or choose another --out"
        )
    return True


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PreparedDataError(f"{path}: unreadable ({exc}); delete {path.parent} and run `csfgan prepare` "
                                f"again") from exc
    if not isinstance(body, dict):
        raise PreparedDataError(f"{path}: not a manifest (a JSON object); delete {path.parent} and run "
                                f"`csfgan prepare` again")
    return body


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _npy_header(path: Path) -> tuple[list[int], str]:
    array = np.load(path, mmap_mode="r")  # reads the header only
    return list(array.shape), array.dtype.str


def describe_files(root: Path) -> dict[str, dict[str, Any]]:
    """What the manifest records of every file under ``root`` but itself: bytes, sha256, and for an
    array its shape and dtype."""
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "manifest.json"):
        entry: dict[str, Any] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
        if path.suffix == ".npy":
            entry["shape"], entry["dtype"] = _npy_header(path)
        files[path.relative_to(root).as_posix()] = entry
    return files


def _damaged(root: Path, path: Path, what: str, dataset: str) -> PreparedDataError:
    return PreparedDataError(
        f"{path}: {what}; the prepared data is damaged or was changed after `csfgan prepare`: delete {root} "
        f"and run `csfgan prepare --dataset {dataset} --scale SCALE --out {root}` again"
    )


def check_files(root: Path, manifest: dict[str, Any], *, hashes: bool = False) -> None:
    """Raise PreparedDataError naming the first file that is missing or whose size, shape or dtype (and
    with ``hashes`` its sha256) differs from the manifest's record."""
    dataset = manifest.get("dataset", "NAME")
    for rel, want in manifest["files"].items():
        path = root / rel
        if not path.is_file():
            raise _damaged(root, path, "missing", dataset)
        size = path.stat().st_size
        if size != want["bytes"]:
            raise _damaged(root, path, f"{size} bytes, the manifest records {want['bytes']} (truncated?)", dataset)
        if "shape" in want:
            try:
                shape, dtype = _npy_header(path)
            except (OSError, ValueError) as exc:
                raise _damaged(root, path, f"not a readable .npy array ({exc})", dataset) from exc
            if (shape, dtype) != (want["shape"], want["dtype"]):
                raise _damaged(root, path, f"array {dtype} {shape}, the manifest records {want['dtype']} "
                                           f"{want['shape']}", dataset)
        if hashes and file_sha256(path) != want["sha256"]:
            raise _damaged(root, path, "content differs from the sha256 the manifest records", dataset)


def verify(root: Path) -> dict[str, Any]:
    """Check every file of a prepared dataset against its manifest, hashes included; the manifest."""
    data = PreparedData(root)
    check_files(data.root, data.manifest, hashes=True)
    return data.manifest


def _absent(path: Path) -> bool:
    # An empty directory holds nothing: workflow engines create output folders before a job runs.
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


class SplitWriter:
    """Fills one split's arrays record by record (in any order, e.g. from a worker pool)."""

    def __init__(self, directory: Path, count: int, resolution: int, with_parts: bool):
        self.dir = directory
        self.dir.mkdir(parents=True)
        self.count = count
        shape = (count, resolution, resolution)
        self.images = np.lib.format.open_memmap(self.dir / "images.npy", "w+", np.uint8, (*shape, 3))
        self.part_masks = (
            np.lib.format.open_memmap(self.dir / "part_masks.npy", "w+", np.uint8, shape) if with_parts else None
        )
        self.class_ids = np.full(count, -1, dtype=np.int32)
        self.captions: list[list[str] | None] = [None] * count
        self.keys: list[str | None] = [None] * count
        self.attributes: list[Any] = [None] * count
        self.scenes: list[Any] = [None] * count

    def put(
        self,
        i: int,
        image: np.ndarray,
        captions: Sequence[str],
        class_id: int,
        key: str,
        part_mask: np.ndarray | None = None,
        attributes: dict[str, Any] | None = None,
        scene: dict[str, Any] | None = None,
    ) -> None:
        if image.dtype != np.uint8 or image.shape != self.images.shape[1:]:
            raise ValueError(f"{key}: image must be uint8 {self.images.shape[1:]}, got {image.dtype} {image.shape}")
        self.images[i] = image
        if self.part_masks is not None:
            if part_mask is None:
                raise ValueError(f"{key}: this split stores part masks; none given")
            self.part_masks[i] = part_mask
        self.class_ids[i] = class_id
        self.captions[i] = list(captions)
        self.keys[i] = key
        self.attributes[i] = attributes
        self.scenes[i] = scene

    def close(self, vocab: Vocabulary, max_words: int) -> dict[str, Any]:
        missing = [i for i, k in enumerate(self.keys) if k is None]
        if missing:
            raise RuntimeError(f"{self.dir.name}: {len(missing)} records never written (first index {missing[0]})")
        self.images.flush()
        del self.images
        if self.part_masks is not None:
            self.part_masks.flush()
            del self.part_masks
        np.save(self.dir / "class_ids.npy", self.class_ids)
        tokens, lengths = encode_captions(self.captions, vocab, max_words)
        np.save(self.dir / "tokens.npy", tokens)
        np.save(self.dir / "lengths.npy", lengths)
        (self.dir / "captions.json").write_text(json.dumps(self.captions))
        (self.dir / "keys.json").write_text(json.dumps(self.keys))
        if any(a is not None for a in self.attributes):
            (self.dir / "attributes.json").write_text(json.dumps(self.attributes))
        if any(s is not None for s in self.scenes):
            (self.dir / "scenes.json").write_text(json.dumps(self.scenes))
        return {
            "count": self.count,
            "classes": sorted(int(c) for c in np.unique(self.class_ids)),
            "captions_per_image": int(tokens.shape[1]),
        }


class PreparedWriter:
    """Context manager that writes a prepared dataset into ``out`` atomically.

    >>> with PreparedWriter(out, dataset="synth-birds", resolution=64, config=cfg, max_words=18) as w:
    ...     train = w.split("train", n_train, with_parts=True)
    ...     train.put(0, image, captions, class_id, key, ...)
    ...     w.finish(seed=0, generator_version="1")
    """

    def __init__(self, out: Path, *, dataset: str, resolution: int, config: dict[str, Any], max_words: int):
        self.out = Path(out)
        self.dataset = dataset
        self.resolution = resolution
        self.config = config
        self.max_words = max_words
        self.splits: dict[str, SplitWriter] = {}
        self.tmp: Path | None = None

    def __enter__(self) -> PreparedWriter:
        parent = self.out.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.tmp = temporary_dir(self.out)
        except OSError as exc:
            raise PreparedDataError(f"cannot write to {parent} ({exc.strerror}): choose a writable --out") from exc
        return self

    def split(self, name: str, count: int, with_parts: bool = False) -> SplitWriter:
        assert self.tmp is not None
        self.splits[name] = SplitWriter(self.tmp / name, count, self.resolution, with_parts)
        return self.splits[name]

    def finish(self, **manifest: Any) -> None:
        """Tokenise with the train-split vocabulary, write the manifest and move into place."""
        assert self.tmp is not None
        if "train" not in self.splits:
            raise RuntimeError("a prepared dataset needs a train split (its vocabulary comes from it)")
        train_caps = (c for caps in self.splits["train"].captions if caps for c in caps)
        vocab = Vocabulary.build(train_caps)
        vocab.save(self.tmp / "vocab.json")
        splits = {name: s.close(vocab, self.max_words) for name, s in self.splits.items()}
        body = {
            "format_version": FORMAT_VERSION,
            "dataset": self.dataset,
            "resolution": self.resolution,
            "max_words": self.max_words,
            "vocab_size": len(vocab),
            "splits": splits,
            "config": self.config,
            **manifest,
            "files": describe_files(self.tmp),
        }
        write_json(self.tmp / "manifest.json", body)
        # Absent, empty, or our earlier preparation without its manifest: swapped out.
        if not (_absent(self.out) or _headless_preparation(self.out)):
            raise PreparedDataError(f"{self.out} appeared while preparing; not overwriting it")
        replace_dir(self.tmp, self.out)
        self.tmp = None

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, UserError) and exc.errno in UNWRITABLE:
            raise OutputError(self.out, exc) from exc


class PreparedSplit:
    """Read-only view of one split; images stay on disk (memory-mapped)."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.images = np.load(directory / "images.npy", mmap_mode="r")
        self.class_ids = np.load(directory / "class_ids.npy")
        self.tokens = np.load(directory / "tokens.npy")
        self.lengths = np.load(directory / "lengths.npy")
        self.keys: list[str] = json.loads((directory / "keys.json").read_text())
        parts = directory / "part_masks.npy"
        self.part_masks = np.load(parts, mmap_mode="r") if parts.is_file() else None
        self._captions: list[list[str]] | None = None
        self._attributes: list[dict[str, Any]] | None = None
        self._scenes: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.class_ids)

    @property
    def captions(self) -> list[list[str]]:
        if self._captions is None:
            self._captions = json.loads((self.dir / "captions.json").read_text())
        return self._captions

    @property
    def attributes(self) -> list[dict[str, Any]]:
        if self._attributes is None:
            path = self.dir / "attributes.json"
            if not path.is_file():
                raise PreparedDataError(f"{path}: no attributes (only the synthetic sets have them)")
            self._attributes = json.loads(path.read_text())
        return self._attributes

    @property
    def scenes(self) -> list[dict[str, Any]]:
        if self._scenes is None:
            path = self.dir / "scenes.json"
            if not path.is_file():
                raise PreparedDataError(f"{path}: no scenes (only the synthetic sets can be re-rendered)")
            self._scenes = json.loads(path.read_text())
        return self._scenes


class PreparedData:
    """A prepared dataset directory: manifest, vocabulary, and its splits."""

    def __init__(self, root: Path):
        self.root = Path(root)
        manifest = self.root / "manifest.json"
        if not manifest.is_file():
            raise PreparedDataError(
                f"{self.root} is not a prepared dataset (no manifest.json): run "
                f"`csfgan prepare --dataset NAME --scale SCALE --out {self.root}` first"
            )
        self.manifest: dict[str, Any] = _read_manifest(manifest)
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise PreparedDataError(
                f"{manifest}: format version {self.manifest.get('format_version')}, this csfgan reads "
                f"{FORMAT_VERSION}: delete {self.root} and run `csfgan prepare` again"
            )
        check_files(self.root, self.manifest)
        self.vocab = Vocabulary.load(self.root / "vocab.json")
        self._splits: dict[str, PreparedSplit] = {}

    @property
    def name(self) -> str:
        return self.manifest["dataset"]

    @property
    def resolution(self) -> int:
        return int(self.manifest["resolution"])

    @property
    def max_words(self) -> int:
        return int(self.manifest["max_words"])

    @property
    def manifest_sha256(self) -> str:
        """The data's identity: the manifest records the config, counts and vocabulary size it was made with."""
        import hashlib

        return hashlib.sha256((self.root / "manifest.json").read_bytes()).hexdigest()

    def split(self, name: str) -> PreparedSplit:
        if name not in self._splits:
            directory = self.root / name
            if name not in self.manifest["splits"] or not directory.is_dir():
                raise PreparedDataError(f"{self.root}: no split {name!r}; have {sorted(self.manifest['splits'])}")
            self._splits[name] = PreparedSplit(directory)
        return self._splits[name]
