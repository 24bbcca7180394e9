"""Report layer: Tables 1-4 from hand-made metrics (exact mean ± CI), figures and curves end to end."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

import csfgan.config
from csfgan.errors import UserError
from csfgan.plan import plan
from csfgan.report.tables import ReportError, build_tables, mean_ci, write_tables

T_975_2 = 4.302652729911275  # scipy.stats.t.ppf(0.975, 2)

TABLES_YAML = {
    "table1": {"title": "Comparison", "variants": ["baseline", "full"]},
    "table2": {"title": "Parameters", "variants": ["baseline", "full"]},
    "table3": {"title": "Ablation", "variants": ["baseline", "sfm", "wld", "full", "myvariant"]},
    "table4": {"title": "Edge", "variant": "full", "parameter": "loss.edge", "values": [0.0, 0.5]},
}
# FID per run name over seeds 0, 1, 2; other metrics derive from it.
FID = {"baseline": [30.0, 31.0, 35.0], "sfm": [20.0, 20.0, 20.0], "wld": [25.0, 26.0, 27.0],
       "full": [10.0, 12.0, 14.0], "myvariant": [40.0, 41.0, 42.0], "full--loss.edge=0.0": [16.0, 18.0, 20.0]}


@pytest.fixture
def variants(tmp_path, monkeypatch):
    """The repo's variants plus a user-added one, in a folder of their own."""
    folder = tmp_path / "variants"
    shutil.copytree(csfgan.config.VARIANTS_DIR, folder)
    (folder / "myvariant.yaml").write_text("name: myvariant\nmodel:\n  word_level_discriminator: false\n")
    monkeypatch.setattr(csfgan.config, "VARIANTS_DIR", folder)
    return folder


def _config(root: Path, seeds=(0, 1, 2), tables=None) -> dict:
    path = root / "tables.yaml"
    path.write_text(yaml.safe_dump(tables or TABLES_YAML))
    return {"scale": "smoke", "datasets": ["synth-birds"], "seeds": list(seeds), "tables": str(path),
            "variants_dir": str(csfgan.config.VARIANTS_DIR), "device": "cpu"}


def _write_metrics(root: Path, config: dict, **extra) -> None:
    for run in plan(config, root).runs():
        fid = FID[run.name][run.seed]
        m = {"fid": fid, "psnr": 20 + fid / 100, "ssim": 0.8, "psnr_hole": 14.0, "ssim_hole": 0.5,
             "kid_mean": 0.01, "kid_std": 0.001, "r_precision": 0.25, "fid_features": "damsm-image-encoder",
             "perceptual_source": "damsm-image-encoder", "scale": "smoke", "train_seconds": 3600.0 * (run.seed + 1),
             "variant": run.name, "seed": run.seed, **extra}
        (root / run.path).mkdir(parents=True, exist_ok=True)
        (root / run.path / "metrics.json").write_text(json.dumps(m))
        _write_per_image(root / run.path, m)


IMAGES = 20


def _write_per_image(run: Path, m: dict) -> None:
    """Per-image arrays whose means are the metrics.json values (image noise of mean exactly 0)."""
    from csfgan.metrics import per_image

    rng = np.random.default_rng(int(m["fid"] * 10) + m["seed"])
    noise = rng.normal(size=IMAGES)
    noise -= noise.mean()
    arrays = {"keys": np.array([f"test/{i}" for i in range(IMAGES)])}
    for key in per_image.MEAN_METRICS:
        arrays[key] = m[key] + 0.01 * noise
    if "attribute_accuracy" in m:  # two checks per image, m["attribute_accuracy"] of them right
        correct = np.zeros(2 * IMAGES, bool)
        correct[: round(m["attribute_accuracy"] * 2 * IMAGES)] = True
        arrays.update(attribute_image=np.repeat(np.arange(IMAGES), 2), attribute_part=np.zeros(2 * IMAGES, int),
                      attribute_correct=rng.permutation(correct))
    (run / "eval").mkdir(exist_ok=True)
    per_image.save(run / "eval", arrays)


def _workspace(tmp_path: Path, seeds=(0, 1, 2), **metrics) -> tuple[Path, dict]:
    """A workspace ``w`` with the lean tables and every planned run's metrics written."""
    root = tmp_path / "w"
    root.mkdir()
    config = _config(root, seeds=seeds)
    _write_metrics(root, config, **metrics)
    return root, config


