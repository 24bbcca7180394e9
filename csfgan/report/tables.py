"""The paper's Tables 1-4, measured: CSV, Markdown and LaTeX (booktabs) in ``results/tables/``.

Every planned run's ``metrics.json`` (``csfgan evaluate``) is read; a row is the mean ± 95 %
confidence interval over its seeds (Student t: ``t(0.975, n−1) · sd / √n``; one seed gives the mean
and n = 1, never an interval). Tables 1 and 2 put the paper's reported numbers beside ours, marked
"reported". Every table states the scale it was measured at, the features FID was computed on and
the network the perceptual loss used, because on machines without ImageNet weights both are the
pipeline's own networks and such numbers are not comparable with the paper's: FID on a species
classifier trained for that alone (``csfgan train-features``), the perceptual loss on the DAMSM image
encoder.

Layout: one row per method and dataset, with a Dataset column (Table 1 groups our datasets under the
paper's dataset they stand in for), so that the extra metrics (hole-only PSNR/SSIM, KID,
R-precision, the synthetic sets' attribute accuracies) fit without a 20-column table.

    table<k>.csv   numbers unrounded: <metric>, <metric>_ci95, seeds, provenance columns
    table<k>.md    a Markdown table with a caption line and notes
    table<k>.tex   a booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)

Differences to a table's reference row, bold and the † / ‡ marks are decided by the paired tests of
``csfgan.report.stats`` (bold: better than every other row of the block, Holm; † / ‡: better / worse
than the reference, Holm within the column; nothing is decided with one seed, a seed missing or a zero
standard error). A mean over fewer seeds than planned (a missing or NaN value) shows its n.

Here: reading the runs, the statistics and what each table holds; the table model and how it is
rendered (rounding, bold, †, escaping) are in ``csfgan.report.render``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from csfgan.config import apply_variant, load_scale, load_variant, parse_overrides
from csfgan.errors import UserError
from csfgan.io import write_text
from csfgan.plan import Plan, RunId, plan, split_run_name, variant_path
from csfgan.report import external as external_rows
from csfgan.report.render import (
    BEST_NOTE,
    DAGGER,
    DDAGGER,
    Column,
    Reported,
    Stat,
    Table,
    mark_best,
    mark_differences,
)
from csfgan.report.stats import Difference, Noise, compare, covers_note, noise_of


class ReportError(UserError, RuntimeError):
    """A report input (metrics, stats, checkpoint) is missing or unreadable; the message names it."""


# --------------------------------------------------------------------------------------------
# What the paper reports (copied verbatim from paper/csf-gan.txt).

REAL_LABELS = {"cub": "CUB-200-2011", "oxford102": "Oxford-102"}
# The paper's dataset column each of our datasets is measured under (stand-ins for the synthetic sets).
PAPER_COLUMN = {"cub": "CUB-200-2011", "oxford102": "Oxford-102",
                "synth-birds": "CUB-200-2011", "synth-flowers": "Oxford-102"}

# Table 1: method -> paper column -> (FID, PSNR, SSIM), as printed.
PAPER_TABLE1: dict[str, dict[str, tuple[str, str, str]]] = {
    "RFR [Li et al., 2020b]": {"CUB-200-2011": ("72.34", "20.53", "0.764"), "Oxford-102": ("43.83", "19.59", "0.753")},
    "PD-GAN [Liu et al., 2021]": {"CUB-200-2011": ("65.94", "18.27", "0.688"),
                                  "Oxford-102": ("49.27", "17.27", "0.651")},
    "PUT [Liu et al., 2022]": {"CUB-200-2011": ("56.19", "18.33", "0.727"), "Oxford-102": ("42.58", "16.95", "0.678")},
    "MMFL [Lin et al., 2020]": {"CUB-200-2011": ("31.82", "20.49", "0.826"),
                                "Oxford-102": ("32.05", "20.27", "0.822")},
    "ALMR [Wu et al., 2021]": {"CUB-200-2011": ("32.33", "16.23", "0.507"), "Oxford-102": ("32.65", "20.32", "0.812")},
    "MIGT [Li et al., 2023]": {"CUB-200-2011": ("35.30", "21.47", "0.846"), "Oxford-102": ("32.48", "21.57", "0.847")},
    "MISL [Wu et al., 2024]": {"CUB-200-2011": ("14.77", "18.87", "0.764"), "Oxford-102": ("30.85", "0.764", "0.726")},
    "CSF-GAN (paper)": {"CUB-200-2011": ("13.50", "20.75", "0.829"), "Oxford-102": ("26.94", "20.61", "0.834")},
}
# Table 2 (CUB-200-2011): method -> (parameters in millions, training hours), as printed.
PAPER_TABLE2: dict[str, tuple[str, str]] = {
    "MMFL [Lin et al., 2020]": ("149.20", "42.5"),
    "ALMR [Wu et al., 2021]": ("175.87", "54.5"),
    "CSF-GAN (paper)": ("82.29", "35.5"),
}
REPORTED_META = {"fid_features": "inception-v3 (paper)", "perceptual_source": "vgg16 (paper)",
                 "scale": "paper (256 px)"}

VARIANT_LABELS = {"baseline": "baseline", "sfm": "baseline+SFM", "wld": "baseline+WLD", "full": "CSF-GAN (full)",
                  "authors-code": "CSF-GAN, authors' code reading"}


def dataset_label(dataset: str) -> str:
    if dataset in REAL_LABELS:
        return REAL_LABELS[dataset]
    if dataset in PAPER_COLUMN:
        return f"{dataset} (stand-in for {PAPER_COLUMN[dataset]})"
    return dataset


def ours_label(name: str) -> str:
    """Row label of one of our runs beside reported rows (Tables 1 and 2)."""
    variant, _ = split_run_name(name)
    return ("CSF-GAN, paper reading" if variant == "full" else variant_label(name)) + " (ours, measured)"


def variant_label(name: str) -> str:
    """Row label of a run name: the paper's names for the four variants, otherwise the name itself."""
    variant, overrides = split_run_name(name)
    label = VARIANT_LABELS.get(variant, variant)
    return label + "".join(f" [{o}]" for o in overrides)


