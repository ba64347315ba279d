"""ACLs that fail closed: the same groups for a document whether its corpus root, a subdirectory,
the file itself or a cron reindex of a subdirectory was given; pending ACL changes in status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import ask_json
from ragcli.cli.app import app
from ragcli.ingest.sources import AclResolver, load_documents

runner = CliRunner()
SECRET = "The settlement with Northwind is 4.2 million EUR, payable in March."


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    for name, text in {
        "acl.toml": '"legal/*" = ["legal"]\n"data/rows.jsonl#secret-*" = ["finance"]\n',
        "legal/settlement.md": f"# Settlement\n\n{SECRET}\n",
        "legal/deep/memo.md": "# Memo\n\nThe Northwind memo is confidential legal advice.\n",
        "legal/open/acl.toml": 'default = ["public"]\n',  # a nearer file refines a farther one
        "legal/open/notice.md": "# Notice\n\nThe Northwind notice is published for everyone.\n",
        "legal/override.md": "---\nacl: [board]\n---\n# Board\n\nNorthwind board minutes.\n",
        "handbook/lunch.md": "# Lunch\n\nLunch is served at noon in the Northwind room.\n",
        "data/rows.jsonl": '{"_id": "secret-1", "title": "Northwind deal", "text": "Deal value 9 M."}\n'
                           '{"_id": "open-1", "title": "Northwind office", "text": "Office in Leeds."}\n',
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


EXPECTED = {"legal/settlement.md": ("legal",), "legal/deep/memo.md": ("legal",),
            "legal/open/notice.md": ("public",), "legal/override.md": ("board",),
            "handbook/lunch.md": ("public",), "data/rows.jsonl#secret-1": ("finance",),
            "data/rows.jsonl#open-1": ("public",)}


def acls(paths: list[Path], corpus: Path) -> dict[str, tuple[str, ...]]:
    """Path relative to the corpus (and #row for JSONL) -> groups, however the paths were given."""
    out = {}
    for doc in load_documents(paths).documents:
        file, _, row = doc.source.partition("#")
        key = Path(file).relative_to(corpus).as_posix() + (f"#{row}" if row else "")
        out[key] = doc.acl
    return out


def test_acl_is_the_same_however_the_path_is_given(corpus: Path) -> None:
    whole = acls([corpus], corpus)
    assert whole == EXPECTED
    assert acls([corpus / "legal"], corpus) == {k: v for k, v in EXPECTED.items()
                                                if k.startswith("legal/")}
    assert acls([corpus / "legal" / "deep"], corpus) == {"legal/deep/memo.md": ("legal",)}
    assert acls([corpus / "legal" / "settlement.md"], corpus) == {"legal/settlement.md": ("legal",)}
    assert acls([corpus / "data" / "rows.jsonl"], corpus) == {
        k: v for k, v in EXPECTED.items() if k.startswith("data/")}


def test_rules_name_the_rule_that_decided(corpus: Path) -> None:
    result = runner.invoke(app, ["acl", str(corpus / "legal"), "--json"])
    assert result.exit_code == 0, result.output
    rules = {r["doc_id"]: r["rule"] for r in json.loads(result.stdout)["documents"]}
    assert rules["settlement.md"] == f'{corpus / "acl.toml"}: "legal/*"'
    assert rules["open/notice.md"] == f'{corpus / "legal" / "open" / "acl.toml"}: default'
    assert rules["override.md"] == "front matter"


def test_root_true_stops_the_search_and_default_acl_applies(tmp_path: Path, corpus: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "acl.toml").write_text('"*" = ["outsiders"]\n')  # above the corpus
    assert AclResolver().resolve(corpus / "handbook" / "lunch.md").groups == ("outsiders",)
    (corpus / "acl.toml").write_text("root = true\n" + (corpus / "acl.toml").read_text())
    assert AclResolver().resolve(corpus / "handbook" / "lunch.md").groups == ("public",)
    assert AclResolver(("staff",)).resolve(corpus / "handbook" / "lunch.md").groups == ("staff",)
    monkeypatch.setenv("RAGCLI_DEFAULT_ACL", "staff,ops")
    result = runner.invoke(app, ["acl", str(corpus / "handbook"), "--json"])
    assert json.loads(result.stdout)["documents"][0]["groups"] == ["ops", "staff"]


@pytest.mark.parametrize("how", ["root", "subdirectory", "file", "reindex-subdirectory"])
def test_restricted_document_stays_restricted(corpus: Path, how: str,
                                              cli_env: dict[str, str]) -> None:
    target = {"root": corpus, "subdirectory": corpus / "legal",
              "file": corpus / "legal" / "settlement.md",
              "reindex-subdirectory": corpus / "legal"}[how]
    command = "reindex" if how.startswith("reindex") else "ingest"
    if how == "reindex-subdirectory":
        assert runner.invoke(app, ["ingest", str(corpus)]).exit_code == 0
    result = runner.invoke(app, [command, str(target)])
    assert result.exit_code == 0, result.output
    question = "How much is the settlement with Northwind?"
    denied = ask_json(question)
    shown = json.dumps(denied)
    assert "settlement.md" not in shown and "4.2 million" not in shown
    allowed = ask_json(question, "legal")
    assert any(h["doc_id"].endswith("settlement.md") for h in allowed["retrieved"])


def test_status_reports_a_pending_acl_change(corpus: Path, cli_env: dict[str, str]) -> None:
    assert runner.invoke(app, ["ingest", str(corpus)]).exit_code == 0
    clean = json.loads(runner.invoke(app, ["status", "--json"]).stdout)["staleness"]
    assert clean["acl_changed"] == 0 and not clean["stale"]
    (corpus / "acl.toml").write_text('"legal/*" = ["legal", "exec"]\n')
    stale = json.loads(runner.invoke(app, ["status", "--json"]).stdout)["staleness"]
    assert stale["stale"] and stale["changed"] == 0
    pending = {c["doc_id"]: c for c in stale["acl_pending"]}
    # the deep memo and the settlement get "exec"; the front-matter and nearer-default ones do not;
    # the JSONL row loses its rule
    assert set(pending) == {"corpus:legal/settlement.md", "corpus:legal/deep/memo.md",
                            "corpus:secret-1"}  # corpus:doc_id
    assert pending["corpus:legal/settlement.md"]["stored"] == ["legal"]
    assert pending["corpus:legal/settlement.md"]["now"] == ["exec", "legal"]
    assert pending["corpus:secret-1"]["now"] == ["public"]
    text = runner.invoke(app, ["status"]).stdout
    assert "pending ACL change: corpus:legal/settlement.md: legal -> exec, legal" in text
    assert runner.invoke(app, ["reindex", str(corpus)]).exit_code == 0
    after = json.loads(runner.invoke(app, ["status", "--json"]).stdout)["staleness"]
    assert after["acl_changed"] == 0