@pytest.fixture
def measured(tmp_path, variants):
    root = tmp_path / "work"
    root.mkdir()
    config = _config(root)
    _write_metrics(root, config, attribute_accuracy=0.5)
    write_tables(config, root / "results/tables", root)
    return root, config


def _read(root: Path, name: str) -> str:
    return (root / "results/tables" / name).read_text()


def test_mean_ci_is_the_t_interval():
    s = mean_ci([10.0, 12.0, 14.0])
    assert (s.mean, s.n) == (12.0, 3)
    assert s.ci95 == pytest.approx(T_975_2 * 2.0 / math.sqrt(3))
    one = mean_ci([7.0])
    assert (one.mean, one.ci95, one.n) == (7.0, None, 1)
    assert mean_ci([None, float("nan")]) is None


def test_every_table_in_every_format(measured):
    root, _ = measured
    for k in range(1, 5):
        for ext in ("csv", "md", "tex"):
            assert (root / f"results/tables/table{k}.{ext}").stat().st_size > 0


def test_table3_exact_mean_and_ci(measured):
    root, _ = measured
    csv = pd.read_csv(root / "results/tables/table3.csv")
    full = csv[csv["run"] == "full"].iloc[0]
    assert full["fid"] == pytest.approx(12.0)
    assert full["fid_ci95"] == pytest.approx(T_975_2 * 2.0 / math.sqrt(3))  # 4.968...
    assert full["seeds"] == 3
    base = csv[csv["run"] == "baseline"].iloc[0]
    assert base["fid"] == pytest.approx(32.0)
    assert base["fid_ci95"] == pytest.approx(T_975_2 * math.sqrt(7.0) / math.sqrt(3))  # sd of 30, 31, 35
    sfm = csv[csv["run"] == "sfm"].iloc[0]
    assert (sfm["fid"], sfm["fid_ci95"]) == (20.0, 0.0)
    md = _read(root, "table3.md")
    assert "| CSF-GAN (full) | synth-birds (stand-in for CUB-200-2011) | 3 | **12.00 ± 4.97**† |" in md
    assert "32.00 ± 6.57" in md
    assert r"{\boldmath$12.00 \pm 4.97$}\textsuperscript{\dag}" in _read(root, "table3.tex")


def test_user_variant_is_its_own_row(measured):
    root, _ = measured
    md = _read(root, "table3.md")
    assert "| myvariant | synth-birds" in md
    assert "41.00 ± 2.48‡" in md  # worse than the baseline: ‡ (a † would say better)
    means = md.split("Paired difference")[0]
    labels = [line.split("|")[1].strip() for line in means.splitlines() if line.startswith("| ") and "synth" in line]
    assert labels == ["baseline", "baseline+SFM", "baseline+WLD", "CSF-GAN (full)", "myvariant"]


def test_table1_reported_rows_beside_ours(measured):
    root, _ = measured
    csv = pd.read_csv(root / "results/tables/table1.csv")
    reported = csv[csv["source"] == "reported"]
    assert list(reported["method"]) == ["RFR [Li et al., 2020b]", "PD-GAN [Liu et al., 2021]",
                                        "PUT [Liu et al., 2022]", "MMFL [Lin et al., 2020]",
                                        "ALMR [Wu et al., 2021]", "MIGT [Li et al., 2023]",
                                        "MISL [Wu et al., 2024]", "CSF-GAN (paper)"]
    assert set(reported["dataset"]) == {"CUB-200-2011"}  # only the bird set is planned
    paper = reported[reported["method"] == "CSF-GAN (paper)"].iloc[0]
    assert (paper["fid"], paper["psnr"], paper["ssim"]) == (13.50, 20.75, 0.829)
    ours = csv[csv["source"] == "measured"]
    assert list(ours["method"]) == ["baseline (ours, measured)", "CSF-GAN, paper reading (ours, measured)"]
    md = _read(root, "table1.md")
    # Reported rows have no seeds to test: never bold (the paper's best PSNR, MIGT's, is plain).
    assert ("| MIGT [Li et al., 2023] | reported | CUB-200-2011 | Inception (paper) | – | 35.30 | 21.47 | "
            "0.846 |") in md
    assert "Reported rows have no seeds to test and are never bold" in md
    ours = ("| CSF-GAN, paper reading (ours, measured) | measured | synth-birds (stand-in for CUB-200-2011) | DAMSM | "
            "3 | **12.00 ± 4.97**†")
    assert ours in md
    assert "comparable only with measured rows on the same real dataset" in md


