"""``csfgan protocol export``: the protocol as a folder any method can be run on, with a hashed manifest.

    DIR/manifest.json            the protocol's name, version and settings, the prepared data's identity,
                                 one row per item and one per counterfactual caption (below)
    DIR/README.md                what a method reads and what it must write (for the user, not read back)
    DIR/inputs/<id>.png          the masked input: 8-bit RGB, the hole filled with grey 127
    DIR/masks/<id>.png           8-bit grey, 255 in the hole, 0 where the image is known
    DIR/ground_truth/<id>.png    only with ``--ground-truth``: the real image (kept out by default, so a
                                 method's folder cannot see what it is scored against)

An item row: ``id``, ``index`` and ``key`` in the split, ``class_id``, ``protocol`` and
``protocol_version``, the file names (``input``, ``mask``, ``ground_truth``) each with its ``*_sha256``,
``hole_area`` (fraction of the image), ``caption`` and ``caption_index``, and ``prediction``: the file name
the method writes. A counterfactual row (synthetic sets): ``id``, the ``item`` whose masked input it
reuses, the edited ``caption``, ``asks`` (each edited part and the colour the caption now gives it) and
its ``prediction`` (``counterfactual/<id>.png``).

The folder is written beside DIR and moved into place when complete; an existing DIR is replaced only if
it is an exported protocol (anything else is refused).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from csfgan.data.prepared import PreparedData
from csfgan.data.synthetic import colour_attributes
from csfgan.io import remove_stale_temporaries, replace_dir, temporary_dir, writing
from csfgan.lock import command_line, output_lock
from csfgan.protocol.spec import Protocol, ProtocolError
from csfgan.provenance import provenance

MANIFEST = "manifest.json"
FORMAT = "csfgan-protocol-folder"


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def counterfactual_id(item_id: str) -> str:
    return f"{item_id}-cf"


def prediction_name(item_id: str) -> str:
    return f"{item_id}.png"


def counterfactual_prediction(item_id: str) -> str:
    return f"counterfactual/{counterfactual_id(item_id)}.png"


def manifest_header(protocol: Protocol, ground_truth: bool) -> dict[str, Any]:
    data = protocol.data
    return {
        "format": FORMAT, **protocol.settings(), "dataset": data.name, "resolution": data.resolution,
        "max_words": data.max_words, "items": len(protocol), "counterfactual_items": len(protocol.counterfactuals),
        "prepared": {"path": str(data.root), "manifest_sha256": data.manifest_sha256},
        "ground_truth": ground_truth,
        "predictions": {
            "images": f"PNG, 8-bit RGB, {data.resolution}x{data.resolution}, one per item, named as its `prediction`",
            "known_region": "equal to the input outside the mask (composite I*(1-M) + G*M); `csfgan score "
                            "--composite` pastes it for a method that changes it by design, and says so",
            "counterfactual": "optional: one per counterfactual row, the item's input inpainted with the edited "
                              "caption, named as its `prediction`",
        },
    }


def write_protocol(protocol: Protocol, out: Path, *, ground_truth: bool = False) -> dict[str, Any]:
    """Write ``protocol`` to the folder ``out`` (see the module docstring); returns the manifest."""
    out = Path(out)
    if out.exists() and not is_protocol_folder(out):
        raise ProtocolError(f"--out {out} exists and is not an exported protocol (no {MANIFEST} of format {FORMAT}); "
                            f"give a new folder")
    with output_lock(out, command_line()):
        remove_stale_temporaries(out.parent, (out.name,))
        with writing(out):
            return _write_locked(protocol, out, ground_truth)


def is_protocol_folder(path: Path) -> bool:
    try:
        return json.loads((path / MANIFEST).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _write_locked(protocol: Protocol, out: Path, ground_truth: bool) -> dict[str, Any]:
    tmp = temporary_dir(out)
    try:
        manifest = _write_files(protocol, tmp, ground_truth)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(_readme(manifest))
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _write_files(protocol: Protocol, root: Path, ground_truth: bool) -> dict[str, Any]:
    folders = ("inputs", "masks") + (("ground_truth",) if ground_truth else ())
    for name in folders:
        (root / name).mkdir()
    real, inputs = protocol.real(), protocol.inputs()
    prepared = protocol.prepared
    items = []
    for i, item_id in enumerate(protocol.ids):
        row: dict[str, Any] = {"id": item_id, "index": i, "key": prepared.keys[i],
                               "class_id": int(prepared.class_ids[i]), "protocol": protocol.name,
                               "protocol_version": protocol.settings()["protocol_version"]}
        files = {"input": inputs[i], "mask": protocol.holes[i].astype(np.uint8) * 255}
        if ground_truth:
            files["ground_truth"] = real[i]
        for kind, array in files.items():
            name = f"{'inputs' if kind == 'input' else 'masks' if kind == 'mask' else kind}/{item_id}.png"
            data = png_bytes(array)
            (root / name).write_bytes(data)
            row[kind], row[f"{kind}_sha256"] = name, sha256(data)
        row.update(hole_area=float(protocol.holes[i].mean()), caption=protocol.captions[i],
                   caption_index=int(protocol.caption_index[i]), prediction=prediction_name(item_id))
        items.append(row)
    counterfactuals = []
    part_of = colour_attributes(protocol.data.name) if protocol.counterfactuals else {}
    for edit in protocol.counterfactuals:
        item_id = protocol.ids[edit.item]
        counterfactuals.append({
            "id": counterfactual_id(item_id), "item": item_id, "caption": edit.caption,
            "asks": [{"attribute": a, "part": part_of[a], "colour": c} for a, c in edit.changes.items()],
            "prediction": counterfactual_prediction(item_id),
        })
    return {**manifest_header(protocol, ground_truth), "rows": items, "counterfactuals": counterfactuals,
            "provenance": provenance()}


def export(dataset: Path, out: Path, *, split: str = "test", mask: str = "center", hole_fraction: float = 0.5,
           caption_seed: int = 1234, ground_truth: bool = False) -> dict[str, Any]:
    from csfgan.protocol.spec import build

    return write_protocol(build(PreparedData(Path(dataset)), split, mask=mask, hole_fraction=hole_fraction,
                                caption_seed=caption_seed), out, ground_truth=ground_truth)


def _readme(manifest: dict[str, Any]) -> str:
    res = manifest["resolution"]
    cf = manifest["counterfactual_items"]
    title = f"{manifest['protocol']} v{manifest['protocol_version']}: {manifest['dataset']}, {manifest['split']} split"
    return f"""# {title}

Written by `csfgan protocol export`; `manifest.json` is the protocol (every file's SHA-256, every caption).
{manifest['items']} items. For each row of `manifest.json` `rows`:

- read `inputs/<id>.png` (8-bit RGB, {res}x{res}, the hole filled with grey {manifest['hole_fill']}),
  `masks/<id>.png` (255 = hole) and the row's `caption`;
- write `<id>.png` into your predictions folder: 8-bit RGB PNG, {res}x{res}, equal to the input outside the hole.

{f"Optionally, for each of the {cf} `counterfactuals` rows (edited captions: `asks` says what each asks for), "
 f"inpaint the item's input with the edited caption into `counterfactual/<id>-cf.png`; then counterfactual "
 f"accuracy is measured too." if cf else "This dataset has no counterfactual captions."}

Nothing else may be in the folder. Then:

    csfgan score --protocol THIS_FOLDER --predictions YOUR_FOLDER --name YOUR_METHOD \\
        --feature-net results/feature_net/{manifest['dataset']}.pt \\
        --eval-text-encoder results/text_encoder/{manifest['dataset']}.eval.pt
"""
