"""The audit log's hash chain: has a record been edited, deleted, reordered or inserted since it was
written?

Each request's record is sealed when it completes (answered, refused or failed: a record is never
changed after that; a started one still is, so it is not sealed until then). Sealing gives it the
next sequence number ``seq``, the previous sealed record's link as ``prev``, and its own ``link``:
a SHA-256 over ``seq``, ``prev``, every column of the row and the stored record's exact text. With
a key (the variable named by the ``audit_key_env`` setting, ``RAGCLI_AUDIT_KEY``), the link is an
HMAC-SHA-256 under that key instead, so someone who can write the SQLite file but does not hold
the key cannot recompute links after an edit. Without a key the chain still catches edits made by
hand or by a tool that does not know the chain (the sqlite3 shell), not a forger who recomputes it.

A one-row ``chain_head`` table holds the last sealed ``seq`` and link (sealed itself), so deleting
the newest records shows too. ``traces prune`` removes old records and writes a sealed checkpoint
naming, for every run of removed sequence numbers, the link before the run and the link at its
end: the records left still verify. Records written before the chain existed (an older ragcli)
have no ``seq``: they stay readable, and verification counts them apart as not verifiable.

What this cannot catch: someone holding the key; a log copied away and later put back whole
(a rollback; compare the head :func:`verify` prints with one kept elsewhere); records never
completed (``started``/``interrupted``: not sealed).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

GENESIS = "genesis"
"""``prev`` of the first sealed record."""

_DOMAIN = b"ragcli-audit-chain/1\n"

CHAIN_SCHEMA = """
CREATE TABLE IF NOT EXISTS chain_head (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    seq INTEGER NOT NULL,
    link TEXT NOT NULL,
    began TEXT NOT NULL,
    seal TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chain_checkpoints (
    id INTEGER PRIMARY KEY,
    created_at TEXT NOT NULL,
    record TEXT NOT NULL,
    seal TEXT NOT NULL
);
"""

_COLUMNS = (("seq", "INTEGER"), ("prev", "TEXT"), ("link", "TEXT"))


def migrate(connection: sqlite3.Connection) -> None:
    """Give a log written by an older ragcli the chain's columns (its records keep no ``seq``),
    and every log the index that keeps two records from sharing a ``seq``."""
    have = {row[1] for row in connection.execute("PRAGMA table_info(traces)")}
    if not all(name in have for name, _ in _COLUMNS):
        connection.execute("BEGIN IMMEDIATE")
        try:
            have = {row[1] for row in connection.execute("PRAGMA table_info(traces)")}
            for name, kind in _COLUMNS:
                if name not in have:
                    connection.execute(f"ALTER TABLE traces ADD COLUMN {name} {kind}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
    connection.execute("CREATE UNIQUE INDEX IF NOT EXISTS traces_seq ON traces (seq)")


@dataclass(frozen=True)
class Signer:
    """How links are made: SHA-256, or HMAC-SHA-256 under ``key``. ``key_id`` names a key without
    revealing it (a hash of it), so verification can say which key a log needs."""

    key: bytes | None = None

    @property
    def key_id(self) -> str | None:
        if not self.key:
            return None
        return hashlib.sha256(b"ragcli audit key id\n" + self.key).hexdigest()[:12]

    def seal(self, kind: str, header: bytes, body: bytes) -> str:
        message = _DOMAIN + kind.encode() + b"\n" + header + b"\n" + body
        if self.key:
            return f"hmac-sha256:{self.key_id}:" + hmac.new(self.key, message, "sha256").hexdigest()
        return "sha256:" + hashlib.sha256(message).hexdigest()

    def matches(self, seal: str, kind: str, header: bytes, body: bytes) -> bool:
        """Whether ``seal`` is right for this content. A keyed seal is checked with the key only
        (:func:`key_of` says which key a seal needs); an unkeyed one is checked by anyone."""
        if seal.startswith("sha256:"):
            expected = Signer().seal(kind, header, body)
        elif self.key and seal.startswith(f"hmac-sha256:{self.key_id}:"):
            expected = self.seal(kind, header, body)
        else:
            return False
        return hmac.compare_digest(seal, expected)


def key_of(seal: str) -> str | None:
    """The key ID a seal was made with; None for an unkeyed SHA-256 seal."""
    if seal.startswith("hmac-sha256:"):
        return seal.split(":", 2)[1]
    return None


def record_header(seq: int, prev: str, request_id: str, created_at: str, user: str | None,
                  status: str, refused: int) -> bytes:
    return json.dumps([seq, prev, request_id, created_at, user, status, refused],
                      ensure_ascii=False).encode()


def _head_header(seq: int, link: str, began: str) -> bytes:
    return json.dumps([seq, link, began]).encode()


@dataclass(frozen=True)
class Head:
    seq: int
    link: str
    began: str


def read_head(connection: sqlite3.Connection) -> Head | None:
    row = connection.execute("SELECT seq, link, began FROM chain_head WHERE one = 1").fetchone()
    return None if row is None else Head(*row)


def seal_row(connection: sqlite3.Connection, signer: Signer, row: tuple[Any, ...],
             *, update: bool) -> bool:
    """Insert (``update`` False) or complete (True) a final record as the chain's next link, in
    the caller's IMMEDIATE transaction. ``row`` is trace.py's (request_id, created_at, user,
    status, refused, record). The next ``seq`` follows the head and the highest sealed row,
    whichever is later, so a damaged head never makes two records share a number. False when
    there was no started record to complete."""
    request_id, created_at, user, status, refused, text = row
    head = read_head(connection)
    last = connection.execute("SELECT seq, link FROM traces WHERE seq IS NOT NULL "
                              "ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev, began = 1, GENESIS, created_at
    if head is not None:
        seq, prev, began = head.seq + 1, head.link, head.began
    if last is not None and last[0] >= seq:
        seq, prev = last[0] + 1, last[1]
    link = signer.seal("record", record_header(seq, prev, request_id, created_at, user, status,
                                               refused), text.encode())
    if update:
        changed = connection.execute(
            "UPDATE traces SET status = ?, refused = ?, record = ?, seq = ?, prev = ?, link = ? "
            "WHERE request_id = ? AND status = ? AND seq IS NULL",
            (status, refused, text, seq, prev, link, request_id, "started")).rowcount
        if not changed:
            return False
    else:
        connection.execute(
            "INSERT INTO traces (request_id, created_at, user, status, refused, record, seq, "
            "prev, link) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (request_id, created_at, user, status, refused, text, seq, prev, link))
    _write_head(connection, signer, Head(seq, link, began))
    return True


def _write_head(connection: sqlite3.Connection, signer: Signer, head: Head) -> None:
    seal = signer.seal("head", _head_header(head.seq, head.link, head.began), b"")
    connection.execute("INSERT OR REPLACE INTO chain_head (one, seq, link, began, seal) "
                       "VALUES (1, ?, ?, ?, ?)", (head.seq, head.link, head.began, seal))


@dataclass
class Problem:
    """The first thing verification found wrong."""

    kind: str  # edited | deleted | reordered | inserted | unsigned | head
    message: str
    request_id: str | None = None
    seq: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "request_id": self.request_id,
                "seq": self.seq}


@dataclass
class Run:
    """A run of sealed records a prune removed: seq ``first``..``last``, the link before the first
    and the link of the last."""

    first: int
    last: int
    prev: str
    link: str


@dataclass
class ChainReport:
    sealed: int = 0  # sealed records present and checked
    pruned: int = 0  # sealed records removed by prunes (explained by checkpoints)
    checkpoints: int = 0
    legacy: int = 0  # final records written before the chain began (an older ragcli)
    unsealed: int = 0  # started or interrupted: never completed, never sealed
    head: Head | None = None
    keys: list[str] = field(default_factory=list)  # key IDs the seals were made with
    unkeyed: int = 0  # records sealed without a key
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "sealed": self.sealed, "pruned": self.pruned,
                "checkpoints": self.checkpoints, "legacy": self.legacy,
                "unsealed": self.unsealed, "keys": self.keys, "unkeyed": self.unkeyed,
                "head": None if self.head is None else
                {"seq": self.head.seq, "link": self.head.link, "began": self.head.began},
                "problem": None if self.problem is None else self.problem.to_json()}


class KeyNeeded(Exception):
    """Seals were made with a key this verifier does not hold (a configuration problem, not
    tampering)."""

    def __init__(self, key_id: str) -> None:
        super().__init__(key_id)
        self.key_id = key_id


def _check_seal(signer: Signer, seal: str, kind: str, header: bytes, body: bytes,
                keyed_only: bool = False) -> bool:
    """Whether a seal is right. A keyed seal read without any key raises :class:`KeyNeeded`;
    with a key, one made with another key is wrong (a log has one key: rotate by starting a new
    log), so a forged key ID cannot pass for a configuration problem; ``keyed_only`` refuses an
    unkeyed seal (what a forger without the key would write)."""
    needs = key_of(seal)
    if needs is not None and signer.key is None:
        raise KeyNeeded(needs)
    if keyed_only and needs is None:
        return False
    return signer.matches(seal, kind, header, body)


def checkpoint_runs(connection: sqlite3.Connection, signer: Signer,
                    report: ChainReport) -> dict[int, Run]:
    """Every checkpoint's runs by their first ``seq``; a checkpoint whose seal fails is a problem
    (its runs are then not used, so the records it claims to explain show as deleted)."""
    runs: dict[int, Run] = {}
    for cid, created_at, text, seal in connection.execute(
            "SELECT id, created_at, record, seal FROM chain_checkpoints ORDER BY id"):
        report.checkpoints += 1
        if not _check_seal(signer, seal, "checkpoint", json.dumps([cid, created_at]).encode(),
                           text.encode(), keyed_only=signer.key is not None):
            report.problem = report.problem or Problem(
                "edited", f"prune checkpoint {cid} of {created_at} was edited: its seal does not "
                "match")
            continue
        for first, last, prev, link in json.loads(text)["runs"]:
            runs[first] = Run(first, last, prev, link)
    return runs


def verify(connection: sqlite3.Connection, signer: Signer) -> ChainReport:
    """Walk every sealed record in ``seq`` order (one pass, streamed) and report the first
    record edited (its link does not match its content), deleted (a gap no checkpoint explains),
    reordered (it does not follow the record before it) or inserted (a completed record outside
    the chain written after it began); then the head. Raises :class:`KeyNeeded` when a seal needs
    a key the verifier does not hold."""
    report = ChainReport()
    runs = checkpoint_runs(connection, signer, report)
    head = read_head(connection)
    report.head = head
    keys: set[str] = set()
    expected_seq, expected_prev, previous_id = 1, GENESIS, None
    keyed_seen = False
    rows: Iterable[tuple[Any, ...]] = connection.execute(
        "SELECT request_id, created_at, user, status, refused, record, seq, prev, link "
        "FROM traces WHERE seq IS NOT NULL ORDER BY seq")
    for request_id, created_at, user, status, refused, text, seq, prev, link in rows:
        if report.problem is not None:
            break
        expected_seq, expected_prev = _skip_runs(runs, expected_seq, expected_prev, seq, report)
        header = record_header(seq, prev, request_id, created_at, user, status, refused)
        key = key_of(link)
        if not _check_seal(signer, link, "record", header, text.encode()):
            report.problem = Problem("edited", f"record {request_id} (seq {seq}) was edited: "
                                     "its content does not match its seal", request_id, seq)
            break
        if key is None and keyed_seen:
            report.problem = Problem("unsigned", f"record {request_id} (seq {seq}) is sealed "
                                     "without the key, after records sealed with it", request_id,
                                     seq)
            break
        if key is not None:
            keyed_seen = True
            keys.add(key)
        else:
            report.unkeyed += 1
        if seq > expected_seq:
            report.problem = Problem("deleted", f"records seq {expected_seq}..{seq - 1} before "
                                     f"{request_id} (seq {seq}) are missing: deleted",
                                     request_id, seq)
            break
        if prev != expected_prev:
            report.problem = Problem(
                "reordered", f"record {request_id} (seq {seq}) does not follow "
                f"{previous_id or 'the start of the chain'}: moved, re-numbered or re-chained",
                request_id, seq)
            break
        report.sealed += 1
        expected_seq, expected_prev, previous_id = seq + 1, link, request_id
    if report.problem is None and signer.key is not None and report.sealed and not keyed_seen:
        report.problem = Problem("unsigned", "no record is sealed with the key the verifier holds "
                                 "(written without it, or re-sealed by someone without it)")
    if report.problem is None:
        # runs a prune removed after the last record left (it removed the newest ones)
        while expected_seq in runs and runs[expected_seq].prev == expected_prev:
            run = runs.pop(expected_seq)
            report.pruned += run.last - run.first + 1
            expected_seq, expected_prev = run.last + 1, run.link
        _check_head(connection, signer, head, expected_seq - 1, expected_prev, report)
    if report.problem is None:
        _check_unsealed(connection, head, report)
    report.keys = sorted(keys)
    return report


def _skip_runs(runs: dict[int, Run], expected_seq: int, expected_prev: str, seq: int,
               report: ChainReport) -> tuple[int, str]:
    """Step over the pruned runs between the last record and ``seq`` (each must start where the
    chain stands: the link before it is the one expected)."""
    while expected_seq < seq and expected_seq in runs and runs[expected_seq].prev == expected_prev:
        run = runs.pop(expected_seq)
        report.pruned += run.last - run.first + 1
        expected_seq, expected_prev = run.last + 1, run.link
    return expected_seq, expected_prev


def _check_head(connection: sqlite3.Connection, signer: Signer, head: Head | None, last_seq: int,
                last_link: str, report: ChainReport) -> None:
    if head is None:
        if last_seq > 0:
            report.problem = Problem("head", "the chain's head is missing (deleted)")
        return
    seal = connection.execute("SELECT seal FROM chain_head WHERE one = 1").fetchone()[0]
    if not _check_seal(signer, seal, "head", _head_header(head.seq, head.link, head.began), b"",
                       keyed_only=signer.key is not None):
        report.problem = Problem("head", "the chain's head was edited: its seal does not match")
    elif head.seq > last_seq:
        report.problem = Problem(
            "deleted", f"the newest records, seq {last_seq + 1}..{head.seq}, are missing: deleted")
    elif (head.seq, head.link) != (last_seq, last_link):
        report.problem = Problem("head", f"the chain's head (seq {head.seq}) is not its last "
                                 f"record (seq {last_seq}): the head was rewound")


def _check_unsealed(connection: sqlite3.Connection, head: Head | None,
                    report: ChainReport) -> None:
    """A completed record without ``seq`` is legacy when written before the chain began, and
    inserted (written around the chain) after."""
    for request_id, created_at, status in connection.execute(
            "SELECT request_id, created_at, status FROM traces WHERE seq IS NULL "
            "ORDER BY created_at, request_id"):
        if status == "started":
            report.unsealed += 1
        elif head is None or created_at < head.began:
            report.legacy += 1
        elif report.problem is None:
            report.problem = Problem("inserted", f"record {request_id} ({created_at}) is not in "
                                     "the chain but was written after it began: inserted",
                                     request_id)


def check_one(connection: sqlite3.Connection, signer: Signer, request_id: str) -> str | Problem:
    """One record's place in the chain, without walking it all (replay's check): ``"sealed"``
    when its seal matches and it links to the records (or prune checkpoint) on each side,
    ``"legacy"`` for a record written before the chain began, ``"unsealed"`` for one never
    completed, else the :class:`Problem`. ``traces verify`` checks the whole log."""
    row = connection.execute(
        "SELECT request_id, created_at, user, status, refused, record, seq, prev, link "
        "FROM traces WHERE request_id = ?", (request_id,)).fetchone()
    if row is None:
        return Problem("deleted", f"record {request_id} is not in the log", request_id)
    _, created_at, user, status, refused, text, seq, prev, link = row
    head = read_head(connection)
    if seq is None:
        if status == "started":
            return "unsealed"
        if head is None or created_at < head.began:
            return "legacy"
        return Problem("inserted", f"record {request_id} ({created_at}) is not in the chain but "
                       "was written after it began: inserted", request_id)
    header = record_header(seq, prev, request_id, created_at, user, status, refused)
    if not _check_seal(signer, link, "record", header, text.encode()):
        return Problem("edited", f"record {request_id} (seq {seq}) was edited: its content does "
                       "not match its seal", request_id, seq)
    report = ChainReport()
    runs = checkpoint_runs(connection, signer, report)
    if report.problem is not None:
        return report.problem
    near = {n: (p, lk) for n, p, lk in connection.execute(
        "SELECT seq, prev, link FROM traces WHERE seq IN (?, ?)", (seq - 1, seq + 1))}
    before = GENESIS if seq == 1 else near[seq - 1][1] if seq - 1 in near else next(
        (r.link for r in runs.values() if r.last == seq - 1), None)
    if before != prev:
        return Problem("reordered" if before else "deleted",
                       f"record {request_id} (seq {seq}) does not follow the record before it: "
                       + ("moved or re-chained" if before else "that record was deleted"),
                       request_id, seq)
    after = near[seq + 1][0] if seq + 1 in near else runs[seq + 1].prev if seq + 1 in runs \
        else link if head is not None and (head.seq, head.link) == (seq, link) else None
    if after != link:
        return Problem("deleted", f"the record after {request_id} (seq {seq}) is missing or does "
                       "not follow it", request_id, seq)
    return "sealed"


@dataclass
class Pruned:
    removed: int = 0  # sealed records removed
    unsealed: int = 0  # legacy and never-completed records removed
    kept: list[str] = field(default_factory=list)  # --keep IDs that were old enough to go
    runs: list[list[Any]] = field(default_factory=list)
    checkpoint: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"removed": self.removed, "unsealed_removed": self.unsealed, "kept": self.kept,
                "runs": len(self.runs), "checkpoint": self.checkpoint}


def prune(connection: sqlite3.Connection, signer: Signer, cutoff: str, keep: set[str], now: str,
          *, dry_run: bool = False) -> Pruned:
    """Remove records created before ``cutoff`` except ``keep``, in one IMMEDIATE transaction,
    and write a sealed checkpoint naming each run of removed sequence numbers with the link
    before it and the link at its end, so the records left still verify. The caller verified
    the chain first (pruning a broken chain would destroy the evidence)."""
    out = Pruned()
    connection.execute("BEGIN IMMEDIATE")
    try:
        rows = connection.execute(
            "SELECT request_id, seq, prev, link FROM traces WHERE created_at < ? "
            "ORDER BY seq IS NULL, seq, request_id", (cutoff,)).fetchall()
        gone = [r for r in rows if r[0] not in keep]
        out.kept = sorted(r[0] for r in rows if r[0] in keep)
        sealed = [r for r in gone if r[1] is not None]
        out.removed, out.unsealed = len(sealed), len(gone) - len(sealed)
        for _, seq, prev, link in sealed:
            if out.runs and out.runs[-1][1] == seq - 1:
                out.runs[-1][1], out.runs[-1][3] = seq, link
            else:
                out.runs.append([seq, seq, prev, link])
        if out.runs:
            cid = connection.execute(
                "SELECT COALESCE(MAX(id), 0) + 1 FROM chain_checkpoints").fetchone()[0]
            text = json.dumps({"pruned_at": now, "older_than": cutoff, "removed": out.removed,
                               "unsealed_removed": out.unsealed, "kept": out.kept,
                               "runs": out.runs}, sort_keys=True)
            connection.execute(
                "INSERT INTO chain_checkpoints (id, created_at, record, seal) VALUES (?, ?, ?, ?)",
                (cid, now, text, signer.seal("checkpoint", json.dumps([cid, now]).encode(),
                                             text.encode())))
            out.checkpoint = cid
        connection.executemany("DELETE FROM traces WHERE request_id = ?", [(r[0],) for r in gone])
        connection.execute("ROLLBACK" if dry_run else "COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return out