def test_table1_oxford_rows_when_flowers_are_planned(tmp_path, variants):
    root = tmp_path / "w"
    root.mkdir()
    config = {**_config(root, seeds=(0,)), "datasets": ["synth-birds", "synth-flowers"]}
    _write_metrics(root, config)
    t1 = build_tables(config, root)["table1"]
    text = t1.markdown()
    assert "| MISL [Wu et al., 2024] | reported | Oxford-102 | Inception (paper) | – | 30.85 | 0.764 | 0.726 |" in text
    assert "synth-flowers (stand-in for Oxford-102)" in text


def test_table2_parameters_and_hours(measured):
    root, _ = measured
    csv = pd.read_csv(root / "results/tables/table2.csv")
    reported = csv[csv["source"] == "reported"].set_index("method")
    assert reported.loc["MMFL [Lin et al., 2020]", "params_paper_scale"] == 149_200_000
    assert reported.loc["ALMR [Wu et al., 2021]", "train_hours"] == 54.5
    assert reported.loc["CSF-GAN (paper)", "train_hours"] == 35.5
    full = csv[csv["run"] == "full"].iloc[0]
    from csfgan.models.params import parameter_breakdown

    paper_full = csfgan.config.apply_variant(csfgan.config.load_scale("paper"), csfgan.config.load_variant("full"))
    assert full["params_paper_scale"] == parameter_breakdown(paper_full)["generator"]  # as the paper counts
    assert full["train_hours"] == pytest.approx(2.0)  # 1, 2 and 3 hours
    assert full["train_hours_ci95"] == pytest.approx(T_975_2 / math.sqrt(3))
    md = _read(root, "table2.md")
    assert "| CSF-GAN (paper) | reported | CUB-200-2011 | – | – | 82.29M | 35.5 |" in md
    assert "82.80M" in md  # our generator at paper scale (the paper's 82.29M is its generator)
    assert "2.00 ± 2.48" in md


def test_table4_rows_are_the_sweep(measured):
    root, _ = measured
    md = _read(root, "table4.md")
    assert "| λ_edge |" in md
    # FID 16, 18, 20 against 10, 12, 14: +6 for every seed, a zero standard error, so no mark.
    assert "| no edge loss | synth-birds (stand-in for CUB-200-2011) | 3 | 18.00 ± 4.97 |" in md
    assert "| +6.00 [+6.00, +6.00] (zero standard error) |" in md
    assert "| 0.5 (= full) |" in md


def test_provenance_notes_in_md_and_tex(measured):
    root, _ = measured
    for k in (1, 3, 4):
        md, tex = _read(root, f"table{k}.md"), _read(root, f"table{k}.tex")
        for text in (md, tex):
            assert "DAMSM features" in text
            assert "Perceptual loss on the DAMSM image encoder" in text
            assert "scale 'smoke' (32 px" in text
            assert "Generator run in fp32 for evaluation" in text  # metrics without the field: fp32
        assert "mean ± 95% CI" in md and "%   - Measured at scale 'smoke'" in tex  # notes: a comment block
    assert "FID (DAMSM features) ↓" in _read(root, "table3.md")
    assert "scale 'smoke'" in _read(root, "table2.md") and "Perceptual loss" in _read(root, "table2.tex")
    csv = pd.read_csv(root / "results/tables/table3.csv")
    assert set(csv["fid_features"]) == {"damsm-image-encoder"} and set(csv["scale"]) == {"smoke"}


def test_latex_is_booktabs(measured):
    root, _ = measured
    for k in range(1, 5):
        tex = _read(root, f"table{k}.tex")
        assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
        assert r"\hline" not in tex
        assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
        assert r"\parbox" not in tex  # long notes live in the comment block, not in the float
    tex3 = _read(root, "table3.tex")
    # The dataset is a block header, not a repeated column; the differences are a second panel.
    assert tex3.count(r"\multicolumn{10}{l}{\textit{synth-birds (stand-in for CUB-200-2011)}} \\") == 2
    assert "\nbaseline+SFM & 3 & " in tex3 and r"Paired difference to baseline (95\% CI)" in tex3
    assert r"$\lambda$\_edge" in _read(root, "table4.tex")