# --------------------------------------------------------------------------------------------
# Metrics: what is shown, how it is named and rounded.


@dataclass(frozen=True)
class Metric:
    key: str
    header: str
    better: str  # "lower" or "higher"
    decimals: int
    optional: bool = False  # shown only where some metrics.json has it


METRICS = (
    Metric("fid", "FID", "lower", 2),
    Metric("psnr", "PSNR", "higher", 2),
    Metric("ssim", "SSIM", "higher", 3),
    Metric("psnr_hole", "hole PSNR", "higher", 2),
    Metric("ssim_hole", "hole SSIM", "higher", 3),
    Metric("kid_mean", "KID", "lower", 4),
    Metric("r_precision", "R-precision", "higher", 3),
    Metric("attribute_accuracy", "attribute acc.", "higher", 3, optional=True),
    Metric("counterfactual_accuracy", "counterfactual acc.", "higher", 3, optional=True),
)

FEATURE_LABELS = {"damsm-image-encoder": "DAMSM features", "inception-v3-compat": "Inception features",
                  "species-classifier": "species-classifier features"}
OFFLINE_FEATURES_NOTE = {
    "species-classifier": " because Inception weights are not available here: a small CNN trained by `csfgan "
                          "train-features` to classify species (and part colours on the synthetic sets) on each "
                          "dataset's train split, used in no training loss ({nets}). Not comparable with FIDs on "
                          "Inception features, such as the paper's.",
    "damsm-image-encoder": " because Inception weights are not available here: not comparable with FIDs on "
                           "Inception features, such as the paper's. The DAMSM image encoder is also the perceptual "
                           "loss's network offline, so this FID measures in part a training target.",
}


def features_label(features: str) -> str:
    return FEATURE_LABELS.get(features, f"{features} features")


def perceptual_label(source: str | None) -> str:
    if source is None:
        return "none (λ_per = 0)"
    if source.startswith("vgg16-imagenet"):
        return "VGG16 with ImageNet weights"
    if source.startswith("vgg16:sha256:"):
        return f"VGG16 with user weights (sha256 {source.rsplit(':', 1)[1][:12]})"
    if source.startswith("vgg16:"):  # runs recorded before sources were content hashes
        return f"VGG16 with user weights {Path(source.split(':', 1)[1]).name}"
    if source == "damsm-image-encoder":
        return "the DAMSM image encoder (no VGG16 ImageNet weights on this machine)"
    return source


def mean_ci(values) -> Stat | None:
    """Mean ± 95 % CI half-width (Student t, ``t.ppf(0.975, n-1) · sd / √n``, sd with n−1)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))], float)
    if len(x) == 0:
        return None
    if len(x) == 1:
        return Stat(float(x[0]), None, 1)
    sd = float(np.std(x, ddof=1))
    return Stat(float(x.mean()), float(stats.t.ppf(0.975, len(x) - 1) * sd / math.sqrt(len(x))), len(x))


# --------------------------------------------------------------------------------------------
# Reading the runs.


def read_metrics(run: RunId, root: Path) -> dict[str, Any]:
    path = Path(root) / run.path / "metrics.json"
    if not path.is_file():
        raise ReportError(f"{path}: missing metrics for planned run {run.dataset}/{run.name}/seed{run.seed}; "
                          f"run `csfgan evaluate --run {Path(root) / run.path}` (or the Snakemake DAG) first")
    try:
        metrics = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: not valid JSON ({exc}); evaluate the run again") from exc
    if not isinstance(metrics, dict):
        raise ReportError(f"{path}: holds a JSON {type(metrics).__name__}, not the object `csfgan evaluate` writes; "
                          "evaluate the run again")
    return metrics


def train_seconds(run: RunId, metrics: dict[str, Any], root: Path) -> float | None:
    """Training wall-clock from metrics.json, else from the run's final.pt."""
    if metrics.get("train_seconds") is not None:
        return float(metrics["train_seconds"])
    final = Path(root) / run.path / "final.pt"
    if not final.is_file():
        return None
    from csfgan.checkpoint import GENERATOR_KIND, load_checkpoint

    value = load_checkpoint(final, GENERATOR_KIND).get("train_seconds")
    return None if value is None else float(value)


