"""A method's folder of outputs, checked against the protocol's manifest before anything is measured.

Every problem is found, then all are reported at once, each file by name, and nothing is measured or
written: a missing or extra file (a prediction saved as ``.jpg`` is named as both, with the reason;
hidden files, named with a leading dot, are ignored), an unreadable one, one that is not a PNG, not
8-bit RGB (mode), or not of the protocol's size, and one whose known region (outside the hole) differs
from the input.

That last one stops by default, because the whole-image PSNR and SSIM and the FID then measure pixels the
method was given, and because it is usually a mistake (a resized or shifted output, a mask read inverted).
A method that changes the known pixels by design (a latent autoencoder's round trip) is scored with
``composite=True`` (``csfgan score --composite``): the known pixels are pasted from the input, as CSF-GAN's
own output is composited, and the metrics and the table row say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from csfgan.errors import UserError
from csfgan.protocol.folder import listing
from csfgan.protocol.spec import Protocol

COUNTERFACTUAL_FOLDER = "counterfactual"


class PredictionsError(UserError):
    """A predictions folder does not match the protocol's manifest; the message lists every file."""


@dataclass
class Predictions:
    """The checked outputs, uint8, in manifest order; what scoring needs to record about them."""

    images: np.ndarray
    counterfactuals: np.ndarray | None
    composited: list[str]  # files whose known region the scorer replaced (composite=True only)


def _read(path: Path, size: int) -> tuple[np.ndarray | None, str, str]:
    """(pixels, "", "") or (None, the kind of problem, what it is)."""
    try:
        with Image.open(path) as im:
            fmt, mode, dims = im.format, im.mode, im.size
            if fmt != "PNG":
                return None, "not a PNG", f"a {fmt} file"
            if mode != "RGB":
                return None, "wrong mode", f"mode {mode}, not 8-bit RGB"
            if dims != (size, size):
                return None, "mis-sized", f"{dims[0]}x{dims[1]}, not {size}x{size}"
            return np.asarray(im.convert("RGB")), "", ""
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        return None, "unreadable", f"{type(exc).__name__}: {exc}"


def output_files(root: Path) -> set[str]:
    """The folder's files, relative; hidden ones (any part of the path starting with a dot: .DS_Store,
    Snakemake's .snakemake_timestamp in a directory output, .ipynb_checkpoints/) are never outputs."""
    relative = (p.relative_to(root) for p in root.rglob("*") if p.is_file() or p.is_symlink())
    return {r.as_posix() for r in relative if not any(part.startswith(".") for part in r.parts)}


def read_predictions(folder: Path, protocol: Protocol, manifest: dict[str, Any], *,
                     composite: bool = False) -> Predictions:
    """The outputs in ``folder`` for every item of ``manifest`` (and, if ``folder/counterfactual`` exists,
    for every counterfactual row), checked as the module docstring says; raises :class:`PredictionsError`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PredictionsError(f"--predictions {folder}: no such folder; write one PNG per item of the protocol "
                               f"there (see the protocol folder's README.md)")
    with_counterfactuals = (folder / COUNTERFACTUAL_FOLDER).is_dir() and bool(manifest["counterfactuals"])
    wanted = [r["prediction"] for r in manifest["rows"]]
    wanted_cf = [r["prediction"] for r in manifest["counterfactuals"]] if with_counterfactuals else []
    present = output_files(folder)
    expected = set(wanted) | set(wanted_cf)
    problems: dict[str, list[str]] = {}

    def problem(kind: str, text: str) -> None:
        problems.setdefault(kind, []).append(text)

    stems = {str(Path(p).with_suffix("")): p for p in present - expected}
    for name in sorted(expected - present):
        other = stems.get(str(Path(name).with_suffix("")))
        problem("missing", name + (f" (there is {other}: outputs are PNG files named exactly as the manifest's "
                                   f"`prediction`)" if other else ""))
    for name in sorted(present - expected):
        problem("extra", name)

    size = int(manifest["resolution"])
    inputs = protocol.inputs()
    known = ~protocol.holes
    composited: list[str] = []

    def load(names: list[str], items: list[int]) -> np.ndarray:
        out = np.zeros((len(names), size, size, 3), dtype=np.uint8)
        for k, (name, item) in enumerate(zip(names, items, strict=True)):
            if name not in present:
                continue
            pixels, kind, why = _read(folder / name, size)
            if pixels is None:
                problem(kind, f"{name}: {why}")
                continue
            changed = (pixels != inputs[item]).any(axis=-1) & known[item]
            if changed.any():
                if not composite:
                    delta = np.abs(pixels.astype(int) - inputs[item].astype(int))[changed].max()
                    problem("known region edited", f"{name}: {int(changed.sum())} pixels outside the hole differ from "
                                                   f"the input (up to {int(delta)} grey levels)")
                    continue
                composited.append(name)
                pixels = np.where(known[item][..., None], inputs[item], pixels)
            out[k] = pixels
        return out

    images = load(wanted, list(range(len(wanted))))
    index = {r["id"]: i for i, r in enumerate(manifest["rows"])}
    cf = load(wanted_cf, [index[r["item"]] for r in manifest["counterfactuals"]]) if with_counterfactuals else None
    if problems:
        total = sum(len(v) for v in problems.values())
        lines = [f"  {kind} ({len(items)}): {listing(items)}" for kind, items in problems.items()]
        hint = ("\n  a method that changes known pixels by design can be scored with --composite (they are then "
                "pasted from the input, and the row says so)" if "known region edited" in problems else "")
        raise PredictionsError(f"--predictions {folder}: {total} problem(s) against the protocol's manifest; nothing "
                               f"was measured or written:\n" + "\n".join(lines) + hint)
    return Predictions(images, cf, composited)


def write_predictions(out: Path, manifest: dict[str, Any], images: np.ndarray,
                      counterfactuals: np.ndarray | None) -> list[str]:
    """Write a method's uint8 outputs into ``out`` as the manifest names them (``csfgan peer``, ``csfgan
    predict``), in a folder beside it moved into place when complete. An existing ``out`` is replaced only
    if it holds nothing but files the manifest names (an earlier run's outputs). Returns the file names."""
    import shutil

    from csfgan.io import remove_stale_temporaries, replace_dir, temporary_dir, writing
    from csfgan.lock import command_line, output_lock
    from csfgan.protocol.export import png_bytes

    out = Path(out)
    names = [r["prediction"] for r in manifest["rows"]]
    if counterfactuals is not None:
        names += [r["prediction"] for r in manifest["counterfactuals"]]
    if out.exists():
        foreign = sorted(output_files(out) - set(names)) if out.is_dir() else [out.name]
        if foreign:
            raise PredictionsError(f"--out {out} exists and holds files that are not this protocol's outputs "
                                   f"({listing(foreign)}); give a new folder")
    arrays = list(images) + (list(counterfactuals) if counterfactuals is not None else [])
    with output_lock(out, command_line()), writing(out):
        remove_stale_temporaries(out.parent, (out.name,))
        tmp = temporary_dir(out)
        try:
            if counterfactuals is not None:
                (tmp / COUNTERFACTUAL_FOLDER).mkdir()
            for name, array in zip(names, arrays, strict=True):
                (tmp / name).write_bytes(png_bytes(array))
            replace_dir(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return names
