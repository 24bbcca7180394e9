"""Which runs a workflow config asks for: the one place that turns tables.yaml into training jobs.

A run is named by its variant, plus ``--SECTION.KEY=VALUE`` for a sweep point, e.g.
``full--loss.edge=0.1``; its directory is ``results/runs/<dataset>/<name>/seed<k>``. A sweep point
equal to the variant's own value is the variant's run itself (λ_edge = 0.5 *is* the full model), so
it is trained once. The Snakefile calls :func:`plan` at parse time, so a table naming a missing
variant or a bad sweep fails before any job runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csfgan.config import (
    REPO_ROOT,
    ConfigError,
    ScaleConfig,
    apply_variant,
    load_scale,
    load_variant,
    parse_overrides,
)
from csfgan.resolved import read_checked

TABLES = ("table1", "table2", "table3", "table4")
SWEEP_SEP = "--"


@dataclass(frozen=True)
class RunId:
    dataset: str
    name: str
    seed: int

    @property
    def path(self) -> str:
        return f"results/runs/{self.dataset}/{self.name}/seed{self.seed}"


def split_run_name(name: str) -> tuple[str, list[str]]:
    """``full--loss.edge=0.1`` -> ("full", ["loss.edge=0.1"])."""
    variant, *overrides = name.split(SWEEP_SEP)
    return variant, overrides


def format_value(value: Any) -> str:
    """A sweep value as run names and claims spell it: numbers as floats (``0.5``, ``1.0``)."""
    return repr(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _current_value(cfg: ScaleConfig, dotted: str) -> Any:
    value: Any = cfg
    for key in dotted.split("."):
        value = getattr(value, key)
    return value


@dataclass
class Plan:
    scale: ScaleConfig
    datasets: list[str]
    seeds: list[int]
    tables: dict[str, dict[str, Any]]
    variants_dir: Path
    # table -> dataset -> row label -> run name
    rows: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    # table -> row labels that are controls (tables.yaml `controls`): rendered under the main rows,
    # never the best of a block
    controls: dict[str, list[str]] = field(default_factory=dict)

    def runs(self, table: str | None = None) -> list[RunId]:
        names = {
            (dataset, name)
            for t, per_dataset in self.rows.items()
            if table is None or t == table
            for dataset, rows in per_dataset.items()
            for name in rows.values()
        }
        return [RunId(d, n, s) for d, n in sorted(names) for s in self.seeds]

    def variants(self) -> list[str]:
        return sorted({split_run_name(r.name)[0] for r in self.runs()})

    def run_config(self, name: str) -> ScaleConfig:
        """The fully resolved config of run ``name``: scale, then its variant, then its overrides."""
        variant, overrides = split_run_name(name)
        path = variant_path(self.variants_dir, variant)
        cfg = apply_variant(self.scale, load_variant(path), str(path))
        return parse_overrides(cfg, overrides, f"run {name}")

    def run_configs(self) -> dict[str, ScaleConfig]:
        """Every planned run's resolved config, by run name (the same for every dataset and seed)."""
        return {name: self.run_config(name) for name in sorted({r.name for r in self.runs()})}


def plan(config: dict[str, Any], root: Path | str = ".") -> Plan:
    """The runs and table rows of a workflow config; paths in it are relative to ``root`` (the
    workflow's working directory)."""
    root = Path(root)
    scale = load_scale(config["scale"])
    variants_dir = root / config.get("variants_dir", "experiments/variants")
    tables_path = root / config.get("tables", "experiments/tables.yaml")
    # The schema the workflow checks it with (an unknown key or `control:` for `controls:` would
    # otherwise make rows vanish from the CLI's tables).
    tables = read_checked(tables_path, REPO_ROOT / "workflow" / "schemas" / "tables.schema.yaml")
    unknown = set(tables) - set(TABLES)
    if unknown:
        raise ConfigError(f"{tables_path}: unknown table(s) {sorted(unknown)}; known: {', '.join(TABLES)}")
    out = Plan(scale, list(config["datasets"]), list(config.get("seeds", [0])), tables, variants_dir)
    for table in TABLES:
        spec = tables.get(table)
        if spec is None:
            raise ConfigError(f"{tables_path}: {table} is missing")
        where = f"{tables_path}: {table}"
        if table == "table4":
            out.rows[table] = _sweep_rows(spec, scale, out.datasets, variants_dir, where)
        else:
            variants = spec.get("variants")
            if not variants or not isinstance(variants, list):
                raise ConfigError(f"{where}: needs a non-empty list `variants`")
            controls = spec.get("controls", [])
            if not isinstance(controls, list) or set(controls) & set(variants):
                raise ConfigError(f"{where}: `controls` must be a list of variants not already in `variants`")
            for v in variants + controls:
                # Applied to the scale now, so an out-of-range value fails before any job runs.
                apply_variant(scale, _load(v, variants_dir, where), str(variant_path(variants_dir, v)))
            out.rows[table] = {d: {v: v for v in variants + controls} for d in out.datasets}
            out.controls[table] = list(controls)
    out.run_configs()  # every run resolved and range-checked now, before any job
    return out


def variant_path(variants_dir: Path, name: str) -> Path:
    return Path(variants_dir) / f"{name}.yaml"


def _load(variant: str, variants_dir: Path, where: str):
    path = variant_path(variants_dir, variant)
    if not path.is_file():
        known = sorted(p.stem for p in Path(variants_dir).glob("*.yaml"))
        raise ConfigError(f"{where}: no variant {variant!r} ({path} does not exist); known: {', '.join(known)}")
    loaded = load_variant(path)
    if loaded.name != variant:
        raise ConfigError(f"{path}: its name is {loaded.name!r}; a variant file's name must match the file name")
    if SWEEP_SEP in variant:
        raise ConfigError(f"{path}: a variant name may not contain {SWEEP_SEP!r}")
    return loaded


def _sweep_rows(spec: dict[str, Any], scale: ScaleConfig, datasets: list[str], variants_dir: Path,
                where: str) -> dict:
    for key in ("variant", "parameter", "values"):
        if key not in spec:
            raise ConfigError(f"{where}: a sweep needs `{key}`")
    base = apply_variant(scale, _load(spec["variant"], variants_dir, where))
    dotted = spec["parameter"]
    if "." not in dotted or dotted.split(".", 1)[0] not in {f.name for f in dataclasses.fields(ScaleConfig)}:
        raise ConfigError(f"{where}: parameter {dotted!r} must be SECTION.KEY, e.g. loss.edge")
    try:
        current = _current_value(base, dotted)
    except AttributeError:
        raise ConfigError(f"{where}: unknown parameter {dotted!r}") from None
    rows = {}
    for value in spec["values"]:
        item = f"{dotted}={format_value(value)}"
        parse_overrides(base, [item], where)  # validates type and range (e.g. a negative λ)
        same = isinstance(value, (int, float)) and float(value) == float(current) or value == current
        rows[format_value(value)] = spec["variant"] if same else f"{spec['variant']}{SWEEP_SEP}{item}"
    chosen = spec.get("datasets", "first")
    if chosen == "first":
        chosen = datasets[:1]
    elif chosen == "all":
        chosen = datasets
    elif not isinstance(chosen, list) or not set(chosen) <= set(datasets):
        raise ConfigError(f"{where}: datasets must be 'first', 'all' or a list of the config's datasets {datasets}")
    return {d: dict(rows) for d in chosen}