class Runs:
    """The metrics of every planned run, read once (a missing file stops with its path)."""

    def __init__(self, p: Plan, root: Path, device: str = "cpu", tables: list[str] | None = None,
                 external: dict[str, list[str]] | None = None):
        self.plan = p
        self.root = Path(root)
        self.device = device
        wanted = {r for t in (tables or [None]) for r in p.runs(t)}
        self.metrics = {r: read_metrics(r, self.root) for r in p.runs() if r in wanted}
        # External rows (csfgan.report.external): name -> datasets; one scored folder stands for every seed.
        self.external = {name: list(datasets) for name, datasets in (external or {}).items()}
        self._paths: dict[RunId, Path] = {}
        for name, datasets in self.external.items():
            for d in datasets:
                scores = external_rows.read_external(self.root, d, name)
                for s in p.seeds:
                    run = RunId(d, external_rows.PREFIX + name, s)
                    self.metrics[run], self._paths[run] = scores, self.root / external_rows.external_dir(d, name)
        self._per_image: dict[RunId, dict[str, np.ndarray]] = {}
        self._noise: dict[tuple[str, tuple[str, ...], str], Noise | None] = {}

    def seeds(self, dataset: str, name: str) -> list[dict[str, Any]]:
        return [self.metrics[RunId(dataset, name, s)] for s in self.plan.seeds]

    def per_image(self, dataset: str, name: str) -> list[dict[str, np.ndarray]]:
        """Each seed's per-image arrays, checked against its metrics.json (a stale file stops here)."""
        from csfgan.metrics import per_image

        out = []
        for seed, m in zip(self.plan.seeds, self.seeds(dataset, name), strict=True):
            run = RunId(dataset, name, seed)
            if run not in self._per_image:
                where = self._paths.get(run, self.root / run.path)
                arrays = per_image.load(where)
                for key in per_image.MEAN_METRICS + tuple(per_image.RATIO_METRICS):
                    values = per_image.per_image_values(arrays, key)
                    if values is None or m.get(key) is None or not math.isfinite(float(m[key])):
                        continue  # a missing value is a missing seed (stats.compare), not a stale file
                    v, c = values
                    whole = v.mean() if c is None else v.sum() / c.sum()
                    if not math.isclose(whole, m[key], rel_tol=1e-9, abs_tol=1e-12):
                        raise ReportError(f"{where}/eval/{per_image.FILE}: {key} {whole} disagrees "
                                          f"with metrics.json ({m[key]}); evaluate the run again")
                self._per_image[run] = arrays
            out.append(self._per_image[run])
        return out

    def compare(self, dataset: str, a: str, b: str, key: str) -> Difference | None:
        """Run ``b`` minus run ``a`` on one metric, paired by seed (and image, for per-image metrics)."""
        from csfgan.metrics.per_image import MEAN_METRICS, RATIO_METRICS

        per_image = key in MEAN_METRICS or key in RATIO_METRICS
        return compare(key, [m.get(key) for m in self.seeds(dataset, a)], [m.get(key) for m in self.seeds(dataset, b)],
                       self.per_image(dataset, a) if per_image else None,
                       self.per_image(dataset, b) if per_image else None, seeds=self.plan.seeds)

    def noise(self, dataset: str, names: list[str], key: str) -> Noise | None:
        """The seed-to-seed noise of one metric pooled over these runs (``stats.noise_of``), cached."""
        from csfgan.metrics.per_image import MEAN_METRICS, RATIO_METRICS

        names = tuple(dict.fromkeys(names))
        cache = (dataset, names, key)
        if cache not in self._noise:
            values = [[m.get(key) for m in self.seeds(dataset, n)] for n in names]
            images = ([self.per_image(dataset, n) for n in names] if key in MEAN_METRICS or key in RATIO_METRICS
                      else None)
            self._noise[cache] = noise_of(key, values, images)
        return self._noise[cache]

    def present(self, keys: list[tuple[str, str]]) -> set[str]:
        """Metric keys found in any metrics file of these (dataset, run) pairs."""
        return {k for d, n in keys for m in self.seeds(d, n) for k, v in m.items() if v is not None}


