"""The public API: the names ragcli exports, and docs/library.md's example run as written, with
the real embedder and model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ragcli

ROOT = Path(__file__).resolve().parent.parent


def test_the_exported_names_resolve_and_help_lists_them() -> None:
    assert set(ragcli.__all__) == set(ragcli._WHERE) | {"__version__"}
    for name in ragcli.__all__:
        assert getattr(ragcli, name) is not None, name
    assert ragcli.__version__ == re.search(r'^version = "([^"]+)"',
                                           (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    doc = ragcli.__doc__ or ""
    for name in set(ragcli.__all__) - {"__version__"}:
        assert name in doc, f"{name} is exported but help(ragcli) does not mention it"
    with pytest.raises(AttributeError):
        ragcli.no_such_name  # noqa: B018


def test_import_ragcli_loads_no_heavy_module() -> None:
    code = ("import sys, ragcli; ragcli.Settings; ragcli.load_settings; "
            "heavy = [m for m in ('torch', 'lance', 'lancedb', 'llama_cpp', 'onnxruntime', 'ragas', "
            "'typer', 'rich') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_library_example_runs_as_written(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "library.md").read_text(encoding="utf-8")
    block = re.search(r"```python\n(.*?)```", text, re.S)
    assert block is not None
    script = tmp_path / "example.py"
    script.write_text(block.group(1), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGCLI_")}
    out = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True,
                         env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0].endswith("chunks") and int(lines[0].split()[0]) > 0
    assert lines[1].startswith("16 weeks |")
    assert any(line.endswith("-> 55 EUR") for line in lines)
    assert any(line.startswith("string presence ") and line.endswith("leaks 0") for line in lines)
    assert lines[-1].startswith("error, exit code ") and "no ragcli store" in lines[-1]
