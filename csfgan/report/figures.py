"""The paper's qualitative figures, made from the trained runs on a dataset's test split.

Every figure uses the test split (species never seen in training), images and captions picked by a
seeded rule, and seed 0's run of each variant (the plan's first seed when 0 is not planned), loaded
from its ``final.pt``. The caption of a test image is the one evaluation used (the seeded rule of
``InpaintingDataset(captions="seeded")``), so a figure shows what the metrics measured. The
generator's noise is seeded before every call, so the figures are reproducible.

    fig1_captions_<dataset>     one masked image, four captions, the full model's fill for each (Figure 1)
    fig5_comparison_<dataset>   masked input | Table 1's variants | ground truth, with captions (Figures 5/6)
    fig7_ablation_<dataset>     masked input | Table 3's variants | ground truth (Figure 7)
    fig8_attention_<dataset>    the full model's word attention, top-4 words in the hole (Figure 8)
    fig9_irregular_<dataset>    irregular masks and the full model's fill (Figure 9)

Each is written as PNG and PDF. Holes are outlined in red, as in the paper.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from csfgan.data.masks import mask_for  # noqa: E402
from csfgan.io import save_figure_formats
from csfgan.plan import Plan, RunId, plan  # noqa: E402
from csfgan.report.tables import ReportError, dataset_label, variant_label  # noqa: E402

FIGURES = ("fig1_captions", "fig5_comparison", "fig7_ablation", "fig8_attention", "fig9_irregular")
HOLE_GREY = 127
CELL = 1.25  # inches per image cell


def figure_seed(p: Plan) -> int:
    return 0 if 0 in p.seeds else p.seeds[0]


def full_run(p: Plan, dataset: str) -> str:
    """The run that plays "CSF-GAN": ``full`` when planned, else the λ sweep's variant, else Table 1's last."""
    names = [n for t in ("table1", "table3", "table2", "table4") for n in p.rows[t].get(dataset, {}).values()]
    if "full" in names:
        return "full"
    sweep = p.tables.get("table4", {}).get("variant")
    if sweep in names:
        return sweep
    table1 = list(p.rows["table1"].get(dataset, {}).values())
    if not table1:
        raise ReportError(f"no run of dataset {dataset!r} is planned; is it in the config's datasets?")
    return table1[-1]


class Figures:
    """Models and test data of one dataset, loaded once for all figures."""

    def __init__(self, p: Plan, dataset: str, root: Path | str = ".", *, seed: int = 0, count: int = 6):
        if dataset not in p.datasets:
            raise ReportError(f"dataset {dataset!r} is not in the config's datasets {p.datasets}")
        self.plan = p
        self.dataset = dataset
        self.root = Path(root)
        self.seed = seed
        self.count = count
        self.run_seed = figure_seed(p)
        self._models: dict[str, Any] = {}
        self.full = full_run(p, dataset)
        model = self.model(self.full)
        from csfgan.data.dataset import InpaintingDataset

        cfg = model.cfg
        self.test = InpaintingDataset(self._data_root(model), "test", mask=cfg.data.mask,
                                      hole_fraction=cfg.data.hole_fraction, captions="seeded",
                                      seed=cfg.eval.caption_seed)
        if self.test.data.vocab != model.vocab:
            raise ReportError(f"{self.test.data.root} has another vocabulary than {model.path} was trained with")
        self.split = self.test.split
        self.picks = self._pick(count)

    # ---- inputs
    def _data_root(self, model) -> Path:
        recorded = Path(model.run["data"])
        for candidate in (recorded, self.root / recorded):
            if (candidate / "manifest.json").is_file():
                return candidate
        raise ReportError(f"{model.path}: its prepared dataset {recorded} is not there (looked relative to the "
                          f"working directory and to {self.root}); prepare it again")

    def model(self, name: str):
        if name not in self._models:
            from csfgan.evaluate import InpaintingModel

            path = self.root / RunId(self.dataset, name, self.run_seed).path / "final.pt"
            if not path.is_file():
                raise ReportError(f"{path}: missing checkpoint of planned run {self.dataset}/{name}/seed"
                                  f"{self.run_seed}; train it first (the Snakemake DAG does)")
            self._models[name] = InpaintingModel(path, "cpu")
        return self._models[name]

    def _pick(self, count: int) -> np.ndarray:
        """``count`` test images, seeded, from distinct classes while there are enough classes."""
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(self.split))
        chosen, seen = [], set()
        for i in order:
            c = int(self.split.class_ids[i])
            if c not in seen:
                chosen.append(int(i))
                seen.add(c)
            if len(chosen) == count:
                break
        for i in order:
            if len(chosen) == count:
                break
            if int(i) not in chosen:
                chosen.append(int(i))
        return np.asarray(chosen, dtype=np.int64)

    def caption(self, i: int) -> str:
        return self.split.captions[i][int(self.test.caption_choice[i])]

    def batch(self, indices, mask: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        b = self.test.batch(np.asarray(indices, dtype=np.int64))
        if mask is not None:
            b["mask"] = torch.from_numpy(np.asarray(mask, dtype=np.float32))[:, None]
        return b

    def inpaint(self, name: str, b: dict[str, torch.Tensor]) -> tuple[np.ndarray, dict]:
        from csfgan.evaluate import to_uint8

        torch.manual_seed(self.seed)
        composite, aux = self.model(name).inpaint(b["image"], b["mask"], b["tokens"], b["length"])
        return to_uint8(composite), aux

    def real(self, indices) -> np.ndarray:
        return np.stack([np.asarray(self.split.images[int(i)]) for i in indices])

    @property
    def resolution(self) -> int:
        return self.test.resolution

    def title(self, what: str) -> str:
        cfg = self.model(self.full).cfg
        return (f"{what} — {dataset_label(self.dataset)}, test split, {cfg.resolution} px, scale '{cfg.name}', "
                f"seed {self.run_seed} runs")

    # ---- the figures
    def captions_figure(self, n_captions: int = 4) -> plt.Figure:
        """Figure 1: one masked test image, its own caption and captions of other species, one fill each."""
        i = int(self.picks[0])
        rng = np.random.default_rng([self.seed, 1])
        others = [j for j in rng.permutation(len(self.split))
                  if self.split.class_ids[j] != self.split.class_ids[i]]
        sources, classes = [i], {int(self.split.class_ids[i])}
        for j in others:  # captions of other species, one per species, so the texts differ
            if len(sources) == n_captions:
                break
            if int(self.split.class_ids[j]) not in classes:
                sources.append(int(j))
                classes.add(int(self.split.class_ids[j]))
        b = self.batch([i] * len(sources))
        b["tokens"] = torch.from_numpy(np.stack([self.split.tokens[j, self.test.caption_choice[j]]
                                                 for j in sources]).astype(np.int64))
        b["length"] = torch.from_numpy(np.array([self.split.lengths[j, self.test.caption_choice[j]]
                                                 for j in sources], dtype=np.int64))
        texts = [self.caption(j) for j in sources]
        out, _ = self.inpaint(self.full, b)
        hole = b["mask"][0, 0].numpy()
        real = self.real([i])[0]
        cols = 2 + len(sources)
        fig, axes = plt.subplots(1, cols, figsize=(CELL * cols, CELL * 1.75), squeeze=False)
        _image(axes[0, 0], masked(real, hole), hole, "masked input")
        _image(axes[0, 1], real, None, "ground truth")
        axes[0, 1].text(0.5, -0.05, "own caption: (a)", transform=axes[0, 1].transAxes, ha="center", va="top",
                        fontsize=6)
        for k, (image, text) in enumerate(zip(out, texts, strict=True)):
            ax = axes[0, 2 + k]
            tag = "abcdefghij"[k]
            _image(ax, image, hole, f"({tag}) {variant_label(self.full)}")
            ax.text(0.5, -0.05, f"({tag}) " + textwrap.fill(text, 24), transform=ax.transAxes, ha="center",
                    va="top", fontsize=5.5)
        fig.suptitle(_wrap(self.title("Text steers the fill (paper Figure 1): one image, four captions"), fig),
                     fontsize=7)
        fig.subplots_adjust(left=0.01, right=0.99, top=0.84, bottom=0.24, wspace=0.06)
        return fig

    def comparison_figure(self, table: str, what: str) -> plt.Figure:
        """Figures 5-7: rows of test images; masked input, each variant of ``table``, ground truth."""
        rows = self.plan.rows[table].get(self.dataset)
        if not rows:
            raise ReportError(f"{table} plans no run on {self.dataset}")
        indices = self.picks
        b = self.batch(indices)
        outputs = {label: self.inpaint(name, b)[0] for label, name in rows.items()}
        real = self.real(indices)
        holes = b["mask"][:, 0].numpy()
        n_cols = len(outputs) + 2
        fig = plt.figure(figsize=(CELL * (n_cols + 1.6), CELL * len(indices) + 0.6))
        grid = fig.add_gridspec(len(indices), n_cols + 1, width_ratios=[1.6] + [1] * n_cols,
                                left=0.01, right=0.99, top=1 - 0.7 / fig.get_figheight(), bottom=0.01,
                                wspace=0.04, hspace=0.06)
        for r, i in enumerate(indices):
            text = fig.add_subplot(grid[r, 0])
            text.axis("off")
            text.text(1.0, 0.5, textwrap.fill(self.caption(int(i)), 30), ha="right", va="center", fontsize=6,
                      transform=text.transAxes)
            hole = holes[r]
            cells = [("masked input", masked(real[r], hole), hole)]
            cells += [(variant_label(label), outputs[label][r], hole) for label in outputs]
            cells += [("ground truth", real[r], None)]
            for c, (title, image, h) in enumerate(cells):
                _image(fig.add_subplot(grid[r, c + 1]), image, h, title if r == 0 else None)
        fig.suptitle(_wrap(self.title(what), fig), fontsize=7, y=1 - 0.12 / fig.get_figheight(), va="top")
        return fig

    def attention_figure(self, count: int = 3, top: int = 4) -> plt.Figure:
        """Figure 8: the full model's word attention at its highest-resolution word-fusion layer."""
        model = self.model(self.full)
        if not model.cfg.model.word_fusion_layers:
            raise ReportError(f"variant {self.full!r} ({model.path}) has no word-level fusion "
                              f"(model.word_fusion_layers is empty): there is no word attention to show")
        indices = self.picks[:count]
        b = self.batch(indices)
        out, aux = self.inpaint(self.full, b)
        layer, attention = max(aux["word_attention"].items(), key=lambda kv: kv[1].shape[-1] * kv[1].shape[-2])
        h, w = attention.shape[-2:]
        holes = b["mask"]
        weight = F.adaptive_avg_pool2d(holes, (h, w))[:, 0]  # share of each attention cell inside the hole
        up = F.interpolate(attention.float(), size=(self.resolution,) * 2, mode="bilinear", align_corners=False)
        cols = 2 + top
        fig = plt.figure(figsize=(CELL * (cols + 1.6), CELL * 1.12 * len(indices) + 0.6))
        grid = fig.add_gridspec(len(indices), cols + 1, width_ratios=[1.6] + [1] * cols, left=0.01, right=0.99,
                                top=1 - 0.7 / fig.get_figheight(), bottom=0.01, wspace=0.04, hspace=0.3)
        real = self.real(indices)
        for r in range(len(indices)):
            words = top_words(attention[r], weight[r], b["tokens"][r], int(b["length"][r]), model.vocab.words, top)
            hole = holes[r, 0].numpy()
            text = fig.add_subplot(grid[r, 0])
            text.axis("off")
            text.text(1.0, 0.5, textwrap.fill(self.caption(int(indices[r])), 30), ha="right", va="center",
                      fontsize=6, transform=text.transAxes)
            _image(fig.add_subplot(grid[r, 1]), masked(real[r], hole), hole, "masked input")
            _image(fig.add_subplot(grid[r, 2]), out[r], hole, variant_label(self.full))
            # One colour scale per row, from 0 to the row's peak but at least twice the uniform weight
            # 1/T, so an untrained model's flat attention shows as flat mid-tones rather than saturating.
            peak = max((float(up[r, positions].sum(0).max()) for _, _, positions in words), default=0.0)
            vmax = max(peak, 2.0 / max(int(b["length"][r]), 1))
            for c, (word, mass, positions) in enumerate(words):
                ax = fig.add_subplot(grid[r, 3 + c])
                _image(ax, out[r], None, f"{word} ({mass:.0%})")
                ax.imshow(up[r, positions].sum(0).numpy(), cmap="inferno", alpha=0.55, vmin=0, vmax=vmax,
                          interpolation="bilinear")
                _outline(ax, hole)
        sides = {k: tuple(a.shape[-2:]) for k, a in aux["word_attention"].items()}
        if any(hw == (1, 1) for hw in sides.values()):  # Eq. 3's per-region attention is one number there
            raise ReportError(f"variant {self.full!r} ({model.path}) fuses words on a 1×1 grid (layers and "
                              f"grids {sides}): move model.word_fusion_layers to layers with several regions")
        fig.suptitle(_wrap(self.title(f"Word attention (paper Figure 8), layer {layer} counting the input conv "
                                      f"as layer 1 ({h}×{w}, "
                                      f"upsampled); top-{top} words by attention mass in the hole (colour: 0 to the "
                                      f"row's peak weight)"), fig), fontsize=7,
                     y=1 - 0.12 / fig.get_figheight(), va="top")
        return fig

    def irregular_figure(self) -> plt.Figure:
        """Figure 9: seeded irregular masks (top) and the full model's fill (bottom)."""
        model = self.model(self.full)
        indices = self.picks
        masks = np.stack([mask_for(int(i), self.resolution, "irregular", model.cfg.data.hole_fraction, self.seed)
                          for i in indices])
        b = self.batch(indices, masks)
        out, _ = self.inpaint(self.full, b)
        real = self.real(indices)
        n = len(indices)
        fig, axes = plt.subplots(2, n, figsize=(CELL * n + 0.4, CELL * 2 + 0.9), squeeze=False)
        for c in range(n):
            _image(axes[0, c], masked(real[c], masks[c]), masks[c], None)
            _image(axes[1, c], out[c], masks[c], None)
            axes[1, c].text(0.5, -0.04, textwrap.fill(self.caption(int(indices[c])), 26), ha="center", va="top",
                            fontsize=5, transform=axes[1, c].transAxes)
        for r, label in enumerate(("irregular mask", variant_label(self.full))):
            axes[r, 0].text(-0.06, 0.5, label, rotation=90, ha="right", va="center", fontsize=7,
                            transform=axes[r, 0].transAxes)
        note = "" if model.cfg.data.mask == "irregular" else " (trained on centre holes)"
        fig.suptitle(_wrap(self.title(f"Irregular masks (paper Figure 9){note}"), fig), fontsize=7)
        fig.subplots_adjust(left=0.05, right=0.99, top=0.86, bottom=0.2, wspace=0.05, hspace=0.08)
        return fig


