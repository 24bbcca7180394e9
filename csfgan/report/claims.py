"""Which of the paper's quantitative findings this run reproduces: ``results/claims.{md,csv}``.

``experiments/claims.yaml`` states each finding as comparisons between rows of a table on one metric
(``row`` against ``than``: ``better``, ``worse``, or ``within`` a tolerance). Each comparison is the
paired difference of :mod:`csfgan.report.stats` (seed k against seed k; per-image metrics also image
by image) with its 95 % interval, and gets a verdict:

* better / worse: *reproduced* if the interval lies entirely on the expected side of 0,
  *contradicted* if entirely on the other side, *inconclusive* otherwise (or without an interval);
* within: *reproduced* if the interval lies inside ±tolerance, *contradicted* if it lies entirely
  outside, *inconclusive* otherwise.

A claim on a dataset is contradicted if any comparison is, reproduced if all are, else inconclusive;
"not measured" where the dataset has no such metric (attribute accuracy on real images). Each
comparison also reports the smallest difference this run could detect (80 % power, α = 0.05).

:func:`load_claims` validates the file (JSON schema ``workflow/schemas/claims.schema.yaml``, then
every row and metric against the planned tables); the Snakefile calls it at parse time, so a typo
stops the workflow before any job runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from csfgan.config import ConfigError, read_yaml
from csfgan.io import write_text
from csfgan.plan import Plan, format_value, plan
from csfgan.report.stats import COVERS, Difference, compare
from csfgan.report.tables import METRICS, Runs, dataset_label

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "claims.schema.yaml"
DEFAULT_CLAIMS = "experiments/claims.yaml"
VERDICTS = ("reproduced", "contradicted", "inconclusive", "not measured")


@dataclass(frozen=True)
class Comparison:
    row: str
    than: str
    expect: str  # better, worse, within
    tolerance: float | None = None
    relative: float | None = None


@dataclass(frozen=True)
class Claim:
    id: str
    source: str
    statement: str
    table: str
    metric: str
    datasets: list[str]
    compare: list[Comparison]
    note: str = ""


def claims_path(config: dict[str, Any], root: Path | str = ".") -> Path:
    return Path(root) / config.get("claims", DEFAULT_CLAIMS)


def _row_key(value: Any, table: str) -> str:
    # table4 rows are swept values, written as tables.yaml's values are (0.5 -> "0.5", 1 -> "1.0").
    if table == "table4":
        try:
            return format_value(float(value))
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def load_claims(config: dict[str, Any], p: Plan, root: Path | str = ".") -> list[Claim]:
    """The claims file of a workflow config, validated against the schema and the planned tables."""
    import jsonschema

    path = claims_path(config, root)
    if not path.is_file():
        raise ConfigError(f"{path}: no claims file (config key `claims`); create it or point `claims` at one")
    data = read_yaml(path)
    schema = read_yaml(SCHEMA)
    try:
        jsonschema.validate(data, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(x) for x in exc.absolute_path) or "(top level)"
        raise ConfigError(f"{path}: {where}: {exc.message}") from None
    metrics = {m.key for m in METRICS}
    out, seen = [], set()
    for i, c in enumerate(data["claims"]):
        where = f"{path}: claims[{i}] ({c['id']})"
        if c["id"] in seen:
            raise ConfigError(f"{where}: id {c['id']!r} is used twice")
        seen.add(c["id"])
        if c["metric"] not in metrics:
            raise ConfigError(f"{where}: unknown metric {c['metric']!r}; known: {', '.join(sorted(metrics))}")
        table_rows = p.rows.get(c["table"], {})
        chosen = c.get("datasets", "all")
        datasets = (list(table_rows) if chosen == "all" else list(table_rows)[:1] if chosen == "first" else chosen)
        unknown = [d for d in datasets if d not in table_rows]
        if unknown:
            raise ConfigError(f"{where}: {c['table']} has no dataset(s) {unknown}; it has {list(table_rows)}")
        comparisons = []
        for j, item in enumerate(c["compare"]):
            row, than = _row_key(item["row"], c["table"]), _row_key(item["than"], c["table"])
            for d in datasets:
                for name in (row, than):
                    if name not in table_rows[d]:
                        raise ConfigError(f"{where}: compare[{j}]: {c['table']} has no row {name!r} on {d}; "
                                          f"its rows: {', '.join(table_rows[d])}")
            bounds = [k for k in ("tolerance", "relative") if k in item]
            if item["expect"] == "within" and len(bounds) != 1:
                raise ConfigError(f"{where}: compare[{j}]: `within` needs exactly one of tolerance, relative")
            if item["expect"] != "within" and bounds:
                raise ConfigError(f"{where}: compare[{j}]: {bounds[0]} only applies to expect: within")
            comparisons.append(Comparison(row, than, item["expect"], item.get("tolerance"), item.get("relative")))
        out.append(Claim(c["id"], c["source"], c["statement"], c["table"], c["metric"], datasets, comparisons,
                         c.get("note", "")))
    return out


# --------------------------------------------------------------------------------------------
# Statistics and verdicts.


def _difference(runs: Runs, table: str, dataset: str, comparison: Comparison, metric: str) -> Difference | None:
    from csfgan.metrics.per_image import MEAN_METRICS, RATIO_METRICS

    names = runs.plan.rows[table][dataset]
    a_name, b_name = names[comparison.than], names[comparison.row]
    a, b = runs.seeds(dataset, a_name), runs.seeds(dataset, b_name)
    per_image = metric in MEAN_METRICS or metric in RATIO_METRICS
    a_images = runs.per_image(dataset, a_name) if per_image else None
    b_images = runs.per_image(dataset, b_name) if per_image else None
    return compare(metric, [m.get(metric) for m in a], [m.get(metric) for m in b], a_images, b_images)


def verdict(diff: Difference | None, comparison: Comparison, better: str, reference_mean: float) -> str:
    if diff is None:
        return "not measured"
    if diff.low is None:
        return "inconclusive"
    if comparison.expect == "within":
        tol = comparison.tolerance if comparison.tolerance is not None else comparison.relative * abs(reference_mean)
        if -tol <= diff.low and diff.high <= tol:
            return "reproduced"
        return "contradicted" if diff.low > tol or diff.high < -tol else "inconclusive"
    improving = -1 if better == "lower" else 1  # the sign of a difference that is an improvement
    expected = improving if comparison.expect == "better" else -improving
    if (diff.high < 0 and expected < 0) or (diff.low > 0 and expected > 0):
        return "reproduced"
    if (diff.low > 0 and expected < 0) or (diff.high < 0 and expected > 0):
        return "contradicted"
    return "inconclusive"


def combine(verdicts: list[str]) -> str:
    if all(v == "not measured" for v in verdicts):
        return "not measured"
    if "contradicted" in verdicts:
        return "contradicted"
    return "reproduced" if all(v == "reproduced" for v in verdicts) else "inconclusive"


def evaluate_claims(config: dict[str, Any], root: Path | str = ".") -> pd.DataFrame:
    """One row per claim, dataset and comparison, with the claim's combined verdict."""
    p = plan(config, root)
    claims = load_claims(config, p, root)
    runs = Runs(p, Path(root), str(config.get("device", "cpu")))
    better = {m.key: m.better for m in METRICS}
    records = []
    for claim in claims:
        for d in claim.datasets:
            rows = []
            for c in claim.compare:
                diff = _difference(runs, claim.table, d, c, claim.metric)
                ref_values = [m.get(claim.metric) for m in runs.seeds(d, runs.plan.rows[claim.table][d][c.than])]
                ref_mean = (sum(ref_values) / len(ref_values)) if None not in ref_values else math.nan
                tol = None if c.expect != "within" else (
                    c.tolerance if c.tolerance is not None else c.relative * abs(ref_mean))
                rows.append({
                    "claim": claim.id, "source": claim.source, "statement": claim.statement,
                    "table": claim.table, "metric": claim.metric, "dataset": d,
                    "comparison": f"{c.row} {_relation(c, better[claim.metric])} {c.than}",
                    "row": c.row, "than": c.than, "expect": c.expect, "tolerance": tol,
                    "effect": None if diff is None else diff.estimate,
                    "ci_low": None if diff is None else diff.low, "ci_high": None if diff is None else diff.high,
                    "seeds": None if diff is None else diff.seeds, "images": None if diff is None else diff.images,
                    "covers": None if diff is None else diff.covers,
                    "half_width": None if diff is None else diff.half_width,
                    "detectable": None if diff is None else diff.mde,
                    "verdict": verdict(diff, c, better[claim.metric], ref_mean), "note": claim.note,
                })
            overall = combine([r["verdict"] for r in rows])
            for r in rows:
                r["claim_verdict"] = overall
            records += rows
    return pd.DataFrame.from_records(records)


