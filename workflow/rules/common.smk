# Shared names and input functions. Rules run the csfgan package from this checkout, so they work
# the same with and without --use-conda (the conda env holds the dependencies, not csfgan itself).
import os
import sys

sys.path.insert(0, workflow.basedir)

from csfgan.plan import plan, split_run_name, variant_path
from csfgan.report.claims import claims_path, load_claims

CSFGAN = f"PYTHONPATH={workflow.basedir}${{PYTHONPATH:+:$PYTHONPATH}} python -m csfgan"
ENV = "../../environment.yml"
SCALE = config["scale"]
DATASETS = config["datasets"]
SYNTHETIC = [d for d in DATASETS if d.startswith("synth-")]
REAL = [d for d in DATASETS if not d.startswith("synth-")]
THREADS = config["threads"]
DOWNLOADS = config.get("real_data", {}).get("downloads", "data/downloads")
DEVICE = config["device"]
GPUS = config["gpus_per_job"]
PLAN = plan(config)
CLAIMS_FILE = str(claims_path(config))
load_claims(config, PLAN)  # a typo in a row or metric stops here, before any job
RUNS = PLAN.runs()
TABLES = ["table1", "table2", "table3", "table4"]
TABLE_FORMATS = ["csv", "md", "tex"]
FIGURES = ["fig1_captions", "fig5_comparison", "fig7_ablation", "fig8_attention", "fig9_irregular"]


wildcard_constraints:
    dataset="|".join(DATASETS),
    seed=r"\d+",


def run_paths():
    return [r.path for r in RUNS]


def variant_file(wildcards):
    variant, _ = split_run_name(wildcards.run)
    return str(variant_path(PLAN.variants_dir, variant))


def run_overrides(wildcards):
    _, overrides = split_run_name(wildcards.run)
    return " ".join(f"--set {o}" for o in overrides)


def dataset_metrics(wildcards):
    return [f"{r.path}/metrics.json" for r in RUNS if r.dataset == wildcards.dataset]


def all_metrics():
    return [f"{r.path}/metrics.json" for r in RUNS]


def all_targets():
    return [
        expand("results/claims.{ext}", ext=["md", "csv"]),
        expand("results/tables/{table}.{ext}", table=TABLES, ext=TABLE_FORMATS),
        expand("results/figures/{figure}_{dataset}.{ext}", figure=FIGURES, dataset=DATASETS, ext=["png", "pdf"]),
        expand("results/figures/training_curves.{ext}", ext=["png", "pdf"]),
        expand("results/figures/data_{dataset}.png", dataset=DATASETS),
    ]
