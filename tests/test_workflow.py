"""The Snakemake DAG: resolves for both configs, runs end to end at the smoke scale, grows by one
variant file, does nothing the second time, and refuses bad configs before any job runs."""

import json
import os
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


LEAN_TABLES = {  # two variants and one extra sweep point: every table, as few runs as possible
    "table1": {"variants": ["baseline", "full"]},
    "table2": {"variants": ["baseline", "full"]},
    "table3": {"variants": ["baseline", "full"]},
    "table4": {"variant": "full", "parameter": "loss.edge", "values": [0.0, 0.5]},
}


def claims_for(tables: dict) -> dict:
    """The project's claims, each on the rows these (smaller) tables keep."""
    claims = yaml.safe_load((ROOT / "experiments" / "claims.yaml").read_text())
    for claim in claims["claims"]:
        spec = tables[claim["table"]]
        rows = ({str(float(v)) for v in spec["values"]} if "values" in spec
                else set(spec["variants"]) | set(spec.get("controls", [])))
        claim["compare"] = [c for c in claim["compare"] if {c["row"], c["than"]} <= rows]
    claims["claims"] = [c for c in claims["claims"] if c["compare"]]
    return claims


def workspace(tmp_path: Path, tables: dict | None = None, **config) -> Path:
    """A working directory with its own config, tables and variants (copies of the project's)."""
    shutil.copytree(ROOT / "experiments" / "variants", tmp_path / "variants")
    if tables is None:
        tables = yaml.safe_load((ROOT / "experiments" / "tables.yaml").read_text())
        tables["table4"]["values"] = [0.0, 0.5]  # one extra run keeps the smoke DAG short
    (tmp_path / "claims.yaml").write_text(yaml.safe_dump(claims_for(tables), allow_unicode=True))
    (tmp_path / "tables.yaml").write_text(yaml.safe_dump(tables))
    base = {"scale": "smoke", "datasets": ["synth-birds"], "seeds": [0], "tables": "tables.yaml",
            "claims": "claims.yaml", "variants_dir": "variants",
            "threads": {"prepare": 1, "pretrain": 1, "train": 1, "evaluate": 1, "report": 1}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**base, **config}))
    return tmp_path


def planned(dry_run_output: str, rule: str) -> set[str]:
    """The outputs of the jobs of ``rule`` a dry run lists."""
    out, current = set(), None
    for line in dry_run_output.splitlines():
        if line.startswith("rule ") or line.startswith("localrule "):
            current = line.split()[1].rstrip(":")
        elif current == rule and line.strip().startswith("output:"):
            out.update(p.strip() for p in line.split(":", 1)[1].split(","))
    return out


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
    for archive in ("cvpr2016_cub.tar.gz", "cvpr2016_flowers.tar.gz"):  # manual downloads: only their presence
        (tmp_path / "data" / "downloads").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "downloads" / archive).write_bytes(b"")
    done = snakemake(tmp_path, "-n", "--configfile", str(ROOT / configfile), *extra)
    counts = jobs(done.stdout)
    seeds = len(yaml.safe_load((ROOT / configfile).read_text())["seeds"])
    # 4 variants, the authors-code reading and the no-text control x 2 datasets + 4 extra λ_edge points
    # on the first
    assert counts["train"] == 16 * seeds
    assert counts["evaluate"] == counts["train"] and counts["table"] == 4 and counts["claims"] == 1
    # One FID feature network and one independent R-precision DAMSM pair per dataset.
    assert counts["train_features"] == counts["pretrain_text_eval"] == counts["pretrain_text"] == 2
    if "paper" in configfile:
        assert counts["download"] == 2 and counts["prepare_real"] == 2


