"""The audit log's hash chain: edits, deletions, reorderings and insertions made behind ragcli's back
(with the sqlite3 module, as an insider with the file would) are found, named and refused."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import reseal_from
from ragcli.audit import chain
from ragcli.audit.trace import AuditLog
from ragcli.cli.app import app
from ragcli.errors import AuditTamperedError, ConfigError, ExitCode

runner = CliRunner()
KEY = "correct horse battery staple"


def record(n: int, *, days_ago: float = 0.0, status: str = "answered") -> dict:
    when = datetime(2026, 12, 1, tzinfo=UTC) + timedelta(minutes=n) - timedelta(days=days_ago)
    return {"request_id": f"r{n:03d}", "created_at": when.isoformat(), "user": "ana",
            "groups": ["staff"], "question": f"question {n}", "status": status,
            "refused": status == "refused", "answer": f"answer {n}"}


def filled(path: Path, count: int = 6, key: str | None = None, **kwargs: float) -> AuditLog:
    log = AuditLog(path, key.encode() if key else None)
    for n in range(1, count + 1):
        if n % 2:  # both ways a record is finished: started then completed, or written whole
            log.start(record(n, **kwargs))
            log.complete(record(n, **kwargs))
        else:
            log.append(record(n, **kwargs))
    return log


def sql(path: Path, statements: str) -> None:
    with sqlite3.connect(path) as connection:
        connection.executescript(statements)


def verify_cli(path: Path, *extra: str, env: dict[str, str] | None = None):
    return runner.invoke(app, ["traces", "verify", "--audit", str(path), *extra], env=env)


def test_an_untouched_log_verifies_and_every_finished_record_is_sealed_in_order(
        tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    log = filled(path)
    log.start(record(7))  # still running: not sealed yet, not a problem
    report = log.verify()
    assert report.ok and report.sealed == 6 and report.unsealed == 1 and report.keys == []
    assert report.head is not None and report.head.seq == 6
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT request_id, seq, prev, link FROM traces "
                                  "WHERE seq IS NOT NULL ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == [f"r{n:03d}" for n in range(1, 7)]
    assert rows[0][2] == chain.GENESIS and all(b[2] == a[3] for a, b in zip(rows, rows[1:], strict=False))
    result = verify_cli(path, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] is True
    plain = verify_cli(path)
    assert "6 records checked" in plain.stdout and "chain intact" in plain.stdout


@pytest.mark.parametrize(("tamper", "kind", "named"), [
    ("UPDATE traces SET record = replace(record, 'answer 3', 'answer 33') "
     "WHERE request_id = 'r003'", "edited", "r003"),
    ("UPDATE traces SET user = 'mallory' WHERE request_id = 'r002'", "edited", "r002"),
    ("UPDATE traces SET created_at = '2026-11-30T00:00:00+00:00' WHERE request_id = 'r004'",
     "edited", "r004"),
    ("DELETE FROM traces WHERE request_id = 'r003'", "deleted", "r004"),
    ("DELETE FROM traces WHERE request_id IN ('r005', 'r006')", "deleted", None),
    ("UPDATE traces SET seq = -seq WHERE seq IN (2, 3); UPDATE traces SET seq = CASE seq "
     "WHEN -2 THEN 3 ELSE 2 END WHERE seq IN (-2, -3)", "edited", "r003"),  # swapped places
    ("INSERT INTO traces (request_id, created_at, user, status, refused, record) VALUES "
     "('r999', '2026-12-01T00:30:00+00:00', 'ana', 'answered', 0, '{}')", "inserted", "r999"),
    ("DELETE FROM chain_head", "head", None),
])
def test_an_edit_deletion_reordering_or_insertion_is_found_and_named(
        tmp_path: Path, tamper: str, kind: str, named: str | None) -> None:
    path = tmp_path / "audit.sqlite3"
    log = filled(path)
    sql(path, tamper)
    report = log.verify()
    assert report.problem is not None and report.problem.kind == kind, report.problem
    assert report.problem.request_id == named
    result = verify_cli(path)
    assert result.exit_code == ExitCode.AUDIT_TAMPERED
    assert report.problem.message in result.stderr.replace("\n", " ")


def test_replay_refuses_a_record_that_fails_verification(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    log = filled(path)
    assert log.verified("r003")[1] == "sealed"
    sql(path, "UPDATE traces SET record = replace(record, 'question 3', 'question 9') "
        "WHERE request_id = 'r003'")
    with pytest.raises(AuditTamperedError, match="r003 .seq 3. was edited"):
        log.verified("r003")
    result = runner.invoke(app, ["replay", "r003", "--audit", str(path)])
    assert result.exit_code == ExitCode.AUDIT_TAMPERED
    assert "was edited" in result.stderr and "Traceback" not in result.output
    sql(path, "DELETE FROM traces WHERE request_id = 'r005'")  # its neighbours notice
    for neighbour in ("r004", "r006"):
        with pytest.raises(AuditTamperedError):
            log.verified(neighbour)
    assert log.verified("r002")[1] == "sealed"


def test_a_log_from_an_older_ragcli_stays_readable_and_verify_says_what_it_cannot_check(
        tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    with sqlite3.connect(path) as connection:  # the table before the chain existed
        connection.executescript(
            "CREATE TABLE traces (request_id TEXT PRIMARY KEY, created_at TEXT NOT NULL, "
            "user TEXT, status TEXT NOT NULL, refused INTEGER NOT NULL, record TEXT NOT NULL) "
            "WITHOUT ROWID;")
        for n in (1, 2):
            r = record(n, days_ago=3)
            connection.execute("INSERT INTO traces VALUES (?, ?, ?, ?, ?, ?)",
                               (r["request_id"], r["created_at"], r["user"], r["status"], 0,
                                json.dumps(r)))
    log = AuditLog(path)
    assert [r["request_id"] for r in log.recent(10)] == ["r002", "r001"]
    log.append(record(3))
    report = log.verify()
    assert report.ok and report.legacy == 2 and report.sealed == 1
    assert log.verified("r001")[1] == "legacy"
    assert "2 records written before the chain began" in verify_cli(path).stdout


def test_a_keyed_chain_cannot_be_recomputed_without_the_key(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    log = filled(path, key=KEY)
    report = log.verify()
    assert report.ok and report.keys == [chain.Signer(KEY.encode()).key_id]
    with pytest.raises(ConfigError, match="sealed with key"):
        AuditLog(path).verify()  # no key: a configuration problem, not tampering
    missing = verify_cli(path)
    assert missing.exit_code == ExitCode.CONFIG and "RAGCLI_AUDIT_KEY" in missing.stderr
    wrong = AuditLog(path, b"another key").verify()
    assert wrong.problem is not None and wrong.problem.kind == "edited"
    assert verify_cli(path, env={"RAGCLI_AUDIT_KEY": KEY}).exit_code == 0

    # an insider edits record 4 and re-seals it and everything after with plain SHA-256
    reseal_from(path, 4, "UPDATE traces SET record = replace(record, 'answer 4', 'answer 44') "
                 "WHERE request_id = 'r004'")
    with pytest.raises(ConfigError):
        AuditLog(path).verify()  # the keyed seals before it still need the key
    forged = AuditLog(path, KEY.encode()).verify()
    assert forged.problem is not None and forged.problem.kind == "unsigned"
    assert forged.problem.request_id == "r004"


def test_a_whole_chain_resealed_without_the_key_fails_with_it(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    filled(path, key=KEY)
    reseal_from(path, 1, "UPDATE traces SET record = replace(record, 'ana', 'eve')")
    assert AuditLog(path).verify().ok  # without the key nothing can tell
    forged = AuditLog(path, KEY.encode()).verify()
    assert forged.problem is not None and forged.problem.kind == "unsigned"


def test_prune_removes_old_records_and_leaves_a_checkpoint_the_rest_verifies_with(
        tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    log = AuditLog(path)
    for n in range(1, 9):  # r001..r004 are 120 days old, r005..r008 new
        log.append(record(n, days_ago=120 if n <= 4 else 0))
    dry = runner.invoke(app, ["traces", "prune", "--older-than", "90d", "--keep", "r002",
                              "--dry-run", "--audit", str(path), "--json"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["removed"] == 3 and len(list(log.recent(None))) == 8
    result = runner.invoke(app, ["traces", "prune", "--older-than", "90d", "--keep", "r002",
                                 "--audit", str(path)])
    assert result.exit_code == 0, result.output
    assert "removed 3 sealed records" in result.stdout and "r002" in result.stdout
    assert sorted(r["request_id"] for r in log.recent(None)) == [
        "r002", "r005", "r006", "r007", "r008"]
    report = log.verify()
    assert report.ok and report.pruned == 3 and report.sealed == 5 and report.checkpoints == 1
    assert log.verified("r005")[1] == "sealed" and log.verified("r002")[1] == "sealed"
    log.append(record(9))
    assert log.verify().ok
    # the pruned text is gone from the file, not only unlinked (secure_delete)
    assert b"question 1" not in path.read_bytes() and b"question 3" not in path.read_bytes()
    sql(path, "DELETE FROM chain_checkpoints")  # the checkpoint is what explains the gap
    gone = log.verify()
    assert gone.problem is not None and gone.problem.kind == "deleted"


def test_prune_can_remove_the_newest_records_and_a_forged_checkpoint_fails(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    log = filled(path, 4, key=KEY, days_ago=200)
    pruned = log.prune("2026-06-01T00:00:00+00:00", set())
    assert pruned.removed == 4 and pruned.runs == [[1, 4, chain.GENESIS, pruned.runs[0][3]]]
    assert log.verify().ok and log.verify().pruned == 4
    log.append(record(5))
    assert log.verify().ok
    sql(path, "UPDATE chain_checkpoints SET record = replace(record, '\"removed\": 4', "
        "'\"removed\": 5')")
    edited = log.verify()
    assert edited.problem is not None and "checkpoint" in edited.problem.message


def test_a_broken_chain_is_not_pruned(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    log = filled(path, days_ago=200)
    sql(path, "DELETE FROM traces WHERE request_id = 'r002'")
    result = runner.invoke(app, ["traces", "prune", "--older-than", "30d", "--audit", str(path)])
    assert result.exit_code == ExitCode.AUDIT_TAMPERED and "nothing was pruned" in result.stderr
    assert len(list(log.recent(None))) == 5


@pytest.mark.parametrize("bad", ["ninety days", "90x", "-3d"])
def test_a_bad_older_than_is_a_usage_error(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "audit.sqlite3"
    filled(path, 1)
    result = runner.invoke(app, ["traces", "prune", "--older-than", bad, "--audit", str(path)])
    assert result.exit_code == ExitCode.USAGE and "--older-than" in result.stderr


def test_verify_of_a_missing_log_says_so(tmp_path: Path) -> None:
    result = verify_cli(tmp_path / "none.sqlite3")
    assert result.exit_code == ExitCode.TRACE_NOT_FOUND and "no audit log" in result.stderr


def test_writers_at_once_each_get_their_own_place_in_the_chain(tmp_path: Path) -> None:
    from conftest import at_once

    log = AuditLog(tmp_path / "audit.sqlite3")

    def write(n: int) -> None:
        for i in range(10):
            r = record(100 * n + i)
            log.start(r)
            log.complete(r)

    assert at_once(write, 4) == []
    report = log.verify()
    assert report.ok and report.sealed == 40


def test_an_ask_seals_its_record_with_the_key_in_the_configured_variable(
        handbook_store: Path, cli_env: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGCLI_AUDIT_KEY_ENV", "MY_AUDIT_SECRET")
    monkeypatch.setenv("MY_AUDIT_SECRET", KEY)
    asked = runner.invoke(app, ["ask", "What is the hostname of the office print server?",
                                "--mode", "extractive", "--json"])
    assert asked.exit_code == 0, asked.output
    request_id = json.loads(asked.stdout)["request_id"]
    path = tmp_path / "audit.sqlite3"
    report = AuditLog(path, KEY.encode()).verify()
    assert report.ok and report.sealed == 1 and report.keys == [chain.Signer(KEY.encode()).key_id]
    assert KEY.encode() not in path.read_bytes()  # the variable's name is recorded, not the key
    assert runner.invoke(app, ["traces", "verify"]).exit_code == 0
    monkeypatch.delenv("MY_AUDIT_SECRET")
    unkeyed = runner.invoke(app, ["traces", "verify"])
    assert unkeyed.exit_code == ExitCode.CONFIG and "set MY_AUDIT_SECRET" in unkeyed.stderr
    assert runner.invoke(app, ["replay", request_id]).exit_code == ExitCode.CONFIG


COLUMNS = ("request_id", "created_at", "user", "status", "refused", "record", "seq", "prev",
           "link")


@pytest.fixture
def real_log(handbook_store: Path, cli_env: dict[str, str], tmp_path: Path) -> Path:
    """A log written by real asks (answered and refused, in two modes), as users get one."""
    for question, mode in (("How many weeks of paid parental leave do non-birthing parents get?",
                            "extractive"), ("What is the capital of France?", "extractive"),
                           ("What is the hostname of the office print server?", "extractive"),
                           ("How long is a final written warning valid?", "extractive")):
        result = runner.invoke(app, ["ask", question, "--mode", mode])
        assert result.exit_code == 0, result.output
    path = tmp_path / "audit.sqlite3"
    assert verify_cli(path).exit_code == 0
    return path


def _edit(path: Path, seq: int, column: str) -> None:
    with sqlite3.connect(path) as connection:
        value = connection.execute(f"SELECT {column} FROM traces WHERE seq = ?",
                                   (seq,)).fetchone()[0]
        changed = (value + 1000 if isinstance(value, int) and column == "seq" else
                   1 - value if isinstance(value, int) else
                   value.replace("a", "e", 1) if "a" in value else value + " ")
        connection.execute(f"UPDATE traces SET {column} = ? WHERE seq = ?", (changed, seq))


@pytest.mark.parametrize("column", COLUMNS)
@pytest.mark.parametrize("seq", [1, 2, 4])  # the first, one in the middle, the last
def test_editing_any_field_of_any_record_of_a_real_log_is_found(
        real_log: Path, column: str, seq: int) -> None:
    _edit(real_log, seq, column)
    result = verify_cli(real_log, "--json")
    assert result.exit_code == ExitCode.AUDIT_TAMPERED, (column, seq)
    assert json.loads(result.stdout)["problem"]["kind"] in ("edited", "deleted", "reordered",
                                                             "head")


def test_swapping_two_records_or_appending_a_forged_one_to_a_real_log_is_found(
        real_log: Path) -> None:
    with sqlite3.connect(real_log) as connection:  # swap the contents of records 2 and 3
        rows = {seq: row for seq, *row in connection.execute(
            "SELECT seq, request_id, created_at, user, status, refused, record FROM traces "
            "WHERE seq IN (2, 3)")}
        connection.execute("UPDATE traces SET request_id = 'tmp' WHERE seq = 3")
        for seq, other in ((2, 3), (3, 2)):
            connection.execute("UPDATE traces SET request_id = ?, created_at = ?, user = ?, "
                               "status = ?, refused = ?, record = ? WHERE seq = ?",
                               (*rows[other], seq))
    swapped = json.loads(verify_cli(real_log, "--json").stdout)["problem"]
    assert swapped["kind"] == "edited" and swapped["seq"] == 2


def test_a_forged_record_appended_to_a_real_log_is_found(real_log: Path) -> None:
    with sqlite3.connect(real_log) as connection:
        request_id, created_at, text, link = connection.execute(
            "SELECT request_id, created_at, record, link FROM traces WHERE seq = 4").fetchone()
        connection.execute(  # a copy of the last record, chained after it with a made-up seal
            "INSERT INTO traces (request_id, created_at, user, status, refused, record, seq, "
            "prev, link) VALUES (?, ?, 'mallory', 'answered', 0, ?, 5, ?, ?)",
            (request_id[:-4] + "beef", created_at, text, link, "sha256:" + "0" * 64))
    forged = json.loads(verify_cli(real_log, "--json").stdout)["problem"]
    assert forged["kind"] == "edited" and forged["seq"] == 5
    with sqlite3.connect(real_log) as connection:  # now sealed as ragcli would, head left alone
        row = connection.execute("SELECT request_id, created_at, user, status, refused, record "
                                 "FROM traces WHERE seq = 5").fetchone()
        seal = chain.Signer().seal("record", chain.record_header(5, link, *row[:5]),
                                   row[5].encode())
        connection.execute("UPDATE traces SET link = ? WHERE seq = 5", (seal,))
    unmoved = json.loads(verify_cli(real_log, "--json").stdout)["problem"]
    assert unmoved["kind"] == "head"  # the head still names record 4 as the last


def test_prunes_one_after_another_keep_the_rest_verifiable(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    log = AuditLog(path, KEY.encode())
    for n in range(1, 11):  # r001 oldest ... r010 newest, a day apart
        log.append(record(n, days_ago=11 - n))
    first = log.prune((datetime(2026, 12, 1, tzinfo=UTC) - timedelta(days=7)).isoformat(),
                      {"r002"})
    assert first.removed == 2 and first.kept == ["r002"]  # r001 and r003 go
    second = log.prune((datetime(2026, 12, 1, tzinfo=UTC) - timedelta(days=4)).isoformat(),
                       {"r006"})
    # --keep holds for its own prune: r002 goes now, with r004 and r005 (runs [2] and [4, 5]
    # between the first prune's runs [1] and [3])
    assert second.removed == 3 and [r[:2] for r in second.runs] == [[2, 2], [4, 5]]
    report = log.verify()
    assert report.ok and report.checkpoints == 2 and report.pruned == 5 and report.sealed == 5
    assert sorted(r["request_id"] for r in log.recent(None)) == [
        "r006", "r007", "r008", "r009", "r010"]
    for kept in ("r006", "r007", "r010"):
        assert log.verified(kept)[1] == "sealed"
