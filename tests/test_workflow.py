"""The Snakemake DAG: resolves for both configs, runs end to end at the smoke scale, grows by one
variant file, does nothing the second time, and refuses bad configs before any job runs."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([*SNAKEMAKE, "--directory", str(workdir), *args], capture_output=True, text=True, cwd=workdir,
                          timeout=1800)
    if check and done.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    return done


def workspace(tmp_path: Path, **config) -> Path:
    """A working directory with its own config, tables and variants (copies of the project's)."""
    shutil.copytree(ROOT / "experiments" / "variants", tmp_path / "variants")
    claims = yaml.safe_load((ROOT / "experiments" / "claims.yaml").read_text())
    for claim in claims["claims"]:  # the λ_edge claims, on the two points the smoke sweep keeps
        if claim["table"] == "table4":
            claim["compare"] = [c for c in claim["compare"] if {c["row"], c["than"]} <= {"0.0", "0.5"}]
    (tmp_path / "claims.yaml").write_text(yaml.safe_dump(claims, allow_unicode=True))
    tables = yaml.safe_load((ROOT / "experiments" / "tables.yaml").read_text())
    tables["table4"]["values"] = [0.0, 0.5]  # one extra run keeps the smoke DAG short
    (tmp_path / "tables.yaml").write_text(yaml.safe_dump(tables))
    base = {"scale": "smoke", "datasets": ["synth-birds"], "seeds": [0], "tables": "tables.yaml", "claims": "claims.yaml",
            "variants_dir": "variants", "threads": {"prepare": 1, "pretrain": 1, "train": 1, "evaluate": 1,
                                                     "report": 1}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**base, **config}))
    return tmp_path


def jobs(dry_run_output: str) -> dict[str, int]:
    counts, table = {}, False
    for line in dry_run_output.splitlines():
        if line.startswith("job ") and "count" in line:
            table = True
            continue
        if table:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
            elif parts and parts[0] == "total":
                break
    return counts


@pytest.mark.parametrize("configfile", ["experiments/config.yaml", "experiments/paper.yaml"])
def test_dry_run_resolves(configfile, tmp_path):
    extra = ["--config", f"tables={ROOT / 'experiments/tables.yaml'}", f"variants_dir={ROOT / 'experiments/variants'}",
             f"claims={ROOT / 'experiments/claims.yaml'}"]
    done = snakemake(tmp_path, "-n", "--configfile", str(ROOT / configfile), *extra)
    counts = jobs(done.stdout)
    seeds = len(yaml.safe_load((ROOT / configfile).read_text())["seeds"])
    # 4 variants and the no-text control x 2 datasets + 4 extra λ_edge points on the first
    assert counts["train"] == 14 * seeds
    assert counts["evaluate"] == counts["train"] and counts["tables"] == 1 and counts["claims"] == 1
    if "paper" in configfile:
        assert counts["download"] == 2 and counts["prepare_real"] == 2