# --------------------------------------------------------------------------------------------
# Building the four tables.


def _metric_columns(present: set[str], fid_header: str = "FID") -> list[Column]:
    cols = []
    for m in METRICS:
        if m.optional and m.key not in present:
            continue
        header = fid_header if m.key == "fid" else m.header
        cols.append(Column(m.key, header, "stat", m.decimals, m.better))
    return cols


def _row_stats(runs: Runs, dataset: str, name: str, columns: list[Column]) -> tuple[dict[str, Any], dict[str, str]]:
    per_seed = runs.seeds(dataset, name)
    row: dict[str, Any] = {c.key: mean_ci(m.get(c.key) for m in per_seed) for c in columns if c.kind == "stat"}
    row["seeds"] = len(per_seed)
    row["run"] = name
    row["_run"], row["_dataset"] = name, dataset
    meta = {key: " + ".join(sorted({str(m.get(key)) for m in per_seed}))
            for key in ("fid_features", "perceptual_source", "scale")}
    return row, meta


def numerics_label(numerics: Any) -> str:
    """How a run's training did its arithmetic, from the ``numerics`` train records (train.apply_numerics)."""
    if not isinstance(numerics, dict):
        return "not recorded"
    if numerics.get("device") == "cpu":
        return "CPU"
    return (f"{numerics.get('device')}: "
            + ("TF32 matmuls and convolutions" if numerics.get("tf32") else "fp32 matmuls and convolutions (no TF32)")
            + (", deterministic kernels" if numerics.get("deterministic") else ", non-deterministic kernels"))


def _provenance_notes(runs: Runs, keys: list[tuple[str, str]], fid: bool = True) -> list[str]:
    """The scale, FID features and perceptual network of these runs, saying where runs disagree."""
    p = runs.plan
    cfg = p.scale
    seeds = ", ".join(str(s) for s in p.seeds)
    n = len(p.seeds)
    notes = [
        f"Measured at scale '{cfg.name}' ({cfg.resolution} px, {cfg.train.steps} steps at batch "
        f"{cfg.train.batch_size}, lr {cfg.train.lr:g}, {cfg.data.mask} hole of {cfg.data.hole_fraction:g} of the "
        f"side, {cfg.train.precision} training) over seed(s) {seeds}: "
        + ("mean ± 95% CI over seeds (Student t, t(0.975, n-1)·sd/√n)." if n > 1
           else "n=1 seed per row, so means only, no confidence interval."),
    ]
    by: dict[str, dict[str, list[str]]] = {"fid_features": {}, "perceptual_source": {}, "scale": {},
                                           "inference_precision": {}, "training_numerics": {}}
    for d, name in keys:
        for s, m in zip(p.seeds, runs.seeds(d, name), strict=True):
            m = {"inference_precision": "fp32", **m}  # metrics from before eval.amp existed: fp32
            m["training_numerics"] = numerics_label(m.get("training_numerics"))
            for key in by:
                by[key].setdefault(str(m.get(key)), []).append(f"{d}/{name}/seed{s}")
    if fid:
        feats = by["fid_features"]
        nets = sorted({str(m["fid_feature_net"]["description"]) for d, name in keys for m in runs.seeds(d, name)
                       if isinstance(m.get("fid_feature_net"), dict)})
        if len(feats) == 1:
            (f,) = feats
            notes.append(f"FID (and KID) computed on {features_label(f)} ('{f}')"
                         + OFFLINE_FEATURES_NOTE.get(f, ".").format(nets="; ".join(nets) or "not recorded"))
        else:
            notes.append("Runs DISAGREE on FID features: " + "; ".join(
                f"{features_label(f)} for {', '.join(r)}" for f, r in sorted(feats.items())) + ".")
    rp = sorted({str(m["r_precision_encoder"]["description"]) for d, name in keys for m in runs.seeds(d, name)
                 if isinstance(m.get("r_precision_encoder"), dict)})
    if rp:
        notes.append("R-precision on " + "; ".join(rp) + ".")
    percs = by["perceptual_source"]
    if len(percs) == 1:
        (src,) = percs
        notes.append(f"Perceptual loss on {perceptual_label(None if src == 'None' else src)}.")
    else:
        notes.append("Runs DISAGREE on the perceptual network: " + "; ".join(
            f"{perceptual_label(None if s == 'None' else s)} for {', '.join(r)}" for s, r in sorted(percs.items()))
            + ".")
    precisions = by["inference_precision"]
    if len(precisions) == 1:
        notes.append(f"Generator run in {next(iter(precisions))} for evaluation (eval.amp); metric networks in fp32.")
    else:
        notes.append("Runs DISAGREE on the generator's precision in evaluation: " + "; ".join(
            f"{prec} for {', '.join(r)}" for prec, r in sorted(precisions.items())) + ".")
    numerics = by["training_numerics"]
    if set(numerics) - {"CPU", "not recorded"}:  # a GPU run: say whether "fp32" was TF32, and the kernels
        if len(numerics) == 1:
            notes.append(f"Trained on {next(iter(numerics))} (train.tf32, train.deterministic).")
        else:
            notes.append("Runs DISAGREE on training numerics: " + "; ".join(
                f"{label} for {', '.join(r)}" for label, r in sorted(numerics.items())) + ".")
    scales = by["scale"]
    if len(scales) > 1 or next(iter(scales), cfg.name) != cfg.name:
        notes.append("Runs were measured at scale(s) " + "; ".join(
            f"'{s}' ({', '.join(r)})" for s, r in sorted(scales.items())) + f", the config asks for '{cfg.name}'.")
    return notes


