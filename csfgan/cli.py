"""The ``csfgan`` command: one subcommand per step of the pipeline; Snakemake rules call these.

Each subcommand imports its module lazily so that ``csfgan --help`` stays fast and a broken
optional dependency of one step does not break the others.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

SYNTHETIC = ("synth-birds", "synth-flowers")


def minutes(text: str) -> float:
    """An argparse type: a finite number of minutes >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of minutes, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def at_least(low: int, high: int | None = None):
    """An argparse type: an integer >= ``low`` (and <= ``high``); argparse then prints one line naming
    the option."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


# Seeds are derived (seed * 1000 + rank, seed + offsets) and handed to torch's 64-bit generators; 32 bits
# keep every derived value in range (a larger one stopped train and inpaint with an OverflowError).
MAX_SEED = 2**32 - 1
SEED = at_least(0, MAX_SEED)
REAL = ("cub", "oxford102")


def cmd_prepare(args: argparse.Namespace) -> int:
    from csfgan.config import load_scale
    from csfgan.io import remove_stale_temporaries
    from csfgan.lock import command_line, output_lock

    scale = load_scale(args.scale)
    out = Path(args.out or f"data/prepared/{args.dataset}")
    with output_lock(out, command_line()):
        remove_stale_temporaries(out.parent, (out.name,))
        _prepare_locked(args, scale, out)
    print(f"prepared {args.dataset} at {out}")
    return 0


def _prepare_locked(args: argparse.Namespace, scale, out: Path) -> None:
    from csfgan.runtime import default_threads

    if args.dataset in SYNTHETIC:
        from csfgan.data.synthetic import prepare_synthetic

        prepare_synthetic(args.dataset, out, scale, workers=default_threads(args.workers))
    elif args.dataset == "cub":
        from csfgan.data.cub import prepare_cub

        prepare_cub(out, scale, Path(args.downloads), _captions(args), workers=default_threads(args.workers),
                    md5s=_md5s(args))
    elif args.dataset == "oxford102":
        from csfgan.data.oxford102 import prepare_oxford102

        prepare_oxford102(out, scale, Path(args.downloads), _captions(args), workers=default_threads(args.workers),
                          md5s=_md5s(args))
    if args.verify:
        _verify(out)
    if args.preview:
        from csfgan.report.preview import contact_sheet

        contact_sheet(out, Path(args.preview))


def _verify(root: Path) -> None:
    from csfgan.data.prepared import verify

    manifest = verify(root)
    counts = ", ".join(f"{k} {v['count']}" for k, v in manifest["splits"].items())
    print(f"verified {root}: {len(manifest['files'])} files match their sizes and sha256 ({counts} images)")


def cmd_verify_data(args: argparse.Namespace) -> int:
    _verify(Path(args.data))
    return 0


def _captions(args: argparse.Namespace) -> Path | None:
    return Path(args.captions_archive) if args.captions_archive else None


def _md5s(args: argparse.Namespace) -> dict[str, str] | None:
    """``--md5 FILE=MD5`` options: a mirror's checksums in place of the official files' (tests' fixtures)."""
    return dict(m.split("=", 1) for m in args.md5) if args.md5 else None


def cmd_download(args: argparse.Namespace) -> int:
    from csfgan.data.download import download_dataset

    urls = dict(u.split("=", 1) for u in args.url) if args.url else None
    paths = download_dataset(args.dataset, Path(args.out), urls=urls, md5s=_md5s(args))
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
                            workers=threads, device=args.device, save_every_minutes=args.save_every_minutes)
    print(f"R-precision on the test split: {metrics['r_precision']:.3f} (chance {metrics['chance']:.3f})")
    return 0


