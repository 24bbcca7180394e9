"""The tables' model and their three renderings: CSV (``Table.csv``: unrounded numbers, one column per
statistic), Markdown (``render_markdown``) and LaTeX booktabs (``render_latex``), with how a cell is
rounded, marked and escaped. What goes into the tables, read from the runs, is ``csfgan.report.tables``'s.

Marks, decided by tests (``csfgan.report.stats``), never by point estimates alone:

* **bold** (:func:`mark_best`): the row of a block (a dataset, rows of one source, controls excluded)
  that is better than *every* other row of the block: paired one-sided tests at 2.5 % of the row with
  the best mean against each other row, Holm-adjusted over those comparisons. Usually nothing is
  bold; never with one seed, a seed missing or a zero standard error in any of those comparisons.
  Reported rows (the paper's numbers) have no seeds to test and are never bold.
* **†** better than the reference row, **‡** worse (:func:`mark_differences`): the paired two-sided
  test at 5 % (the 95 % interval excludes 0), Holm-adjusted over all the rows of that column of the
  table (every dataset); undecided comparisons (one seed, a seed missing, zero SE) get no mark.
* a mean over fewer seeds than the row's ``Seeds`` says ``(n=2)``; a difference that decides nothing
  says why in its cell, e.g. ``(one seed, images only)`` or ``(seed 1 missing)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from csfgan.report.stats import LEVEL, Difference, better_than_all, holm


class Reported(float):
    """A number copied from the paper: a float for the CSV, printed exactly as the paper prints it."""

    text: str

    def __new__(cls, text: str, value: float | None = None) -> Reported:
        obj = super().__new__(cls, float(text) if value is None else value)
        obj.text = text
        return obj


@dataclass(frozen=True)
class Stat:
    """Mean over seeds with its 95 % t-interval half-width (None for one seed)."""

    mean: float
    ci95: float | None
    n: int


@dataclass
class Column:
    key: str
    header: str
    kind: str = "text"  # "text", "stat" (a Stat or number) or "millions" (a count shown in millions)
    decimals: int | None = 2  # None: three significant digits
    better: str | None = None

    def title(self, latex: bool = False) -> str:
        arrow = {"lower": ("↓", r"$\downarrow$"), "higher": ("↑", r"$\uparrow$")}.get(self.better or "")
        head = latex_escape(self.header) if latex else self.header
        return head if arrow is None else f"{head} {arrow[1] if latex else arrow[0]}"


@dataclass
class Table:
    """Rows in dataset blocks. Row keys starting with ``_`` are not columns:

    ``_block`` the block (dataset) header, ``_control`` a control row, ``_diff`` metric -> paired
    :class:`Difference` to the reference row, ``_mark`` metric -> "better" / "worse" (Holm-adjusted,
    :func:`mark_differences`), ``_p_holm`` metric -> that adjusted p-value, ``_best`` the metric keys
    where the row is better than every other row of its block (:func:`mark_best`), ``_noise`` metric ->
    the pooled :class:`csfgan.report.stats.Noise` its detectable effect comes from, ``_dataset`` and
    ``_run`` the measured run behind the row.
    """

    name: str
    title: str
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    # Provenance per row (CSV columns; the notes summarise them).
    meta: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    block_column: str = "dataset"  # repeated in Markdown and CSV; a block header in LaTeX
    reference: str | None = None  # label of the rows' reference for differences

    def add(self, row: dict[str, Any], meta: dict[str, str], block: str, control: bool = False) -> None:
        self.rows.append({**row, "_block": block, "_control": control})
        self.meta.append(meta)

    @property
    def diff_columns(self) -> list[Column]:
        return [c for c in self.columns if c.kind == "stat" and any(c.key in r.get("_diff", {}) for r in self.rows)]

    # ---- CSV: unrounded numbers, one column per statistic.
    def frame(self) -> pd.DataFrame:
        records = []
        for row, meta in zip(self.rows, self.meta, strict=True):
            rec: dict[str, Any] = {}
            for c in self.columns:
                v = row.get(c.key)
                if c.kind == "millions":
                    rec[c.key] = None if v is None else int(round(float(v)))
                elif c.kind == "stat":
                    rec[c.key] = v.mean if isinstance(v, Stat) else (v if isinstance(v, (int, float)) else None)
                    rec[f"{c.key}_ci95"] = v.ci95 if isinstance(v, Stat) else None
                    rec[f"{c.key}_n"] = v.n if isinstance(v, Stat) else None
                    if c.better is not None:
                        rec[f"{c.key}_best"] = c.key in row.get("_best", ())
                else:
                    rec[c.key] = v
            if self.reference is not None:
                rec["control"] = row["_control"]
            if any("_reference" in r for r in self.rows):
                rec["diff_reference"] = reference_of(self, row) if row.get("_diff") else None
            for c in self.diff_columns:
                d = row.get("_diff", {}).get(c.key)
                mark = row.get("_mark", {}).get(c.key)
                noise = row.get("_noise", {}).get(c.key)
                rec.update({f"{c.key}_diff": None if d is None else d.estimate,
                            f"{c.key}_diff_low": None if d is None else d.low,
                            f"{c.key}_diff_high": None if d is None else d.high,
                            f"{c.key}_diff_seeds": None if d is None else d.seeds,
                            f"{c.key}_diff_df": None if d is None else d.df,
                            f"{c.key}_diff_p": None if d is None else d.p_two_sided,
                            f"{c.key}_diff_p_holm": row.get("_p_holm", {}).get(c.key),
                            f"{c.key}_diff_significant": None if d is None else mark is not None,
                            f"{c.key}_diff_mark": None if d is None else (mark or ""),
                            f"{c.key}_diff_reason": None if d is None else d.reason,
                            f"{c.key}_diff_mde": None if d is None else (noise.mde if noise is not None else d.mde),
                            f"{c.key}_diff_covers": None if d is None else d.covers})
            rec.update(meta)
            records.append(rec)
        frame = pd.DataFrame.from_records(records)
        for c in self.columns:
            if c.key == "seeds" or c.kind == "millions":
                frame[c.key] = frame[c.key].astype("Int64")
            if c.kind == "stat":
                frame[f"{c.key}_n"] = frame[f"{c.key}_n"].astype("Int64")
        for c in self.diff_columns:
            frame[f"{c.key}_diff_seeds"] = frame[f"{c.key}_diff_seeds"].astype("Int64")
        return frame

    def csv(self) -> str:
        return self.frame().to_csv(index=False, lineterminator="\n")

    # ---- Markdown
    def markdown(self) -> str:
        return render_markdown(self)

    # ---- LaTeX (booktabs)
    def latex(self) -> str:
        return render_latex(self)


DAGGER = "†"  # significantly better than the reference row
DDAGGER = "‡"  # significantly worse
MARKS = {"better": DAGGER, "worse": DDAGGER}
LATEX_MARKS = {"better": r"\textsuperscript{\dag}", "worse": r"\textsuperscript{\ddag}"}
BEST_NOTE = ("Bold: the row better than every other row of its block (same dataset and source, controls "
             "excluded) by paired one-sided tests at 2.5% of the best mean against each other row, Holm-adjusted "
             "over those comparisons; often nothing is bold. Reported rows have no seeds to test and are never "
             "bold.")


def mark_best(table: Table, pairwise) -> None:
    """``_best``: per block, among the measured non-control rows of one source and dataset, the metric
    columns where the row with the best mean is better than every other row (:func:`better_than_all`).

    ``pairwise(row, other, key)`` gives the paired :class:`Difference` row − other (None if it cannot
    be formed); rows without ``_run`` (reported numbers) are never candidates.
    """
    groups: dict[tuple[str, Any, Any], list[dict[str, Any]]] = {}
    for row in table.rows:
        row["_best"] = set()
        if not row["_control"] and row.get("_run") is not None:
            groups.setdefault((row["_block"], row.get("source"), row.get("_dataset")), []).append(row)
    for rows in groups.values():
        if len(rows) < 2:
            continue
        for c in table.columns:
            if c.kind != "stat" or c.better is None:
                continue
            stats = [(r, r.get(c.key)) for r in rows]
            if any(not isinstance(v, Stat) for _, v in stats):
                continue
            pick = min if c.better == "lower" else max
            best_row, _ = pick(stats, key=lambda rv: rv[1].mean)
            diffs = [pairwise(best_row, other, c.key) for other in rows if other is not best_row]
            if better_than_all(diffs, c.better):
                best_row["_best"].add(c.key)


def mark_differences(table: Table) -> None:
    """``_mark`` and ``_p_holm``: each difference column's decided differences to the reference, tested
    two-sided at 1 − LEVEL and Holm-adjusted over the whole column (every row and dataset of the table);
    the mark is the side of the column's ``better`` the difference lies on."""
    for row in table.rows:
        row["_mark"], row["_p_holm"] = {}, {}
    for c in table.columns:
        if c.kind != "stat":
            continue
        cells = [(row, row["_diff"][c.key]) for row in table.rows if c.key in row.get("_diff", {})]
        adjusted = holm([d.p_two_sided for _, d in cells])
        for (row, d), p in zip(cells, adjusted, strict=True):
            if p is None:
                continue
            row["_p_holm"][c.key] = p
            if p <= 1 - LEVEL and c.better is not None:
                improves = d.estimate < 0 if c.better == "lower" else d.estimate > 0
                row["_mark"][c.key] = "better" if improves else "worse"


