"""``csfgan predict``: a trained CSF-GAN run as a method on an exported protocol folder.

It reads only the folder (inputs, masks, captions, counterfactual captions) and the checkpoint, and
writes a predictions folder that ``csfgan score`` scores like anyone's. It runs the generator through
:func:`csfgan.evaluate.inpaint_items`, the function ``evaluate`` inpaints the protocol with (same
batches, same seeded noise), so scoring its folder gives the numbers ``evaluate`` gives for the run:
what the round-trip test checks, and what shows that the folder holds everything a method needs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from csfgan.errors import UserError
from csfgan.protocol.folder import read_manifest, read_png
from csfgan.protocol.predictions import write_predictions


def predict(checkpoint: Path, protocol: Path, out: Path, *, device: str = "cpu", weights: str | None = None,
            batch_size: int | None = None, progress: bool = True) -> int:
    from csfgan.evaluate import InpaintingModel, inpaint_items

    protocol = Path(protocol)
    manifest = read_manifest(protocol)
    model = InpaintingModel(Path(checkpoint), device, weights)
    if model.resolution != manifest["resolution"]:
        raise UserError(f"{checkpoint} inpaints {model.resolution} px images, the protocol {protocol} has "
                        f"{manifest['resolution']} px: export the protocol from data prepared at the run's scale")
    rows = manifest["rows"]
    inputs = np.stack([read_png(protocol / r["input"]) for r in rows])
    holes = np.stack([read_png(protocol / r["mask"]) > 127 for r in rows])
    index = {r["id"]: i for i, r in enumerate(rows)}
    edits = [(index[r["item"]], r["caption"]) for r in manifest["counterfactuals"]]
    fakes, edited = inpaint_items(model, inputs, holes, [r["caption"] for r in rows], edits,
                                  max_words=manifest["max_words"], batch_size=batch_size or model.cfg.eval.batch_size,
                                  seed=model.cfg.eval.caption_seed, progress=progress, desc="predict")
    write_predictions(out, manifest, fakes, edited if edits else None)
    return len(fakes)
