"""The protocol's subcommands (``csfgan protocol export``, ``score``, ``peer``, ``predict``), added to the
``csfgan`` parser by :func:`add_commands`; each imports its module when it runs, as csfgan.cli's do."""

from __future__ import annotations

import argparse
from pathlib import Path


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def cmd_protocol_export(args: argparse.Namespace) -> int:
    from csfgan.protocol.export import export

    hole_fraction, caption_seed = args.hole_fraction, args.caption_seed
    if args.scale:
        from csfgan.config import load_scale

        scale = load_scale(args.scale)
        hole_fraction = scale.data.hole_fraction if hole_fraction is None else hole_fraction
        caption_seed = scale.eval.caption_seed if caption_seed is None else caption_seed
    m = export(Path(args.dataset), Path(args.out), split=args.split, mask=args.mask,
               hole_fraction=0.5 if hole_fraction is None else hole_fraction,
               caption_seed=1234 if caption_seed is None else caption_seed, ground_truth=args.ground_truth)
    print(f"exported {m['protocol']} v{m['protocol_version']} ({m['dataset']} {m['split']}: {m['items']} items, "
          f"{m['counterfactual_items']} counterfactual captions) to {args.out}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from csfgan.protocol.score import score
    from csfgan.runtime import configure_cpu

    configure_cpu(args.threads)
    m, out = score(Path(args.protocol), Path(args.predictions), args.name, _path(args.out),
                   dataset=_path(args.dataset), feature_net=_path(args.feature_net),
                   eval_text_encoder=_path(args.eval_text_encoder), inception_weights_path=args.inception_weights,
                   device=args.device, composite=args.composite, bootstrap=args.bootstrap)
    ci = m["ci95"]["fid"]
    print(f"{args.name} under {m['protocol']} v{m['protocol_version']} ({m['dataset']}): FID ({m['fid_features']} "
          f"features) {m['fid']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]  PSNR {m['psnr']:.2f}  SSIM {m['ssim']:.4f}  "
          f"R-precision {m['r_precision']:.3f}; wrote {out}")
    return 0


def cmd_peer(args: argparse.Namespace) -> int:
    from csfgan.protocol.peers import run_peer

    n = run_peer(args.method, Path(args.protocol), Path(args.out))
    print(f"{args.method}: inpainted {n} items into {args.out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from csfgan.protocol.predict import predict
    from csfgan.runtime import configure_cpu

    configure_cpu(args.threads)
    n = predict(Path(args.checkpoint), Path(args.protocol), Path(args.out), device=args.device, weights=args.weights)
    print(f"inpainted {n} items with {args.checkpoint} into {args.out}")
    return 0


def cmd_bins(args: argparse.Namespace) -> int:
    from csfgan.protocol.bins import write_bins_table

    for path in write_bins_table([Path(s) for s in args.scores], Path(args.out)):
        print(f"wrote {path}")
    return 0


def add_commands(sub, fmt, at_least) -> None:
    """Add the subcommands to ``sub`` (csfgan.cli's subparsers)."""
    p = sub.add_parser("protocol", help="the evaluation protocol as a folder any method can be run on",
                       formatter_class=fmt)
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    e = verbs.add_parser("export", help="masked inputs, masks, captions (and counterfactual captions) and a hashed "
                         "manifest", formatter_class=fmt)
    e.add_argument("--dataset", required=True, help="prepared dataset folder, e.g. data/prepared/synth-birds")
    e.add_argument("--split", default="test", choices=("test", "val"))
    e.add_argument("--out", required=True, help="folder to write (an existing one only if it is an export)")
    e.add_argument("--mask", default="center", choices=("center", "irregular"),
                   help="center: the paper's square hole (Tables 1-4); irregular: seeded strokes (Figure 9)")
    e.add_argument("--hole-fraction", type=float, default=None, help="side of the centre hole (default: the "
                   "scale's data.hole_fraction with --scale, else 0.5)")
    e.add_argument("--caption-seed", type=at_least(0), default=None, help="seed of the caption choice and the "
                   "counterfactual edits (default: the scale's eval.caption_seed with --scale, else 1234)")
    e.add_argument("--scale", help="take --hole-fraction and --caption-seed from this scale, as our runs use them")
    e.add_argument("--ground-truth", action="store_true", help="also write the real images (ground_truth/)")
    e.set_defaults(func=cmd_protocol_export)

    p = sub.add_parser("score", help="measure a folder of any method's outputs under an exported protocol, as "
                       "evaluate measures ours", formatter_class=fmt)
    p.add_argument("--protocol", required=True, help="folder from `csfgan protocol export`")
    p.add_argument("--predictions", required=True, help="the method's outputs: <id>.png per item (and "
                   "counterfactual/<id>-cf.png, optional)")
    p.add_argument("--name", required=True, help="the method's name (its row label and folder)")
    p.add_argument("--out", help="default results/external/DATASET/NAME/MASK")
    p.add_argument("--dataset", help="the prepared folder the protocol came from (default: the path its manifest "
                   "records)")
    p.add_argument("--feature-net", help="FID/KID network from `csfgan train-features` (needed without Inception "
                   "weights)")
    p.add_argument("--eval-text-encoder", help="R-precision's DAMSM pair (`csfgan pretrain-text --seed 1`)")
    p.add_argument("--inception-weights", help="TF-Inception weights file (default: torch-fidelity's cache file, "
                   "if present)")
    p.add_argument("--composite", action="store_true", help="paste the known pixels from the input where an "
                   "output changed them (recorded; default: such outputs stop the command)")
    p.add_argument("--bootstrap", type=at_least(20), default=1000, help="image resamples for the 95%% intervals")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=at_least(1), default=None)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("peer", help="a training-free classical method (biharmonic, telea) on an exported protocol",
                       formatter_class=fmt)
    p.add_argument("--method", required=True, choices=("biharmonic", "telea"))
    p.add_argument("--protocol", required=True, help="folder from `csfgan protocol export`")
    p.add_argument("--out", required=True, help="predictions folder to write")
    p.set_defaults(func=cmd_peer)

    p = sub.add_parser("predict", help="a trained run's generator on an exported protocol (a predictions folder)",
                       formatter_class=fmt)
    p.add_argument("--checkpoint", required=True, help="a run's final.pt")
    p.add_argument("--protocol", required=True, help="folder from `csfgan protocol export`")
    p.add_argument("--out", required=True, help="predictions folder to write")
    p.add_argument("--weights", choices=("raw", "ema"), default=None, help="default: the run's eval.weights")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=at_least(1), default=None)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("bins", help="the irregular protocol's scores by mask-area bin, one table (md, csv)",
                       formatter_class=fmt)
    p.add_argument("--scores", nargs="+", required=True, help="metrics.json files of `csfgan score` (irregular)")
    p.add_argument("--out", required=True, help="path without suffix: writes OUT.md and OUT.csv")
    p.set_defaults(func=cmd_bins)
