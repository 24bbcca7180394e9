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
# Pretraining, the feature network and evaluation are single-process: they get one GPU at most.
ONE_GPU = min(GPUS, 1)
TRAIN_LAUNCHER = (CSFGAN if GPUS <= 1 else
                  CSFGAN.replace("python -m csfgan",
                                 f"python -m torch.distributed.run --standalone --nproc_per_node {GPUS} -m csfgan"))
RUNTIME = config["runtime_minutes"]
MAX_RUNTIME = config["max_runtime_minutes"]


def job_minutes(kind):
    """The wall-time limit (minutes) of a job's attempt: the configured limit times the attempt, at most
    ``max_runtime_minutes`` (a partition's MaxTime). The long jobs save their state before the limit's
    SIGTERM and every few minutes, so a retried attempt continues where the last one stopped."""
    return lambda wildcards, attempt: min(RUNTIME[kind] * attempt, MAX_RUNTIME)

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


# External methods (workflow/rules/protocol.smk): the classical peers and the config's external_methods.
from csfgan.report.external import external_methods


EXTERNAL = external_methods(config)  # name -> {dataset: user's folder, or None for a peer}
PEERS = list(config["peers"])
MASKS = ["center", "irregular"]
if "telea" in PEERS:
    try:
        import cv2  # noqa: F401
    except ImportError:
        raise ConfigError('peers: telea needs OpenCV: pip install -e ".[peers]" (opencv-python-headless), or set '
                          "`peers: [biharmonic]` in the config") from None
for _name, _folders in EXTERNAL.items():
    for _dataset, _folder in _folders.items():
        if _folder is not None and not os.path.isdir(_folder):
            raise ConfigError(f"external_methods.{_name}.{_dataset}: {_folder} is not a folder; export the protocol "
                              f"(snakemake results/protocol/{_dataset}/center), run your method on it and write its "
                              f"outputs there")


# Our model beside the peers on the irregular protocol: Figure 9's run (full, the first seed) through
# `csfgan predict`, scored like any method.
OURS_IRREGULAR = [f"csfgan-full-seed{PLAN.seeds[0]}"] if any(r.name == "full" for r in RUNS) else []
SCORED = list(EXTERNAL) + OURS_IRREGULAR


def predictions_folder(wildcards):
    """A peer's or our run's outputs (made by the rules peer and predict_run), or a user's folder."""
    if wildcards.method in PEERS or wildcards.method in OURS_IRREGULAR:
        return f"results/predictions/{wildcards.dataset}/{wildcards.method}/{wildcards.mask}"
    return EXTERNAL[wildcards.method][wildcards.dataset]


def centre_scores():
    """Table 1's external rows: the centre-protocol scores of every peer and external method."""
    return [f"results/external/{d}/{name}/center/metrics.json" for name, folders in EXTERNAL.items() for d in folders]


def table_external(wildcards):
    return centre_scores() if wildcards.table == "table1" else []


def irregular_scores():
    """The irregular protocol's table: the peers and our run, on every dataset."""
    return expand("results/external/{dataset}/{method}/irregular/metrics.json", dataset=DATASETS,
                  method=PEERS + OURS_IRREGULAR)


def external_targets():
    """Every external score: the centre protocol for Table 1, the irregular protocol's table."""
    return centre_scores() + (expand("results/tables/irregular.{ext}", ext=["md", "csv"]) if irregular_scores() else [])