def _pairs(p: Plan, table: str) -> list[tuple[str, str, str]]:
    """(dataset, row label, run name) in plan order."""
    return [(d, label, name) for d, rows in p.rows[table].items() for label, name in rows.items()]


def _differences(runs: Runs, dataset: str, reference: str, name: str, columns: list[Column],
                 arms: list[str]) -> tuple[dict[str, Difference], dict[str, Noise]]:
    """Each metric column's paired difference ``name − reference`` on ``dataset``, and the metric's
    noise pooled over ``arms`` (the block's rows) and these two, for the detectable effect."""
    out, noise = {}, {}
    for key in (c.key for c in columns if c.kind == "stat"):
        diff = runs.compare(dataset, reference, name, key)
        if diff is not None:
            out[key] = diff
            pooled = runs.noise(dataset, [*arms, reference, name], key)
            if pooled is not None:
                noise[key] = pooled
    return out, noise


def _finish(runs: Runs, t: Table) -> None:
    """The tests behind the marks: † / ‡ (Holm within each column) and bold (better than every other row)."""
    mark_differences(t)
    mark_best(t, lambda row, other, key: runs.compare(row["_dataset"], other["_run"], row["_run"], key))


def _difference_notes(t: Table) -> list[str]:
    diffs: dict[str, list[Difference]] = {}
    for row in t.rows:
        for key, d in row.get("_diff", {}).items():
            diffs.setdefault(key, []).append(d)
    notes = []
    planned = [r.get("seeds") for r in t.rows if isinstance(r.get("seeds"), int)]
    if any(isinstance(v, Stat) and isinstance(r.get("seeds"), int) and v.n < r["seeds"]
           for r in t.rows for v in r.values()):
        notes.append("(n=k) after a mean: only k of the row's seeds have that metric (missing or not finite); "
                     "its comparisons are not decided and say which seed is missing.")
    if not diffs:
        return notes + ([BEST_NOTE] if planned else [])
    headers = {c.key: c.header for c in t.columns}
    seeds = max(d.seeds for items in diffs.values() for d in items)
    why = (" With one seed nothing is decided (a comparison needs 2 seeds): per-run metrics (FID, KID, "
           "R-precision) have no interval, and the per-image metrics' intervals cover the test images only, not "
           "seed-to-seed variation (set `seeds: [0, 1, 2]`)." if seeds == 1 else "")
    return notes + [
        f"Differences: each row minus {t.reference} on the same dataset, paired seed by seed (same data order and "
        f"test captions) and, for per-image metrics, image by image. What each 95% interval covers: "
        f"{covers_note(diffs, headers)}.{why} {DAGGER} better, {DDAGGER} worse than {t.reference}: the paired "
        f"two-sided test at 5% (the interval excludes 0), Holm-adjusted over every row of that column, in both "
        f"panels; a comparison with one seed, a seed missing or a zero standard error decides nothing and its "
        f"cell says why.",
        BEST_NOTE,
        "The CSV gives per comparison its p-value (`_diff_p`), the Holm-adjusted one (`_diff_p_holm`) and the "
        "smallest difference detectable with 80% power (`_diff_mde`), the latter from the metric's seed-to-seed "
        "noise pooled over the dataset's rows of the table (arm × seed, or arm × seed × image, ANOVA; controls only "
        "in their own comparison), at the df of the comparison's own test.",
    ]


