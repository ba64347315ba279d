"""Document identity that cannot collide: every corpus has a name, documents are `corpus:doc_id`,
a path lands in the same corpus however it is given, and format-2 stores migrate in place."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from conftest import HANDBOOK, ask_json
from fakes import HashEmbedder
from ragcli.cli.app import app
from ragcli.errors import ExitCode
from ragcli.ingest.indexing import reindex
from ragcli.store.store import Store

runner = CliRunner()


@pytest.fixture(autouse=True)
def store(cli_env: dict[str, str]) -> Path:
    return Path(cli_env["RAGCLI_STORE"])


def team(root: Path, day: str, acl: str = "") -> Path:
    root.mkdir(parents=True)
    front = f"---\nacl: [{acl}]\n---\n" if acl else ""
    (root / "README.md").write_text(f"{front}# Team meeting\n\nThe team meets every {day} at "
                                    "ten in the large room.\n")
    return root


def test_two_corpora_with_the_same_relative_paths_both_stay(tmp_path: Path, store: Path) -> None:
    team_a = team(tmp_path / "team-a", "Monday")
    team_b = team(tmp_path / "team-b", "Thursday")
    assert runner.invoke(app, ["ingest", str(team_a)]).exit_code == 0
    second = runner.invoke(app, ["ingest", str(team_b), "--json"])
    assert json.loads(second.stdout)["added"] == 1  # added, not "changed"
    opened = Store.open(store)
    assert set(opened.documents()) == {"team-a:README.md", "team-b:README.md"}
    assert dict(opened.manifest.corpora) == {"team-a": str(team_a), "team-b": str(team_b)}
    both = ask_json("When does the team meet?")
    assert {h["chunk_id"] for h in both["retrieved"]} == {"team-a:README.md#0", "team-b:README.md#0"}
    for day, corpus in (("Monday", team_a), ("Thursday", team_b)):
        answer = ask_json(f"Does the team meet on {day}?")
        cited = answer["citations"][0]
        assert day in answer["answer"] and cited["source"] == str(corpus / "README.md")


def test_a_restricted_document_cannot_be_replaced_by_a_public_one(tmp_path: Path) -> None:
    secret = team(tmp_path / "board", "Friday", acl="board")
    public = team(tmp_path / "lobby" / "board", "Sunday")  # same basename: "board"
    assert runner.invoke(app, ["ingest", str(secret)]).exit_code == 0
    refused = runner.invoke(app, ["ingest", str(public)])
    assert refused.exit_code == ExitCode.INPUT
    assert f"corpus name 'board' is already used by {secret}" in refused.stderr
    assert "--corpus NAME" in refused.stderr
    assert runner.invoke(app, ["ingest", str(public), "--corpus", "lobby"]).exit_code == 0
    assert "Friday" not in json.dumps(ask_json("When does the team meet?"))
    assert "Friday" in json.dumps(ask_json("When does the team meet?", "board"))


def test_a_subdirectory_or_a_file_keeps_the_identity_of_its_corpus(tmp_path: Path,
                                                                   store: Path) -> None:
    corpus = tmp_path / "handbook"
    shutil.copytree(HANDBOOK, corpus)
    assert runner.invoke(app, ["ingest", str(corpus)]).exit_code == 0
    before = set(Store.open(store).documents())
    page = corpus / "hr" / "benefits.md"
    page.write_text(page.read_text() + "\nThe gym subsidy is 40 EUR a month.\n")
    again = runner.invoke(app, ["reindex", str(corpus / "hr"), "--json"])  # a cron line
    assert json.loads(again.stdout)["changed"] == 1 and json.loads(again.stdout)["deleted"] == 0
    one = runner.invoke(app, ["ingest", str(page), "--json"])
    assert json.loads(one.stdout)["unchanged"] == 1
    assert set(Store.open(store).documents()) == before  # no duplicates under other ids
    (corpus / "hr" / "expenses.md").unlink()
    scoped = runner.invoke(app, ["reindex", str(corpus / "hr"), "--json"])
    assert json.loads(scoped.stdout)["deleted"] == 1  # only what left the subdirectory
    assert len(Store.open(store).documents()) == len(before) - 1
    claimed = runner.invoke(app, ["ingest", str(corpus / "hr"), "--corpus", "people"])
    assert claimed.exit_code == ExitCode.USAGE and "belongs to corpus 'handbook'" in claimed.stderr


def test_a_corpus_inside_another_keeps_its_own_documents(tmp_path: Path, store: Path) -> None:
    outer = tmp_path / "docs"
    inner = team(outer / "team-a", "Monday")
    (outer / "index.md").write_text("# Docs\n\nAll the team documents live here.\n")
    assert runner.invoke(app, ["ingest", str(inner)]).exit_code == 0
    assert runner.invoke(app, ["ingest", str(outer)]).exit_code == 0
    assert set(Store.open(store).documents()) == {"team-a:README.md", "docs:index.md"}


def test_naming_a_known_corpus_at_a_new_place_moves_it(tmp_path: Path, store: Path) -> None:
    old = tmp_path / "old" / "handbook"
    shutil.copytree(HANDBOOK, old)
    reindex([old], store, HashEmbedder())
    new = tmp_path / "new" / "kb"
    shutil.move(str(old), str(new))
    report = reindex([new], store, HashEmbedder(), corpus="handbook")
    assert (report.added, report.acl_changed, report.chunks_embedded) == (0, 49, 0)
    assert dict(Store.open(store).manifest.corpora) == {"handbook": str(new)}


def test_a_format_2_store_migrates_in_place_without_embedding(tmp_path: Path, store: Path) -> None:
    corpus = tmp_path / "handbook"
    shutil.copytree(HANDBOOK, corpus)
    reindex([corpus], store, HashEmbedder())
    opened = Store.open(store)
    expected = {r["chunk_id"]: r["chunk_hash"] for r in opened.scan(["chunk_id", "chunk_hash"])}
    rows = opened.table().to_arrow().drop_columns(["corpus", "doc_key"])  # as format 2 wrote it
    bare = [c.split(":", 1)[1] for c in rows.column("chunk_id").to_pylist()]
    rows = rows.set_column(rows.schema.get_field_index("chunk_id"), "chunk_id", pa.array(bare))
    opened._db().create_table("chunks", rows, mode="overwrite")
    manifest = json.loads((store / "ragcli.json").read_text())
    manifest.update(format=2)
    del manifest["corpora"]
    (store / "ragcli.json").write_text(json.dumps(manifest))
    refused = runner.invoke(app, ["ask", "How many weeks of parental leave?", "--mode", "extractive"])
    assert refused.exit_code == ExitCode.STORE and "migrates it" in refused.stderr
    unverified = runner.invoke(app, ["status", "--verify"])
    assert unverified.exit_code == ExitCode.STORE and "migrates it" in unverified.stderr
    assert "damaged" not in unverified.stderr
    report = reindex([corpus], store, HashEmbedder())
    assert (report.added, report.changed, report.chunks_embedded) == (0, 0, 0)
    migrated = Store.open(store)
    assert migrated.manifest.format == 3 and dict(migrated.manifest.corpora) == {
        "handbook": str(corpus)}
    assert {r["chunk_id"]: r["chunk_hash"]
            for r in migrated.scan(["chunk_id", "chunk_hash"])} == expected
    verified = runner.invoke(app, ["status", "--verify", "--json"])
    assert verified.exit_code == 0, verified.output
    assert ask_json("How many weeks of paid parental leave do non-birthing parents get?")["citations"]