def test_optional_metric_columns_only_when_measured(measured):
    root, _ = measured
    header = _read(root, "table3.md").splitlines()[2]
    assert "attribute acc. ↑" in header
    assert "counterfactual" not in header  # no metrics file has it: no column, no made-up numbers


def test_one_seed_shows_mean_and_n1(tmp_path, variants):
    root, config = _workspace(tmp_path, seeds=(0,))
    t3 = build_tables(config, root)["table3"]
    md = t3.markdown()
    # One seed decides nothing: no bold, no † (earlier the image-only interval marked PSNR).
    assert "| CSF-GAN (full) | synth-birds (stand-in for CUB-200-2011) | 1 | 10.00 | 20.10 |" in md
    assert "±" not in md.split("\n\n")[1]  # the table body; the notes explain
    assert "n=1" in md
    assert t3.frame()["fid_ci95"].isna().all()
    # Differences: FID has none with one seed and says why; PSNR's interval covers the test images only.
    assert ("| CSF-GAN (full) | synth-birds (stand-in for CUB-200-2011) | 1 | −20.00 (one seed) | "
            "−0.20 [−0.21, −0.19] (one seed, images only) |") in md
    assert "With one seed nothing is decided (a comparison needs 2 seeds): per-run metrics" in md
    assert "PSNR, SSIM, hole PSNR, hole SSIM: test images only (one seed: seed-to-seed variation is not covered" in md
    panels = [line for line in md.splitlines() if line.startswith("| ") and "synth-birds" in line]
    assert panels and not any(mark in line for line in panels for mark in ("†", "‡", "**"))
    frame = t3.frame()
    assert frame["fid_diff_low"].isna().all() and set(frame["psnr_diff_covers"].dropna()) == {"images"}
    assert not frame["psnr_diff_significant"].dropna().any() and frame["psnr_diff_p_holm"].isna().all()
    assert set(frame["psnr_diff_reason"].dropna()) == {"one seed"}
    assert "\\multicolumn" in t3.latex()  # still renders


def test_features_disagreement_is_said(tmp_path, variants):
    root, config = _workspace(tmp_path, seeds=(0,))
    m = root / "results/runs/synth-birds/full/seed0/metrics.json"
    m.write_text(json.dumps({**json.loads(m.read_text()), "fid_features": "inception-v3-compat"}))
    t3 = build_tables(config, root)["table3"]
    assert "FID (mixed features, see notes)" in t3.markdown()
    assert "DISAGREE on FID features" in t3.markdown()
    assert "synth-birds/full/seed0" in t3.markdown()


def test_evaluation_precision_disagreement_is_said(tmp_path, variants):
    root, config = _workspace(tmp_path, seeds=(0,), inference_precision="bf16")
    assert "Generator run in bf16 for evaluation" in build_tables(config, root)["table3"].markdown()
    m = root / "results/runs/synth-birds/full/seed0/metrics.json"
    m.write_text(json.dumps({**json.loads(m.read_text()), "inference_precision": "fp32"}))
    md = build_tables(config, root)["table3"].markdown()
    assert "DISAGREE on the generator's precision in evaluation: bf16 for" in md
    assert "fp32 for synth-birds/full/seed0" in md


def test_gpu_training_numerics_are_said_and_a_cpu_run_adds_no_note(tmp_path, variants):
    """"fp32" on an Ampere GPU is TF32 unless train.tf32 is off: the tables say which the runs used."""
    a100 = {"device": "NVIDIA A100-SXM4-80GB", "deterministic": False, "tf32": True, "cudnn_benchmark": True}
    root, config = _workspace(tmp_path, seeds=(0,), training_numerics=a100)
    md = build_tables(config, root)["table3"].markdown()
    assert ("Trained on NVIDIA A100-SXM4-80GB: TF32 matmuls and convolutions, non-deterministic kernels "
            "(train.tf32, train.deterministic).") in md
    m = root / "results/runs/synth-birds/full/seed0/metrics.json"
    exact = {**a100, "tf32": False, "deterministic": True}
    m.write_text(json.dumps({**json.loads(m.read_text()), "training_numerics": exact}))
    md = build_tables(config, root)["table3"].markdown()
    assert "Runs DISAGREE on training numerics: " in md
    assert ("NVIDIA A100-SXM4-80GB: fp32 matmuls and convolutions (no TF32), deterministic kernels for "
            "synth-birds/full/seed0") in md
    cpu = {"device": "cpu", "deterministic": True, "tf32": False, "cudnn_benchmark": False}
    (tmp_path / "cpu").mkdir()
    root, config = _workspace(tmp_path / "cpu", seeds=(0,), training_numerics=cpu)
    assert "numerics" not in build_tables(config, root)["table3"].markdown()


