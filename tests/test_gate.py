"""The eval gate must fail on a real regression and pass on an unchanged project.

Anti-cases, each run through the real ``ragcli eval`` command against a baseline written by an
earlier run: a document a case needs is deleted, the generator answers with a wrong number and a
valid citation, a restricted document becomes readable, a correct answer becomes a refusal. And the
control: nothing changed, under every perturbation, exits 0.
"""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import HANDBOOK, ROOT
from fakes import EchoGenerator, HashEmbedder
from ragcli.cli import evaluate as evaluate_command
from ragcli.cli.app import app
from ragcli.errors import ExitCode
from ragcli.evaluate.perturbations import CONFIDENCE_MARGIN
from ragcli.ingest.indexing import reindex

GOLDENS = ROOT / "goldens" / "handbook.jsonl"
runner = CliRunner()
CASES = ["leave-nonbirthing", "vacation-days", "password-length", "acl-warning-denied",
         "acl-warning-hr", "absent-1"]


@pytest.fixture
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the handbook in its own store (hash embedder), so tests may change it."""
    copy = tmp_path / "handbook"
    shutil.copytree(HANDBOOK, copy)
    monkeypatch.setenv("RAGCLI_EMBEDDER", "test-hash")
    monkeypatch.setenv("RAGCLI_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("RAGCLI_MIN_CONFIDENCE", "0.3")
    reindex([copy], tmp_path / "store", HashEmbedder())
    return copy


@pytest.fixture
def goldens(tmp_path: Path) -> Path:
    rows = {json.loads(x)["id"]: x for x in GOLDENS.read_text().splitlines()}
    path = tmp_path / "g.jsonl"
    path.write_text("".join(rows[c] + "\n" for c in CASES))
    return path


def run(goldens: Path, baseline: Path, *extra: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    result = runner.invoke(app, ["eval", str(goldens), "--mode", "extractive", "--baseline",
                                 str(baseline), "--json", *extra])
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else {}


@pytest.fixture
def baseline(corpus: Path, goldens: Path, tmp_path: Path) -> Path:
    path = tmp_path / "baseline.json"
    code, _ = run(goldens, path, "--update-baseline")
    assert code == 0
    data = json.loads(path.read_text())
    # every case of this set passes in extractive mode, so each anti-case below has something to break
    assert sorted(data["passing_cases"]) == sorted(CASES), data["cases"]
    return path


def test_unchanged_project_passes_under_every_perturbation(goldens: Path, baseline: Path) -> None:
    code, report = run(goldens, baseline, "--perturb", "all")
    assert code == 0, report
    assert report["verdict"] == "pass" and report["perturbations"] == ["threads", "query-noise"]
    assert all(set(c["perturbed"]) == {"threads", "query-noise"} for c in report["cases"])
    assert report["unstable"] == {}


def test_deleted_document_a_case_needs_is_a_regression(corpus: Path, goldens: Path,
                                                       baseline: Path, tmp_path: Path) -> None:
    (corpus / "hr" / "parental-leave.md").unlink()
    assert reindex([corpus], tmp_path / "store", HashEmbedder()).deleted == 1
    code, report = run(goldens, baseline)
    assert code == ExitCode.EVAL_REGRESSION
    assert any(r.startswith("case leave-nonbirthing passed in the baseline")
               for r in report["regressions"])


def test_restricted_document_made_readable_is_a_leak(corpus: Path, goldens: Path, baseline: Path,
                                                     tmp_path: Path) -> None:
    procedure = corpus / "hr" / "disciplinary-procedure.md"
    procedure.write_text(procedure.read_text().replace("acl: [hr]\n", ""))
    reindex([corpus], tmp_path / "store", HashEmbedder())
    code, report = run(goldens, baseline)
    assert code == ExitCode.EVAL_LEAK
    leaked = {c["id"]: c["failures"] for c in report["cases"] if not c["passed"]}
    assert leaked["acl-warning-denied"][0] == "ACL leak: hr/disciplinary-procedure.md"


def test_correct_answer_turned_into_a_refusal_is_a_regression(goldens: Path, baseline: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGCLI_MIN_CONFIDENCE", "0.95")  # refuses what it answered before
    code, report = run(goldens, baseline)
    assert code == ExitCode.EVAL_REGRESSION
    failed = {c["id"]: c["failures"] for c in report["cases"] if not c["passed"]}
    assert failed["vacation-days"][0] == "refused but should answer"


class Replies(EchoGenerator):
    """A generator that answers each question with a fixed, cited sentence."""

    def __init__(self, replies: dict[str, str]) -> None:
        super().__init__()
        self.replies = replies

    def generate(self, prompt: str, **kwargs):  # type: ignore[no-untyped-def]
        question = re.findall(r"Question: (.*)", prompt)[-1].strip()
        self.reply = self.replies.get(question, "I don't know.")
        return super().generate(prompt, **kwargs)


RIGHT = {"How many weeks of paid parental leave do non-birthing parents get?":
         "Non-birthing parents get 16 weeks of paid parental leave. [1]"}
# wrong, yet every claim is in a sentence of the cited passage (the birthing parents' one), so the
# claim checks pass it: what is left for the gate to catch (a made-up number is repaired instead)
WRONG = {"How many weeks of paid parental leave do non-birthing parents get?":
         "Parents receive 20 weeks of fully paid leave. [1]"}


def test_wrong_number_with_a_valid_citation_fails_in_every_report(
        corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    goldens = tmp_path / "one.jsonl"
    goldens.write_text(next(x for x in GOLDENS.read_text().splitlines()
                            if '"leave-nonbirthing"' in x) + "\n")
    baseline = tmp_path / "b.json"
    args = ["eval", str(goldens), "--mode", "generative", "--baseline", str(baseline)]
    monkeypatch.setattr(evaluate_command, "gguf_generator", lambda settings: Replies(RIGHT))
    assert runner.invoke(app, [*args, "--update-baseline"]).exit_code == 0
    assert json.loads(baseline.read_text())["passing_cases"] == ["leave-nonbirthing"]

    monkeypatch.setattr(evaluate_command, "gguf_generator", lambda settings: Replies(WRONG))
    junit, markdown = tmp_path / "j.xml", tmp_path / "s.md"
    result = runner.invoke(app, [*args, "--json", "--junit", str(junit), "--markdown", str(markdown)])
    assert result.exit_code == ExitCode.EVAL_REGRESSION, result.output
    case = json.loads(result.stdout)["cases"][0]
    assert case["answer"].startswith("Parents receive 20 weeks")  # answered, cited, wrong
    assert case["cited_docs"] == ["hr/parental-leave.md"]
    assert case["answer_correct"] is False
    assert case["failures"] == ["wrong answer: none of the expected answers is in it"]
    failure = ET.parse(junit).getroot().find("testcase/failure")
    assert failure is not None and "wrong answer" in failure.get("message", "")
    assert "- `leave-nonbirthing`: wrong answer" in markdown.read_text()


def test_update_baseline_refuses_to_drop_a_passing_case_unless_named(
        corpus: Path, goldens: Path, baseline: Path, tmp_path: Path) -> None:
    before = baseline.read_bytes()
    (corpus / "hr" / "paid-time-off.md").unlink()
    reindex([corpus], tmp_path / "store", HashEmbedder())
    refused = runner.invoke(app, ["eval", str(goldens), "--mode", "extractive", "--baseline",
                                  str(baseline), "--update-baseline"])
    assert refused.exit_code == ExitCode.EVAL_REGRESSION
    assert "would drop 1 case(s) that passed: vacation-days" in refused.stderr
    assert baseline.read_bytes() == before
    accepted = runner.invoke(app, ["eval", str(goldens), "--mode", "extractive", "--baseline",
                                   str(baseline), "--update-baseline",
                                   "--accept-regression", "vacation-days"])
    assert accepted.exit_code == 0, accepted.output
    assert "dropped passing case vacation-days" in accepted.stderr
    assert "vacation-days" not in json.loads(baseline.read_text())["passing_cases"]


def test_an_unstable_case_is_reported_but_not_gated(corpus: Path, goldens: Path, baseline: Path,
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # min_confidence just below the confidence of the least confident answered case: within
    # CONFIDENCE_MARGIN, so that case is unstable (and no other case changes)
    cases = json.loads(baseline.read_text())["cases"]
    name = min((c for c in cases if cases[c]["correct"]), key=lambda c: cases[c]["confidence"])
    confidence = cases[name]["confidence"]
    monkeypatch.setenv("RAGCLI_MIN_CONFIDENCE", f"{confidence - CONFIDENCE_MARGIN / 4:.6f}")
    code, _ = run(goldens, baseline, "--update-baseline")
    assert code == ExitCode.EVAL_REGRESSION  # no longer gated: a drop that must be named
    code, _ = run(goldens, baseline, "--update-baseline", "--accept-regression", name)
    assert code == 0
    data = json.loads(baseline.read_text())
    assert list(data["unstable_cases"]) == [name]
    assert data["unstable_cases"][name].startswith(f"confidence {confidence:.4f} within")
    assert name not in data["passing_cases"]
    needed = json.loads(next(x for x in goldens.read_text().splitlines() if f'"{name}"' in x))
    (corpus / needed["expected_docs"][0]).unlink()  # the case fails now
    reindex([corpus], tmp_path / "store", HashEmbedder())
    junit = tmp_path / "j.xml"
    code, report = run(goldens, baseline, "--junit", str(junit))
    assert code == 0, report["regressions"]
    assert list(report["unstable"]) == [name]
    assert not next(c for c in report["cases"] if c["id"] == name)["passed"]
    skipped = [t for t in ET.parse(junit).getroot() if t.find("skipped") is not None]
    assert [t.get("name") for t in skipped] == [name]
    assert "; failed: " in skipped[0].find("skipped").get("message")
    plain = runner.invoke(app, ["eval", str(goldens), "--mode", "extractive", "--baseline",
                                str(baseline)])
    assert plain.exit_code == 0
    assert f"UNSTABLE {name} (not gated: confidence" in plain.stdout


def test_metrics_that_cannot_fall_are_not_gated(baseline: Path) -> None:
    data = json.loads(baseline.read_text())
    for name, spec in data["metrics"].items():
        if spec["direction"] == "higher":
            assert spec["value"] - spec.get("tolerance", data["tolerance"]) > 0, name
    assert "unstable_cases" in data["not_gated"]
    assert set(data["cases"]) == set(CASES)
    assert data["cases"]["leave-nonbirthing"]["correct"] is True


def test_unknown_perturbation_is_a_usage_error(goldens: Path, baseline: Path) -> None:
    result = runner.invoke(app, ["eval", str(goldens), "--perturb", "gravity"])
    assert result.exit_code == ExitCode.USAGE
    assert "unknown perturbation gravity" in result.stderr


def test_every_gated_metric_has_the_right_direction() -> None:
    """A count or rate of bad outcomes must be gated as lower-is-better (a direction backwards
    would pass a regression and fail an improvement)."""
    from ragcli.evaluate.gate import LOWER_IS_BETTER

    baseline = json.loads((ROOT / "goldens" / "baseline.json").read_text())
    bad_words = ("wrong", "leak", "error", "refused_answerable", "should_refuse", "followed",
                 "unstable")
    for name, spec in baseline["metrics"].items():
        expected = "lower" if any(w in name for w in bad_words) else "higher"
        assert spec["direction"] == expected, name
        assert (name in LOWER_IS_BETTER) == (expected == "lower"), name