def test_missing_caption_archive_stops_the_dry_run(tmp_path):
    """The caption archives are manual downloads: a dry run names the missing one, where to get it and
    where to put it, before any download or training is scheduled."""
    extra = ["--config", f"tables={ROOT / 'experiments/tables.yaml'}", f"variants_dir={ROOT / 'experiments/variants'}",
             f"claims={ROOT / 'experiments/claims.yaml'}"]
    done = snakemake(tmp_path, "-n", "--configfile", str(ROOT / "experiments/paper.yaml"), *extra, check=False)
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "cvpr2016_cub.tar.gz" in out and "github.com/reedscot/cvpr2016" in out
    assert "put it at data/downloads/cvpr2016_cub.tar.gz" in out
    assert not (tmp_path / "data").exists()


def test_report_rules_get_the_resolved_config(tmp_path):
    """With experiments/config.yaml present (the Snakefile's own configfile), another --configfile and
    a --config override, the report rules read what Snakemake resolved, not a file on disk."""
    ws = workspace(tmp_path)
    (ws / "experiments").mkdir()
    shutil.copy(ROOT / "experiments" / "config.yaml", ws / "experiments" / "config.yaml")
    done = snakemake(ws, "-n", "-p", "--configfile", "config.yaml", "--config", "seeds=[0,1]")
    resolved = yaml.safe_load((ws / "results" / "config" / "workflow.yaml").read_text())
    assert resolved["datasets"] == ["synth-birds"] and resolved["seeds"] == [0, 1]
    assert resolved["scale"] == "smoke" and resolved["tables"] == "tables.yaml"
    assert "tables --config results/config/workflow.yaml --table table3" in done.stdout
    assert "curves --config results/config/workflow.yaml" in done.stdout
    assert planned(done.stdout, "table") == {f"results/tables/table{k}.{ext}" for k in range(1, 5)
                                             for ext in ("csv", "md", "tex")}
    # Written only when its content changes: the same call leaves it (and its mtime) alone.
    before = (ws / "results" / "config" / "workflow.yaml").stat().st_mtime_ns
    snakemake(ws, "-n", "--configfile", "config.yaml", "--config", "seeds=[0,1]")
    assert (ws / "results" / "config" / "workflow.yaml").stat().st_mtime_ns == before


def test_named_targets(tmp_path):
    ws = workspace(tmp_path, tables=LEAN_TABLES)
    counts = jobs(snakemake(ws, "-n", "table3", "--configfile", "config.yaml").stdout)
    assert counts["train"] == 2 and counts["table"] == 1 and "figures" not in counts  # baseline, full
    counts = jobs(snakemake(ws, "-n", "variant_full", "--configfile", "config.yaml", "--config",
                            "seeds=[0,1]").stdout)
    assert counts["train"] == 2 and counts["evaluate"] == 2 and "table" not in counts  # full, two seeds
    counts = jobs(snakemake(ws, "-n", "--configfile", "config.yaml", "--config",
                            "datasets=[synth-flowers]").stdout)
    assert counts["prepare_synthetic"] == 1 and counts["train"] == 3