def test_missing_metrics_names_the_file(tmp_path, variants):
    root, config = _workspace(tmp_path)
    missing = root / "results/runs/synth-birds/wld/seed1/metrics.json"
    missing.unlink()
    with pytest.raises(ReportError, match=str(missing)):
        write_tables(config, root / "results/tables", root)
    assert not (root / "results/tables").exists()  # nothing half-written


def test_cli_tables(measured, monkeypatch, capsys):
    from csfgan.cli import main

    root, config = measured
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(root)
    assert main(["tables", "--config", "config.yaml", "--out", "again"]) == 0
    assert (root / "again/table4.tex").is_file()
    (root / "results/runs/synth-birds/full/seed2/metrics.json").unlink()
    assert main(["tables", "--config", "config.yaml", "--out", "again"]) == 2
    assert "results/runs/synth-birds/full/seed2/metrics.json" in capsys.readouterr().err
    # A metrics.json holding a list, and a scale file given as --config: one line each, not a traceback.
    (root / "results/runs/synth-birds/full/seed2/metrics.json").write_text("[1, 2]")
    assert main(["tables", "--config", "config.yaml", "--out", "again"]) == 2
    err = capsys.readouterr().err
    assert "seed2/metrics.json: holds a JSON list" in err and len(err.strip().splitlines()) == 1, err
    smoke_scale = Path(__file__).resolve().parent.parent / "experiments" / "scales" / "smoke.yaml"
    assert main(["tables", "--config", str(smoke_scale), "--out", "again"]) == 2
    err = capsys.readouterr().err
    assert "--config takes a workflow config" in err and len(err.strip().splitlines()) == 1, err
    # tables.yaml is checked against the workflow's schema by the CLI too: `control:` would drop rows.
    tables = yaml.safe_load((root / config["tables"]).read_text())
    tables["table3"]["control"] = ["baseline"]
    (root / config["tables"]).write_text(yaml.safe_dump(tables))
    assert main(["tables", "--config", "config.yaml", "--out", "again"]) == 2
    err = capsys.readouterr().err
    assert "table3" in err and "'control'" in err and "tables.schema.yaml" in err, err


# --------------------------------------------------------------------------------------------
# Figures and curves, end to end at the smoke scale (32 px, 4 training steps).

SMOKE_TABLES = {
    "table1": {"title": "Comparison", "variants": ["baseline", "full"]},
    "table2": {"title": "Parameters", "variants": ["baseline", "full"]},
    "table3": {"title": "Ablation", "variants": ["baseline", "full"]},
    "table4": {"title": "Edge", "variant": "full", "parameter": "loss.edge", "values": [0.5]},
}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """synth-birds prepared at 32 px, a DAMSM text encoder, baseline and full trained for 4 steps, evaluated."""
    pytest.importorskip("csfgan.damsm", reason="the text-encoder module is not in this checkout")
    from csfgan.damsm import pretrain_text
    from csfgan.data.synthetic import prepare_synthetic
    from csfgan.evaluate import evaluate
    from csfgan.metrics.feature_net import train_feature_net
    from csfgan.train import train

    root = tmp_path_factory.mktemp("smoke")
    scale = csfgan.config.load_scale("smoke")
    data = root / "data/prepared/synth-birds"
    prepare_synthetic("synth-birds", data, scale)
    text = root / "text_encoder.pt"
    pretrain_text(data, scale, text)
    eval_text = root / "text_encoder.eval.pt"
    pretrain_text(data, scale, eval_text, seed=1)
    feature_net = root / "feature_net.pt"
    train_feature_net(data, scale, feature_net, progress=False)
    config = _config(root, seeds=(0,), tables=SMOKE_TABLES)
    for run in plan(config, root).runs():
        train(data, text, run.name, "smoke", root / run.path, seed=run.seed, device="cpu", progress=False)
        evaluate(root / run.path, feature_net=feature_net, eval_text_encoder=eval_text, progress=False)
    return root, config


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_end_to_end(smoke, tmp_path):
    from csfgan.report.figures import FIGURES, make_figures

    root, config = smoke
    written = make_figures(config, "synth-birds", tmp_path / "figures", root)
    assert len(written) == 2 * len(FIGURES)
    for name in FIGURES:
        png, pdf = tmp_path / f"figures/{name}_synth-birds.png", tmp_path / f"figures/{name}_synth-birds.pdf"
        assert _is_png(png) and pdf.read_bytes()[:5] == b"%PDF-"


