"""Hygiene: owner-only files, and no network traffic (telemetry) from any dependency."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HANDBOOK, ROOT

TESTS = Path(__file__).resolve().parent


def run(script: str, *args: str, env: dict[str, str], cwd: Path, prefix: list[str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    umask = ["sh", "-c", 'umask 022 && exec "$@"', "sh"]  # a permissive umask to start from
    return subprocess.run([*(prefix or []), *umask, sys.executable, str(TESTS / script), *args],
                          capture_output=True, text=True, cwd=cwd, timeout=900,
                          env={**os.environ, **env})


def test_store_audit_and_reports_are_owner_only(tmp_path: Path) -> None:
    env = {"RAGCLI_EMBEDDER": "test-hash", "RAGCLI_STORE": str(tmp_path / "data" / "store"),
           "RAGCLI_AUDIT": str(tmp_path / "state" / "audit.sqlite3"), "RAGCLI_MIN_CONFIDENCE": "0.3"}
    golden = tmp_path / "g.jsonl"
    golden.write_text(json.dumps({"id": "a", "question": "How many weeks of parental leave?"}) + "\n")
    for args in (["ingest", str(HANDBOOK)], ["ask", "How many weeks of parental leave?", "--mode",
                 "extractive"], ["eval", str(golden), "--mode", "extractive", "--junit",
                 str(tmp_path / "reports" / "junit.xml")]):
        (tmp_path / "reports").mkdir(exist_ok=True)
        result = run("run_with_fakes.py", *args, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    checked = 0
    for top in (tmp_path / "data" / "store", tmp_path / "state", tmp_path / "reports" / "junit.xml"):
        for path in [top, *top.rglob("*")]:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
            checked += 1
    assert checked > 20  # the store's data, version and index files, the audit log and its WAL


@pytest.mark.real
def test_ask_and_eval_make_no_network_attempt(tmp_path: Path) -> None:
    """A full generative ask and an eval with ragas metrics, real embedder and model."""
    log = tmp_path / "net.jsonl"
    env = {"RAGCLI_NET_LOG": str(log), "RAGCLI_STORE": str(tmp_path / "store"),
           "RAGCLI_AUDIT": str(tmp_path / "audit.sqlite3"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "RAGAS_DO_NOT_TRACK"):
        env[name] = ""  # ragcli itself must switch these off, not the test's environment
    isolated = shutil.which("unshare") and subprocess.run(
        ["unshare", "-rn", "true"], capture_output=True).returncode == 0
    prefix = ["unshare", "-rn"] if isolated else []
    probe = run("run_without_network.py", "--probe", env=env, cwd=tmp_path, prefix=prefix)
    assert probe.returncode == 0 and log.read_text().count("\n") >= 1  # the guard sees traffic
    log.unlink()
    golden = tmp_path / "g.jsonl"
    golden.write_text("".join(json.dumps(c) + "\n" for c in (
        {"id": "leave", "question": "How many weeks of paid parental leave do non-birthing parents get?",
         "expected_docs": ["hr/parental-leave.md"], "expected_answers": ["16 weeks"]},
        {"id": "absent", "question": "What is the stock price of Kestrel?", "must_refuse": True})))
    for args in (["ingest", str(HANDBOOK)],
                 ["ask", "How long is a final written warning valid?", "--groups", "hr", "--json"],
                 ["eval", str(golden), "--json"]):
        result = run("run_without_network.py", *args, env=env, cwd=ROOT, prefix=prefix)
        assert result.returncode == 0, result.stderr[-2000:]
    assert not log.exists(), log.read_text()[:2000]
    metrics = json.loads(result.stdout)["metrics"]
    assert "ragas_id_context_recall" in metrics  # ragas really ran


def test_reference_tables_in_docs_match_the_code(tmp_path: Path) -> None:
    """docs/configuration.md and docs/exit-codes.md hold tables generated from the code; the
    check scripts/test runs passes on the repository and fails once a table drifts."""
    script = [sys.executable, str(ROOT / "scripts" / "reference.py"), "--check"]
    assert subprocess.run(script, capture_output=True).returncode == 0
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    page = docs / "exit-codes.md"
    page.write_text(page.read_text().replace("| 8 | LOCKED |", "| 8 | BUSY |"))
    out = subprocess.run([*script, "--docs", str(docs)], capture_output=True, text=True)
    assert out.returncode == 1 and "exit-codes.md out of date" in out.stderr