def cmd_train_features(args: argparse.Namespace) -> int:
    from csfgan.config import load_scale
    from csfgan.metrics.feature_net import train_feature_net
    from csfgan.runtime import configure_cpu

    configure_cpu(args.threads)
    m = train_feature_net(Path(args.data), load_scale(args.scale), Path(args.out), seed=args.seed, epochs=args.epochs,
                          device=args.device, save_every_minutes=args.save_every_minutes)
    acc = ", ".join(f"{k} {v:.3f} (chance {m['chance'][k]:.3f})" for k, v in m["held_out_accuracy"].items())
    print(f"held-out train-species accuracy: {acc}; trained {m['train_seconds']:.0f} s; wrote {args.out}")
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    import json

    from csfgan.config import resolve_config
    from csfgan.models.params import PAPER_REPORTED_PARAMETERS, count_parameters, parameter_breakdown
    from csfgan.models.text import TextEncoder

    cfg, name = resolve_config(args.scale, args.variant, args.set)
    breakdown = parameter_breakdown(cfg)
    # Pretrained with DAMSM and frozen during GAN training.
    breakdown["text_encoder (frozen)"] = count_parameters(TextEncoder(args.vocab_size, cfg.text))
    if args.json:
        print(json.dumps({"scale": cfg.name, "variant": name, "parameters": breakdown}, indent=2))
        return 0
    print(f"trainable parameters, scale {cfg.name}, variant {name} (generator, discriminators and the frozen "
          f"text encoder counted apart; the paper's {PAPER_REPORTED_PARAMETERS / 1e6:.2f} M is the generator's):")
    for key, value in breakdown.items():
        note = ""
        if key == "generator":
            note = f"  {value / PAPER_REPORTED_PARAMETERS - 1:+.2%} vs the paper's generator"
        print(f"  {key:<32} {value:>14,d}  ({value / 1e6:.2f} M){note}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from csfgan.runtime import configure_cpu
    from csfgan.train import train

    configure_cpu(args.threads)
    final = train(Path(args.data), Path(args.text_encoder), args.variant, args.scale, Path(args.out),
                  seed=args.seed, overrides=args.set, device=args.device, steps=args.stop_at,
                  restart=args.restart, on_mismatch=args.on_mismatch, save_every_minutes=args.save_every_minutes)
    print(f"run in {args.out}" + (f"; final checkpoint {final}" if final.is_file() else " (stopped early)"))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from csfgan.evaluate import evaluate
    from csfgan.runtime import configure_cpu

    configure_cpu(args.threads)
    m = evaluate(Path(args.run), Path(args.out) if args.out else None, device=args.device, split=args.split,
                 feature_net=Path(args.feature_net) if args.feature_net else None,
                 eval_text_encoder=Path(args.eval_text_encoder) if args.eval_text_encoder else None,
                 checkpoint=Path(args.checkpoint) if args.checkpoint else None, weights=args.weights,
                 folder=args.folder)
    print(f"{m['checkpoint']} ({m['weights']} weights): FID ({m['fid_features']} features) {m['fid']:.3f}  "
          f"PSNR {m['psnr']:.2f}  SSIM {m['ssim']:.4f}  R-precision {m['r_precision']:.3f}")
    return 0


def cmd_variance(args: argparse.Namespace) -> int:
    from csfgan.runtime import configure_cpu
    from csfgan.variance import variance

    configure_cpu(args.threads)
    out = Path(args.out or f"results/variance/{args.dataset}")
    for path in variance(Path(args.runs), args.dataset, args.variants, out, seeds=args.seeds, split=args.split,
                         last=args.last, weights=args.weights, feature_net=args.feature_net,
                         eval_text_encoder=args.eval_text_encoder, device=args.device, batch_size=args.batch_size,
                         bootstrap=args.bootstrap):
        print(f"wrote {path}")
    return 0


def cmd_inpaint(args: argparse.Namespace) -> int:
    from csfgan.inpaint import inpaint_file

    inpaint_file(Path(args.checkpoint), Path(args.image), args.text, Path(args.output),
                 mask=Path(args.mask) if args.mask else None, seed=args.seed, device=args.device)
    print(f"wrote {args.output}")
    return 0


def _workflow_config(path: str) -> dict:
    """A workflow config checked against the schema Snakemake validates it with: a typo, a `control:`
    for `controls:` or a scale file is refused, not half-read. Keys left out take the defaults the
    report code itself has (the DAG passes its resolved config, with every key)."""
    from csfgan.config import REPO_ROOT, ConfigError
    from csfgan.resolved import read_checked

    schema_path = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
    try:
        config = read_checked(Path(path), schema_path)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; --config takes a workflow config such as experiments/config.yaml or the "
                          "run's results/config/workflow.yaml") from None
    return config  # the schema requires a mapping with scale and datasets


def cmd_tables(args: argparse.Namespace) -> int:
    from csfgan.report.tables import write_tables

    for path in write_tables(_workflow_config(args.config), Path(args.out), tables=args.table):
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


