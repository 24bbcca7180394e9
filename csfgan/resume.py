"""Whether a run directory may be resumed: the run's identity, and starting it fresh.

A run resumes only when everything that decides its weights is what it was: the resolved config
(scale + variant + overrides), the variant, the seed, the text encoder's bytes, the prepared data's
manifest, the world size, the perceptual network and the generator's architecture. Paths may
change (a moved dataset or text encoder with the same bytes is the same run); anything else would
label one run's weights with another run's settings.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from csfgan.checkpoint import CheckpointError
from csfgan.config import flatten

IDENTITY_FIELDS = ("config", "variant", "seed", "text_encoder_sha256", "data_manifest_sha256", "world_size",
                   "perceptual_source", "architecture")

# Everything a run directory holds that belongs to one set of weights (metrics and eval included:
# they describe final.pt). Starting fresh removes exactly these, nothing else a user put there.
RUN_OUTPUTS = ("checkpoints", "final.pt", "stats.jsonl", "log.txt", "samples", "config.json", "provenance.json",
               "metrics.json", "eval", "metrics_val.json", "eval_val", "variance")

ON_MISMATCH = ("error", "restart")


def _show(field: str, value: Any) -> str:
    if value is _MISSING:
        return "(not recorded)"
    if field.endswith("sha256") and isinstance(value, str):
        return value[:12]
    return repr(value)


_MISSING = object()


def _introduced_at_default(key: str, old: dict[str, Any], new: dict[str, Any]) -> bool:
    """A config key the old run does not record because it was added to csfgan later, set to its default.

    New settings are introduced with a default that keeps the old behaviour (e.g. ``train.tf32``), so a
    run from before is the same run; without this, upgrading csfgan would make every existing run a
    mismatch, which the workflow's ``--on-mismatch restart`` would discard."""
    from csfgan.config import ScaleConfig, to_dict

    defaults = flatten(to_dict(ScaleConfig()))
    return key not in old and key in defaults and new.get(key, _MISSING) == defaults[key]


def identity_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``["train.lr: 0.0002 -> 0.0001", "seed: 0 -> 7", ...]``: every identity field that differs."""
    diffs = []
    for field in IDENTITY_FIELDS:
        a, b = old.get(field, _MISSING), new.get(field, _MISSING)
        if field == "config" and isinstance(a, dict) and isinstance(b, dict):
            fa, fb = flatten(a), flatten(b)
            diffs += [f"{k}: {_show(k, fa.get(k, _MISSING))} -> {_show(k, fb.get(k, _MISSING))}"
                      for k in sorted(set(fa) | set(fb))
                      if fa.get(k, _MISSING) != fb.get(k, _MISSING) and not _introduced_at_default(k, fa, fb)]
        elif a != b:
            diffs.append(f"{field}: {_show(field, a)} -> {_show(field, b)}")
    return diffs


def present_outputs(out: Path) -> list[str]:
    return [name for name in RUN_OUTPUTS if (out / name).exists()]


def discard_run(out: Path, reason: str) -> None:
    """Remove the run outputs in ``out`` (saying so first); other files there are left alone."""
    found = present_outputs(out)
    if not found:
        return
    print(f"csfgan train: {reason}: discarding {', '.join(found)} in {out} and starting fresh", file=sys.stderr)
    for name in found:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def mismatch_error(out: Path, where: Path, diffs: list[str]) -> CheckpointError:
    return CheckpointError(
        f"{where} belongs to another run than the one asked for ({'; '.join(diffs)}); resuming would mix "
        f"them. Use another --out, or pass --restart (or --on-mismatch restart) to discard {out} and start fresh"
    )


def truncate_stats(path: Path, step: int) -> None:
    """Keep the rows of ``stats.jsonl`` up to ``step``: the steps after it are trained again on resume."""
    import json

    from csfgan.io import write_text

    if not path.is_file():
        return
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:  # training writes ASCII JSON: a kill cannot leave this, another hand did
        line = exc.object[:exc.start].count(b"\n") + 1
        raise CheckpointError(f"{path}:{line}: not UTF-8 text, so not a log this training wrote; restore the file, "
                              f"or pass --restart to discard the run and train it again") from None
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            break  # a line cut by a kill ends what was written
    if kept != lines:
        write_text(path, "".join(f"{line}\n" for line in kept))