def table1(runs: Runs, title: str) -> Table:
    p = runs.plan
    pairs = _pairs(p, "table1")
    present = runs.present([(d, n) for d, _, n in pairs])
    metric_cols = _metric_columns(present)
    t = Table("table1", title, [Column("method", "Method"), Column("source", "Source"),
                                Column("dataset", "Dataset"), Column("fid_basis", "FID features"),
                                Column("seeds", "Seeds")] + metric_cols)
    columns = list(dict.fromkeys(PAPER_COLUMN.get(d, d) for d in p.datasets))
    if not any(c in ("CUB-200-2011", "Oxford-102") for c in columns):
        columns = ["CUB-200-2011", "Oxford-102"] + columns
    reference = pairs[0][2]
    t.reference = ours_label(pairs[0][1])
    for col in columns:
        ours = sorted({d for d, _, _ in pairs if PAPER_COLUMN.get(d, d) == col and d not in REAL_LABELS})
        block = col + (f" (measured rows: {', '.join(ours)}, the synthetic stand-in)" if ours else "")
        for method, values in PAPER_TABLE1.items():
            if col not in values:
                continue
            fid, psnr, ssim = (Reported(v) for v in values[col])
            t.add({"method": method, "source": "reported", "dataset": col, "fid_basis": "Inception (paper)",
                   "seeds": None, "fid": fid, "psnr": psnr, "ssim": ssim},
                  {"paper_column": col, "run": "", **REPORTED_META}, block)
        for d, label, name in pairs:
            if PAPER_COLUMN.get(d, d) != col:
                continue
            row, meta = _row_stats(runs, d, name, metric_cols)
            feats = meta["fid_features"]
            row.update(method=ours_label(label), source="measured",
                       dataset=dataset_label(d),
                       fid_basis=" + ".join(features_label(f).replace(" features", "") for f in feats.split(" + ")))
            if name != reference:
                arms = [n for d2, _, n in pairs if d2 == d]
                row["_diff"], row["_noise"] = _differences(runs, d, reference, name, metric_cols, arms)
            t.add(row, {"paper_column": col, "run": name, **meta}, block)
        for d in sorted({d for d, _, _ in pairs if PAPER_COLUMN.get(d, d) == col}):
            _external_rows(runs, t, d, pairs, metric_cols, block, col)
    t.notes = _provenance_notes(runs, [(d, n) for d, _, n in pairs]) + [
        "Rows marked 'reported' are copied from the paper's Table 1 (256 px, 128 px centre hole, Inception FID); "
        "they are comparable only with measured rows on the same real dataset (cub, oxford102). synth-birds and "
        "synth-flowers are the harness's embedded stand-ins for CUB-200-2011 and Oxford-102: their rows sit under "
        "the paper's dataset for orientation, not for comparison.",
    ]
    if any(r.get("source") == "external" for r in t.rows):
        t.notes.append(_EXTERNAL_NOTE.format(reference=_csf_gan(pairs)[1]))
    if "Oxford-102" in columns:
        t.notes.append("MISL's Oxford-102 PSNR of 0.764 is copied as printed in the paper (probably a typo there).")
    _finish(runs, t)
    t.notes += _difference_notes(t)
    return t


_EXTERNAL_NOTE = (
    "Rows marked external are folders of outputs scored by `csfgan score` under the protocol csfgan-center "
    "(exported by `csfgan protocol export`: the same test images, centre holes and captions, the same metric "
    "networks and reference statistics as ours); the classical peers (biharmonic, Telea) are training-free, ignore "
    "the caption, and go through the same export -> run -> score path as a user's method. Each is one set of "
    "outputs: its ± is 1.96 × a bootstrap SE over the test images (1000 resamples), and its paired difference "
    "(lower panel) is to {reference}, image by image, covering that row's seeds and the test images."
)


def _csf_gan(pairs: list[tuple[str, str, str]]) -> tuple[str, str]:
    """The run Table 1's external rows are compared with, and its row label: ``full`` when planned, else the
    table's last row."""
    names = {name: label for _, label, name in pairs}
    name = "full" if "full" in names else pairs[-1][2]
    return name, ours_label(names[name])


def _external_stat(metrics: dict[str, Any], key: str) -> Stat | None:
    value = metrics.get(key)
    if value is None or not math.isfinite(float(value)):
        return None
    ci = (metrics.get("ci95") or {}).get(key)
    return Stat(float(value), None if ci is None else 1.959964 * float(ci["se"]), 1)


def _external_rows(runs: Runs, t: Table, dataset: str, pairs: list[tuple[str, str, str]], metric_cols: list[Column],
                   block: str, col: str) -> None:
    """Table 1's external rows of ``dataset`` (csfgan.report.external), with their paired difference to CSF-GAN."""
    reference, reference_label = _csf_gan(pairs)
    arms = [n for d, _, n in pairs if d == dataset]
    for name, datasets in runs.external.items():
        if dataset not in datasets:
            continue
        key = external_rows.PREFIX + name
        m = runs.seeds(dataset, key)[0]
        row: dict[str, Any] = {c.key: _external_stat(m, c.key) for c in metric_cols}
        row.update(method=external_rows.label(name, m), source="external", dataset=dataset_label(dataset),
                   fid_basis=features_label(str(m.get("fid_features"))).replace(" features", ""), seeds=None,
                   run=key, _run=key, _dataset=dataset, _reference=reference_label)
        row["_diff"], row["_noise"] = _differences(runs, dataset, reference, key, metric_cols, arms)
        t.add(row, {"paper_column": col, "run": key, "fid_features": str(m.get("fid_features")),
                    "protocol": f"{m.get('protocol')} v{m.get('protocol_version')}",
                    "predictions_sha256": str(m.get("predictions_sha256"))}, block)


