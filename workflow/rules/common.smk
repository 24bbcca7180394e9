# Shared names and input functions. Rules run the csfgan package from this checkout, so they work
# the same with and without --use-conda (the conda env holds the dependencies, not csfgan itself).
import os
import sys

sys.path.insert(0, workflow.basedir)

from csfgan.data.download import DATASET_FILES
from csfgan.data.reed_captions import resolve_archive
from csfgan.config import ConfigError
from csfgan.plan import plan, split_run_name, variant_path
from csfgan import resolved
from csfgan.report.claims import claims_path, load_claims

CSFGAN = f"PYTHONPATH={workflow.basedir}${{PYTHONPATH:+:$PYTHONPATH}} python -m csfgan"
ENV = "../../environment.yml"
SCALE = config["scale"]
DATASETS = config["datasets"]
SYNTHETIC = [d for d in DATASETS if d.startswith("synth-")]
REAL = [d for d in DATASETS if not d.startswith("synth-")]
THREADS = config["threads"]
DOWNLOADS = config.get("real_data", {}).get("downloads", "data/downloads")
MIRRORS = config.get("real_data", {}).get("urls", {})
# A mirror serving other bytes than the official files (a test's fixtures) names their MD5s; the
# prepared manifest records them.
MD5S = config.get("real_data", {}).get("md5", {})
DEVICE = config["device"]
GPUS = config["gpus_per_job"]
SCHEMAS = os.path.join(workflow.basedir, "workflow", "schemas")
resolved.read_checked(config["tables"], os.path.join(SCHEMAS, "tables.schema.yaml"))
PLAN = plan(config)
for _variant in PLAN.variants():
    resolved.read_checked(variant_path(PLAN.variants_dir, _variant), os.path.join(SCHEMAS, "variant.schema.yaml"))
CLAIMS_FILE = str(claims_path(config))
load_claims(config, PLAN)  # a typo in a row or metric stops here, before any job
RUNS = PLAN.runs()
_known_sources = {f.name for files in DATASET_FILES.values() for f in files}
for _key, _names in (("real_data.urls", MIRRORS), ("real_data.md5", MD5S)):
    if set(_names) - _known_sources:
        raise ConfigError(f"{_key}: unknown file(s) {sorted(set(_names) - _known_sources)}; the downloaded "
                          f"files are {', '.join(sorted(_known_sources))}")
# Everything is valid: record what it resolved to, where the rules can depend on it (each file is
# rewritten only when its content changes; see csfgan/resolved.py).
resolved.write_resolved(".", config, PLAN.scale, PLAN.run_configs())
RESOLVED_CONFIG = str(resolved.WORKFLOW_CONFIG)
PREPARE_CONFIG = str(resolved.PREPARE_CONFIG)
TEXT_ENCODER_CONFIG = str(resolved.TEXT_ENCODER_CONFIG)
TABLES = ["table1", "table2", "table3", "table4"]
TABLE_FORMATS = ["csv", "md", "tex"]
FIGURES = ["fig1_captions", "fig5_comparison", "fig7_ablation", "fig8_attention", "fig9_irregular"]


wildcard_constraints:
    dataset="|".join(DATASETS),
    seed=r"\d+",


def run_paths():
    return [r.path for r in RUNS]


def source_options(option, values):
    """`--url`/`--md5` options for the files of one real dataset (the config names files of both)."""

    def options(wildcards):
        names = {f.name for f in DATASET_FILES[wildcards.dataset]}
        return " ".join(f"--{option} {name}={value}" for name, value in values.items() if name in names)

    return options


def run_config(wildcards):
    return str(resolved.run_config_path(wildcards.run))


def caption_archive(wildcards):
    """Reed et al.'s caption archive of a real dataset: a manual download, so a missing one stops the
    workflow (dry run included) with where to get it and where to put it."""
    configured = config.get("real_data", {}).get("captions_archive", {}).get(wildcards.dataset)
    return str(resolve_archive(wildcards.dataset, configured, DOWNLOADS))


def run_overrides(wildcards):
    _, overrides = split_run_name(wildcards.run)
    return " ".join(f"--set {o}" for o in overrides)


def dataset_metrics(wildcards):
    return [f"{r.path}/metrics.json" for r in RUNS if r.dataset == wildcards.dataset]


def all_metrics():
    return [f"{r.path}/metrics.json" for r in RUNS]


def table_metrics(wildcards):
    return [f"{r.path}/metrics.json" for r in PLAN.runs(wildcards.table)]


def variant_target(variant):
    """Name of the target that makes one variant (`variant_word_only` for word-only)."""
    return "variant_" + "".join(c if c.isalnum() else "_" for c in variant)


def variant_metrics(variant):
    return [f"{r.path}/metrics.json" for r in RUNS if r.name == variant]


def all_targets():
    return [
        expand("results/claims.{ext}", ext=["md", "csv"]),
        expand("results/tables/{table}.{ext}", table=TABLES, ext=TABLE_FORMATS),
        expand("results/figures/{figure}_{dataset}.{ext}", figure=FIGURES, dataset=DATASETS, ext=["png", "pdf"]),
        expand("results/figures/training_curves.{ext}", ext=["png", "pdf"]),
        expand("results/figures/data_{dataset}.png", dataset=DATASETS),
    ]
