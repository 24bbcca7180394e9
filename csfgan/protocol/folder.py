"""Reading an exported protocol folder back (``csfgan score``, ``csfgan peer``, ``csfgan predict``).

:func:`read_manifest` checks the manifest and every file against its SHA-256 (what a method reads);
:func:`read_protocol` also rebuilds the protocol from the prepared data it names and checks that the
folder holds exactly those items (masks, inputs, captions, counterfactual edits), so a folder edited
by hand, exported by another protocol version or from another preparation is refused, not scored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from csfgan.data.prepared import PreparedData
from csfgan.protocol.export import FORMAT, MANIFEST, sha256
from csfgan.protocol.spec import NAMES, VERSION, Protocol, ProtocolError, build

LISTED = 10  # problems named per kind; the rest are counted


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of an exported protocol, with every listed file present and of the recorded SHA-256."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise ProtocolError(f"{folder}: no {MANIFEST}; export the protocol with `csfgan protocol export --dataset "
                            f"data/prepared/DATASET --split test --out {folder}`")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"{path}: unreadable ({exc}); export the protocol again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ProtocolError(f"{path}: not a manifest written by `csfgan protocol export` (format {FORMAT!r})")
    if manifest.get("protocol") not in NAMES.values() or manifest.get("protocol_version") != VERSION:
        raise ProtocolError(f"{path}: protocol {manifest.get('protocol')!r} version "
                            f"{manifest.get('protocol_version')!r}; this csfgan scores {', '.join(NAMES.values())} "
                            f"version {VERSION}: export it again")
    bad: list[str] = []
    for row in manifest["rows"]:
        for kind in ("input", "mask", "ground_truth"):
            if kind not in row:
                continue
            file = folder / row[kind]
            if not file.is_file():
                bad.append(f"{row[kind]} is missing")
            elif sha256(file.read_bytes()) != row[f"{kind}_sha256"]:
                bad.append(f"{row[kind]} differs from its SHA-256 in the manifest")
    if bad:
        raise ProtocolError(f"{folder}: {len(bad)} protocol file(s) damaged: {listing(bad)}; export it again")
    return manifest


def listing(items: list[str]) -> str:
    shown = "; ".join(items[:LISTED])
    return shown + (f"; and {len(items) - LISTED} more" if len(items) > LISTED else "")


def read_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ProtocolError(f"{path}: unreadable ({exc}); export the protocol again") from None


def prepared_data(manifest: dict[str, Any], folder: Path, dataset: Path | None) -> PreparedData:
    """The prepared data the protocol was exported from (``dataset``, else the path the manifest records),
    checked by its manifest's SHA-256: the ground truth and the reference statistics come from it."""
    root = Path(dataset) if dataset is not None else Path(manifest["prepared"]["path"])
    data = PreparedData(root)
    if data.manifest_sha256 != manifest["prepared"]["manifest_sha256"]:
        raise ProtocolError(f"{folder} was exported from another preparation of {manifest['dataset']} than {root} "
                            f"(its manifest's SHA-256 differs): give the prepared folder it came from (--dataset), or "
                            f"export the protocol again from {root}")
    return data


def read_protocol(folder: Path, dataset: Path | None = None) -> tuple[Protocol, dict[str, Any]]:
    """The protocol of an exported folder, rebuilt from its prepared data and checked item by item."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    data = prepared_data(manifest, folder, dataset)
    mask = next(k for k, v in NAMES.items() if v == manifest["protocol"])
    protocol = build(data, manifest["split"], mask=mask, hole_fraction=manifest["hole_fraction"],
                     caption_seed=manifest["caption_seed"])
    differ = _differences(protocol, manifest, folder)
    if differ:
        raise ProtocolError(f"{folder} is not {protocol.name} v{VERSION} as this csfgan builds it from {data.root}: "
                            f"{listing(differ)}; export it again")
    return protocol, manifest


def _differences(protocol: Protocol, manifest: dict[str, Any], folder: Path) -> list[str]:
    rows = manifest["rows"]
    if len(rows) != len(protocol) or [r["id"] for r in rows] != protocol.ids:
        return [f"{len(rows)} items listed, the protocol has {len(protocol)}"]
    out = []
    inputs, captions = protocol.inputs(), protocol.captions
    for i, row in enumerate(rows):
        if not np.array_equal(read_png(folder / row["mask"]) > 127, protocol.holes[i]):
            out.append(f"item {row['id']}'s mask")
        if not np.array_equal(read_png(folder / row["input"]), inputs[i]):
            out.append(f"item {row['id']}'s input")
        if row["caption"] != captions[i] or row["caption_index"] != int(protocol.caption_index[i]):
            out.append(f"item {row['id']}'s caption")
    expected = [(protocol.ids[c.item], c.caption) for c in protocol.counterfactuals]
    if [(r["item"], r["caption"]) for r in manifest["counterfactuals"]] != expected:
        out.append("the counterfactual captions")
    return out
