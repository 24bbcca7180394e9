"""A contact sheet of prepared samples: each original beside its masked input, with one caption."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from csfgan.data.masks import center_box  # noqa: E402
from csfgan.data.prepared import PreparedData  # noqa: E402
from csfgan.io import save_figure  # noqa: E402


def contact_sheet(root: Path, output: Path, *, split: str = "train", count: int = 24, seed: int = 0,
                  hole_fraction: float = 0.5, columns: int = 6) -> None:
    data = PreparedData(root)
    part = data.split(split)
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(part), size=min(count, len(part)), replace=False))
    start, stop = center_box(data.resolution, hole_fraction)
    rows = int(np.ceil(len(picks) / columns))
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(2.0 * columns * 1.15, rows * 1.55), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for n, i in enumerate(picks):
        r, c = divmod(n, columns)
        image = np.asarray(part.images[i])
        masked = image.copy()
        masked[start:stop, start:stop] = 127
        caption = part.captions[i][int(rng.integers(len(part.captions[i])))]
        axes[r, 2 * c].imshow(image, interpolation="nearest")
        axes[r, 2 * c + 1].imshow(masked, interpolation="nearest")
        axes[r, 2 * c + 1].add_patch(
            plt.Rectangle((start - 0.5, start - 0.5), stop - start, stop - start, fill=False, ec="red", lw=0.8)
        )
        axes[r, 2 * c].set_title(f"class {part.class_ids[i]}", fontsize=6, loc="left")
        fig.text(
            (2 * c + 1) / (2 * columns), 1 - (r + 1) / rows + 0.005, textwrap.fill(caption, 44),
            fontsize=5, ha="center", va="bottom", transform=fig.transFigure,
        )
    title = f"{data.name} ({split}, {len(part)} images, {data.resolution} px): original | masked input + caption"
    fig.suptitle(title, fontsize=8)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.94, bottom=0.03, wspace=0.04, hspace=0.55)
    save_figure(fig, Path(output))
    plt.close(fig)
