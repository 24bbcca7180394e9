"""The real-data DAG a user starts on a GPU box, run here first: `--configfile experiments/paper.yaml`
on tiny archives in the real CUB-200-2011, Oxford-102 and Reed et al. layouts, served through the
configured mirrors (file:// URLs, their MD5s given in real_data.md5), at the smoke scale, from the
download to Tables 1-4 and the figures."""

from pathlib import Path

import pytest
import yaml

from tests import realdata_fixtures as fx
from tests.test_workflow import LEAN_TABLES, ROOT, claims_for, jobs, snakemake


def mirror(directory: Path) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """The fixture archives in ``directory``: URLs and MD5s by file name, and the caption archives."""
    files = {"CUB_200_2011.tgz": fx.build_cub_archive(directory / "CUB_200_2011.tgz"), **fx.build_flowers(directory)}
    captions = {
        "cub": fx.build_caption_archive(directory / "cvpr2016_cub.tar.gz", "cvpr2016_cub", fx.cub_captions(),
                                        fx.CUB_TRAIN_CLASSES, fx.CUB_TEST_CLASSES),
        "oxford102": fx.build_caption_archive(directory / "cvpr2016_flowers.tar.gz", "cvpr2016_flowers",
                                              fx.flower_captions(), fx.FLOWER_TRAIN_CLASSES, fx.FLOWER_TEST_CLASSES),
    }
    urls = {name: path.resolve().as_uri() for name, path in files.items()}
    md5s = {name: fx.md5(path) for name, path in files.items()}
    return urls, md5s, {k: str(v) for k, v in captions.items()}


def tiny_scale(path: Path) -> Path:
    """The smoke scale with batches the nine-image fixtures can fill."""
    scale = yaml.safe_load((ROOT / "experiments" / "scales" / "smoke.yaml").read_text())
    scale["text"]["damsm"]["batch_size"] = 2
    scale["train"]["batch_size"] = 2
    scale["eval"]["batch_size"] = 2
    path.write_text(yaml.safe_dump(scale))
    return path


@pytest.mark.slow
def test_paper_config_dag_on_fixture_archives(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    urls, md5s, captions = mirror(tmp_path / "mirror")
    (ws / "tables.yaml").write_text(yaml.safe_dump(LEAN_TABLES))  # the λ_edge sweep: one extra run on CUB
    (ws / "claims.yaml").write_text(yaml.safe_dump(claims_for(LEAN_TABLES), allow_unicode=True))
    (ws / "test.yaml").write_text(yaml.safe_dump({
        "scale": str(tiny_scale(ws / "tiny.yaml")), "seeds": [0], "device": "cpu", "gpus_per_job": 0,
        "tables": "tables.yaml", "claims": "claims.yaml",
        "threads": {"prepare": 1, "pretrain": 1, "train": 1, "evaluate": 1, "report": 1},
        "real_data": {"downloads": "data/downloads", "urls": urls, "md5": md5s, "captions_archive": captions},
    }))
    args = ("--configfile", str(ROOT / "experiments" / "paper.yaml"), "test.yaml",
            "--config", f"variants_dir={ROOT / 'experiments' / 'variants'}")
    counts = jobs(snakemake(ws, "-n", *args).stdout)
    assert counts["download"] == 2 and counts["prepare_real"] == 2 and counts["train"] == 5

    snakemake(ws, "--cores", "2", *args)
    for table in ("table1", "table2", "table3", "table4"):
        text = (ws / "results" / "tables" / f"{table}.md").read_text()
        assert "CUB-200-2011" in text
    table3 = (ws / "results" / "tables" / "table3.md").read_text()
    assert "Oxford-102" in table3 and "tiny" in table3  # both datasets, and the scale it was measured at
    for dataset in ("cub", "oxford102"):
        for figure in ("fig1_captions", "fig5_comparison", "fig7_ablation", "fig8_attention", "fig9_irregular"):
            assert (ws / "results" / "figures" / f"{figure}_{dataset}.png").is_file()
        manifest = yaml.safe_load((ws / "data" / "prepared" / dataset / "manifest.json").read_text())
        overrides = manifest["md5_overrides"]
        assert overrides and all(md5s[name] == md5 for name, md5 in overrides.items())  # recorded, not silent
    assert (ws / "results" / "claims.md").is_file()
    assert "Nothing to be done" in snakemake(ws, "-n", *args).stdout