def _mark(row: dict[str, Any], column: Column, latex: bool) -> str:
    mark = row.get("_mark", {}).get(column.key)
    return "" if mark is None else (LATEX_MARKS if latex else MARKS)[mark]


def _cell(row: dict[str, Any], column: Column, latex: bool) -> str:
    value = row.get(column.key)
    text = format_cell(value, column, latex)
    if column.key in row.get("_best", ()):
        if not latex:
            text = f"**{text}**"
        else:  # \textbf does not reach inside math; \boldmath does
            text = rf"{{\boldmath{text}}}" if text.startswith("$") else rf"\textbf{{{text}}}"
    planned = row.get("seeds")
    if isinstance(value, Stat) and isinstance(planned, int) and value.n < planned:
        text += f" (n={value.n})"
    # A row compared with another than the table's reference (``_reference``) shows its marks only in its
    # own lower panel, which names what it was compared with.
    return text + ("" if "_reference" in row else _mark(row, column, latex))


def _why(diff: Difference) -> str:
    """Why a difference decides nothing, as its cell says it."""
    if diff.reason is None:
        return ""
    if diff.reason == "one seed" and diff.covers == "images":
        return " (one seed, images only)"
    return f" ({diff.reason})"


def _diff_cell(row: dict[str, Any], column: Column, latex: bool) -> str:
    diff = row.get("_diff", {}).get(column.key)
    if diff is None:
        return "--" if latex else "–"
    if not math.isfinite(diff.estimate):
        return ("--" if latex else "–") + _why(diff)
    # Enough decimals for two significant digits of the larger of the estimate and the half-width.
    size = max(abs(diff.estimate), diff.half_width or 0.0)
    d = column.decimals if column.decimals is not None else 2
    if size > 0:  # at most 4 more decimals than the column's: rounding noise reads as 0
        d = min(max(d, _significant(size, 2)), d + 4)
    est = f"{diff.estimate:+.{d}f}"
    if diff.low is None:
        body = est
    else:
        body = f"{est} [{diff.low:+.{d}f}, {diff.high:+.{d}f}]"
    if latex:
        return f"${body.replace('-', '{-}')}$" + latex_escape(_why(diff)) + _mark(row, column, True)
    return body.replace("-", "−") + _why(diff) + _mark(row, column, False)


