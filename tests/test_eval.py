"""ragcli eval: golden parsing, metrics, the gate's exit codes and reports (extractive mode, so
no model is needed; the generative gate runs in scripts/test)."""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import HANDBOOK, ROOT
from ragcli.cli.app import app
from ragcli.errors import ExitCode, InputError
from ragcli.evaluate.evaluation import load_goldens

GOLDENS = ROOT / "goldens" / "handbook.jsonl"
runner = CliRunner()


@pytest.fixture(autouse=True)
def store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("RAGCLI_EMBEDDER", "test-hash")
    monkeypatch.setenv("RAGCLI_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("RAGCLI_MIN_CONFIDENCE", "0.3")
    assert runner.invoke(app, ["ingest", str(HANDBOOK)]).exit_code == 0
    return tmp_path / "store"


def write(path: Path, cases: list[dict]) -> Path:  # type: ignore[type-arg]
    path.write_text("".join(json.dumps(c) + "\n" for c in cases))
    return path


def test_shipped_goldens_cover_what_the_issue_asks() -> None:
    cases = load_goldens(GOLDENS)
    assert len(cases) >= 60
    tags = {t for c in cases for t in c.tags}
    assert {"acl", "refusal", "injection", "table", "code", "clause", "numeric"} <= tags
    acl = [c for c in cases if "acl" in c.tags]
    assert any(c.groups for c in acl) and any(c.must_refuse for c in acl)


@pytest.mark.parametrize(("line", "message"), [
    ("not json", "not valid JSON"),
    ('{"id": "a"}', "'question' must be a non-empty string"),
    ('{"id": "a", "question": "q", "colour": 1}', "unknown field(s): colour"),
    ('{"id": "a", "question": "q", "groups": "hr"}', "'groups' must be a list"),
    ('{"id": "a", "question": "q"}\n{"id": "a", "question": "r"}', "duplicate id"),
    ("", "has no cases"),
])
def test_bad_goldens_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "g.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_goldens(path)


def test_gate_reports_each_case_in_junit_and_markdown(tmp_path: Path) -> None:
    """A baseline from one run, then a second, separate run judged against it: the JUnit and
    Markdown reports carry each case's own verdict, and a worse configuration fails the gate."""
    cases = [json.loads(x) for x in GOLDENS.read_text().splitlines()[:12]]
    goldens = write(tmp_path / "g.jsonl", cases)
    baseline = tmp_path / "baseline.json"
    args = ["eval", str(goldens), "--mode", "extractive", "--baseline", str(baseline)]
    result = runner.invoke(app, [*args, "--update-baseline"])
    assert result.exit_code == 0, result.output
    passing = set(json.loads(baseline.read_text())["passing_cases"])
    assert 0 < len(passing) < 12  # some cases fail in extractive mode with the hash embedder
    junit = tmp_path / "junit.xml"
    md = tmp_path / "summary.md"
    again = runner.invoke(app, [*args, "--junit", str(junit), "--markdown", str(md), "--json"])
    assert again.exit_code == 0, again.output
    data = json.loads(again.stdout)
    assert data["verdict"] == "pass" and data["leaks"] == 0
    assert {c["id"] for c in data["cases"] if c["passed"]} == passing
    suite = ET.parse(junit).getroot()
    assert suite.tag == "testsuite" and int(suite.get("tests")) == 12
    failed = {t.get("name") for t in suite.findall("testcase") if t.find("failure") is not None}
    assert failed == {c["id"] for c in cases} - passing
    assert int(suite.get("failures")) == len(failed)
    summary = md.read_text()
    assert summary.startswith("### ragcli eval: pass")
    assert all(f"- `{case}`:" in summary for case in failed)
    degraded = runner.invoke(app, [*args, "--top-k", "1"], env={"RAGCLI_MIN_CONFIDENCE": "0.9"})
    assert degraded.exit_code == ExitCode.EVAL_REGRESSION, degraded.output
    assert "REGRESSION" in degraded.stdout


def test_a_retrieved_forbidden_document_fails_with_the_leak_code(tmp_path: Path) -> None:
    goldens = write(tmp_path / "g.jsonl", [{
        "id": "leak", "question": "How many weeks of paid parental leave do parents get?",
        "forbidden_docs": ["hr/parental-leave.md"]}])
    result = runner.invoke(app, ["eval", str(goldens), "--mode", "extractive", "--json"])
    assert result.exit_code == ExitCode.EVAL_LEAK, result.output
    assert json.loads(result.stdout)["cases"][0]["failures"][0].startswith("ACL leak")


def test_a_case_that_errors_is_a_failure(tmp_path: Path) -> None:
    goldens = write(tmp_path / "g.jsonl", [{"id": "huge", "question": "x" * 5000}])
    result = runner.invoke(app, ["eval", str(goldens), "--mode", "extractive", "--json"])
    assert result.exit_code == ExitCode.EVAL_ERROR
    assert json.loads(result.stdout)["errors"] == 1


def test_calibrate_reports_each_set_and_one_threshold_for_all(tmp_path: Path, store: Path) -> None:
    corpus = tmp_path / "zoo"
    corpus.mkdir()
    (corpus / "llamas.md").write_text("# Llamas\nLlamas hum when they are content.\n")
    (corpus / "otters.md").write_text("# Otters\nSea otters hold hands while they sleep.\n")
    zoo = write(tmp_path / "zoo.jsonl", [
        {"id": "hum", "question": "When do llamas hum?", "expected_answers": ["content"]},
        {"id": "otter", "question": "What do sea otters hold while sleeping?",
         "expected_answers": ["hands"]},
        {"id": "absent", "question": "How fast can a cheetah run?", "must_refuse": True,
         "tags": ["absent-topic"]}])
    result = runner.invoke(app, ["eval", str(GOLDENS), "--calibrate", "--calibrate-set",
                                 f"{zoo}={corpus}", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["sets"] == ["handbook", "zoo"]
    assert len(data["sweep"]) == 51
    for row in data["sweep"]:
        assert set(row) == {"threshold", "error_rate", "handbook", "zoo"}
        assert row["error_rate"] == pytest.approx(
            (row["handbook"]["error_rate"] + row["zoo"]["error_rate"]) / 2)
        assert row["zoo"]["error_rate"] == row["zoo"]["errors"] / 3
    assert data["best"]["error_rate"] == min(r["error_rate"] for r in data["sweep"])
    assert (store.parent / "calibrate" / "zoo").is_dir()  # a store of its own
    shown = runner.invoke(app, ["eval", str(GOLDENS), "--calibrate", "--calibrate-set",
                                f"{zoo}={corpus}"])
    assert shown.exit_code == 0 and "best min_confidence" in shown.stdout


@pytest.mark.parametrize("spec", ["nothing", "a.jsonl=", "missing.jsonl=also-missing"])
def test_a_bad_calibration_set_is_a_usage_error(spec: str) -> None:
    result = runner.invoke(app, ["eval", str(GOLDENS), "--calibrate", "--calibrate-set", spec])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "--calibrate-set" in result.output


def test_beir_directory_gives_retrieval_metrics(tmp_path: Path) -> None:
    beir = tmp_path / "tiny"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(
        '{"_id": "d1", "title": "Llamas", "text": "Llamas hum when they are content."}\n'
        '{"_id": "d2", "title": "Alpacas", "text": "Alpacas spit when annoyed."}\n')
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "why do llamas hum"}\n'
                                        '{"_id": "q2", "text": "alpacas spit"}\n')
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    result = runner.invoke(app, ["eval", "--beir", str(beir), "--split", "test", "--json",
                                 "--store", str(tmp_path / "beir-store")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["queries"] == 2 and data["ndcg@10"] == pytest.approx(1.0)


def test_a_case_that_stops_passing_is_a_regression(tmp_path: Path) -> None:
    cases = [json.loads(x) for x in GOLDENS.read_text().splitlines()[:12]]
    goldens = write(tmp_path / "g.jsonl", cases)
    baseline = tmp_path / "baseline.json"
    args = ["eval", str(goldens), "--mode", "extractive", "--baseline", str(baseline)]
    assert runner.invoke(app, [*args, "--update-baseline"]).exit_code == 0
    data = json.loads(baseline.read_text())
    assert "leave-nonbirthing" in data["passing_cases"]
    for spec in data["metrics"].values():  # averages alone would not notice one case
        spec["tolerance"] = 1.0
    baseline.write_text(json.dumps(data))
    store = Path(os.environ["RAGCLI_STORE"])
    from fakes import HashEmbedder
    from ragcli.ingest.indexing import reindex

    corpus = tmp_path / "corpus"
    shutil.copytree(HANDBOOK, corpus)
    # the corpus moved: naming it says so, and its documents are rewritten, nothing embedded
    assert reindex([corpus], store, HashEmbedder(), corpus="handbook").acl_changed == 49
    (corpus / "hr" / "parental-leave.md").unlink()
    assert reindex([corpus], store, HashEmbedder()).deleted == 1
    result = runner.invoke(app, args)
    assert result.exit_code == ExitCode.EVAL_REGRESSION, result.output
    assert "case leave-nonbirthing passed in the baseline, fails now" in result.stdout
