"""``csfgan peer``: two training-free classical inpainting methods, run on an exported protocol folder
exactly as a user's method is (read the folder, write a predictions folder, then ``csfgan score``).

    biharmonic  scikit-image ``restoration.inpaint_biharmonic``: the smooth (biharmonic) extension of the
                known pixels into the hole, per channel
    telea       OpenCV ``cv2.inpaint(..., cv2.INPAINT_TELEA)``: Telea's (2004) fast-marching method,
                radius :data:`TELEA_RADIUS` px (OpenCV's documented example value); needs the optional
                extra ``pip install -e ".[peers]"`` (opencv-python-headless)

Both ignore the caption: their counterfactual outputs are their outputs for the same masked input
(computed once), so their counterfactual and attribute accuracies are what the visible context alone
gives, beside the no-text control. They anchor what the harness's FIDs mean on a dataset. Each output
is composited (the known pixels are the input's, exactly) and rounded to 8 bits.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from csfgan.errors import UserError
from csfgan.protocol.folder import read_manifest, read_png
from csfgan.protocol.predictions import write_predictions

TELEA_RADIUS = 3


def biharmonic(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    from skimage.restoration import inpaint_biharmonic

    filled = inpaint_biharmonic(image, hole, channel_axis=-1)  # float in [0, 1]
    return np.clip(np.round(filled * 255.0), 0, 255).astype(np.uint8)


def telea(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    try:
        import cv2
    except ImportError:
        raise UserError('peer telea needs OpenCV: pip install -e ".[peers]" (opencv-python-headless), or leave '
                        'telea out of the workflow config\'s `peers`') from None
    # Per channel, so RGB order needs no conversion to OpenCV's BGR.
    return cv2.inpaint(np.ascontiguousarray(image), hole.astype(np.uint8) * 255, TELEA_RADIUS, cv2.INPAINT_TELEA)


PEERS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {"biharmonic": biharmonic, "telea": telea}
LABELS = {"biharmonic": "biharmonic, scikit-image inpaint_biharmonic",
          "telea": f"Telea, OpenCV cv2.inpaint radius {TELEA_RADIUS}"}


def run_peer(method: str, protocol: Path, out: Path) -> int:
    """Inpaint every item of the exported ``protocol`` with ``method``; writes ``out``; returns the count."""
    if method not in PEERS:
        raise UserError(f"--method {method!r}: choose one of {', '.join(PEERS)}")
    fill = PEERS[method]
    protocol = Path(protocol)
    manifest = read_manifest(protocol)
    outputs = []
    for row in manifest["rows"]:
        image, hole = read_png(protocol / row["input"]), read_png(protocol / row["mask"]) > 127
        outputs.append(np.where(hole[..., None], fill(image, hole), image).astype(np.uint8))
    images = np.stack(outputs)
    index = {r["id"]: i for i, r in enumerate(manifest["rows"])}
    counterfactuals = (images[[index[r["item"]] for r in manifest["counterfactuals"]]]
                       if manifest["counterfactuals"] else None)
    write_predictions(out, manifest, images, counterfactuals)
    return len(images)
