"""External rows of Table 1: folders of outputs scored by ``csfgan score`` under the centre protocol.

Two kinds, both named in the workflow config and scored by the same rule:

* ``peers`` (default ``[biharmonic, telea]``): the training-free classical methods of
  :mod:`csfgan.protocol.peers`, run by the workflow on every dataset through export -> ``csfgan peer`` ->
  ``csfgan score``, exactly a user's path;
* ``external_methods: {NAME: {DATASET: FOLDER}}``: a user's folders of outputs, one per dataset.

Each is read from ``results/external/<dataset>/<name>/center/`` (metrics.json, eval/per_image.npz). Inside
the tables an external row is the run ``external:<name>`` with the same metrics for every planned seed:
one set of outputs is fixed, so a paired comparison with one of our rows (image by image, seed by seed)
keeps exactly our row's seed and image variation, and between two external rows the seed part is zero
and the interval covers the test images only. The row's own ± is its bootstrap over test images
(1.96 × the bootstrap SE that ``score`` records).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from csfgan.config import ConfigError

PREFIX = "external:"
MASK = "center"  # Table 1's protocol


def external_methods(config: dict[str, Any]) -> dict[str, dict[str, str | None]]:
    """name -> {dataset: the user's predictions folder, or None for a peer (the workflow makes its folder)},
    over the config's datasets; a bad name, a peer's name, or a dataset the config lacks stops here."""
    from csfgan.protocol.peers import PEERS
    from csfgan.protocol.score import check_name

    datasets = list(config["datasets"])
    out: dict[str, dict[str, str | None]] = {}
    for peer in config.get("peers") or []:
        if peer not in PEERS:
            raise ConfigError(f"peers: unknown peer {peer!r}; known: {', '.join(PEERS)}")
        out[peer] = {d: None for d in datasets}
    for name, folders in (config.get("external_methods") or {}).items():
        check_name(name, "external_methods:")
        if name in PEERS:
            raise ConfigError(f"external_methods: {name!r} is the name of a peer the workflow runs; name yours "
                              f"otherwise")
        if not isinstance(folders, dict) or not folders:
            raise ConfigError(f"external_methods.{name}: give {{dataset: predictions folder}}, e.g. "
                              f"{{{datasets[0]}: predictions/{name}/{datasets[0]}}}")
        unknown = sorted(set(folders) - set(datasets))
        if unknown:
            raise ConfigError(f"external_methods.{name}: dataset(s) {unknown} are not in the config's datasets "
                              f"{datasets}")
        out[name] = {d: str(folders[d]) for d in datasets if d in folders}
    return out


def external_dir(dataset: str, name: str, mask: str = MASK) -> Path:
    return Path("results") / "external" / dataset / name / mask


def is_external(run_name: str) -> bool:
    return run_name.startswith(PREFIX)


def read_external(root: Path, dataset: str, name: str) -> dict[str, Any]:
    from csfgan.report.tables import ReportError

    path = Path(root) / external_dir(dataset, name) / "metrics.json"
    if not path.is_file():
        raise ReportError(f"{path}: missing scores of external method {name!r} on {dataset}; run `csfgan score "
                          f"--name {name} ...` (or the Snakemake DAG) first")
    try:
        metrics = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: unreadable ({exc}); score {name!r} again") from exc
    if not metrics.get("external") or metrics.get("protocol") != "csfgan-center" or metrics.get("dataset") != dataset:
        raise ReportError(f"{path}: not the centre-protocol scores of an external method on {dataset} (protocol "
                          f"{metrics.get('protocol')!r}, dataset {metrics.get('dataset')!r}); score it again")
    return metrics


def label(name: str, metrics: dict[str, Any]) -> str:
    from csfgan.protocol.peers import LABELS

    text = LABELS.get(name, name) + " (external"
    if metrics.get("composited_by_scorer") and metrics.get("composited_files"):
        text += f"; known pixels of {metrics['composited_files']} outputs pasted by the scorer"
    return text + ")"
