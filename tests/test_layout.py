"""The code's layout (docs/development.md, "Code layout"): a package per stage, imports that go one
way (the import-linter contract in pyproject.toml, run by scripts/test), files that read as one idea."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "ragcli"
MAX_MODULE_LINES = 700
MAX_CLASS_LINES = 400
FOUNDATIONS = {"__init__", "__main__", "api", "settings", "errors", "models", "ids", "paths", "text",
               "schema", "cpu"}
STAGES = {"ingest", "store", "search", "runtimes", "answer", "audit", "evaluate", "cli"}


def lint_imports() -> str | None:
    found = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    return found if Path(found).is_file() else None


def test_no_module_over_700_lines_and_no_class_over_400() -> None:
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        name = path.relative_to(ROOT)
        if source.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None \
                    and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                too_long.append(f"{name}: class {node.name}, {node.end_lineno - node.lineno + 1} lines")
    assert too_long == []


def test_the_root_holds_the_foundations_and_a_package_per_stage() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert modules == FOUNDATIONS
    assert packages == STAGES
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    layered = {name.strip() for layer in contract["layers"] for name in layer.replace(":", "|").split("|")}
    assert layered == (FOUNDATIONS | STAGES) - {"__init__"}


@pytest.mark.skipif(lint_imports() is None, reason="import-linter is not installed (pip install -e '.[dev]')")
def test_the_layered_contract_fails_on_an_upward_import(tmp_path: Path) -> None:
    """The contract scripts/test runs: kept on the code as it is, broken by a store module that
    imports the CLI (a lower layer reaching up), and broken by a loop inside a package."""
    copy = tmp_path / "project"
    shutil.copytree(PACKAGE, copy / "ragcli", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")

    def lint() -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(lint_imports()), "--no-cache"], cwd=copy, capture_output=True,
                              text=True, timeout=300, env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"})

    kept = lint()
    assert kept.returncode == 0, kept.stdout + kept.stderr
    verify = copy / "ragcli" / "store" / "verify.py"
    original = verify.read_text()
    verify.write_text(original + "\n\ndef _bad() -> None:\n    from ..cli import render  # noqa\n")
    broken = lint()
    assert broken.returncode != 0
    assert "ragcli.store.verify -> ragcli.cli.render" in broken.stdout
    verify.write_text(original)
    spans = copy / "ragcli" / "answer" / "spans.py"
    spans.write_text(spans.read_text() + "\n\ndef _loop() -> None:\n    from . import reading  # noqa\n")
    looped = lint()
    assert looped.returncode != 0
    assert "BROKEN" in looped.stdout and "ragcli.answer" in looped.stdout