def test_figures_are_reproducible(smoke, tmp_path):
    from csfgan.report.figures import Figures

    root, config = smoke
    a = Figures(plan(config, root), "synth-birds", root)
    b = Figures(plan(config, root), "synth-birds", root)
    assert (a.picks == b.picks).all() and len(set(a.split.class_ids[a.picks])) == len(a.picks)
    batch = a.batch(a.picks)
    assert (a.inpaint("full", batch)[0] == b.inpaint("full", b.batch(b.picks))[0]).all()


def test_top_words_rank_by_mass_in_hole():
    import torch

    from csfgan.report.figures import top_words

    attention = torch.zeros(4, 2, 2)
    attention[0] = 0.1
    attention[1, 0, 0] = 0.9  # "red" dominates the hole cell
    attention[2] = 0.5
    attention[3] = 0.4
    attention[2, 0, 0] = 0.0
    attention[3, 0, 0] = 0.0
    weight = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    words = ["<pad>", "<unk>", "red", "wing", "bird"]
    ranked = top_words(attention, weight, torch.tensor([4, 2, 3, 4]), 4, words, 2)
    assert ranked[0][0] == "red" and ranked[0][1] == pytest.approx(0.9)
    assert ranked[1] == ("bird", pytest.approx(0.1), [0, 3])  # both occurrences merged


def test_attention_figure_refuses_a_model_without_word_fusion(smoke, tmp_path):
    from csfgan.report.figures import Figures

    root, _ = smoke
    only_baseline = {"table1": {"variants": ["baseline"]}, "table2": {"variants": ["baseline"]},
                     "table3": {"variants": ["baseline"]},
                     "table4": {"variant": "baseline", "parameter": "loss.edge", "values": [0.5]}}
    cfg = _config(tmp_path, seeds=(0,), tables=only_baseline)
    figs = Figures(plan(cfg, root), "synth-birds", root)
    assert figs.full == "baseline"
    with pytest.raises(ReportError, match="variant 'baseline'.*no word-level fusion"):
        figs.attention_figure()


def test_missing_checkpoint_names_the_file(smoke, tmp_path):
    from csfgan.report.figures import make_figures

    root, config = smoke
    with pytest.raises(ReportError, match=str(tmp_path / "results/runs/synth-birds/full/seed0/final.pt")):
        make_figures(config, "synth-birds", tmp_path / "figures", tmp_path)


def test_training_curves_and_tables_from_real_runs(smoke, tmp_path):
    from csfgan.report.curves import loss_terms, read_stats, training_curves

    root, config = smoke
    written = training_curves(config, tmp_path / "figures", root)
    assert [p.name for p in written] == ["training_curves.png", "training_curves.pdf"]
    assert _is_png(written[0])
    runs = plan(config, root).runs()
    terms = loss_terms([read_stats(r, root) for r in runs])
    assert terms[:3] == ["loss_d", "loss_g/total", "loss_g/rec"] and "loss_g/gan_word" in terms
    # The evaluated metrics.json files feed the tables as they are.
    tables = build_tables(config, root)
    table3 = tables["table3"].markdown()
    assert "FID (species-classifier features)" in table3
    # The notes say how the feature network and the R-precision pair were trained.
    assert "species-classifier (synth-birds train split, seed 0)" in table3
    assert ("R-precision on DAMSM pair pretrained on synth-birds with seed 1, independently of the run's (seed 0)"
            in table3)
    assert len(tables["table1"].rows) == 8 + 2


def test_missing_stats_names_the_file(smoke, tmp_path):
    from csfgan.report.curves import training_curves

    root, config = smoke
    with pytest.raises(ReportError, match=str(tmp_path / "results/runs/synth-birds/baseline/seed0/stats.jsonl")):
        training_curves(config, tmp_path / "figures", tmp_path)


