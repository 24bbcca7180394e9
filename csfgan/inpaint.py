"""Inpaint one user image of any size from a caption (``csfgan inpaint``).

The image is resized to the model's resolution, inpainted, and the result resized back; outside the
hole the user's original pixels are kept at full resolution, so only the hole is resampled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from csfgan.data.masks import center_mask
from csfgan.errors import UserError
from csfgan.evaluate import InpaintingModel, to_uint8
from csfgan.models.text import encode_text


def _open_image(path: Path, what: str) -> Image.Image:
    if not path.is_file():
        raise UserError(f"{what} {path}: no such file")
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"{what} {path}: not a readable image ({exc})") from exc


def load_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A user mask (white = hole) of exactly the image's size, as float32 (H, W) in {0, 1}."""
    mask = _open_image(path, "mask")
    if mask.size != size:
        raise UserError(f"mask {path} is {mask.size[0]}x{mask.size[1]} but the image is {size[0]}x{size[1]}: "
                        f"give a mask of the image's size (white = hole)")
    values = np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
    hole = (values > 0.5).astype(np.float32)
    if not hole.any():
        raise UserError(f"mask {path} has no hole (no pixel brighter than mid-grey); white marks the hole")
    return hole


def inpaint_file(checkpoint: Path, image: Path, text: str, output: Path, *, mask: Path | None = None,
                 seed: int = 0, device: str = "cpu") -> None:
    model = InpaintingModel(checkpoint, device)
    picture = _open_image(Path(image), "image").convert("RGB")
    size = picture.size
    r = model.resolution
    hole_full = load_mask(mask, size) if mask is not None else None
    encoded = encode_text(model.text_encoder, model.vocab, text, model.cfg.text.max_words)

    small = np.asarray(picture.resize((r, r), Image.Resampling.BICUBIC), dtype=np.float32) / 127.5 - 1.0
    if hole_full is None:
        hole_small = center_mask(r, model.cfg.data.hole_fraction)
        hole_full = np.asarray(Image.fromarray(hole_small * 255).resize(size, Image.Resampling.NEAREST)) > 127
    else:
        # A hole pixel at model resolution wherever any of the user's hole falls in it.
        hole_small = np.asarray(Image.fromarray(hole_full * 255).resize((r, r), Image.Resampling.BOX)) > 0
    image_t = torch.from_numpy(small).permute(2, 0, 1)[None]
    mask_t = torch.from_numpy(np.asarray(hole_small, dtype=np.float32))[None, None]
    torch.manual_seed(seed)
    composite, _ = model.inpaint(image_t, mask_t, encoded.tokens, encoded.length)
    filled = Image.fromarray(to_uint8(composite)[0]).resize(size, Image.Resampling.BICUBIC)
    result = np.where(np.asarray(hole_full, dtype=bool)[..., None], np.asarray(filled), np.asarray(picture))

    from csfgan.io import atomic_path

    output = Path(output)
    tmp, commit = atomic_path(output)
    try:
        Image.fromarray(result.astype(np.uint8)).save(tmp, format=_format(output))
        commit()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _format(path: Path) -> str:
    ext = path.suffix.lower()
    formats = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}
    if ext not in formats:
        raise UserError(f"output {path}: unknown image format {ext!r}; use one of {', '.join(formats)}")
    return formats[ext]