def test_lint_is_clean():
    done = subprocess.run([*SNAKEMAKE, "--lint"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Lints for" not in done.stdout + done.stderr


def generator_weights(final: Path) -> dict:
    import torch

    return torch.load(final, map_location="cpu", weights_only=False)["generator"]


def same_weights(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_smoke_dag_end_to_end_then_reruns_exactly_what_changed(tmp_path):
    """experiments/config.yaml present, another --configfile and --config seeds=[0,1]: the tables hold
    the configured dataset and two seeds. Then each edit re-runs exactly what it changes."""
    # Table 4's one point is the full model's own λ_edge: two runs per seed make all four tables.
    tables = {**LEAN_TABLES, "table4": {**LEAN_TABLES["table4"], "values": [0.5]}}
    ws = workspace(tmp_path, tables=tables, scale="scale.yaml")
    shutil.copy(ROOT / "experiments" / "scales" / "smoke.yaml", ws / "scale.yaml")
    (ws / "experiments").mkdir()
    shutil.copy(ROOT / "experiments" / "config.yaml", ws / "experiments" / "config.yaml")
    args = ("--configfile", "config.yaml", "--config", "seeds=[0,1]")
    snakemake(ws, "--cores", "2", *args)
    import pandas as pd

    for table in ("table1", "table2", "table3", "table4"):
        for ext in ("csv", "md", "tex"):
            assert (ws / "results" / "tables" / f"{table}.{ext}").is_file()
    table3 = pd.read_csv(ws / "results" / "tables" / "table3.csv")
    assert set(table3["dataset"]) == {"synth-birds (stand-in for CUB-200-2011)"}  # not experiments/config.yaml's
    assert set(table3["seeds"]) == {2}
    # The classical peers, through protocol export -> csfgan peer -> csfgan score, as Table 1 rows (issue 24).
    table1 = pd.read_csv(ws / "results" / "tables" / "table1.csv")
    external = table1[table1["source"] == "external"]
    assert sorted(external["run"]) == ["external:biharmonic", "external:telea"]
    assert external["fid"].notna().all() and external["fid_diff"].notna().all()
    for figure in ("fig1_captions", "fig5_comparison", "fig7_ablation", "fig8_attention", "fig9_irregular"):
        assert (ws / "results" / "figures" / f"{figure}_synth-birds.png").is_file()
        assert (ws / "results" / "figures" / f"{figure}_synth-birds.pdf").is_file()
    assert not list((ws / "results" / "figures").glob("*synth-flowers*"))
    assert (ws / "results" / "figures" / "training_curves.png").is_file()
    runs = ws / "results" / "runs" / "synth-birds"
    for name in ("baseline", "full"):
        for seed in (0, 1):
            assert (runs / name / f"seed{seed}" / "metrics.json").is_file()

    # A second run after success has nothing to do, nor has a variant edit that changes no value.
    assert "Nothing to be done" in snakemake(ws, "-n", *args).stdout
    (ws / "variants" / "baseline.yaml").write_text((ws / "variants" / "baseline.yaml").read_text()
                                                   + "# a comment changes no value\n")
    assert "Nothing to be done" in snakemake(ws, "-n", *args).stdout

    def dry(*extra):
        out = snakemake(ws, "-n", *args, *extra).stdout
        return jobs(out), planned(out, "train")

    def finals(*names):
        return {f"results/runs/synth-birds/{n}/seed{s}/final.pt" for n in names for s in (0, 1)}

    # A scale value only training reads: every training and what follows, no preparation or DAMSM.
    scale = yaml.safe_load((ws / "scale.yaml").read_text())
    scale["train"]["steps"] = 6
    (ws / "scale.yaml").write_text(yaml.safe_dump(scale))
    counts, trains = dry()
    assert trains == finals("baseline", "full")
    assert "prepare_synthetic" not in counts and "pretrain_text" not in counts and counts["table"] == 4
    # A text setting: DAMSM pretraining too, still no preparation.
    scale["text"]["damsm"]["lr"] = 5.0e-4
    (ws / "scale.yaml").write_text(yaml.safe_dump(scale))
    counts, trains = dry()
    assert counts["pretrain_text"] == 1 and "prepare_synthetic" not in counts and len(trains) == 4
    shutil.copy(ROOT / "experiments" / "scales" / "smoke.yaml", ws / "scale.yaml")  # back: nothing to do
    assert "Nothing to be done" in snakemake(ws, "-n", *args).stdout

    # A replaced text encoder (here: pretrained again with another seed): every training that uses it.
    encoder = ws / "results" / "text_encoder" / "synth-birds.pt"
    kept, stat = encoder.read_bytes(), encoder.stat()
    subprocess.run([sys.executable, "-m", "csfgan", "pretrain-text", "--data", "data/prepared/synth-birds",
                    "--scale", "scale.yaml", "--out", str(encoder), "--seed", "1", "--threads", "1"],
                   cwd=ws, check=True, capture_output=True)
    counts, trains = dry()
    assert trains == finals("baseline", "full") and "pretrain_text" not in counts
    encoder.write_bytes(kept)  # undone: the old bytes and modification time
    os.utime(encoder, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert "Nothing to be done" in snakemake(ws, "-n", *args).stdout

    # An edited variant value and a new variant in table3: exactly their runs, trained (fresh) and shown.
    old = generator_weights(runs / "baseline" / "seed0" / "final.pt")
    (ws / "variants" / "baseline.yaml").write_text(
        (ws / "variants" / "baseline.yaml").read_text() + "loss:\n  tv: 0.2\n")
    (ws / "variants" / "word-only.yaml").write_text(
        'name: word-only\ndescription: "word-level fusion only"\nmodel:\n  sentence_fusion_layers: []\n')
    tables = yaml.safe_load((ws / "tables.yaml").read_text())
    tables["table3"]["variants"].append("word-only")
    (ws / "tables.yaml").write_text(yaml.safe_dump(tables))
    counts, trains = dry()
    assert trains == finals("baseline", "word-only") and counts["evaluate"] == 4
    done = snakemake(ws, "--cores", "2", *args)
    assert "Nothing to be done" in snakemake(ws, "-n", *args).stdout, done.stdout[-2000:]
    new = generator_weights(runs / "baseline" / "seed0" / "final.pt")
    assert not same_weights(old, new)
    record = json.loads((runs / "baseline" / "seed0" / "config.json").read_text())
    assert record["config"]["loss"]["tv"] == 0.2
    log = (ws / "logs" / "train" / "synth-birds" / "baseline" / "seed0.log").read_text()
    assert "step 4/4" in log  # trained from the start, not resumed at the old run's last step
    assert "word-only" in (ws / "results" / "tables" / "table3.md").read_text()

    # A forced re-prepare: Snakemake deletes the declared output (manifest.json) first, and prepare
    # redoes its own folder, to the same bytes, instead of refusing it.
    manifest = ws / "data" / "prepared" / "synth-birds" / "manifest.json"
    kept = manifest.read_bytes()
    snakemake(ws, "--cores", "2", *args, "--forcerun", "prepare_synthetic", "data/prepared/synth-birds/manifest.json")
    assert manifest.read_bytes() == kept

    snakemake(ws, *args, "--report", "results/report.html")
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


@pytest.mark.parametrize(
    ("tables_text", "message"),
    [
        ("table3:\n  variants: [baseline, full]\n  colour: red\n", "Additional properties are not allowed ('colour'"),
        ("table3:\n  variants: [baseline, full, baseline]\n",
         "table3.variants: ['baseline', 'full', 'baseline'] has non-unique elements"),
        ("table3:\n  variants: [baseline]\ntable3:\n  variants: [full]\n", "key 'table3' is given twice"),
    ],
)
def test_tables_schema(tmp_path, tables_text, message):
    from csfgan.config import ConfigError
    from csfgan.resolved import read_checked

    good = "".join(f"{t}:\n  variants: [full]\n" for t in ("table1", "table2")) + \
        "table4:\n  variant: full\n  parameter: loss.edge\n  values: [0.5]\n"
    path = tmp_path / "tables.yaml"
    path.write_text(good + tables_text)
    with pytest.raises(ConfigError) as err:
        read_checked(path, ROOT / "workflow" / "schemas" / "tables.schema.yaml")
    assert str(err.value).startswith(str(path)) and " ".join(message.split()) in " ".join(str(err.value).split())


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ("name: full\nmodel:\n  word_fusion_layers: [9]\n", "outside the generator's fusable layers 2..5"),
        ("name: full\nloss:\n  tv: -0.1\n", "loss.tv must be >= 0"),
        ("name: full\nsteps: 3\n", "unknown key(s) ['steps']"),
    ],
)
def test_bad_variant_stops_the_dry_run(tmp_path, variant, message):
    ws = workspace(tmp_path, tables=LEAN_TABLES)
    (ws / "variants" / "full.yaml").write_text(variant)
    done = snakemake(ws, "-n", "--configfile", "config.yaml", check=False)
    assert done.returncode != 0 and message in done.stdout + done.stderr, done.stderr[-2000:]
    assert not (ws / "results").exists()
