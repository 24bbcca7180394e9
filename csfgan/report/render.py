"""The tables' model and their three renderings: CSV (``Table.csv``: unrounded numbers, one column per
statistic), Markdown (``render_markdown``) and LaTeX booktabs (``render_latex``), with how a cell is
rounded, marked best (bold) or significant (†) and escaped. What goes into the tables, read from the
runs, is ``csfgan.report.tables``'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from csfgan.report.stats import Difference


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
    :class:`Difference` to the reference row, ``_best`` the metric keys where the row is its block's best.
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
                else:
                    rec[c.key] = v
            if self.reference is not None:
                rec["control"] = row["_control"]
            for c in self.diff_columns:
                d = row.get("_diff", {}).get(c.key)
                rec.update({f"{c.key}_diff": None if d is None else d.estimate,
                            f"{c.key}_diff_low": None if d is None else d.low,
                            f"{c.key}_diff_high": None if d is None else d.high,
                            f"{c.key}_diff_significant": None if d is None else d.significant,
                            f"{c.key}_diff_mde": None if d is None else d.mde,
                            f"{c.key}_diff_covers": None if d is None else d.covers})
            rec.update(meta)
            records.append(rec)
        frame = pd.DataFrame.from_records(records)
        for c in self.columns:
            if c.key == "seeds" or c.kind == "millions":
                frame[c.key] = frame[c.key].astype("Int64")
        return frame

    def csv(self) -> str:
        return self.frame().to_csv(index=False, lineterminator="\n")

    # ---- Markdown
    def markdown(self) -> str:
        return render_markdown(self)

    # ---- LaTeX (booktabs)
    def latex(self) -> str:
        return render_latex(self)


DAGGER = "†"


def mark_best(table: Table) -> None:
    """``_best``: per block, among the non-control rows of one source, the best value of each metric
    column as displayed (ties at the shown precision all count)."""
    groups: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for row in table.rows:
        row["_best"] = set()
        if not row["_control"]:
            groups.setdefault((row["_block"], row.get("source")), []).append(row)
    for rows in groups.values():
        if len(rows) < 2:
            continue
        for c in table.columns:
            if c.kind != "stat" or c.better is None:
                continue
            shown = {id(r): _shown_value(r.get(c.key), c) for r in rows}
            values = [v for v in shown.values() if v is not None]
            if len(values) < 2:
                continue
            best = min(values) if c.better == "lower" else max(values)
            if all(v == best for v in values):
                continue  # a tie of every row marks nothing
            for r in rows:
                if shown[id(r)] == best:
                    r["_best"].add(c.key)


def _shown_value(value: Any, column: Column) -> float | None:
    if isinstance(value, Stat):
        return round(value.mean, _decimals(value.mean, column))
    if isinstance(value, (int, float)) and math.isfinite(float(value)):
        return round(float(value), _decimals(float(value), column))
    return None


def _cell(row: dict[str, Any], column: Column, latex: bool) -> str:
    text = format_cell(row.get(column.key), column, latex)
    if column.key in row.get("_best", ()):
        if not latex:
            text = f"**{text}**"
        else:  # \textbf does not reach inside math; \boldmath does
            text = rf"{{\boldmath{text}}}" if text.startswith("$") else rf"\textbf{{{text}}}"
    diff = row.get("_diff", {}).get(column.key)
    if diff is not None and diff.significant:
        text += r"\textsuperscript{\dag}" if latex else DAGGER
    return text


def _diff_cell(diff: Difference | None, column: Column, latex: bool) -> str:
    if diff is None:
        return "--" if latex else "–"
    # Enough decimals for two significant digits of the larger of the estimate and the half-width.
    size = max(abs(diff.estimate), diff.half_width or 0.0)
    d = column.decimals if column.decimals is not None else 2
    if size > 0:
        d = max(d, _significant(size, 2))
    est = f"{diff.estimate:+.{d}f}"
    if diff.low is None:
        body = est
    else:
        body = f"{est} [{diff.low:+.{d}f}, {diff.high:+.{d}f}]"
    if latex:
        return f"${body.replace('-', '{-}')}$" + (r"\textsuperscript{\dag}" if diff.significant else "")
    return body.replace("-", "−") + (DAGGER if diff.significant else "")


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
    if diff_cols:
        lines += ["", f"Paired difference to {t.reference} (row minus reference), 95% CI; "
                      f"{DAGGER}: the interval excludes 0.", ""]
        head = [c for c in t.columns if c.kind != "stat" and c.kind != "millions"]

        def diff_cells(r):
            if not r.get("_diff"):
                return None
            return [_row_label(r, c, False) if c is label else format_cell(r.get(c.key), c, False) for c in head] + [
                _diff_cell(r["_diff"].get(c.key), c, False) for c in diff_cols]

        table(head + [Column(c.key, f"Δ {c.header}", "stat", c.decimals, c.better) for c in diff_cols], diff_cells)
    lines.append("")
    lines += [f"- {n}" for n in t.notes]
    return "\n".join(lines) + "\n"


def render_latex(t: Table) -> str:
    """booktabs; each block (dataset) a \\multicolumn header; notes as a comment block above, not in the float."""
    number = t.name.replace("table", "")
    columns = [c for c in t.columns if c.key != t.block_column]
    n = len(columns)
    spec = "".join("l" if c.kind == "text" else "r" for c in columns)
    caption = t.title + ". Mean ± 95% CI over seeds where there are several; bold: best per dataset"
    if t.diff_columns:
        caption += f"; † the paired difference to {t.reference} has a 95% CI excluding 0 (lower panel)"
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
    if diff_cols:
        out.append(r"\midrule")
        out.append(rf"\multicolumn{{{n}}}{{l}}{{\textbf{{Paired difference to {latex_escape(str(t.reference))} "
                   r"(95\% CI)}} \\")
        blocks([r for r in t.rows if r.get("_diff")],
               lambda r: [_row_label(r, c, True) if c is label
                          else _diff_cell(r["_diff"].get(c.key), c, True) if c.key in diff_cols
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
          "−": "-", "†": r"\dag{}", "<": r"\textless{}", ">": r"\textgreater{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)
