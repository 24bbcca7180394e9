"""Inpaint one user image of any size from a caption (``csfgan inpaint``).

The image is resized to the model's resolution, inpainted, and the result resized back; outside the
hole the user's original pixels are kept at full resolution, so only the hole is resampled.

What a user's file may be: any size; EXIF-rotated photos are turned upright first; 16-bit, palette
(with or without transparency), grey, grey+alpha and CMYK images are converted to 8-bit RGB by their
meaning (a 16-bit grey level scales to 8 bits, not clips). Without ``--mask``, the transparent pixels
of an image with an alpha channel are the hole; a fully opaque image gets the centre hole.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from csfgan.data.masks import center_mask
from csfgan.errors import UserError
from csfgan.evaluate import InpaintingModel, to_uint8
from csfgan.models.text import encode_text

# An alpha below this is a transparent pixel, i.e. part of the hole.
TRANSPARENT_BELOW = 128
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _open_image(path: Path, what: str) -> Image.Image:
    if not path.is_file():
        raise UserError(f"{what} {path}: no such file")
    try:
        # PIL warns (over 89 M pixels) before it refuses (over twice that): both are refused here, as a
        # file that size is more likely a decompression bomb than a photo to inpaint.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                upright = ImageOps.exif_transpose(im)
                return upright.copy() if upright is im else upright
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UserError(f"{what} {path}: too many pixels for a safe decode ({exc}); resize it first") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"{what} {path}: not a readable image ({exc})") from exc


def to_rgb(im: Image.Image, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """8-bit RGB (H, W, 3) and the alpha channel (H, W) uint8 if the image has one, by mode."""
    if im.mode in _SIXTEEN_BIT:
        # PIL's own convert("L") clips 16-bit values at 255 (a near-white image); scale instead.
        grey = np.asarray(im, dtype=np.float64)
        if grey.size and (grey.min() < 0 or grey.max() > 65535):
            raise UserError(f"image {path}: 32-bit integer values outside 0..65535; save it as 8- or 16-bit")
        grey = np.round(grey / 257.0).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2), None
    if im.mode == "F":
        raise UserError(f"image {path}: floating-point pixels (mode F) have no fixed range; save it as 8- or "
                        f"16-bit")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode in ("LA", "PA", "La", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        rgba = np.asarray(im)
        return np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
    return np.asarray(im.convert("RGB")), None  # L, 1, CMYK, YCbCr, LAB, HSV, RGB


def load_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A user mask (white = hole) of exactly the image's size, as float32 (H, W) in {0, 1}."""
    mask = _open_image(path, "mask")
    if mask.size != size:
        raise UserError(f"mask {path} is {mask.size[0]}x{mask.size[1]} but the image is {size[0]}x{size[1]}: "
                        f"give a mask of the image's size (white = hole)")
    grey, alpha = to_rgb(mask, path)
    values = grey.astype(np.float32).mean(axis=2) / 255.0
    hole = (values > 0.5).astype(np.float32)
    if not hole.any():
        raise UserError(f"mask {path} has no hole (no pixel brighter than mid-grey); white marks the hole")
    return hole


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return b.exists() and a.samefile(b)
    except OSError:
        return False


def _warn_unknown_words(vocab, text: str) -> None:
    from csfgan.data.text import tokenize

    tokens = tokenize(text)
    unknown = [t for t in tokens if t not in vocab.index]
    if tokens and unknown and len(unknown) * 2 > len(tokens):
        print(f"csfgan inpaint: warning: {len(unknown)} of {len(tokens)} words of the caption are not in the "
              f"model's vocabulary and are read as unknown: {', '.join(sorted(set(unknown)))}", file=sys.stderr)


def inpaint_file(checkpoint: Path, image: Path, text: str, output: Path, *, mask: Path | None = None,
                 seed: int = 0, device: str = "cpu") -> None:
    image, output = Path(image), Path(output)
    if _same_file(image, output) or (mask is not None and _same_file(Path(mask), output)):
        raise UserError(f"-o {output} is an input file; write the result to another path")
    fmt = _format(output)
    picture, alpha = to_rgb(_open_image(image, "image"), image)
    size = (picture.shape[1], picture.shape[0])
    hole_full = load_mask(Path(mask), size) if mask is not None else None
    if hole_full is None and alpha is not None and (alpha < TRANSPARENT_BELOW).any():
        hole_full = (alpha < TRANSPARENT_BELOW).astype(np.float32)
    model = InpaintingModel(checkpoint, device)
    r = model.resolution
    encoded = encode_text(model.text_encoder, model.vocab, text, model.cfg.text.max_words)
    _warn_unknown_words(model.vocab, text)

    small = np.asarray(Image.fromarray(picture).resize((r, r), Image.Resampling.BICUBIC),
                       dtype=np.float32) / 127.5 - 1.0
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
    result = np.where(np.asarray(hole_full, dtype=bool)[..., None], np.asarray(filled), picture)

    from csfgan.io import OutputError, atomic_path

    tmp = None
    try:
        tmp, commit = atomic_path(output)
        Image.fromarray(result.astype(np.uint8)).save(tmp, format=fmt)
        commit()
    except OSError as exc:
        raise OutputError(output, exc) from exc
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def _format(path: Path) -> str:
    ext = path.suffix.lower()
    formats = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}
    if ext not in formats:
        raise UserError(f"output {path}: unknown image format {ext!r}; use one of {', '.join(formats)}")
    return formats[ext]