def top_words(attention: torch.Tensor, weight: torch.Tensor, tokens: torch.Tensor, length: int,
              words: list[str], top: int) -> list[tuple[str, float, list[int]]]:
    """The ``top`` words by attention mass inside the hole: (word, share of the hole's attention, positions).

    ``attention`` (T, h, w) sums to one over the words at each cell; ``weight`` (h, w) is the share of
    each cell inside the hole. A word occurring twice is one entry with both positions' mass.
    """
    mass = (attention[:length] * weight).sum(dim=(1, 2)) / weight.sum().clamp_min(1e-12)
    merged: dict[str, tuple[float, list[int]]] = {}
    for t in range(length):
        word = words[int(tokens[t])]
        m, positions = merged.get(word, (0.0, []))
        merged[word] = (m + float(mass[t]), positions + [t])
    ranked = sorted(merged.items(), key=lambda kv: -kv[1][0])[:top]
    return [(word, m, positions) for word, (m, positions) in ranked]


def _wrap(text: str, fig) -> str:
    """Wrap a title to the figure's width (about 15 characters per inch at 7 pt)."""
    return textwrap.fill(text, max(40, int(fig.get_figwidth() * 15)))


def masked(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    out = image.copy()
    out[np.asarray(hole) > 0.5] = HOLE_GREY
    return out


def _outline(ax, hole: np.ndarray | None) -> None:
    """Red lines along the pixel edges between hole and kept pixels (crisp at any resolution)."""
    if hole is None:
        return
    inside = np.pad(np.asarray(hole) > 0.5, 1)
    if not inside.any():
        return
    from matplotlib.collections import LineCollection

    segments = []
    # A vertical edge left of pixel (y, x) where the left neighbour differs; a horizontal one above it.
    for y, x in np.argwhere(inside[1:-1, 1:] != inside[1:-1, :-1]):
        segments.append([(x - 0.5, y - 0.5), (x - 0.5, y + 0.5)])
    for y, x in np.argwhere(inside[1:, 1:-1] != inside[:-1, 1:-1]):
        segments.append([(x - 0.5, y - 0.5), (x + 0.5, y - 0.5)])
    ax.add_collection(LineCollection(segments, colors="red", linewidths=0.8))


def _image(ax, image: np.ndarray, hole: np.ndarray | None, title: str | None) -> None:
    ax.imshow(image, interpolation="nearest")
    _outline(ax, hole)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=6.5, pad=2)


def make_figures(config: dict[str, Any], dataset: str, out: Path | str, root: Path | str = ".", *,
                 seed: int = 0) -> list[Path]:
    """Write every figure of ``dataset`` as ``<out>/<figure>_<dataset>.{png,pdf}``; returns the paths."""
    p = plan(config, root)
    figs = Figures(p, dataset, root, seed=seed)
    makers = {
        "fig1_captions": figs.captions_figure,
        "fig5_comparison": lambda: figs.comparison_figure("table1", "Comparison (paper Figures 5 and 6)"),
        "fig7_ablation": lambda: figs.comparison_figure("table3", "Ablation (paper Figure 7)"),
        "fig8_attention": figs.attention_figure,
        "fig9_irregular": figs.irregular_figure,
    }
    written = []
    for name in FIGURES:
        written += save_figure_formats(makers[name](), Path(out) / f"{name}_{dataset}")
    return written

