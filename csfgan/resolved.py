"""What the workflow resolved at parse time, written where its rules can depend on it.

Snakemake decides what to re-run from the files a job reads (and their modification times), its
params and its code. A run's weights depend on more than the file names a rule sees: on the scale's
values, the variant's values and a sweep point's override. So the Snakefile writes, at parse time,

    results/config/workflow.yaml           the config it resolved (every --configfile and --config)
    results/config/prepare.yaml            what a dataset preparation depends on
    results/config/text_encoder.yaml       what DAMSM pretraining depends on
    results/config/runs/<run>.yaml         one training run's fully resolved scale + variant + overrides

and makes each an input of the rules it concerns. A file is rewritten only when its content
changes, so its modification time means "this changed": an edited variant re-runs its own
training and what follows it, an edited scale value re-runs what uses that value, and nothing else.

Also here: the YAML reading of tables.yaml and variant files against their JSON schemas
(workflow/schemas/), with duplicated keys refused (PyYAML would keep the last one silently).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from csfgan.config import ConfigError, ScaleConfig, load_yaml_file, to_dict
from csfgan.io import write_text

CONFIG_DIR = Path("results/config")
WORKFLOW_CONFIG = CONFIG_DIR / "workflow.yaml"
PREPARE_CONFIG = CONFIG_DIR / "prepare.yaml"
TEXT_ENCODER_CONFIG = CONFIG_DIR / "text_encoder.yaml"
RUNS_DIR = CONFIG_DIR / "runs"


def run_config_path(run: str) -> Path:
    return RUNS_DIR / f"{run}.yaml"


def dump(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=True, default_flow_style=False)


def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` (atomically) unless it already holds exactly that; True if written."""
    path = Path(path)
    if path.is_file() and path.read_text() == text:
        return False
    write_text(path, text)
    return True


def prepare_settings(scale: ScaleConfig) -> dict[str, Any]:
    """The scale values a prepared dataset depends on (see csfgan.data: resolution, data, caption length)."""
    return {"resolution": scale.resolution, "data": to_dict(scale.data), "max_words": scale.text.max_words}


def text_encoder_settings(scale: ScaleConfig) -> dict[str, Any]:
    """The scale values DAMSM pretraining depends on (csfgan.damsm.pretrain_text)."""
    return {"resolution": scale.resolution, "text": to_dict(scale.text), "caption_seed": scale.eval.caption_seed}


def write_resolved(root: Path, config: dict[str, Any], scale: ScaleConfig, runs: dict[str, ScaleConfig]) -> list[Path]:
    """Write the workflow config, the preparation and pretraining settings and each run's resolved
    config under ``root``; return the files that changed."""
    files = {
        WORKFLOW_CONFIG: dump(config),
        PREPARE_CONFIG: dump(prepare_settings(scale)),
        TEXT_ENCODER_CONFIG: dump(text_encoder_settings(scale)),
        **{run_config_path(name): dump(to_dict(cfg)) for name, cfg in runs.items()},
    }
    return [path for path, text in files.items() if write_if_changed(Path(root) / path, text)]


# --------------------------------------------------------------------------------------------
# Schema-checked YAML


def read_checked(path: Path, schema_path: Path) -> dict[str, Any]:
    """``path`` parsed as YAML (no duplicated keys) and validated against the JSON schema at
    ``schema_path``; a ConfigError names the file, the key path and the rule broken."""
    import jsonschema

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    data = load_yaml_file(path)
    schema = yaml.safe_load(Path(schema_path).read_text())
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(data))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "top level"
        raise ConfigError(f"{path}: {where}: {error.message} (schema {schema_path})")
    return data
