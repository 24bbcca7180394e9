"""The conda environment and the package declare the same dependencies, pinned alike."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(req: str) -> str:
    return re.split(r"[\[<>=!~ ]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_environment_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    # The rules also run the Telea peer, so the environment holds the optional extra `peers` too.
    wanted = project["dependencies"] + project["optional-dependencies"]["peers"]
    assert {_name(r): r for r in wanted} == {_name(r): r for r in pip}


def test_torch_pinned_exactly():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.14.1" in deps and "torchvision==0.29.1" in deps


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "python -m pytest -x -q"
    assert command in readme and command in ci


def test_top_level_layout():
    for name in ("csfgan", "workflow", "experiments", "tests", "Snakefile", "environment.yml", "README.md"):
        assert (ROOT / name).exists(), name