def _row_label(row: dict[str, Any], column: Column, latex: bool) -> str:
    return format_cell(row.get(column.key), column, latex) + (" (control)" if row["_control"] else "")


def render_markdown(t: Table) -> str:
    number = t.name.replace("table", "")
    lines = [f"**Table {number}. {t.title}**", ""]

    def table(columns: list[Column], cells) -> None:
        lines.append("| " + " | ".join(md_escape(c.title()) for c in columns) + " |")
        lines.append("| " + " | ".join(":---" if c.kind == "text" else "---:" for c in columns) + " |")
        for row in t.rows:
            out = cells(row)
            if out is not None:
                lines.append("| " + " | ".join(md_escape(x) for x in out) + " |")

    label = t.columns[0]
    table(t.columns, lambda r: [_row_label(r, c, False) if c is label else _cell(r, c, False) for c in t.columns])
    diff_cols = t.diff_columns
    head = [c for c in t.columns if c.kind != "stat" and c.kind != "millions"]
    for reference in references(t) if diff_cols else []:
        lines += ["", f"Paired difference to {reference} (row minus reference), 95% CI; {DAGGER} better, "
                      f"{DDAGGER} worse than {reference} (paired two-sided test at 5%, Holm-adjusted within the "
                      f"column).", ""]

        def diff_cells(r, reference=reference):
            if not r.get("_diff") or reference_of(t, r) != reference:
                return None
            return [_row_label(r, c, False) if c is label else format_cell(r.get(c.key), c, False) for c in head] + [
                _diff_cell(r, c, False) for c in diff_cols]

        table(head + [Column(c.key, f"Δ {c.header}", "stat", c.decimals, c.better) for c in diff_cols], diff_cells)
    lines.append("")
    lines += [f"- {n}" for n in t.notes]
    return "\n".join(lines) + "\n"


def reference_of(t: Table, row: dict[str, Any]) -> str | None:
    """The row its differences are to: the table's reference, or the row's own ``_reference`` (Table 1's
    external rows are compared with CSF-GAN)."""
    return row.get("_reference", t.reference)


