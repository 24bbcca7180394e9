"""The ``csfgan`` command: one subcommand per step of the pipeline; Snakemake rules call these.

Each subcommand imports its module lazily so that ``csfgan --help`` stays fast and a broken
optional dependency of one step does not break the others.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

SYNTHETIC = ("synth-birds", "synth-flowers")
REAL = ("cub", "oxford102")


def _threads(n: int | None) -> int:
    return max(1, n or os.cpu_count() or 1)


def cmd_prepare(args: argparse.Namespace) -> int:
    from csfgan.config import load_scale

    scale = load_scale(args.scale)
    out = Path(args.out or f"data/prepared/{args.dataset}")
    if args.dataset in SYNTHETIC:
        from csfgan.data.synthetic import prepare_synthetic

        prepare_synthetic(args.dataset, out, scale, workers=_threads(args.workers))
    elif args.dataset == "cub":
        from csfgan.data.cub import prepare_cub

        prepare_cub(out, scale, Path(args.downloads), _captions(args), workers=_threads(args.workers))
    elif args.dataset == "oxford102":
        from csfgan.data.oxford102 import prepare_oxford102

        prepare_oxford102(out, scale, Path(args.downloads), _captions(args), workers=_threads(args.workers))
    if args.preview:
        from csfgan.report.preview import contact_sheet

        contact_sheet(out, Path(args.preview))
    print(f"prepared {args.dataset} at {out}")
    return 0


def _captions(args: argparse.Namespace) -> Path | None:
    return Path(args.captions_archive) if args.captions_archive else None


def cmd_download(args: argparse.Namespace) -> int:
    from csfgan.data.download import download_dataset

    urls = dict(u.split("=", 1) for u in args.url) if args.url else None
    paths = download_dataset(args.dataset, Path(args.out), urls=urls)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from csfgan.report.preview import contact_sheet

    contact_sheet(Path(args.data), Path(args.output), split=args.split, count=args.count, seed=args.seed)
    print(f"wrote {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="csfgan", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.ArgumentDefaultsHelpFormatter

    p = sub.add_parser("prepare", help="write a dataset in the prepared format", formatter_class=fmt)
    p.add_argument("--dataset", required=True, choices=SYNTHETIC + REAL)
    p.add_argument("--scale", required=True, help="scale name (smoke, default, paper) or YAML path")
    p.add_argument("--out", help="output directory (default: data/prepared/DATASET)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--downloads", default="data/downloads", help="real datasets: where `csfgan download` put them")
    p.add_argument("--captions-archive", help="real datasets: Reed et al.'s caption archive (local path)")
    p.add_argument("--preview", help="also write a contact sheet PNG here")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("download", help="download and verify a real dataset", formatter_class=fmt)
    p.add_argument("--dataset", required=True, choices=REAL)
    p.add_argument("--out", default="data/downloads")
    p.add_argument("--url", action="append", metavar="FILE=URL", help="mirror for one file (repeatable)")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("preview", help="contact sheet of prepared samples with hole and caption", formatter_class=fmt)
    p.add_argument("--data", required=True, help="prepared dataset directory")
    p.add_argument("-o", "--output", required=True, help="PNG to write")
    p.add_argument("--split", default="train")
    p.add_argument("--count", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_preview)
    return parser


def main(argv: list[str] | None = None) -> int:
    from csfgan.errors import USER_ERRORS

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        print(f"csfgan {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