def test_lint_is_clean():
    done = subprocess.run([*SNAKEMAKE, "--lint"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Lints for" not in done.stdout + done.stderr


@pytest.mark.slow
def test_smoke_dag_end_to_end_then_a_new_variant(tmp_path):
    ws = workspace(tmp_path)
    snakemake(ws, "--cores", "2", "--configfile", "config.yaml")
    for table in ("table1", "table2", "table3", "table4"):
        for ext in ("csv", "md", "tex"):
            assert (ws / "results" / "tables" / f"{table}.{ext}").is_file()
    for figure in ("fig1_captions", "fig5_comparison", "fig7_ablation", "fig8_attention", "fig9_irregular"):
        assert (ws / "results" / "figures" / f"{figure}_synth-birds.png").is_file()
        assert (ws / "results" / "figures" / f"{figure}_synth-birds.pdf").is_file()
    assert (ws / "results" / "figures" / "training_curves.png").is_file()
    for name in ("baseline", "sfm", "wld", "full", "full--loss.edge=0.0"):
        assert (ws / "results" / "runs" / "synth-birds" / name / "seed0" / "metrics.json").is_file()

    # A second run after success has nothing to do.
    assert "Nothing to be done" in snakemake(ws, "-n", "--configfile", "config.yaml").stdout

    # One new variant file, named in table3: its jobs and its row, nothing else retrained.
    (ws / "variants" / "word-only.yaml").write_text(
        'name: word-only\ndescription: "word-level fusion only"\nmodel:\n  sentence_fusion_layers: []\n')
    tables = yaml.safe_load((ws / "tables.yaml").read_text())
    tables["table3"]["variants"].append("word-only")
    (ws / "tables.yaml").write_text(yaml.safe_dump(tables))
    counts = jobs(snakemake(ws, "-n", "--configfile", "config.yaml").stdout)
    assert counts["train"] == 1 and counts["evaluate"] == 1
    snakemake(ws, "--cores", "2", "--configfile", "config.yaml")
    assert "word-only" in (ws / "results" / "tables" / "table3.md").read_text()

    snakemake(ws, "--configfile", "config.yaml", "--report", "results/report.html")
    assert (ws / "results" / "report.html").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"learning_rate": 0.1}, "Additional properties are not allowed"),
        ({"datasets": ["imagenet"]}, "imagenet"),
        ({"scale": "huge"}, "unknown scale 'huge'"),
    ],
)
def test_bad_config_stops_before_any_job(tmp_path, change, message):
    ws = workspace(tmp_path, **change)
    done = snakemake(ws, "-n", "--configfile", "config.yaml", check=False)
    assert done.returncode != 0 and message in done.stdout + done.stderr
    assert not (ws / "results").exists() and not (ws / "data").exists()


def test_table_naming_a_missing_variant(tmp_path):
    ws = workspace(tmp_path)
    tables = yaml.safe_load((ws / "tables.yaml").read_text())
    tables["table3"]["variants"].append("nonexistent")
    (ws / "tables.yaml").write_text(yaml.safe_dump(tables))
    done = snakemake(ws, "-n", "--configfile", "config.yaml", check=False)
    assert done.returncode != 0 and "no variant 'nonexistent'" in done.stdout + done.stderr


@pytest.mark.parametrize(("edit", "message"), [
    (("row", "sfmm"), "table3 has no row 'sfmm' on synth-birds"),
    (("metric", "fdi"), "unknown metric 'fdi'"),
    (("expect", "beter"), "'beter' is not one of"),
])
def test_claim_with_a_typo_stops_before_any_job(tmp_path, edit, message):
    ws = workspace(tmp_path)
    claims = yaml.safe_load((ws / "claims.yaml").read_text())
    key, value = edit
    if key == "metric":
        claims["claims"][0]["metric"] = value
    else:
        claims["claims"][0]["compare"][0][key] = value
    (ws / "claims.yaml").write_text(yaml.safe_dump(claims, allow_unicode=True))
    done = snakemake(ws, "-n", "--configfile", "config.yaml", check=False)
    assert done.returncode != 0 and message in done.stdout + done.stderr
    assert "claims.yaml" in done.stdout + done.stderr
    assert not (ws / "results").exists()


def test_unknown_variant_key_and_negative_lambda(tmp_path):
    ws = workspace(tmp_path)
    (ws / "variants" / "full.yaml").write_text("name: full\nmodel:\n  fusion: true\n")
    done = snakemake(ws, "-n", "--configfile", "config.yaml", check=False)
    assert done.returncode != 0 and "unknown key 'fusion'" in done.stdout + done.stderr

    ws2 = workspace(tmp_path / "second")
    tables = yaml.safe_load((ws2 / "tables.yaml").read_text())
    tables["table4"]["values"] = [-0.5, 0.5]
    (ws2 / "tables.yaml").write_text(yaml.safe_dump(tables))
    done = snakemake(ws2, "-n", "--configfile", "config.yaml", check=False)
    assert done.returncode != 0 and "loss.edge must be >= 0" in done.stdout + done.stderr