def table2(runs: Runs, title: str) -> Table:
    p = runs.plan
    from csfgan.models.params import parameter_breakdown

    paper = load_scale("paper")
    t = Table("table2", title, [
        Column("method", "Method"), Column("source", "Source"), Column("dataset", "Dataset"),
        Column("seeds", "Seeds"),
        Column("params_run_scale", f"Generator parameters at scale '{p.scale.name}'", "millions"),
        Column("params_paper_scale", "Generator parameters at paper scale", "millions"),
        Column("train_hours", "Training time (h)", "stat", None),
    ])
    for method, (params, hours) in PAPER_TABLE2.items():
        t.add({"method": method, "source": "reported", "dataset": "CUB-200-2011", "seeds": None,
               "params_run_scale": None, "params_paper_scale": Reported(f"{params}M", float(params) * 1e6),
               "train_hours": Reported(hours)}, {"run": "", **REPORTED_META}, "CUB-200-2011")
    counts: dict[str, tuple[int, int]] = {}
    pairs = _pairs(p, "table2")
    for d, label, name in pairs:
        if name not in counts:
            variant, overrides = split_run_name(name)
            v = load_variant(variant_path(p.variants_dir, variant))
            here = parse_overrides(apply_variant(p.scale, v), overrides)
            there = parse_overrides(apply_variant(paper, v), overrides)
            counts[name] = (parameter_breakdown(here)["generator"], parameter_breakdown(there)["generator"])
        per_seed = runs.seeds(d, name)
        hours = [None if (s := train_seconds(RunId(d, name, seed), m, runs.root)) is None else s / 3600
                 for seed, m in zip(p.seeds, per_seed, strict=True)]
        _, meta = _row_stats(runs, d, name, [])
        ours, paper_count = counts[name]
        t.add({"method": ours_label(label), "source": "measured", "dataset": dataset_label(d),
               "seeds": len(per_seed), "params_run_scale": ours, "params_paper_scale": paper_count,
               "train_hours": mean_ci(hours)}, {"run": name, **meta}, dataset_label(d))
    t.notes = _provenance_notes(runs, [(d, n) for d, _, n in pairs], fid=False) + [
        "Parameters: trainable parameters of the generator alone, as the paper's 82.29M counts (the authors' "
        "InpaintNet has 82,285,971); the discriminators and the frozen, DAMSM-pretrained text encoder are not "
        "included (`csfgan params` lists them). Counted from the variant's config at the run's scale and at the "
        "paper scale (256 px, base 64, cap 512), where CSF-GAN's generator in the authors' block order has "
        "82,285,971, theirs to the parameter (the prose order, model.block_order: prose, 82.80M); the reported "
        "MMFL and ALMR figures may count differently.",
        f"Training time: wall-clock of the training loop on this harness's machines (device "
        f"'{runs.device}') at scale '{p.scale.name}'; the paper's hours are its own 256 px GPU runs on "
        f"CUB-200-2011, so only the parameters at paper scale compare directly.",
        "Rows marked 'reported' are copied from the paper's Table 2.",
    ]
    return t


def table3(runs: Runs, title: str) -> Table:
    p = runs.plan
    pairs = _pairs(p, "table3")
    present = runs.present([(d, n) for d, _, n in pairs])
    fid_header = _fid_header(runs, [(d, n) for d, _, n in pairs])
    metric_cols = _metric_columns(present, fid_header)
    t = Table("table3", title, [Column("method", "Method"), Column("dataset", "Dataset"),
                                Column("seeds", "Seeds")] + metric_cols)
    controls = set(p.controls.get("table3", []))
    reference = next(name for _, _, name in pairs)  # the first variant tables.yaml lists
    t.reference = variant_label(reference)
    for d, label, name in pairs:
        row, meta = _row_stats(runs, d, name, metric_cols)
        row.update(method=variant_label(label), dataset=dataset_label(d))
        if name != reference:
            arms = [n for d2, lab, n in pairs if d2 == d and lab not in controls]
            row["_diff"], row["_noise"] = _differences(runs, d, reference, name, metric_cols, arms)
        t.add(row, {"run": name, **meta}, dataset_label(d), control=label in controls)
    t.notes = _provenance_notes(runs, [(d, n) for d, _, n in pairs]) + [
        "Rows are the variants tables.yaml lists for table3 (experiments/variants/NAME.yaml); baseline is our "
        "stand-in for the paper's modified MMFL: the sentence vector concatenated at the bottleneck, no SFM, no WLD.",
    ]
    if controls:
        t.notes.append("Rows marked (control) are tables.yaml's table3 `controls`, not ablation steps: no-text is "
                       "the full model trained and evaluated with empty captions, so its attribute and "
                       "counterfactual accuracy are what the visible context alone gives (the floor beside chance).")
    if any("attribute_chance" in m for d, _, n in pairs for m in runs.seeds(d, n)):
        chance = sorted({m["attribute_chance"] for d, _, n in pairs for m in runs.seeds(d, n)
                         if "attribute_chance" in m})
        t.notes.append(f"Chance for attribute and counterfactual accuracy: {', '.join(f'{c:.3f}' for c in chance)} "
                       "(one palette colour in the palette's size).")
    _finish(runs, t)
    t.notes += _difference_notes(t)
    return t


