"""Training curves of every planned run: one panel per loss term, one line per run, from ``stats.jsonl``.

``stats.jsonl`` (written by ``csfgan train``) has one JSON line per logging step with ``step``,
``loss_d``, ``loss_g/<term>`` and ``sentence_snr/<layer>``; a term a variant does not have
(``gan_word`` without the word-level discriminator) is simply absent from its lines, and its line is
absent from that panel.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from csfgan.io import save_figure_formats
from csfgan.plan import RunId, plan  # noqa: E402
from csfgan.report.tables import ReportError  # noqa: E402

# Panels in the paper's order (Eq. 6-12) first; any other logged loss term follows alphabetically.
TERM_ORDER = ["loss_d", "loss_g/total", "loss_g/rec", "loss_g/per", "loss_g/tv", "loss_g/edge", "loss_g/gan",
              "loss_g/gan_global", "loss_g/gan_word", "loss_g/match", "loss_g/kl"]
TERM_TITLES = {"loss_d": "discriminators (Eq. 11)", "loss_g/total": "generator total (Eq. 12)",
               "loss_g/rec": "reconstruction (Eq. 6)", "loss_g/per": "perceptual (Eq. 7)",
               "loss_g/tv": "total variation (Eq. 8)", "loss_g/edge": "edge (Eq. 9)",
               "loss_g/gan": "adversarial (Eq. 10)", "loss_g/gan_global": "adversarial, global D",
               "loss_g/gan_word": "adversarial, word-level D", "loss_g/match": "text matching (Sec. 3.1)",
               "loss_g/kl": "CA KL term"}
LINESTYLES = ["-", "--", ":", "-."]
# csfgan.losses.sentence_snr per sentence-fusion layer: near 0 the sentence branch is driven by noise.
SNR_PREFIX = "sentence_snr/"


def read_stats(run: RunId, root: Path) -> pd.DataFrame:
    path = Path(root) / run.path / "stats.jsonl"
    if not path.is_file():
        raise ReportError(f"{path}: missing training log of planned run {run.dataset}/{run.name}/seed{run.seed}; "
                          f"train it first (the Snakemake DAG does)")
    rows = []
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise ReportError(f"{path}:{line}: not UTF-8 text (a training log is ASCII JSON lines); restore it or "
                          "train the run again") from None
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ReportError(f"{path}:{n}: not a JSON line ({exc})") from exc
    if not rows:
        raise ReportError(f"{path}: empty training log")
    frame = pd.DataFrame(rows)
    if "step" not in frame:
        raise ReportError(f"{path}: its lines have no 'step'")
    # A resumed run may log a step twice (before and after the interruption): keep the last.
    return frame.drop_duplicates("step", keep="last").sort_values("step")


def loss_terms(frames: list[pd.DataFrame]) -> list[str]:
    """The logged loss terms in the paper's order, then the sentence branch's SNR per fusion layer."""
    found = {c for f in frames for c in f.columns if c.startswith("loss")}
    snr = sorted({c for f in frames for c in f.columns if c.startswith(SNR_PREFIX)})
    return [t for t in TERM_ORDER if t in found] + sorted(found - set(TERM_ORDER)) + snr


def training_curves(config: dict[str, Any], out: Path | str, root: Path | str = ".") -> list[Path]:
    """Write ``<out>/training_curves.{png,pdf}``; returns the paths."""
    p = plan(config, root)
    runs = p.runs()
    frames = [read_stats(r, Path(root)) for r in runs]
    terms = loss_terms(frames)
    cols = min(4, len(terms))
    rows = math.ceil(len(terms) / cols)
    ncol = max(1, min(len(runs), 4 if cols >= 3 else 2))
    legend_in = 0.25 + 0.15 * math.ceil(len(runs) / ncol)  # inches under the panels for the legend
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.3 * rows + 0.5 + legend_in), squeeze=False)
    names = sorted({r.name for r in runs})
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    colour = {n: cmap(i % cmap.N) for i, n in enumerate(names)}
    style = {d: LINESTYLES[i % len(LINESTYLES)] for i, d in enumerate(p.datasets)}
    for ax, term in zip(axes.flat, terms, strict=False):
        for r, frame in zip(runs, frames, strict=True):
            if term in frame and frame[term].notna().any():
                ax.plot(frame["step"], frame[term], color=colour[r.name], linestyle=style[r.dataset], lw=1.0,
                        alpha=0.6 + 0.4 / (1 + p.seeds.index(r.seed)), label=f"{r.dataset}/{r.name}/seed{r.seed}")
        if term.startswith(SNR_PREFIX):
            ax.set_yscale("log")  # a collapse is orders of magnitude, not a few percent
            title = f"sentence branch SNR, layer {term.removeprefix(SNR_PREFIX)} (caption var / CA noise var)"
        else:
            title = f"{term}: {TERM_TITLES.get(term, term)}"
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("step", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(terms):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=colour[r.name], linestyle=style[r.dataset], lw=1.2,
                          label=f"{r.dataset}/{r.name}/seed{r.seed}") for r in runs]
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=6.5, frameon=False)
    cfg = p.scale
    fig.suptitle(f"Training losses from stats.jsonl, scale '{cfg.name}' ({cfg.resolution} px, {cfg.train.steps} "
                 f"steps at batch {cfg.train.batch_size}); legend: dataset/run/seed", fontsize=9)
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.06, right=0.99, top=1 - 0.6 / height, bottom=(legend_in + 0.35) / height,
                        hspace=0.6, wspace=0.25)
    return save_figure_formats(fig, Path(out) / "training_curves")
