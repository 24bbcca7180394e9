"""Which of the paper's quantitative findings this run reproduces: ``results/claims.{md,csv}``.

``experiments/claims.yaml`` states each finding as comparisons between rows of a table on one metric
(``row`` against ``than``: ``better``, ``worse``, or ``within`` a tolerance). Each comparison is the
paired difference of :mod:`csfgan.report.stats` (seed k against seed k; per-image metrics also image
by image, crossed seed × image variance components) with its 95 % interval. Every test is one-sided
at :data:`~csfgan.report.stats.ALPHA_SIDE` = 2.5 % per side, so the 95 % interval is the unadjusted
picture of both:

* better / worse -- *reproduced* when the one-sided test in the expected direction rejects at 2.5 %
  (the interval lies entirely on the expected side of 0); *contradicted* when the one-sided test in
  the other direction rejects at 2.5 % **after Holm's adjustment over all of the claim's comparisons
  on all its datasets** (the family: "λ_edge 0.5 is best" on one dataset is 4 tests; "every component
  improves FID" on two datasets is 8);
* within a tolerance τ -- *reproduced* by Schuirmann's two one-sided tests (TOST) at 2.5 % per side,
  which is the 95 % interval inside ±τ (the usual TOST at α = 0.05 uses the 90 % interval; we keep
  2.5 % per side as for every other test here); *contradicted* when |difference| > τ is shown by a
  one-sided test on either side, Bonferroni over the two sides (the smaller p doubled), then Holm as
  above.

A claim on a dataset is *reproduced* only if all its comparisons are: an intersection–union test,
which needs no multiplicity adjustment (each comparison at 2.5 % bounds the error of the whole).
It is *contradicted* if any comparison is (Holm keeps the chance of a false contradiction of the
claim, over all its datasets, at most 2.5 %), else *inconclusive*; *not measured* where the dataset
has no such metric (attribute accuracy on real images).

Nothing is decided by fewer than :data:`~csfgan.report.stats.MIN_SEEDS` = 2 seeds: such a comparison
is *inconclusive (one seed)* (an image-only interval may be shown; it does not cover seed-to-seed
variation). A seed missing or not finite in either row makes the comparison *inconclusive (seed k
missing)*, and a zero standard error (identical per-seed differences) *inconclusive (zero standard
error)*; undecided comparisons are left out of the Holm family. The claim's verdict keeps the reasons.

Each comparison reports the smallest difference this run could detect (80 % power, two-sided 0.05),
from the metric's seed-to-seed noise pooled over the rows of the claim's table on that dataset
(:func:`csfgan.report.stats.pooled_noise`; controls only when the comparison involves them), and for
``within`` the smallest tolerance the design would establish with 80 % power if the true difference
were 0 (:func:`csfgan.report.stats.minimum_tolerance`).

A claim on FID also reports the same comparisons on KID (``kid_mean``, torch-fidelity's unbiased
estimator on the same features), rows with ``role`` "KID beside FID", with their own Holm family and
verdict (``kid_verdict``). KID does not change the FID verdict: the claims are the paper's, made on
FID, and KID reads the same feature distributions with another statistic; the report shows where the
two disagree.

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
from csfgan.report.stats import ALPHA_SIDE, COVERS, MIN_SEEDS, Difference, Noise, holm, minimum_tolerance
from csfgan.report.tables import METRICS, Runs, dataset_label

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "claims.schema.yaml"
DEFAULT_CLAIMS = "experiments/claims.yaml"
VERDICTS = ("reproduced", "contradicted", "inconclusive", "not measured")  # inconclusive may carry "(why)"
COMPANIONS = {"fid": "kid_mean"}  # a claim on the first metric also reports the second
ROLE_CLAIM, ROLE_COMPANION = "claim", "KID beside FID"


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


def tolerance_of(comparison: Comparison, reference_mean: float) -> float | None:
    """The ``within`` bound: the tolerance, or ``relative`` × |mean of the ``than`` row|."""
    if comparison.expect != "within":
        return None
    if comparison.tolerance is not None:
        return float(comparison.tolerance)
    return float(comparison.relative * abs(reference_mean))


def p_values(diff: Difference | None, comparison: Comparison, better: str,
          tolerance: float | None = None) -> tuple[float | None, float | None]:
    """(p for the claim, p against it) of one comparison, both one-sided as the module says; (None, None)
    when the comparison decides nothing.

    better/worse: the one-sided t p-values toward and away from the expected sign. within: TOST's p
    (the larger of the two one-sided p's that the difference is above −τ and below +τ), and the
    p that |difference| > τ (the smaller one-sided p, doubled).
    """
    if diff is None or not diff.decided:
        return None, None
    if comparison.expect == "within":
        if tolerance is None or not math.isfinite(tolerance):
            return None, None
        p_for = max(diff.p_above(-tolerance), diff.p_below(tolerance))
        p_against = min(1.0, 2 * min(diff.p_above(tolerance), diff.p_below(-tolerance)))
        return p_for, p_against
    improving = -1 if better == "lower" else 1  # the sign of a difference that is an improvement
    expected = improving if comparison.expect == "better" else -improving
    up, down = diff.p_above(), diff.p_below()
    return (up, down) if expected > 0 else (down, up)


def verdict(diff: Difference | None, comparison: Comparison, better: str, reference_mean: float,
            p_against_adjusted: float | None = None) -> str:
    """One comparison's verdict; ``p_against_adjusted`` is its Holm-adjusted p against the claim (the
    unadjusted one, a family of one, when not given)."""
    if diff is None:
        return "not measured"
    if not diff.decided:
        return f"inconclusive ({diff.reason or f'fewer than {MIN_SEEDS} seeds'})"
    tol = tolerance_of(comparison, reference_mean)
    p_for, p_against = p_values(diff, comparison, better, tol)
    if p_for is None:
        return "inconclusive (no reference mean for the tolerance)"
    if p_against_adjusted is None:
        p_against_adjusted = p_against
    if p_for <= ALPHA_SIDE:
        return "reproduced"
    if p_against_adjusted <= ALPHA_SIDE:
        return "contradicted"
    return "inconclusive"


@dataclass(frozen=True)
class Judged:
    verdict: str
    p_for: float | None
    p_against: float | None
    p_against_holm: float | None
    family: int


def judge(items: list[tuple[Difference | None, Comparison, str, float]]) -> list[Judged]:
    """Verdicts of one family -- a claim's comparisons on all its datasets, as (difference, comparison,
    better, reference mean) -- with the contradiction p-values Holm-adjusted over the family."""
    pairs = [p_values(d, c, b, tolerance_of(c, ref)) for d, c, b, ref in items]
    adjusted = holm([p_against for _, p_against in pairs])
    family = sum(p is not None for p in adjusted)
    return [Judged(verdict(d, c, b, ref, adj), p_for, p_against, adj, family)
            for (d, c, b, ref), (p_for, p_against), adj in zip(items, pairs, adjusted, strict=True)]


def combine(verdicts: list[str]) -> str:
    """A claim on one dataset: contradicted if any comparison is, reproduced if all are, else
    inconclusive, with the reasons its comparisons decided nothing."""
    if all(v == "not measured" for v in verdicts):
        return "not measured"
    if "contradicted" in verdicts:
        return "contradicted"
    if all(v == "reproduced" for v in verdicts):
        return "reproduced"
    reasons = sorted({v[len("inconclusive ("):-1] for v in verdicts if v.startswith("inconclusive (")})
    return "inconclusive" + (f" ({'; '.join(reasons)})" if reasons else "")


def _arms(runs: Runs, table: str, dataset: str, comparison: Comparison) -> list[str]:
    """The runs whose noise is pooled for this comparison: the table's rows on the dataset, controls
    only when compared."""
    names = runs.plan.rows[table][dataset]
    controls = set(runs.plan.controls.get(table, []))
    pooled = [name for label, name in names.items() if label not in controls]
    return [*pooled, names[comparison.than], names[comparison.row]]


def _reference_mean(runs: Runs, dataset: str, name: str, metric: str) -> float:
    values = [m.get(metric) for m in runs.seeds(dataset, name)]
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(finite) / len(finite) if finite else math.nan


def _basis(noise: Noise | None, diff: Difference | None) -> str | None:
    if noise is not None:
        return f"pooled over {noise.arms} rows × {noise.seeds} seeds (df {noise.df:.3g})"
    if diff is not None and diff.decided:
        return f"this comparison alone (df {diff.df:.3g})"
    return None


def evaluate_claims(config: dict[str, Any], root: Path | str = ".") -> pd.DataFrame:
    """One row per claim, metric (the claim's, and KID beside FID), dataset and comparison, with the
    comparison's tests and verdict and the claim's combined verdict per dataset."""
    p = plan(config, root)
    claims = load_claims(config, p, root)
    runs = Runs(p, Path(root), str(config.get("device", "cpu")))
    better = {m.key: m.better for m in METRICS}
    records = []
    for claim in claims:
        metrics = [(claim.metric, ROLE_CLAIM)]
        if claim.metric in COMPANIONS:
            metrics.append((COMPANIONS[claim.metric], ROLE_COMPANION))
        by_role: dict[str, list[dict[str, Any]]] = {}
        for metric, role in metrics:
            rows, items = [], []
            for d in claim.datasets:
                names = runs.plan.rows[claim.table][d]
                for c in claim.compare:
                    diff = runs.compare(d, names[c.than], names[c.row], metric)
                    ref_mean = _reference_mean(runs, d, names[c.than], metric)
                    noise = runs.noise(d, _arms(runs, claim.table, d, c), metric) if diff is not None else None
                    tol = tolerance_of(c, ref_mean)
                    own = diff is not None and diff.decided
                    detectable = noise.mde if noise is not None else (diff.mde if own else None)
                    tol80 = None if c.expect != "within" else (
                        noise.tolerance if noise is not None else minimum_tolerance(diff.se, diff.df) if own else None)
                    items.append((diff, c, better[metric], ref_mean))
                    rows.append({
                        "claim": claim.id, "source": claim.source, "statement": claim.statement,
                        "table": claim.table, "metric": metric, "role": role, "dataset": d,
                        "comparison": f"{c.row} {_relation(c, better[metric])} {c.than}",
                        "row": c.row, "than": c.than, "expect": c.expect, "tolerance": tol,
                        "effect": None if diff is None else diff.estimate,
                        "ci_low": None if diff is None else diff.low, "ci_high": None if diff is None else diff.high,
                        "se": None if diff is None else diff.se, "df": None if diff is None else diff.df,
                        "seeds": None if diff is None else diff.seeds, "images": None if diff is None else diff.images,
                        "covers": None if diff is None else diff.covers,
                        "half_width": None if diff is None else diff.half_width,
                        "reason": None if diff is None else diff.reason,
                        "detectable": detectable, "tolerance_80": tol80, "detectable_basis": _basis(noise, diff),
                        "note": claim.note,
                    })
            for r, j in zip(rows, judge(items), strict=True):
                r.update(verdict=j.verdict, p_for=j.p_for, p_against=j.p_against, p_against_holm=j.p_against_holm,
                         family=j.family)
            by_role[role] = rows
        for d in claim.datasets:
            on = {role: [r for r in rows if r["dataset"] == d] for role, rows in by_role.items()}
            overall = combine([r["verdict"] for r in on[ROLE_CLAIM]])
            kid = combine([r["verdict"] for r in on[ROLE_COMPANION]]) if ROLE_COMPANION in on else None
            for rows in on.values():
                for r in rows:
                    r.update(claim_verdict=overall, kid_verdict=kid)
        records += [r for role in by_role for r in by_role[role]]
    columns = ["claim", "source", "statement", "table", "metric", "role", "dataset", "comparison", "row", "than",
               "expect", "tolerance", "effect", "ci_low", "ci_high", "se", "df", "seeds", "images", "covers",
               "half_width", "p_for", "p_against", "p_against_holm", "family", "reason", "detectable",
               "tolerance_80", "detectable_basis", "verdict", "claim_verdict", "kid_verdict", "note"]
    return pd.DataFrame.from_records(records, columns=columns)


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


def _p(x: Any) -> str:
    if x is None or pd.isna(x):
        return "–"
    return "<0.001" if x < 0.001 else f"{x:.3f}"


def render_markdown(frame: pd.DataFrame, p: Plan) -> str:
    seeds = ", ".join(str(s) for s in p.seeds)
    claim_rows = frame[frame["role"] == ROLE_CLAIM]
    lines = ["**Claims of the paper, checked on this run**", "",
             f"Scale '{p.scale.name}', seed(s) {seeds}; each effect is a paired difference (row minus the row "
             f"it is compared with) with its 95% confidence interval.", "",
             "| Claim | Source | Dataset | Verdict | KID beside FID | Statement |",
             "| :--- | :--- | :--- | :--- | :--- | :--- |"]
    for (claim, dataset), group in claim_rows.groupby(["claim", "dataset"], sort=False):
        first = group.iloc[0]
        kid = "–" if pd.isna(first["kid_verdict"]) else first["kid_verdict"]
        lines.append(f"| {claim} | {first['source']} | {dataset_label(dataset)} | **{first['claim_verdict']}** | "
                     f"{kid} | {first['statement']} |")
    lines += ["", "| Claim | Dataset | Metric | Comparison | Effect [95% CI] | Seeds | p against (Holm) | "
              "Detectable (80% power) | Verdict |",
              "| :--- | :--- | :--- | :--- | ---: | ---: | ---: | ---: | :--- |"]
    for _, r in frame.iterrows():
        effect = _num(r["effect"])
        if not pd.isna(r["ci_low"]):
            effect += f" [{_num(r['ci_low'])}, {_num(r['ci_high'])}]"
        comparison = r["comparison"] + (f" (±{_num(r['tolerance'])})" if r["expect"] == "within" else "")
        seeds_cell = "–" if pd.isna(r["seeds"]) else str(int(r["seeds"]))
        metric = r["metric"] if r["role"] == ROLE_CLAIM else f"{r['metric']} (beside {_claim_metric(r)})"
        detectable = _num(r["detectable"])
        if r["expect"] == "within" and not pd.isna(r["tolerance_80"]):
            detectable = f"±{_num(r['tolerance_80'])} (tolerance)"
        lines.append(f"| {r['claim']} | {r['dataset']} | {metric} | {comparison} | {effect} | {seeds_cell} | "
                     f"{_p(r['p_against_holm'])} | {detectable} | {r['verdict']} |")
    lines.append("")
    covers = sorted({c for c in frame["covers"].dropna()})
    lines += [
        "- Tests: one-sided at 2.5% per side (the 95% interval shows both). better/worse is reproduced when the "
        "interval lies on the expected side of 0; ≈ (within ±tolerance) is reproduced by two one-sided tests at "
        "2.5% each (TOST), i.e. when the 95% interval lies inside ±tolerance (Schuirmann's usual 5% TOST would use "
        "the 90% interval; 2.5% per side keeps one error rate for every test here). A claim is reproduced on a "
        "dataset only if all its comparisons are (an intersection-union test: no adjustment needed).",
        "- Contradicted: the one-sided test against the claim (for ≈: |difference| > tolerance on either side, "
        "the smaller p doubled) rejects at 2.5% after Holm's adjustment over all of the claim's comparisons on all "
        "its datasets; 'p against (Holm)' is that adjusted p-value (the CSV also has the unadjusted `p_against`, "
        "`p_for` and the family size). A claim is contradicted if any of its comparisons is.",
        f"- Nothing is decided by fewer than {MIN_SEEDS} seeds ('inconclusive (one seed)'; an image-only interval "
        "does not cover seed-to-seed variation), with a seed missing or not finite in either row ('inconclusive "
        "(seed k missing)': Seeds is the number used), or with a zero standard error ('inconclusive (zero "
        "standard error)': identical per-seed differences give no measure of noise). Those are left out of the "
        "Holm family.",
        "- Intervals: " + "; ".join(f"{c}: {COVERS[c]}" for c in covers) + ".",
        "- Detectable: the smallest true difference this run would find with 80% power at α = 0.05 (two-sided), "
        "from the metric's seed-to-seed noise pooled over the rows of the claim's table on that dataset (an arm × "
        "seed, or arm × seed × image, ANOVA, assuming the rows share it; controls only in their own comparisons; "
        "the CSV's `detectable_basis`), at the df of the comparison's own test: a 2-df variance from one "
        "comparison alone would be 0.16-1.92 times the truth. For ≈ rows it is the smallest tolerance the design "
        "would establish with 80% power if the true difference were 0. An inconclusive verdict with a detectable "
        "effect larger than the paper's says the run is too small to decide, not that there is no effect.",
        "- KID beside FID: a claim on FID also shows the same comparisons on KID (torch-fidelity's unbiased "
        "estimator, on the same features), with their own Holm family and verdict; KID does not change the FID "
        "verdict (the claims are the paper's, on FID), and the first table shows where the two disagree.",
    ]
    for claim, note in claim_rows.groupby("claim", sort=False)["note"].first().items():
        if note:
            lines.append(f"- {claim}: {note}")
    return "\n".join(lines) + "\n"


def _claim_metric(r: pd.Series) -> str:
    return next(k for k, v in COMPANIONS.items() if v == r["metric"])


def write_claims(config: dict[str, Any], out: Path | str, root: Path | str = ".") -> list[Path]:
    """``OUT.md`` and ``OUT.csv`` (each atomic); ``out`` is the path without suffix, e.g. results/claims."""
    frame = evaluate_claims(config, root)
    p = plan(config, root)
    out = Path(out)
    paths = [out.with_suffix(".csv"), out.with_suffix(".md")]
    write_text(paths[0], frame.to_csv(index=False, lineterminator="\n"))
    write_text(paths[1], render_markdown(frame, p))
    return paths