def _fid_header(runs: Runs, keys: list[tuple[str, str]]) -> str:
    feats = {str(m.get("fid_features")) for d, n in keys for m in runs.seeds(d, n)}
    if len(feats) == 1:
        return f"FID ({features_label(next(iter(feats)))})"
    return "FID (mixed features, see notes)"


def sweep_label(value: str, parameter: str, name: str, variant: str) -> str:
    v = float(value) if _is_number(value) else value
    if parameter == "loss.edge" and v == 0:
        text = "no edge loss"
    else:
        text = f"{v:g}" if isinstance(v, float) else str(v)
    return f"{text} (= {variant})" if name == variant else text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def table4(runs: Runs, title: str) -> Table:
    p = runs.plan
    spec = p.tables["table4"]
    parameter, variant = spec["parameter"], spec["variant"]
    pairs = _pairs(p, "table4")
    present = runs.present([(d, n) for d, _, n in pairs])
    metric_cols = _metric_columns(present, _fid_header(runs, [(d, n) for d, _, n in pairs]))
    head = "λ_edge" if parameter == "loss.edge" else parameter
    t = Table("table4", title, [Column("value", head), Column("dataset", "Dataset"),
                                Column("seeds", "Seeds")] + metric_cols)
    t.reference = sweep_label(next(v for _, v, n in pairs if n == variant), parameter, variant, variant) \
        if any(n == variant for _, _, n in pairs) else None
    for d, value, name in pairs:
        row, meta = _row_stats(runs, d, name, metric_cols)
        row.update(value=sweep_label(value, parameter, name, variant), dataset=dataset_label(d))
        if t.reference is not None and name != variant:
            arms = [n for d2, _, n in pairs if d2 == d]
            row["_diff"], row["_noise"] = _differences(runs, d, variant, name, metric_cols, arms)
        t.add(row, {"run": name, "parameter": parameter, "parameter_value": value, **meta}, dataset_label(d))
    t.notes = _provenance_notes(runs, [(d, n) for d, _, n in pairs]) + [
        f"Sweep of {parameter} on variant '{variant}' (tables.yaml, table4); the other settings are the variant's. "
        "The paper sweeps λ_edge on CUB-200-2011 only and reports FID alone.",
    ]
    _finish(runs, t)
    t.notes += _difference_notes(t)
    return t


BUILDERS = {"table1": table1, "table2": table2, "table3": table3, "table4": table4}


def build_tables(config: dict[str, Any], root: Path | str = ".", tables: list[str] | None = None) -> dict[str, Table]:
    """The tables (default: all four) of a workflow config (``experiments/config.yaml``); runs live
    under ``root``, and only the metrics of the tables asked for are read."""
    unknown = sorted(set(tables or []) - set(BUILDERS))
    if unknown:
        raise ReportError(f"unknown table(s) {unknown}; known: {', '.join(BUILDERS)}")
    p = plan(config, root)
    outside = {name: list(folders) for name, folders in external_rows.external_methods(config).items()}
    runs = Runs(p, Path(root), str(config.get("device", "cpu")), tables,
                external=outside if not tables or "table1" in tables else None)
    return {name: build(runs, p.tables[name].get("title", name)) for name, build in BUILDERS.items()
            if not tables or name in tables}


def write_tables(config: dict[str, Any], out: Path | str, root: Path | str = ".",
                 tables: list[str] | None = None) -> list[Path]:
    """Write ``table<k>.{csv,md,tex}`` into ``out`` (each file atomically) for each of ``tables``
    (default: all four); returns the paths."""
    out = Path(out)
    written = []
    for name, table in build_tables(config, root, tables).items():
        for ext, text in (("csv", table.csv()), ("md", table.markdown()), ("tex", table.latex())):
            path = out / f"{name}.{ext}"
            write_text(path, text)
            written.append(path)
    return written
