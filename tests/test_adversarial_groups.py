"""Group names and users with quotes, SQL syntax, wildcards and non-ASCII, through ask, eval and
replay: never a leak, and at worst one clear line with a documented exit code."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import reseal_from
from fakes import HashEmbedder
from ragcli.cli.app import app
from ragcli.errors import ExitCode
from ragcli.search.retrieval import search_legs
from ragcli.store.store import Store

runner = CliRunner()
HOSTILE = ["x') OR true --", "'", "hr'", "%", "hr' OR 'a'='a", "groupé", "hr,finance'", "a b",
           "x\\", '"hr"', "array_has_any(acl, ['hr'])"]
SALARY = "What is the maximum salary of an L5 Staff Engineer in the salary bands?"


@pytest.fixture(autouse=True)
def store(handbook_store: Path, cli_env: dict[str, str]) -> Path:
    return Path(cli_env["RAGCLI_STORE"])


@pytest.mark.parametrize("group", HOSTILE)
def test_a_hostile_group_is_one_clear_error(group: str) -> None:
    result = runner.invoke(app, ["ask", SALARY, "--mode", "extractive", "--groups", group, "--json"])
    assert result.exit_code == ExitCode.USAGE
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ragcli: error: invalid group name")


@pytest.mark.parametrize("user", HOSTILE)
def test_a_hostile_user_is_only_recorded(user: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["ask", SALARY, "--mode", "extractive", "--user", user, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert all(h["doc_id"] != "hr/salary-bands.md" for h in data["retrieved"])
    assert "126,000" not in data["answer"]
    shown = runner.invoke(app, ["traces", "show", data["request_id"], "--json"])
    assert json.loads(shown.stdout)["user"] == user
    listed = runner.invoke(app, ["traces", "--user", user, "--json"])
    assert [r["request_id"] for r in json.loads(listed.stdout)] == [data["request_id"]]


@pytest.mark.parametrize("group", HOSTILE)
def test_the_filter_itself_holds_when_validation_is_bypassed(store: Path, group: str) -> None:
    """Defence in depth: the search filter quotes whatever it is given."""
    legs = search_legs(Store.open(store), HashEmbedder(), SALARY, ("public", group), 50)
    assert legs.fetch is not None  # a local store: the legs return ids, fetch reads the rows
    docs = {r["doc_id"] for r in legs.fetch([r["chunk_id"] for r in
                                             legs.vector_rows + legs.fts_rows]).values()}
    assert docs and "hr/salary-bands.md" not in docs and "hr/disciplinary-procedure.md" not in docs


@pytest.mark.parametrize("group", HOSTILE)
def test_a_golden_set_with_a_hostile_group_names_its_line(group: str, tmp_path: Path) -> None:
    goldens = tmp_path / "g.jsonl"
    goldens.write_text(json.dumps({"id": "a", "question": SALARY, "groups": [group]}) + "\n")
    result = runner.invoke(app, ["eval", str(goldens), "--mode", "extractive"])
    assert result.exit_code == ExitCode.INPUT
    assert f"g.jsonl:1: invalid group name {group!r}" in result.stderr


def test_a_tampered_record_is_not_replayed_with_its_groups(tmp_path: Path) -> None:
    asked = runner.invoke(app, ["ask", SALARY, "--mode", "extractive", "--json"])
    request_id = json.loads(asked.stdout)["request_id"]
    with sqlite3.connect(tmp_path / "audit.sqlite3") as connection:
        record = json.loads(connection.execute("SELECT record FROM traces WHERE request_id = ?",
                                               (request_id,)).fetchone()[0])
        record["groups"] = ["x') OR true --"]
        connection.execute("UPDATE traces SET record = ? WHERE request_id = ?",
                           (json.dumps(record), request_id))
        seq = connection.execute("SELECT seq FROM traces WHERE request_id = ?",
                                 (request_id,)).fetchone()[0]
    refused = runner.invoke(app, ["replay", request_id, "--json"])
    assert refused.exit_code == ExitCode.AUDIT_TAMPERED and "was edited" in refused.stderr
    reseal_from(tmp_path / "audit.sqlite3", seq)  # a forger who recomputes the unkeyed chain
    result = runner.invoke(app, ["replay", request_id, "--json"])
    assert result.exit_code == ExitCode.USAGE
    assert result.stderr.strip().startswith("ragcli: error: invalid group name")
    assert "126,000" not in result.stdout


@pytest.mark.parametrize("user", HOSTILE)
def test_a_hostile_user_through_eval_and_replay(user: str, tmp_path: Path) -> None:
    goldens = tmp_path / "g.jsonl"
    goldens.write_text(json.dumps({"id": "a", "question": SALARY, "user": user,
                                   "forbidden_docs": ["hr/salary-bands.md"]}) + "\n")
    evaluated = runner.invoke(app, ["eval", str(goldens), "--mode", "extractive", "--json"])
    assert evaluated.exit_code == 0, evaluated.output  # no leak, no error
    asked = runner.invoke(app, ["ask", SALARY, "--mode", "extractive", "--user", user, "--json"])
    replayed = runner.invoke(app, ["replay", json.loads(asked.stdout)["request_id"], "--json"])
    assert replayed.exit_code == 0 and json.loads(replayed.stdout)["identical"]
