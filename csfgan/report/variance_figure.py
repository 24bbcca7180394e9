"""The variance budget's figure (``csfgan variance``): each noise component against training steps.

One column per metric, one row per arm (each variant, then their paired difference); in each panel the
test-sample, checkpoint and seed SDs (and the seed SD beyond checkpoint noise, thin) against the
snapshot step, raw weights solid with circles, EMA dashed with squares. A panel's y axis starts at 0
and is shared down its column, so the arms of one metric compare directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from csfgan.io import save_figure_formats  # noqa: E402

SERIES = (  # column, label, colour, line width
    ("sd_test_sample", "test sample (image bootstrap)", "tab:blue", 1.8),
    ("sd_checkpoint", "checkpoint (last K snapshots)", "tab:orange", 1.8),
    ("sd_seed", "seed (one snapshot each)", "tab:green", 1.8),
    ("sd_seed_beyond_checkpoint", "seed beyond checkpoint", "tab:green", 0.8),
)
STYLE = {"raw": ("-", "o"), "ema": ("--", "s")}


def budget_figure(table: pd.DataFrame, out: Path, context: dict[str, Any]) -> list[Path]:
    """Write OUT.png and OUT.pdf; returns their paths."""
    from csfgan.variance import METRICS

    metrics = list(dict.fromkeys(table["metric"]))
    arms = list(dict.fromkeys(table["arm"]))
    weights = list(dict.fromkeys(table["weights"]))
    fig, axes = plt.subplots(len(arms), len(metrics), figsize=(3.1 * len(metrics), 2.5 * len(arms) + 0.9),
                             squeeze=False, sharex=True, sharey="col")
    for i, arm in enumerate(arms):
        for j, metric in enumerate(metrics):
            ax = axes[i, j]
            part = table[(table["arm"] == arm) & (table["metric"] == metric)]
            for w in weights:
                rows = part[part["weights"] == w].sort_values("step")
                line, marker = STYLE[w]
                for column, _, colour, width in SERIES:
                    y = rows[column].to_numpy(float)
                    if np.isfinite(y).any():
                        ax.plot(rows["step"], y, line, marker=marker, color=colour, lw=width,
                                ms=3.5 if width > 1 else 2)
            ax.grid(alpha=0.3)
            if len(context["steps"]) <= 8:
                ax.set_xticks(context["steps"])
            if i == 0:
                ax.set_title(METRICS[metric], fontsize=10)
            if j == 0:
                ax.set_ylabel(f"{arm}\nSD", fontsize=9)
            if i == len(arms) - 1:
                ax.set_xlabel("training step")
            ax.tick_params(labelsize=8)
    for j, metric in enumerate(metrics):  # after every arm is drawn: one scale per column, from 0
        column = table[table["metric"] == metric][[c for c, *_ in SERIES]].to_numpy(float)
        top = np.nanmax(column) if np.isfinite(column).any() else 0.0
        axes[0, j].set_ylim(0, 1.08 * top if top > 0 else 1.0)
    handles = [plt.Line2D([], [], color=colour, lw=width, label=label) for _, label, colour, width in SERIES]
    handles += [plt.Line2D([], [], color="black", ls=STYLE[w][0], marker=STYLE[w][1], ms=4, label=f"{w} weights")
                for w in weights]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(f"Variance budget, {context['dataset']} ({context['split']} split, {context['images']} images, "
                 f"seeds {', '.join(map(str, context['seeds']))}, checkpoint window {context['last']})", fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    return save_figure_formats(fig, Path(out))