def cmd_estimate(args: argparse.Namespace) -> int:
    import json

    from csfgan.estimate import estimate, render

    report = estimate(args.configfile, device_tflops=args.device_tflops, mfu=args.mfu,
                      workflow_profile=args.workflow_profile, perceptual=args.perceptual)
    print(json.dumps(report, indent=2) if args.json else render(report))
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
    load = result["machine_load"]
    print(f"csfgan bench: {'WARNING: ' if load['competed'] else ''}{load['verdict']}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="csfgan", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.ArgumentDefaultsHelpFormatter

    p = sub.add_parser("prepare", help="write a dataset in the prepared format", formatter_class=fmt)
    p.add_argument("--dataset", required=True, choices=SYNTHETIC + REAL)
    p.add_argument("--scale", required=True, help="scale name (smoke, default, paper) or YAML path")
    p.add_argument("--out", help="output directory (default: data/prepared/DATASET)")
    p.add_argument("--workers", type=at_least(1), default=None, help="worker processes (default: all cores)")
    p.add_argument("--downloads", default="data/downloads", help="real datasets: where `csfgan download` put them")
    p.add_argument("--captions-archive", help="real datasets: Reed et al.'s caption archive (local path)")
    p.add_argument("--preview", help="also write a contact sheet PNG here")
    p.add_argument("--verify", action="store_true",
                   help="then check every file at --out against the manifest's sizes and sha256")
    p.add_argument("--md5", action="append", metavar="FILE=MD5",
                   help="real datasets: expected MD5 of a source file served by a mirror (repeatable; recorded in "
                        "the manifest)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("verify-data", help="check a prepared dataset's files against its manifest (sha256)",
                       formatter_class=fmt)
    p.add_argument("--data", required=True, help="prepared dataset directory")
    p.set_defaults(func=cmd_verify_data)

    p = sub.add_parser("download", help="download and verify a real dataset", formatter_class=fmt)
    p.add_argument("--dataset", required=True, choices=REAL)
    p.add_argument("--out", default="data/downloads")
    p.add_argument("--url", action="append", metavar="FILE=URL", help="mirror for one file (repeatable)")
    p.add_argument("--md5", action="append", metavar="FILE=MD5",
                   help="expected MD5 of a file the mirror serves in place of the official one (repeatable)")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("preview", help="contact sheet of prepared samples with hole and caption", formatter_class=fmt)
    p.add_argument("--data", required=True, help="prepared dataset directory")
    p.add_argument("-o", "--output", required=True, help="PNG to write")
    p.add_argument("--split", default="train", choices=("train", "val", "test"))
    p.add_argument("--count", type=at_least(1), default=24)
    p.add_argument("--seed", type=SEED, default=0)
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser("pretrain-text", help="DAMSM pretraining of the BiLSTM text encoder", formatter_class=fmt)
    p.add_argument("--data", required=True, help="prepared dataset directory")
    p.add_argument("--scale", required=True)
    p.add_argument("--out", required=True, help="checkpoint file to write (.pt)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--threads", type=at_least(1), default=None)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--save-every-minutes", type=minutes, default=10.0, metavar="M",
                   help="save the resumable state (.<out name>.state.pt beside --out) every M minutes of wall time "
                        "(0: never by time); SIGTERM, SIGUSR1 and Ctrl-C save it before stopping, the same command "
                        "continues from it, and writing --out removes it")
    p.set_defaults(func=cmd_pretrain_text)

    p = sub.add_parser("train-features", help="train the FID/KID feature network (a species classifier used in "
                       "no loss)", formatter_class=fmt)
    p.add_argument("--data", required=True, help="prepared dataset directory")
    p.add_argument("--scale", required=True)
    p.add_argument("--out", required=True, help="checkpoint file to write (.pt)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--epochs", type=at_least(1), default=None, help="default: csfgan.metrics.feature_net.EPOCHS")
    p.add_argument("--threads", type=at_least(1), default=None)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--save-every-minutes", type=minutes, default=10.0, metavar="M",
                   help="save the resumable state (.<out name>.state.pt beside --out) every M minutes of wall time "
                        "(0: never by time); SIGTERM, SIGUSR1 and Ctrl-C save it before stopping, the same command "
                        "continues from it, and writing --out removes it")
    p.set_defaults(func=cmd_train_features)

    p = sub.add_parser("params", help="trainable parameters with a per-module breakdown", formatter_class=fmt)
    p.add_argument("--scale", required=True)
    p.add_argument("--variant", default="full", help="variant name or YAML path")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--vocab-size", type=at_least(3), default=5450,
                   help="text-encoder vocabulary (CUB: about 5,450 words)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("train", help="train (or resume) one variant", formatter_class=fmt)
    p.add_argument("--data", required=True, help="prepared dataset directory")
    p.add_argument("--text-encoder", required=True, help="checkpoint from `csfgan pretrain-text`")
    p.add_argument("--variant", required=True, help="variant name or YAML path")
    p.add_argument("--scale", required=True)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. loss.edge=0.1 (repeatable)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=at_least(1), default=None)
    p.add_argument("--stop-at", type=at_least(1), default=None,
                   help="stop (with a checkpoint) at this step; resume later")
    p.add_argument("--save-every-minutes", type=minutes, default=10.0, metavar="M",
                   help="also save the resumable state every M minutes of wall time (0: only every "
                        "train.checkpoint_every steps); SIGTERM, SIGUSR1 and Ctrl-C save it before stopping")
    p.add_argument("--restart", action="store_true",
                   help="discard what --out holds (checkpoints, final.pt, stats, samples, metrics, eval; it says "
                        "so first) and start fresh")
    p.add_argument("--on-mismatch", choices=("error", "restart"), default="error",
                   help="when --out holds a run that differs in config, variant, seed, text encoder (sha256), "
                        "prepared data (manifest sha256), world size or perceptual network: 'error' refuses and "
                        "names what differs, 'restart' discards it and starts fresh; a matching run resumes "
                        "(or, finished, is left as it is) either way")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="inpaint the test (or val) split of a finished run and measure",
                       formatter_class=fmt)
    p.add_argument("--run", required=True, help="run directory holding final.pt")
    p.add_argument("--out", help="metrics file (default RUN/metrics.json; RUN/metrics_val.json for --split val)")
    p.add_argument("--split", default="test", choices=("test", "val"),
                   help="val for tuning and checkpoint choice; test only for the final numbers")
    p.add_argument("--checkpoint", help="a generator checkpoint of this run (default RUN/final.pt; snapshots are "
                   "RUN/checkpoints/generator-step<N>.pt)")
    p.add_argument("--weights", choices=("raw", "ema"), default=None,
                   help="the optimiser's weights or their moving average (default: the run's eval.weights)")
    p.add_argument("--folder", help="per-image output folder inside RUN (default eval, or eval_val for --split val)")
    p.add_argument("--feature-net", help="FID/KID network from `csfgan train-features` (needed without Inception "
                   "weights)")
    p.add_argument("--eval-text-encoder", help="R-precision's DAMSM pair: a `csfgan pretrain-text` checkpoint other "
                   "than the run's (e.g. --seed 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=at_least(1), default=None)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("variance", help="variance budget on val: test-sample, checkpoint and seed noise of each "
                       "metric against training steps (csv, md, png, pdf)", formatter_class=fmt)
    p.add_argument("--runs", default="results/runs", help="folder of RUNS/<dataset>/<variant>/seed<k> run directories")
    p.add_argument("--dataset", required=True)
    p.add_argument("--variants", nargs="+", default=["full", "baseline"],
                   help="one variant, or two: the arm FIRST - SECOND is added (paired by seed and image)")
    p.add_argument("--seeds", nargs="+", type=SEED, default=None,
                   help="default: every seed<k> folder of the first variant (each must exist for every variant)")
    p.add_argument("--split", default="val", choices=("val", "test"),
                   help="val only: these are choices, made on val (test is refused)")
    p.add_argument("--last", type=at_least(2), default=3, help="K: the checkpoint spread is over the last K snapshots")
    p.add_argument("--weights", nargs="+", choices=("raw", "ema"), default=["raw"],
                   help="generator weights to evaluate")
    p.add_argument("--feature-net", default="results/feature_net/{dataset}.pt",
                   help="FID/KID network (`csfgan train-features`; '' with TF-Inception weights); {dataset} is "
                   "replaced")
    p.add_argument("--eval-text-encoder", default="results/text_encoder/{dataset}.eval.pt",
                   help="R-precision's DAMSM pair (`csfgan pretrain-text --seed 1`); {dataset} is replaced")
    p.add_argument("--bootstrap", type=at_least(20), default=500, help="image resamples per evaluation")
    p.add_argument("--out", help="path without suffix: writes OUT.csv, OUT.md, OUT.json, OUT.png, OUT.pdf "
                   "(default results/variance/DATASET)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=at_least(1), default=None, help="evaluation batch (default: the run's)")
    p.add_argument("--threads", type=at_least(1), default=None)
    p.set_defaults(func=cmd_variance)

    p = sub.add_parser("inpaint", help="inpaint one image of any size from a text", formatter_class=fmt)
    p.add_argument("--checkpoint", required=True, help="a run's final.pt")
    p.add_argument("--image", required=True)
    p.add_argument("--text", required=True)
    p.add_argument("--mask", help="image of the same size, white = hole (default: the transparent pixels of an "
                   "image with an alpha channel, else the centre hole)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_inpaint)

    p = sub.add_parser("tables", help="Tables 1-4 (csv, md, tex) from every planned run's metrics",
                       formatter_class=fmt)
    p.add_argument("--config", required=True, help="workflow config, e.g. experiments/config.yaml")
    p.add_argument("--out", default="results/tables")
    p.add_argument("--table", action="append", choices=("table1", "table2", "table3", "table4"),
                   help="write only this table (repeatable; default: all four)")
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
    p.add_argument("--seed", type=SEED, default=0, help="seed of the test images picked and the generator noise")
    p.add_argument("--threads", type=at_least(1), default=None)
    p.set_defaults(func=cmd_figures)

    p = sub.add_parser("curves", help="training curves of every planned run (png, pdf)", formatter_class=fmt)
    p.add_argument("--config", required=True, help="workflow config, e.g. experiments/config.yaml")
    p.add_argument("--out", default="results/figures")
    p.set_defaults(func=cmd_curves)

    p = sub.add_parser("bench", help="FLOPs, images/s and MFU against the measured matmul peak", formatter_class=fmt)
    p.add_argument("--scales", nargs="+", default=["default", "paper"])
    p.add_argument("--variant", default="full")
    p.add_argument("--batch", type=at_least(1), default=None, help="default: the scale's (2 at 256 px)")
    p.add_argument("--steps", type=at_least(1), default=10, help="timed repetitions (the median is reported)")
    p.add_argument("--data", default="data/prepared/synth-birds",
                   help="prepared data for the data-loading share ('' to skip)")
    p.add_argument("--benchmarks", default="benchmarks", help="the DAG's benchmark folder")
    p.add_argument("--threads", type=at_least(1), default=None)
    p.add_argument("--out", default="results/bench.json")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("estimate", help="what a workflow config costs before launch: FLOPs, device-hours, wall "
                       "time and submissions per compute rule", formatter_class=fmt)
    p.add_argument("--configfile", default="experiments/config.yaml", help="the workflow config, as snakemake takes it")
    # Numbers are checked by csfgan.estimate, so a bad one ends in one line naming it.
    p.add_argument("--device-tflops", required=True, metavar="TFLOPS",
                   help="one device's peak TFLOP/s in the runs' precision (A100: 312 bf16, 156 TF32)")
    p.add_argument("--mfu", default="0.4", help="the fraction of that peak a job reaches, in (0, 1]")
    p.add_argument("--workflow-profile", default=None,
                   help="the profile snakemake will run with (its set-resources and default-resources apply)")
    p.add_argument("--perceptual", choices=("here", "vgg16"), default="here",
                   help="the perceptual loss's network counted: what this machine would use (VGG16 where its weights "
                   "are here, else the fallback), or VGG16 as on a node that has its weights")
    p.add_argument("--json", action="store_true", help="every job's numbers as JSON")
    p.set_defaults(func=cmd_estimate)

    from csfgan.protocol.commands import add_commands  # protocol export, score, peer, predict

    add_commands(sub, fmt, at_least)
    return parser


def main(argv: list[str] | None = None) -> int:
    from csfgan.errors import USER_ERRORS
    from csfgan.signals import exit_status, interruptible

    args = build_parser().parse_args(argv)
    try:
        with interruptible():
            return args.func(args)
    except USER_ERRORS as exc:
        print(f"csfgan {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        what, status = exit_status(exc)
        print(f"csfgan {args.command}: stopped by {what}; partial output removed, finished outputs kept",
              file=sys.stderr)
        return status
    except OSError as exc:
        from csfgan.io import UNWRITABLE, OutputError

        if exc.errno not in UNWRITABLE:
            raise
        # A write not wrapped where it happens: name the file if the error knows it, else the output.
        where = exc.filename or getattr(args, "out", None) or getattr(args, "output", None) or "an output"
        print(f"csfgan {args.command}: error: {OutputError(where, exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