def test_paired_differences_in_csv(measured):
    root, _ = measured
    csv = pd.read_csv(root / "results/tables/table3.csv").set_index("run")
    full = csv.loc["full"]  # FID 10, 12, 14 against baseline 30, 31, 35: differences −20, −19, −21
    assert full["fid_diff"] == pytest.approx(-20.0)
    half = T_975_2 * 1.0 / math.sqrt(3)
    assert (full["fid_diff_low"], full["fid_diff_high"]) == (pytest.approx(-20 - half), pytest.approx(-20 + half))
    assert full["fid_diff_significant"] and full["fid_diff_covers"] == "seeds" and full["fid_diff_mde"] > 0
    assert full["fid_diff_mark"] == "better" and csv.loc["myvariant", "fid_diff_mark"] == "worse"
    # Holm over the column's 4 comparisons: full's p (the smallest) times 4.
    assert full["fid_diff_p_holm"] == pytest.approx(4 * full["fid_diff_p"])
    assert full["fid_diff_p"] == pytest.approx(2 * stats.t.sf(20 / (1 / math.sqrt(3)), 2))
    assert full["fid_best"] and not csv["fid_best"].drop("full").any()
    assert full["psnr_diff_covers"] == "seeds+images" and full["attribute_accuracy_diff_covers"] == "seeds+images"
    assert pd.isna(csv.loc["baseline", "fid_diff"])  # the reference has no difference to itself
    t4 = pd.read_csv(root / "results/tables/table4.csv").set_index("run")
    assert t4.loc["full--loss.edge=0.0", "fid_diff"] == pytest.approx(6.0)  # against λ_edge = 0.5 (the full run)


def test_controls_render_under_the_rows_and_are_never_best(tmp_path, variants):
    root = tmp_path / "w"
    root.mkdir()
    tables = {**TABLES_YAML, "table3": {"title": "Ablation", "variants": ["baseline", "wld"], "controls": ["sfm"]}}
    config = _config(root, tables=tables)
    _write_metrics(root, config)
    t3 = build_tables(config, root)["table3"]
    means = t3.markdown().split("Paired difference")[0]
    assert "| baseline+SFM (control) | synth-birds (stand-in for CUB-200-2011) | 3 | 20.00 ± 0.00† |" in means
    assert "**26.00 ± 2.48**†" in means  # the control's better FID is not the block's best: WLD's is
    assert r"\addlinespace" in t3.latex()


def test_stale_per_image_file_is_refused(tmp_path, variants):
    root, config = _workspace(tmp_path, seeds=(0,))
    m = root / "results/runs/synth-birds/sfm/seed0/metrics.json"
    m.write_text(json.dumps({**json.loads(m.read_text()), "psnr": 99.0}))
    with pytest.raises(ReportError, match="sfm/seed0/eval/per_image.npz: psnr .* disagrees with metrics.json"):
        build_tables(config, root)
    (root / "results/runs/synth-birds/sfm/seed0/eval/per_image.npz").unlink()
    with pytest.raises(UserError, match="missing per-image metrics"):
        build_tables(config, root)


def test_a_missing_seed_shows_its_n_and_decides_nothing(tmp_path, variants):
    root, config = _workspace(tmp_path)
    m = root / "results/runs/synth-birds/full/seed1/metrics.json"
    m.write_text(json.dumps({**json.loads(m.read_text()), "fid": float("nan"), "psnr": None}))
    t3 = build_tables(config, root)["table3"]
    md = t3.markdown()
    # full's FID over seeds 0 and 2 only (10, 14), against the baseline's 30 and 35 on those seeds.
    assert "| CSF-GAN (full) | synth-birds (stand-in for CUB-200-2011) | 3 | 12.00 ± 25.41 (n=2) |" in md
    assert "−20.50 [−26.85, −14.15] (seed 1 missing) |" in md
    assert "only k of the row's seeds have that metric" in md
    frame = t3.frame().set_index("run")
    assert frame.loc["full", "fid_n"] == 2 and frame.loc["baseline", "fid_n"] == 3
    assert frame.loc["full", "fid_diff_seeds"] == 2 and frame.loc["full", "fid_diff_reason"] == "seed 1 missing"
    assert not frame.loc["full", "fid_diff_significant"] and pd.isna(frame.loc["full", "fid_diff_p_holm"])
    assert frame.loc["full", "psnr_diff_reason"] == "seed 1 missing"  # per-image: the seed is left out too
    assert "fid" not in t3.rows[3]["_best"]  # a comparison that decides nothing cannot make a row bold
