"""The package's layers, read from the source with ``ast`` (every import statement, also those inside
functions): the networks do not depend on the data layer, and only the command line depends on the
training loop, so that evaluation, reporting and benchmarking can change without it and it without them."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

# The source beside these tests, whatever copy of csfgan is installed.
PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "csfgan"


@dataclass(frozen=True)
class Violation:
    path: str  # relative to the folder holding the package, e.g. csfgan/models/text.py
    module: str  # the importing module, e.g. csfgan.models.text
    line: int
    imported: str  # the module it imports from, e.g. csfgan.data.text
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.module} imports {self.imported} ({self.rule})"


def module_name(path: Path, root: Path) -> str:
    """``csfgan/models/text.py`` -> ``csfgan.models.text``; a package's ``__init__.py`` -> the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, module) for every import in ``path``: ``import a.b`` gives ``a.b``; ``from a import b``
    gives ``a`` and ``a.b`` (``b`` may be a submodule); relative imports are resolved against ``module``."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.append((node.lineno, source))
            found += [(node.lineno, f"{source}.{alias.name}") for alias in node.names if alias.name != "*"]
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def layering_violations(root: Path, package: str = "csfgan") -> list[Violation]:
    """Every import under ``root/package`` that breaks one of the two rules, once per statement."""
    rules = [
        # (rule, does it apply to the importing module, is the imported module forbidden to it)
        ("a network imports the data layer",
         lambda mod: _within(mod, f"{package}.models"), lambda imp: _within(imp, f"{package}.data")),
        ("only the command line may import the training loop",
         lambda mod: mod not in (f"{package}.train", f"{package}.cli"), lambda imp: _within(imp, f"{package}.train")),
    ]
    out: list[Violation] = []
    for path in sorted((root / package).rglob("*.py")):
        module = module_name(path, root)
        seen: set[tuple[int, str]] = set()
        for line, imported in imported_modules(path, module):
            for rule, applies, forbidden in rules:
                if applies(module) and forbidden(imported) and (line, rule) not in seen:
                    seen.add((line, rule))
                    out.append(Violation(path.relative_to(root).as_posix(), module, line, imported, rule))
    return out


def test_the_package_keeps_its_layers():
    violations = layering_violations(PACKAGE_ROOT.parent)
    assert not violations, "layering broken:\n" + "\n".join(map(str, violations))


def test_the_checker_sees_the_modules_it_should():
    """Not vacuous: the real package's own imports are read (the networks import csfgan.config, the
    command line imports csfgan.train inside a function)."""
    text = PACKAGE_ROOT / "models" / "text.py"
    assert any(m == "csfgan.config" for _, m in imported_modules(text, "csfgan.models.text"))
    cli = imported_modules(PACKAGE_ROOT / "cli.py", "csfgan.cli")
    assert any(m == "csfgan.train" for _, m in cli)


def test_a_violating_import_is_reported_with_its_module_and_line(tmp_path):
    pkg = tmp_path / "csfgan"
    for folder in (pkg, pkg / "models", pkg / "data", pkg / "report"):
        folder.mkdir(exist_ok=True)
        (folder / "__init__.py").write_text("")
    (pkg / "data" / "text.py").write_text("PAD_ID = 0\n")
    (pkg / "train.py").write_text("from csfgan.data.text import PAD_ID\nGENERATOR_KIND = 'g'\n")
    # Allowed: the command line and the training loop itself.
    (pkg / "cli.py").write_text("def main():\n    from csfgan.train import GENERATOR_KIND\n")
    (pkg / "models" / "good.py").write_text("from csfgan.config import TextConfig\n")
    (pkg / "models" / "text.py").write_text(
        '"""A network."""\n'
        "\n"
        "from csfgan.data.text import PAD_ID\n"  # line 3
        "\n"
        "\n"
        "def vocab():\n"
        "    from ..data import text\n"  # line 7: relative, inside a function
        "    return text\n"
    )
    (pkg / "models" / "__init__.py").write_text("import csfgan.data\n")  # line 1
    (pkg / "evaluate.py").write_text(
        "import torch\n"
        "\n"
        "\n"
        "def load():\n"
        "    import csfgan.train as t\n"  # line 5
        "    return t.GENERATOR_KIND\n"
    )
    (pkg / "report" / "tables.py").write_text("from csfgan import train\n")  # line 1: csfgan.train by name

    found = sorted((v.module, v.line, v.imported) for v in layering_violations(tmp_path))
    assert found == [
        ("csfgan.evaluate", 5, "csfgan.train"),
        ("csfgan.models", 1, "csfgan.data"),
        ("csfgan.models.text", 3, "csfgan.data.text"),
        ("csfgan.models.text", 7, "csfgan.data"),
        ("csfgan.report.tables", 1, "csfgan.train"),
    ]
    message = str(next(v for v in layering_violations(tmp_path) if v.line == 3))
    assert message == ("csfgan/models/text.py:3: csfgan.models.text imports csfgan.data.text "
                       "(a network imports the data layer)")