def references(t: Table) -> list[str]:
    """The references of the rows with differences, in order: one lower panel each."""
    return list(dict.fromkeys(reference_of(t, r) for r in t.rows if r.get("_diff")))


def render_latex(t: Table) -> str:
    """booktabs; each block (dataset) a \\multicolumn header; notes as a comment block above, not in the float."""
    number = t.name.replace("table", "")
    columns = [c for c in t.columns if c.key != t.block_column]
    n = len(columns)
    spec = "".join("l" if c.kind == "text" else "r" for c in columns)
    caption = (t.title + ". Mean ± 95% CI over seeds where there are several; bold: better than every other row "
               "of its dataset (paired tests, Holm)")
    if t.diff_columns:
        caption += (f"; † better, ‡ worse than {' / '.join(map(str, references(t)))} (paired difference, lower "
                    "panel, 95% CI; Holm within the column)")
    out = [f"% Table {number}: {t.title}. Generated by `csfgan tables`; do not edit.",
           r"% Needs \usepackage{booktabs}. Notes (for the caption or the text):"]
    out += ["%   - " + note for note in t.notes]
    out += [r"\begin{table}[t]", r"\centering", r"\small",
            rf"\caption{{{latex_escape(caption)}.}}", rf"\label{{tab:{t.name}}}",
            rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
            " & ".join(c.title(latex=True) for c in columns) + r" \\"]
    label = columns[0]

    def blocks(rows, cells) -> None:
        last = object()
        control_started = False
        for row in rows:
            if row["_block"] != last:
                out.append(r"\midrule")
                out.append(rf"\multicolumn{{{n}}}{{l}}{{\textit{{{latex_escape(row['_block'])}}}}} \\")
                last, control_started = row["_block"], False
            if row["_control"] and not control_started:
                out.append(r"\addlinespace")
                control_started = True
            out.append(" & ".join(cells(row)) + r" \\")

    blocks(t.rows, lambda r: [_row_label(r, c, True) if c is label else _cell(r, c, True) for c in columns])
    diff_cols = {c.key for c in t.diff_columns}
    for reference in references(t) if diff_cols else []:
        out.append(r"\midrule")
        out.append(rf"\multicolumn{{{n}}}{{l}}{{\textbf{{Paired difference to {latex_escape(str(reference))} "
                   r"(95\% CI)}} \\")
        blocks([r for r in t.rows if r.get("_diff") and reference_of(t, r) == reference],
               lambda r: [_row_label(r, c, True) if c is label
                          else _diff_cell(r, c, True) if c.key in diff_cols
                          else ("" if c.kind == "stat" else format_cell(r.get(c.key), c, True)) for c in columns])
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"


def format_cell(value: Any, column: Column, latex: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "--" if latex else "–"
    if isinstance(value, Reported):
        return value.text
    if column.kind == "millions":
        return _millions(value)
    if isinstance(value, Stat):
        d = _decimals(value.mean, column)
        if value.ci95 is None:
            return f"{value.mean:.{d}f}"
        return rf"${value.mean:.{d}f} \pm {value.ci95:.{d}f}$" if latex else f"{value.mean:.{d}f} ± {value.ci95:.{d}f}"
    if isinstance(value, float) and column.kind == "stat":
        return f"{value:.{_decimals(value, column)}f}"
    return latex_escape(str(value)) if latex else str(value)


def _decimals(x: float, column: Column) -> int:
    """The column's decimals, more where they would hide a small value's two leading digits (DAMSM FIDs)."""
    if column.decimals is None:
        return _significant(x, 3)
    return max(column.decimals, _significant(x, 2))


def _significant(x: float, digits: int = 3) -> int:
    """Decimals that show ``digits`` significant digits of ``x`` (hours range from 0.001 to 100)."""
    if x == 0 or not math.isfinite(x):
        return digits - 1
    return max(0, digits - 1 - math.floor(math.log10(abs(x))))


def _millions(n: float) -> str:
    m = n / 1e6
    return f"{m:.2f}M" if m >= 10 else f"{m:.3f}M" if m >= 0.1 else f"{m:.4f}M"


def md_escape(text: str) -> str:
    return text.replace("|", r"\|")


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "λ": r"$\lambda$",
          "–": "--", "↓": r"$\downarrow$", "↑": r"$\uparrow$", "≥": r"$\geq$", "√": r"$\surd$", "·": r"$\cdot$",
          "−": "-", "†": r"\dag{}", "‡": r"\ddag{}", "<": r"\textless{}", ">": r"\textgreater{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)
