"""The corpus root is a boundary: a symbolic link in a corpus that points out of it is not
indexed (reported, counted; ``--follow-symlinks`` for those who want it), a directory link is
never followed, a link never publishes a file under looser permissions than its own, and a file
swapped for a link between discovery and read is refused. Real files, real links, the real CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragcli.cli.app import app
from ragcli.ingest.sources import LOADERS, SkipFile, discover, load_documents
from ragcli.store.store import Store

runner = CliRunner()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """docs/ (the corpus, public), with a restricted sub-tree; secrets/ outside it (hr only)."""
    docs = tmp_path / "docs"
    write(docs / "guide.md", "# Guide\n\nThe office opens at nine every weekday morning.\n")
    write(docs / "hr" / "acl.toml", 'default = ["hr"]\n')
    write(docs / "hr" / "salaries.md", "# Salaries\n\nThe salary band for engineers is 90 to 120.\n")
    secrets = tmp_path / "secrets"
    write(secrets / "acl.toml", 'default = ["hr"]\n')
    write(secrets / "payroll.md", "# Payroll\n\nPayroll account number 7734-0091 at Kestrel Bank.\n")
    write(tmp_path / "outside.md", "# Outside\n\nThe cafeteria closes at three on Fridays.\n")
    return {"root": tmp_path, "docs": docs, "secrets": secrets}


def doc_ids(store: Path) -> set[str]:
    return {key.split(":", 1)[1] for key in Store.open(store).documents()}


def test_a_file_link_leaving_the_root_is_not_indexed_and_the_summary_says_so(
        tree: dict[str, Path], cli_env: dict[str, str]) -> None:
    docs = tree["docs"]
    (docs / "payroll.md").symlink_to(tree["secrets"] / "payroll.md")  # into a stricter corpus
    (docs / "cafe.md").symlink_to(Path("..") / "outside.md")  # relative, up and out
    result = runner.invoke(app, ["ingest", str(docs)])
    assert result.exit_code == 0, result.output
    assert "2 symbolic links not followed" in result.stdout
    assert "outside the corpus root" in result.stderr and "--follow-symlinks" in result.stderr
    assert doc_ids(Path(cli_env["RAGCLI_STORE"])) == {"guide.md", "hr/salaries.md"}
    answer = runner.invoke(app, ["ask", "What is the payroll account number?", "--mode",
                                 "extractive", "--json"])
    assert "7734" not in answer.stdout
    report = json.loads(runner.invoke(app, ["reindex", str(docs), "--json"]).stdout)
    assert sorted(Path(r["source"]).name for r in report["links_not_followed"]) == ["cafe.md",
                                                                                    "payroll.md"]


def test_follow_symlinks_indexes_them_under_the_link_name_and_acl_and_reindex_undoes_it(
        tree: dict[str, Path], cli_env: dict[str, str]) -> None:
    docs, store = tree["docs"], Path(cli_env["RAGCLI_STORE"])
    (docs / "cafe.md").symlink_to(Path("..") / "outside.md")
    assert runner.invoke(app, ["ingest", str(docs), "--follow-symlinks"]).exit_code == 0
    held = Store.open(store).documents()
    cafe = next(e for k, e in held.items() if k.endswith(":cafe.md"))
    assert cafe["acl"] == ("public",) and cafe["source"].endswith("docs/cafe.md")
    status = json.loads(runner.invoke(app, ["status", "--json"]).stdout)
    assert status["staleness"]["deleted"] == 1  # a plain reindex would not follow it
    result = runner.invoke(app, ["reindex", str(docs)])
    assert result.exit_code == 0 and "1 deleted" in result.stdout
    assert "cafe.md" not in doc_ids(store)


def test_a_link_inside_the_root_is_read_with_the_acl_of_its_target_never_a_looser_one(
        tree: dict[str, Path]) -> None:
    docs = tree["docs"]
    (docs / "team").mkdir()
    (docs / "team" / "guide-copy.md").symlink_to(Path("..") / "guide.md")
    (docs / "pay.md").symlink_to(Path("hr") / "salaries.md")  # a public place, an hr file
    loaded = load_documents([docs])
    by_id = {d.doc_id: d for d in loaded.documents}
    assert set(by_id) == {"guide.md", "hr/salaries.md", "team/guide-copy.md", "pay.md"}
    assert by_id["team/guide-copy.md"].text == by_id["guide.md"].text
    assert by_id["team/guide-copy.md"].acl == ("public",)
    assert by_id["pay.md"].acl == by_id["hr/salaries.md"].acl == ("hr",)
    assert loaded.links == []


def test_directory_links_are_never_followed_out_of_the_root_or_into_a_loop(
        tree: dict[str, Path], cli_env: dict[str, str]) -> None:
    docs = tree["docs"]
    (docs / "secrets").symlink_to(tree["secrets"], target_is_directory=True)
    (docs / "again").symlink_to(docs, target_is_directory=True)
    for flags in ([], ["--follow-symlinks"]):
        result = runner.invoke(app, ["ingest", str(docs), *flags])
        assert result.exit_code == 0, result.output
        assert "2 symbolic links not followed" in result.stdout
        assert doc_ids(Path(cli_env["RAGCLI_STORE"])) == {"guide.md", "hr/salaries.md"}
    status = json.loads(runner.invoke(app, ["status", "--json"]).stdout)
    assert status["staleness"]["new"] == 0


def test_a_file_swapped_for_a_link_between_discovery_and_read_is_refused(
        tree: dict[str, Path]) -> None:
    docs = tree["docs"]
    (source,) = [s for s in discover([docs]) if s.doc_id == "guide.md"]
    os.unlink(docs / "guide.md")
    (docs / "guide.md").symlink_to(tree["secrets"] / "payroll.md")
    with pytest.raises(SkipFile, match="became a symbolic link"):
        list(LOADERS[".md"](source))


def test_a_corpus_of_nothing_but_links_out_says_why_it_is_empty(tree: dict[str, Path],
                                                                cli_env: dict[str, str]) -> None:
    lonely = tree["root"] / "lonely"
    lonely.mkdir()
    (lonely / "payroll.md").symlink_to(tree["secrets"] / "payroll.md")
    result = runner.invoke(app, ["ingest", str(lonely)])
    assert result.exit_code == 4 and "symbolic links not followed" in result.output
    assert "Traceback" not in result.output
