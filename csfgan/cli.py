"""The ``csfgan`` command: one subcommand per step of the pipeline; Snakemake rules call these.

Each subcommand imports its module lazily so that ``csfgan --help`` stays fast and a broken
optional dependency of one step does not break the others.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SYNTHETIC = ("synth-birds", "synth-flowers")
REAL = ("cub", "oxford102")


def cmd_prepare(args: argparse.Namespace) -> int:
    from csfgan.config import load_scale
    from csfgan.runtime import default_threads

    scale = load_scale(args.scale)
    out = Path(args.out or f"data/prepared/{args.dataset}")
    if args.dataset in SYNTHETIC:
        from csfgan.data.synthetic import prepare_synthetic

        prepare_synthetic(args.dataset, out, scale, workers=default_threads(args.workers))
    elif args.dataset == "cub":
        from csfgan.data.cub import prepare_cub

        prepare_cub(out, scale, Path(args.downloads), _captions(args), workers=default_threads(args.workers))
    elif args.dataset == "oxford102":
        from csfgan.data.oxford102 import prepare_oxford102

        prepare_oxford102(out, scale, Path(args.downloads), _captions(args), workers=default_threads(args.workers))
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


def cmd_pretrain_text(args: argparse.Namespace) -> int:
    from csfgan.config import load_scale
    from csfgan.damsm import pretrain_text
    from csfgan.runtime import configure_cpu

    threads = configure_cpu(args.threads)["torch_threads"]
    metrics = pretrain_text(Path(args.data), load_scale(args.scale), Path(args.out), seed=args.seed,
                            workers=threads)
    print(f"R-precision on the test split: {metrics['r_precision']:.3f} (chance {metrics['chance']:.3f})")
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    import json

    from csfgan.models.params import count_parameters, parameter_breakdown
    from csfgan.models.text import TextEncoder
    from csfgan.train import resolve_config

    cfg, name = resolve_config(args.scale, args.variant, args.set)
    breakdown = parameter_breakdown(cfg)
    # Pretrained with DAMSM and frozen during GAN training, so outside "total".
    breakdown["text_encoder (frozen)"] = count_parameters(TextEncoder(args.vocab_size, cfg.text))
    if args.json:
        print(json.dumps({"scale": cfg.name, "variant": name, "parameters": breakdown}, indent=2))
        return 0
    print(f"trainable parameters, scale {cfg.name}, variant {name}:")
    for key, value in breakdown.items():
        print(f"  {key:<32} {value:>14,d}  ({value / 1e6:.2f} M)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from csfgan.runtime import configure_cpu
    from csfgan.train import train

    configure_cpu(args.threads)
    final = train(Path(args.data), Path(args.text_encoder), args.variant, args.scale, Path(args.out),
                  seed=args.seed, overrides=args.set, device=args.device, steps=args.stop_at)
    print(f"run in {args.out}" + (f"; final checkpoint {final}" if final.is_file() else " (stopped early)"))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from csfgan.evaluate import evaluate
    from csfgan.runtime import configure_cpu

    configure_cpu(args.threads)
    m = evaluate(Path(args.run), Path(args.out) if args.out else None, device=args.device)
    print(f"FID ({m['fid_features']} features) {m['fid']:.3f}  PSNR {m['psnr']:.2f}  SSIM {m['ssim']:.4f}  "
          f"R-precision {m['r_precision']:.3f}")
    return 0


def cmd_inpaint(args: argparse.Namespace) -> int:
    from csfgan.inpaint import inpaint_file

    inpaint_file(Path(args.checkpoint), Path(args.image), args.text, Path(args.output),
                 mask=Path(args.mask) if args.mask else None, seed=args.seed, device=args.device)
    print(f"wrote {args.output}")
    return 0


def _workflow_config(path: str) -> dict:
    from csfgan.config import read_yaml

    return read_yaml(Path(path))


def cmd_tables(args: argparse.Namespace) -> int:
    from csfgan.report.tables import write_tables

    for path in write_tables(_workflow_config(args.config), Path(args.out)):
        print(f"wrote {path}")
    return 0


def cmd_claims(args: argparse.Namespace) -> int:
    from csfgan.report.claims import write_claims

    for path in write_claims(_workflow_config(args.config), Path(args.out)):
        print(f"wrote {path}")
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from csfgan.report.figures import make_figures
    from csfgan.runtime import configure_cpu

    configure_cpu(args.threads)
    for path in make_figures(_workflow_config(args.config), args.dataset, Path(args.out), seed=args.seed):
        print(f"wrote {path}")
    return 0


def cmd_curves(args: argparse.Namespace) -> int:
    from csfgan.report.curves import training_curves

    for path in training_curves(_workflow_config(args.config), Path(args.out)):
        print(f"wrote {path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from csfgan.bench import run_bench
    from csfgan.io import write_json
    from csfgan.runtime import configure_cpu

    cpu_settings = configure_cpu(args.threads)
    result = run_bench(args.scales, variant=args.variant, batch=args.batch, steps=args.steps,
                       data=Path(args.data) if args.data else None, benchmarks=Path(args.benchmarks),
                       cpu_settings=cpu_settings)
    write_json(Path(args.out), result)
    print(json.dumps(result, indent=2))
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

    p = sub.add_parser("pretrain-text", help="DAMSM pretraining of the BiLSTM text encoder", formatter_class=fmt)
    p.add_argument("--data", required=True, help="prepared dataset directory")
    p.add_argument("--scale", required=True)
    p.add_argument("--out", required=True, help="checkpoint file to write (.pt)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_pretrain_text)

    p = sub.add_parser("params", help="trainable parameters with a per-module breakdown", formatter_class=fmt)
    p.add_argument("--scale", required=True)
    p.add_argument("--variant", default="full", help="variant name or YAML path")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--vocab-size", type=int, default=5450, help="text-encoder vocabulary (CUB: about 5,450 words)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("train", help="train (or resume) one variant", formatter_class=fmt)
    p.add_argument("--data", required=True, help="prepared dataset directory")
    p.add_argument("--text-encoder", required=True, help="checkpoint from `csfgan pretrain-text`")
    p.add_argument("--variant", required=True, help="variant name or YAML path")
    p.add_argument("--scale", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. loss.edge=0.1 (repeatable)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--stop-at", type=int, default=None, help="stop (with a checkpoint) at this step; resume later")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="inpaint the test split of a finished run and measure", formatter_class=fmt)
    p.add_argument("--run", required=True, help="run directory holding final.pt")
    p.add_argument("--out", help="metrics file (default RUN/metrics.json)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("inpaint", help="inpaint one image of any size from a text", formatter_class=fmt)
    p.add_argument("--checkpoint", required=True, help="a run's final.pt")
    p.add_argument("--image", required=True)
    p.add_argument("--text", required=True)
    p.add_argument("--mask", help="PNG, white = hole (default: the centre hole)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_inpaint)

    p = sub.add_parser("tables", help="Tables 1-4 (csv, md, tex) from every planned run's metrics",
                       formatter_class=fmt)
    p.add_argument("--config", required=True, help="workflow config, e.g. experiments/config.yaml")
    p.add_argument("--out", default="results/tables")
    p.set_defaults(func=cmd_tables)

    p = sub.add_parser("claims", help="which of the paper's findings this run reproduces (md, csv)",
                       formatter_class=fmt)
    p.add_argument("--config", required=True, help="workflow config, e.g. experiments/config.yaml")
    p.add_argument("--out", default="results/claims", help="path without suffix: writes OUT.md and OUT.csv")
    p.set_defaults(func=cmd_claims)

    p = sub.add_parser("figures", help="the paper's qualitative figures for one dataset (png, pdf)",
                       formatter_class=fmt)
    p.add_argument("--config", required=True, help="workflow config, e.g. experiments/config.yaml")
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", default="results/figures")
    p.add_argument("--seed", type=int, default=0, help="seed of the test images picked and the generator noise")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_figures)

    p = sub.add_parser("curves", help="training curves of every planned run (png, pdf)", formatter_class=fmt)
    p.add_argument("--config", required=True, help="workflow config, e.g. experiments/config.yaml")
    p.add_argument("--out", default="results/figures")
    p.set_defaults(func=cmd_curves)

    p = sub.add_parser("bench", help="FLOPs, images/s and MFU against the measured matmul peak", formatter_class=fmt)
    p.add_argument("--scales", nargs="+", default=["default", "paper"])
    p.add_argument("--variant", default="full")
    p.add_argument("--batch", type=int, default=None, help="default: the scale's (2 at 256 px)")
    p.add_argument("--steps", type=int, default=10, help="timed repetitions (the median is reported)")
    p.add_argument("--data", default="data/prepared/synth-birds",
                   help="prepared data for the data-loading share ('' to skip)")
    p.add_argument("--benchmarks", default="benchmarks", help="the DAG's benchmark folder")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="results/bench.json")
    p.set_defaults(func=cmd_bench)
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