def _relation(c: Comparison, better: str) -> str:
    if c.expect == "within":
        return "≈"
    lower = (c.expect == "better") == (better == "lower")
    return "<" if lower else ">"


# --------------------------------------------------------------------------------------------
# Rendering.


def _num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    x = float(x)
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}".replace("-", "−")


def render_markdown(frame: pd.DataFrame, p: Plan) -> str:
    seeds = ", ".join(str(s) for s in p.seeds)
    lines = ["**Claims of the paper, checked on this run**", "",
             f"Scale '{p.scale.name}', seed(s) {seeds}; each effect is a paired difference (row minus the row "
             f"it is compared with) with its 95% confidence interval.", "",
             "| Claim | Source | Dataset | Verdict | Statement |", "| :--- | :--- | :--- | :--- | :--- |"]
    for (claim, dataset), group in frame.groupby(["claim", "dataset"], sort=False):
        first = group.iloc[0]
        lines.append(f"| {claim} | {first['source']} | {dataset_label(dataset)} | **{first['claim_verdict']}** | "
                     f"{first['statement']} |")
    lines += ["", "| Claim | Dataset | Metric | Comparison | Effect [95% CI] | Seeds | Detectable (80% power) | "
              "Verdict |", "| :--- | :--- | :--- | :--- | ---: | ---: | ---: | :--- |"]
    for _, r in frame.iterrows():
        effect = _num(r["effect"])
        if not pd.isna(r["ci_low"]):
            effect += f" [{_num(r['ci_low'])}, {_num(r['ci_high'])}]"
        comparison = r["comparison"] + (f" (±{_num(r['tolerance'])})" if r["expect"] == "within" else "")
        seeds_cell = "–" if pd.isna(r["seeds"]) else str(int(r["seeds"]))
        lines.append(f"| {r['claim']} | {r['dataset']} | {r['metric']} | {comparison} | {effect} | {seeds_cell} | "
                     f"{_num(r['detectable'])} | {r['verdict']} |")
    lines.append("")
    covers = sorted({c for c in frame["covers"].dropna()})
    lines += [
        "- Verdicts: better/worse is reproduced when the 95% interval lies on the expected side of 0, contradicted "
        "when on the other side, inconclusive when it contains 0 (or there is no interval); ≈ (within a tolerance) "
        "is reproduced when the interval lies inside ±tolerance, contradicted when entirely outside. A claim is "
        "contradicted if any of its comparisons is, reproduced if all are.",
        "- Intervals: " + "; ".join(f"{c}: {COVERS[c]}" for c in covers) + ".",
        "- Detectable: the smallest true difference this run would find with 80% power at α = 0.05 (two-sided), "
        "from the comparison's standard error and degrees of freedom; an inconclusive verdict with a detectable "
        "effect larger than the paper's says the run is too small to decide, not that there is no effect.",
    ]
    for claim, note in frame.groupby("claim", sort=False)["note"].first().items():
        if note:
            lines.append(f"- {claim}: {note}")
    return "\n".join(lines) + "\n"


def write_claims(config: dict[str, Any], out: Path | str, root: Path | str = ".") -> list[Path]:
    """``OUT.md`` and ``OUT.csv`` (each atomic); ``out`` is the path without suffix, e.g. results/claims."""
    frame = evaluate_claims(config, root)
    p = plan(config, root)
    out = Path(out)
    paths = [out.with_suffix(".csv"), out.with_suffix(".md")]
    write_text(paths[0], frame.to_csv(index=False, lineterminator="\n"))
    write_text(paths[1], render_markdown(frame, p))
    return paths
