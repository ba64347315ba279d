"""ragcli chat in a real pseudo-terminal (pexpect), and piped; ragcli ask --batch.

The CLI runs as a subprocess with the test embedder and an echo generator that writes a word a
second (tests/run_with_fakes.py, FAKE_GENERATOR=slow), so Ctrl-C can land while it writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pexpect
import pytest

from conftest import HANDBOOK
from fakes import HashEmbedder
from ragcli.audit.trace import AuditLog
from ragcli.ingest.indexing import reindex

RUNNER = Path(__file__).resolve().parent / "run_with_fakes.py"
QUESTIONS = ("How many weeks of paid parental leave do non-birthing parents get?",
             "How long is a final written warning valid?",
             "What is the laptop refresh cycle?")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    corpus = tmp_path / "corpus"
    shutil.copytree(HANDBOOK, corpus)
    reindex([corpus], tmp_path / "store", HashEmbedder())
    return {**os.environ, "RAGCLI_EMBEDDER": "test-hash", "RAGCLI_STORE": str(tmp_path / "store"),
            "RAGCLI_AUDIT": str(tmp_path / "audit.sqlite3"), "RAGCLI_MIN_CONFIDENCE": "0.1",
            "FAKE_GENERATOR": "slow", "NO_COLOR": "1", "TERM": "dumb",
            "XDG_STATE_HOME": str(tmp_path / "state")}


def test_chat_in_a_terminal_answers_shows_sources_and_survives_ctrl_c(
        env: dict[str, str], tmp_path: Path) -> None:
    child = pexpect.spawn(sys.executable, [str(RUNNER), "chat", "--mode", "extractive",
                                           "--groups", "hr"],
                          env=env, cwd=str(tmp_path), encoding="utf-8", timeout=60)
    child.expect("ragcli chat: store")
    ids = []
    for question in QUESTIONS:
        child.expect_exact("ragcli> ")
        child.sendline(question)
        child.expect(r"request id: ([0-9a-f-]{36})")
        ids.append(child.match.group(1))
    child.expect_exact("ragcli> ")
    child.sendline("/sources 1")
    child.expect(r"\[1\] \S+")
    child.expect_exact("ragcli> ")
    child.sendline("/why")
    child.expect("confidence [0-9.]+ \\(min_confidence 0.10\\), mode extractive")
    # the model writes slowly in generative mode: Ctrl-C stops it, the session goes on
    child.expect_exact("ragcli> ")
    child.sendline("/mode generative")
    child.expect("mode: generative")
    child.expect_exact("ragcli> ")
    child.sendline(QUESTIONS[0])
    child.expect_exact(QUESTIONS[0])  # the terminal's echo of the line
    child.expect(r"\w+ ")  # the first streamed word; the whole answer takes 8 s or more
    child.sendintr()
    child.expect("stopped; the request is recorded as interrupted")
    child.expect_exact("ragcli> ")
    child.sendline(f"/replay {ids[0]}")
    child.expect("identical")
    child.expect_exact("ragcli> ")
    child.sendline("/nonsense")
    child.expect("unknown command /nonsense")
    child.expect_exact("ragcli> ")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    records = {r["request_id"]: r for r in AuditLog(tmp_path / "audit.sqlite3").recent(20)}
    assert all(records[i]["status"] == "answered" for i in ids)  # one record per question
    interrupted = [r for r in records.values() if r["status"] == "interrupted"]
    assert len(interrupted) == 1 and interrupted[0]["question"] == QUESTIONS[0]
    assert interrupted[0]["prompt"]["text"]  # what the model had been given
    history = tmp_path / "state" / "ragcli" / "chat_history"  # XDG_STATE_HOME of conftest
    assert QUESTIONS[1] in history.read_text()


def test_chat_piped_is_plain_and_exits_with_the_first_error(env: dict[str, str],
                                                            tmp_path: Path) -> None:
    stdin = "\n".join([QUESTIONS[0], "", "x" * 2001, QUESTIONS[1]]) + "\n"
    result = subprocess.run([sys.executable, str(RUNNER), "chat", "--mode", "extractive",
                             "--json"], input=stdin, capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=120)
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert [x["question"] for x in lines] == [QUESTIONS[0], QUESTIONS[1]]
    assert "ragcli>" not in result.stdout + result.stderr
    assert "longer than 2000 characters" in result.stderr
    assert result.returncode == 2


def test_ask_batch_answers_every_line_and_reports_bad_ones(env: dict[str, str],
                                                          tmp_path: Path) -> None:
    batch = tmp_path / "questions.jsonl"
    batch.write_text("\n".join([
        json.dumps({"id": "a", "question": QUESTIONS[0]}),
        "not json",
        json.dumps({"id": "c", "question": QUESTIONS[1], "groups": ["hr"]}),
        json.dumps({"id": "d", "question": QUESTIONS[1]}),
    ]) + "\n")
    result = subprocess.run([sys.executable, str(RUNNER), "ask", "--batch", str(batch),
                             "--mode", "extractive"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=120)
    rows = [json.loads(x) for x in result.stdout.splitlines()]
    assert [r.get("id") for r in rows] == ["a", None, "c", "d"]
    assert rows[1]["error"].startswith("line 2: not a JSON object") and rows[1]["exit_code"] == 4
    def docs(row: dict) -> set[str]:  # type: ignore[type-arg]
        return {r["doc_id"] for r in row["retrieved"]}

    # a line's groups are its own: the HR procedure only for the line in group hr
    assert "hr/disciplinary-procedure.md" in docs(rows[2])
    assert "hr/disciplinary-procedure.md" not in docs(rows[3])
    assert len({r["request_id"] for r in rows if "request_id" in r}) == 3
    assert result.returncode == 4
    same = subprocess.run([sys.executable, str(RUNNER), "ask", "--batch", "-", "--mode",
                           "extractive"], input=batch.read_text().splitlines()[0] + "\n",
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert same.returncode == 0 and json.loads(same.stdout)["id"] == "a"


def test_batch_workers_answer_in_line_order_as_one_worker_does(env: dict[str, str],
                                                               tmp_path: Path) -> None:
    """--workers 3 answers several questions at once: the same JSON lines as one worker gives
    (request IDs, timings and cost aside), in the order of the lines, bad lines included, and
    one audit record per question."""
    lines = [json.dumps({"id": f"q{n}", "question": QUESTIONS[n % 3],
                         **({"groups": ["hr"]} if n % 2 else {})}) for n in range(9)]
    lines.insert(4, "{\"question\": 7}")
    batch = tmp_path / "questions.jsonl"
    batch.write_text("\n".join(lines) + "\n")

    def run(workers: int) -> tuple[list[dict], int]:  # type: ignore[type-arg]
        result = subprocess.run([sys.executable, str(RUNNER), "ask", "--batch", str(batch),
                                 "--mode", "extractive", "--workers", str(workers)],
                                capture_output=True, text=True, env=env, cwd=tmp_path,
                                timeout=120)
        return [json.loads(x) for x in result.stdout.splitlines()], result.returncode

    def same(row: dict) -> dict:  # type: ignore[type-arg]
        return {k: v for k, v in row.items() if k not in ("request_id", "timings_ms", "cost")}

    (one, one_code), (three, three_code) = run(1), run(3)
    assert [r.get("id") for r in three] == [f"q{n}" for n in range(4)] + [None] + \
        [f"q{n}" for n in range(4, 9)]
    assert [same(r) for r in three] == [same(r) for r in one]
    assert three[4]["line"] == 5 and one_code == three_code == 4
    records = AuditLog(tmp_path / "audit.sqlite3").recent(100)
    ids = {r["request_id"] for r in three if "request_id" in r}
    assert len(ids) == 9 and ids <= {r["request_id"] for r in records}
    assert all(r["status"] == "answered" for r in records if r["request_id"] in ids)


def test_a_batch_line_that_is_not_utf8_is_that_lines_error(env: dict[str, str],
                                                          tmp_path: Path) -> None:
    """A batch file saved with a byte order mark, or with one line in another encoding: the
    mark is skipped, the bad line gets its own error (exit 4), and the other lines are answered."""
    batch = tmp_path / "questions.jsonl"
    batch.write_bytes(b"\xef\xbb\xbf" + json.dumps(QUESTIONS[0]).encode() + b"\n"
                      + b'"Qui approuve une d\xe9pense ?"\n' + json.dumps(QUESTIONS[1]).encode()
                      + b"\n")
    result = subprocess.run([sys.executable, str(RUNNER), "ask", "--batch", str(batch),
                             "--mode", "extractive", "--workers", "2"], capture_output=True,
                            text=True, env=env, cwd=tmp_path, timeout=120)
    rows = [json.loads(x) for x in result.stdout.splitlines()]
    assert [r.get("question") for r in rows] == [QUESTIONS[0], None, QUESTIONS[1]]
    assert rows[1] == {"line": 2, "error": "line 2: not UTF-8 text", "exit_code": 4}
    assert result.returncode == 4 and "Traceback" not in result.stderr


def test_batch_workers_answer_a_pipe_line_by_line(env: dict[str, str], tmp_path: Path) -> None:
    """A program that writes a question and waits for its answer before the next one is
    answered as it goes, with workers reading ahead: no deadlock, nothing held back."""
    proc = subprocess.Popen([sys.executable, str(RUNNER), "ask", "--batch", "-", "--mode",
                             "extractive", "--workers", "2"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=tmp_path)
    assert proc.stdin is not None and proc.stdout is not None
    watchdog = threading.Timer(60, proc.kill)  # a deadlock fails the test instead of hanging it
    watchdog.start()
    try:
        for question in QUESTIONS:
            proc.stdin.write(json.dumps(question) + "\n")
            proc.stdin.flush()
            assert json.loads(proc.stdout.readline())["question"] == question
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        watchdog.cancel()
        proc.kill()


def test_chat_reload_reads_what_was_ingested_meanwhile(env: dict[str, str],
                                                      tmp_path: Path) -> None:
    """A session answers from the version it opened until /reload; then the new document."""
    question = "How often are the office plants watered?"
    proc = subprocess.Popen([sys.executable, str(RUNNER), "chat", "--mode", "extractive",
                             "--json"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    assert proc.stdin is not None and proc.stdout is not None

    def say(line: str) -> str:
        proc.stdin.write(line + "\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        return proc.stdout.readline()  # type: ignore[union-attr]

    def docs(line: str) -> set[str]:
        return {r["doc_id"] for r in json.loads(line)["retrieved"]}

    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    try:
        plants = "facilities/plants.md"
        assert plants not in docs(say(question))
        (tmp_path / "corpus" / "facilities").mkdir()
        (tmp_path / "corpus" / plants).write_text(
            "# Office plants\n\nThe office plants are watered every Tuesday by the "
            "facilities team.\n", encoding="utf-8")
        reindex([tmp_path / "corpus"], tmp_path / "store", HashEmbedder())
        assert plants not in docs(say(question))  # the version the session opened
        reloaded = say("/reload")
        assert "version" in reloaded and "(was " in reloaded, reloaded
        assert plants in docs(say(question))
        assert "(unchanged)" in say("/reload")
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
        # the question after the reindex was told, once, that a newer version is there
        assert proc.stderr.read().count("/reload reads it") == 1  # type: ignore[union-attr]
    finally:
        watchdog.cancel()
        proc.kill()


def test_chat_route_command_switches_to_the_served_model(env: dict[str, str],
                                                         tmp_path: Path) -> None:
    from openai_stub import Stub

    stdin = "\n".join(["/route large", "/route", QUESTIONS[0]]) + "\n"
    command = [sys.executable, str(RUNNER), "chat", "--mode", "extractive", "--json"]
    unset = subprocess.run(command, input=stdin, capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=120)
    assert "no large model is configured" in unset.stderr  # said at once, the route kept
    assert "route: local" in unset.stdout
    answered = [json.loads(x) for x in unset.stdout.splitlines() if x.startswith("{")]
    assert answered[0]["route"] is None
    stub = Stub()
    try:
        served = subprocess.run(command, input=stdin, capture_output=True, text=True,
                                env={**env, "RAGCLI_LARGE_URL": stub.url}, cwd=tmp_path,
                                timeout=120)
    finally:
        stub.close()
    assert served.stdout.count("route: large") == 2, served.stderr
    (line,) = [json.loads(x) for x in served.stdout.splitlines() if x.startswith("{")]
    assert line["route"]["taken"] == "large" and len(stub.requests) == 1
