"""The bad-input catalogue (docs/exit-codes.md is generated from CASES): every kind of user
mistake, across every command, gets one line on stderr, its documented exit code, no traceback,
and loses nothing already stored.

Each case runs the real CLI (in process) against a copy of a real store holding the handbook and
an audit log with one record; afterwards the store's files and the audit records are compared
with what they were before."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from filelock import FileLock
from typer.testing import CliRunner

from conftest import HANDBOOK
from fakes import HashEmbedder
from ragcli.audit.trace import AuditLog
from ragcli.cli.app import app
from ragcli.errors import ExitCode
from ragcli.ingest.indexing import ingest
from ragcli.runtimes.embedder import EMBEDDERS
from ragcli.store.backings import MANIFEST

runner = CliRunner()
Q = "How many weeks of paid parental leave do non-birthing parents get?"


@dataclass
class Case:
    id: str
    args: list[str]  # "{w}" is replaced by the work directory, "{store}" by the store
    code: ExitCode
    fragment: str  # must appear in the one stderr line
    files: dict[str, str | bytes] = field(default_factory=dict)  # work-dir files to create
    env: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[Path, Path], None] | None = None  # (work dir, store) -> None


def _manifest(change: Callable[[dict], None]) -> Callable[[Path, Path], None]:  # type: ignore[type-arg]
    def prepare(work: Path, store: Path) -> None:
        data = json.loads((store / MANIFEST).read_text())
        change(data)
        (store / MANIFEST).write_text(json.dumps(data))
    return prepare


def _damage_manifest(work: Path, store: Path) -> None:
    (store / MANIFEST).write_text("{not json")


def _big_file(work: Path, store: Path) -> None:
    with (work / "huge.md").open("wb") as handle:
        handle.truncate(21 * 1024 * 1024)  # sparse: 21 MiB of NUL bytes


def _emptied_corpus(work: Path, store: Path) -> None:
    """The store also holds a corpus at work/corpus, and that directory is now empty."""
    shutil.copytree(HANDBOOK, work / "corpus")
    ingest([work / "corpus"], store, HashEmbedder())
    shutil.rmtree(work / "corpus")
    (work / "corpus").mkdir()


GOOD_GOLDEN = json.dumps({"id": "a", "question": Q}) + "\n"
GGUF_HEADER = b"GGUF" + (3).to_bytes(4, "little") + b"\x00" * 64  # right magic, nothing after

CASES = [
    # ---- files given to ingest / reindex ------------------------------------------------
    Case("ingest-missing-path", ["ingest", "{w}/nope"], ExitCode.INPUT, "no such file or directory"),
    Case("ingest-empty-directory", ["ingest", "{w}/empty"], ExitCode.INPUT, "no supported files",
         files={"empty/.keep": ""}),
    Case("ingest-only-unsupported-types", ["ingest", "{w}/docs"], ExitCode.INPUT,
         "2 files of other types ignored", files={"docs/a.docx": "x", "docs/b.xlsx": "y"}),
    Case("ingest-named-unsupported-file", ["ingest", "{w}/a.docx"], ExitCode.PARTIAL,
         "unsupported file type .docx", files={"a.docx": "x"}),
    Case("ingest-binary-markdown", ["ingest", "{w}/bin.md"], ExitCode.PARTIAL, "binary file",
         files={"bin.md": b"\xff\xfe\x00\x01bad"}),
    Case("ingest-empty-file", ["ingest", "{w}/empty.md"], ExitCode.PARTIAL, "empty file",
         files={"empty.md": ""}),
    Case("ingest-broken-front-matter", ["ingest", "{w}/fm.md"], ExitCode.PARTIAL,
         "invalid front matter", files={"fm.md": "---\ntitle: [unclosed\n---\nbody\n"}),
    Case("ingest-front-matter-acl-not-groups", ["ingest", "{w}/acl.md"], ExitCode.PARTIAL,
         "acl must be", files={"acl.md": "---\nacl: 5\n---\nbody text\n"}),
    Case("ingest-broken-pdf", ["ingest", "{w}/bad.pdf"], ExitCode.PARTIAL, "broken PDF",
         files={"bad.pdf": "%PDF-1.4 garbage"}),
    Case("ingest-jsonl-bad-line", ["ingest", "{w}/c.jsonl"], ExitCode.PARTIAL, "line 2",
         files={"c.jsonl": '{"_id": "1", "text": "x"}\nnot json\n'}),
    Case("ingest-file-over-20-mib", ["ingest", "{w}/huge.md"], ExitCode.PARTIAL,
         "larger than 20 MiB", prepare=_big_file),
    Case("ingest-acl-toml-not-toml", ["ingest", "{w}/docs"], ExitCode.INPUT, "acl.toml",
         files={"docs/acl.toml": "not toml [", "docs/a.md": "# A\n\ntext\n"}),
    Case("ingest-acl-toml-wrong-type", ["ingest", "{w}/docs"], ExitCode.INPUT, "acl must be",
         files={"docs/acl.toml": '"*" = 5\n', "docs/a.md": "# A\n\ntext\n"}),
    Case("reindex-corpus-directory-now-empty", ["reindex", "{w}/corpus"], ExitCode.INPUT,
         "refusing to delete them all", prepare=_emptied_corpus),
    Case("ingest-store-path-is-a-file", ["ingest", "{w}/a.md", "--store", "{w}/a.md"],
         ExitCode.STORE, "not a directory", files={"a.md": "# A\n\nSome text.\n"}),
    Case("ingest-while-another-writer-holds-the-lock", ["ingest", "{w}/a.md"], ExitCode.LOCKED,
         "another ragcli process is writing", files={"a.md": "# A\n\nSome text.\n"}),
    # ---- configuration ----------------------------------------------------------------
    Case("config-not-toml", ["ask", Q, "--config", "{w}/r.toml"], ExitCode.CONFIG,
         "is not valid TOML", files={"r.toml": "top_k = \n"}),
    Case("config-unknown-setting", ["ask", Q, "--config", "{w}/r.toml"], ExitCode.CONFIG,
         "unknown setting(s): bogus", files={"r.toml": "bogus = 1\n"}),
    Case("config-wrong-type", ["ask", Q, "--config", "{w}/r.toml"], ExitCode.CONFIG,
         "top_k must be an integer", files={"r.toml": 'top_k = "x"\n'}),
    Case("config-out-of-range", ["ask", Q, "--config", "{w}/r.toml"], ExitCode.CONFIG,
         "between 0 and 2", files={"r.toml": "min_confidence = 5\n"}),
    Case("config-bad-choice", ["status", "--config", "{w}/r.toml"], ExitCode.CONFIG,
         "mode must be one of", files={"r.toml": 'mode = "creative"\n'}),
    Case("config-file-missing", ["ask", Q, "--config", "{w}/none.toml"], ExitCode.CONFIG,
         "config file not found"),
    Case("config-is-a-directory", ["ask", Q, "--config", "{w}/cfg"], ExitCode.CONFIG,
         "cannot read config file", files={"cfg/.keep": ""}),
    # ---- environment ------------------------------------------------------------------
    Case("env-config-missing", ["status"], ExitCode.CONFIG, "config file not found",
         env={"RAGCLI_CONFIG": "/nonexistent/ragcli.toml"}),
    Case("env-not-an-integer", ["ask", Q], ExitCode.CONFIG, "RAGCLI_TOP_K",
         env={"RAGCLI_TOP_K": "abc"}),
    Case("env-bad-choice", ["ask", Q], ExitCode.CONFIG, "RAGCLI_RETRIEVAL",
         env={"RAGCLI_RETRIEVAL": "bogus"}),
    Case("env-not-a-boolean", ["ask", Q], ExitCode.CONFIG, "redact_audit must be true or false",
         env={"RAGCLI_REDACT_AUDIT": "maybe"}),
    Case("env-unknown-embedder", ["ask", Q], ExitCode.MODEL, "unknown embedder 'nope'",
         env={"RAGCLI_EMBEDDER": "nope"}),
    Case("env-audit-path-is-a-directory", ["ask", Q, "--mode", "extractive"], ExitCode.STORE,
         "cannot open audit log", env={"RAGCLI_AUDIT": "{w}/auditdir"}, files={"auditdir/.keep": ""}),
    # ---- golden sets and baselines ------------------------------------------------------
    Case("goldens-missing", ["eval", "{w}/none.jsonl"], ExitCode.INPUT, "cannot read golden set"),
    Case("goldens-not-json", ["eval", "{w}/g.jsonl"], ExitCode.INPUT, "g.jsonl:1: not valid JSON",
         files={"g.jsonl": "not json\n"}),
    Case("goldens-unknown-field", ["eval", "{w}/g.jsonl"], ExitCode.INPUT, "unknown field(s): extra",
         files={"g.jsonl": '{"id": "a", "question": "q", "extra": 1}\n'}),
    Case("goldens-wrong-type", ["eval", "{w}/g.jsonl"], ExitCode.INPUT, "'must_refuse' must be a bool",
         files={"g.jsonl": '{"id": "a", "question": "q", "must_refuse": "yes"}\n'}),
    Case("goldens-duplicate-id", ["eval", "{w}/g.jsonl"], ExitCode.INPUT, "g.jsonl:2: duplicate id",
         files={"g.jsonl": '{"id": "a", "question": "q"}\n{"id": "a", "question": "r"}\n'}),
    Case("goldens-empty", ["eval", "{w}/g.jsonl"], ExitCode.INPUT, "has no cases",
         files={"g.jsonl": "\n\n"}),
    Case("goldens-binary", ["eval", "{w}/g.jsonl"], ExitCode.INPUT, "cannot read golden set",
         files={"g.jsonl": b"\x00\x01\xff"}),
    Case("baseline-not-json", ["eval", "{w}/g.jsonl", "--baseline", "{w}/b.json"], ExitCode.INPUT,
         "is not valid JSON", files={"g.jsonl": GOOD_GOLDEN, "b.json": "{bad"}),
    Case("baseline-missing", ["eval", "{w}/g.jsonl", "--baseline", "{w}/none.json"], ExitCode.INPUT,
         "baseline not found", files={"g.jsonl": GOOD_GOLDEN}),
    Case("eval-report-directory-missing", ["eval", "{w}/g.jsonl", "--junit", "{w}/no/dir/r.xml"],
         ExitCode.INPUT, "does not exist", files={"g.jsonl": GOOD_GOLDEN}),
    Case("eval-without-goldens", ["eval"], ExitCode.USAGE, "give a golden set"),
    # ---- command-line arguments ---------------------------------------------------------
    Case("ask-empty-question", ["ask", "  "], ExitCode.USAGE, "the question is empty"),
    Case("ask-huge-question", ["ask", "why " * 1000], ExitCode.USAGE, "longer than 2000 characters"),
    Case("ask-missing-question", ["ask"], ExitCode.USAGE, "give a question (or --batch FILE)"),
    Case("ask-unknown-option", ["ask", Q, "--bogus"], ExitCode.USAGE, "No such option: --bogus"),
    Case("ask-option-not-an-integer", ["ask", Q, "--top-k", "abc"], ExitCode.USAGE, "'--top-k'"),
    Case("ask-option-below-minimum", ["ask", Q, "--top-k", "0"], ExitCode.USAGE,
         "top_k must be at least 1"),
    Case("unknown-command", ["frobnicate"], ExitCode.USAGE, "No such command 'frobnicate'"),
    Case("replay-unknown-request", ["replay", "01a201ef-0000-7000-8000-000000000000"],
         ExitCode.TRACE_NOT_FOUND, "no audit record"),
    Case("traces-show-unknown-request", ["traces", "show", "nope"], ExitCode.TRACE_NOT_FOUND,
         "no audit record nope"),
    Case("replay-bad-against", ["replay", "x", "--against", "sideways"], ExitCode.USAGE,
         "--against must be"),
    Case("traces-since-not-a-time", ["traces", "--since", "yesterday"], ExitCode.USAGE,
         "--since must be an ISO-8601 time"),
    # ---- store paths ------------------------------------------------------------------
    Case("ask-without-a-store", ["ask", Q, "--store", "{w}/nowhere"], ExitCode.STORE_MISSING,
         "no ragcli store"),
    Case("status-without-a-store", ["status", "--store", "{w}/nowhere"], ExitCode.STORE_MISSING,
         "no ragcli store"),
    Case("ask-damaged-manifest", ["ask", Q], ExitCode.STORE, "manifest", prepare=_damage_manifest),
    Case("ask-store-from-a-newer-ragcli", ["ask", Q], ExitCode.STORE, "newer ragcli",
         prepare=_manifest(lambda m: m.update(format=99))),
    Case("ask-store-of-another-embedder", ["ask", Q, "--mode", "extractive"], ExitCode.STORE,
         "holds vectors of embedder", prepare=_manifest(lambda m: m.update(embedder="other"))),
    Case("ingest-into-store-of-another-embedder", ["ingest", "{w}/a.md"], ExitCode.STORE,
         "holds vectors of embedder", files={"a.md": "# A\n\nSome text.\n"},
         prepare=_manifest(lambda m: m.update(embedder="other"))),
    Case("ask-store-data-removed", ["ask", Q, "--mode", "extractive"], ExitCode.STORE_MISSING,
         "is empty", prepare=lambda w, s: shutil.rmtree(s / "lancedb")),
    # ---- model files --------------------------------------------------------------------
    Case("model-missing", ["ask", Q, "--model", "{w}/none.gguf"], ExitCode.MODEL,
         "model file not found"),
    Case("model-not-gguf", ["ask", Q, "--model", "{w}/m.gguf"], ExitCode.MODEL,
         "not a GGUF model file", files={"m.gguf": "hello"}),
    Case("model-is-a-directory", ["ask", Q, "--model", "{w}/models"], ExitCode.MODEL,
         "is a directory", files={"models/.keep": ""}),
    Case("model-truncated-gguf", ["ask", Q, "--model", "{w}/t.gguf"], ExitCode.MODEL,
         "cannot load model", files={"t.gguf": GGUF_HEADER}),
    # ---- the large model's server (docs/routing.md) ----------------------------------------
    Case("large-not-configured", ["ask", Q, "--model", "large"], ExitCode.CONFIG,
         "no large model is configured"),
    Case("large-server-down", ["ask", Q, "--model", "large"], ExitCode.BACKEND_UNAVAILABLE,
         "connection refused",
         env={"RAGCLI_LARGE_URL": "http://127.0.0.1:9/v1", "RAGCLI_LARGE_RETRIES": "0"}),
    Case("large-url-with-a-password", ["ask", Q, "--route", "small-first"], ExitCode.CONFIG,
         "must not hold a user, password or query",
         env={"RAGCLI_LARGE_URL": "http://me:secret@127.0.0.1:9/v1"}),
    Case("route-unknown", ["ask", Q, "--route", "cheapest"], ExitCode.USAGE,
         "route must be one of local, small-first, large"),
    Case("model-large-and-route-local", ["ask", Q, "--model", "large", "--route", "local"],
         ExitCode.USAGE, "contradict each other"),
    Case("eval-budget-without-route-calibration", ["eval", "{w}/g.jsonl", "--budget", "0.01"],
         ExitCode.USAGE, "--budget and --max-escalated go with --calibrate --route small-first",
         files={"g.jsonl": GOOD_GOLDEN}),
    Case("traces-stats-since-not-a-time", ["traces", "stats", "--since", "last week"],
         ExitCode.USAGE, "--since must be an ISO-8601 time"),
    # ---- adapters, batches, tune ----------------------------------------------------------
    Case("adapter-missing", ["ask", Q, "--adapter", "{w}/none.gguf"], ExitCode.MODEL,
         "adapter file not found"),
    Case("adapter-not-gguf", ["ask", Q, "--adapter", "{w}/a.gguf"], ExitCode.MODEL,
         "not a GGUF adapter file", files={"a.gguf": "hello"}),
    Case("adapter-and-no-adapter", ["ask", Q, "--adapter", "{w}/a.gguf", "--no-adapter"],
         ExitCode.USAGE, "cannot go together"),
    Case("ask-question-and-batch", ["ask", Q, "--batch", "{w}/q.jsonl"], ExitCode.USAGE,
         "not both", files={"q.jsonl": "\"why?\"\n"}),
    Case("ask-batch-file-missing", ["ask", "--batch", "{w}/none.jsonl"], ExitCode.INPUT,
         "--batch"),
    Case("ask-workers-without-batch", ["ask", Q, "--workers", "2"], ExitCode.USAGE,
         "--workers goes with --batch"),
    Case("ask-batch-workers-negative", ["ask", "--batch", "{w}/q.jsonl", "--workers", "-1"],
         ExitCode.USAGE, "--workers", files={"q.jsonl": "\"why?\"\n"}),
    Case("tune-not-a-training-set", ["tune", "{w}"], ExitCode.USAGE, "is not a training set"),
    Case("tune-reader-on-a-directory", ["tune", "{w}", "--reader"], ExitCode.USAGE,
         "--reader trains on a golden set"),
    Case("tune-reader-out-not-safetensors", ["tune", "{w}/g.jsonl", "--reader", "--out",
                                             "{w}/r.gguf"], ExitCode.USAGE,
         "a reader file ends in .safetensors", files={"g.jsonl": GOOD_GOLDEN}),
    Case("tune-corpus-without-reader", ["tune", "{w}", "--corpus", "{w}"], ExitCode.USAGE,
         "--corpus is for --reader"),
    Case("span-reader-unknown", ["ask", Q], ExitCode.CONFIG, "or a reader file",
         env={"RAGCLI_SPAN_READER": "bert"}),
    Case("span-reader-file-missing", ["ask", Q, "--mode", "auto"], ExitCode.MODEL,
         "are missing", env={"RAGCLI_SPAN_READER": "{w}/none.safetensors"}),
]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with the handbook and an audit log with one record, copied for every case."""
    root = tmp_path_factory.mktemp("template")
    ingest([HANDBOOK], root / "store", HashEmbedder())
    with pytest.MonkeyPatch.context() as patch:  # module scope: before conftest's autouse fixture
        patch.setitem(EMBEDDERS, "test-hash", HashEmbedder)
        result = CliRunner().invoke(app, ["ask", Q, "--mode", "extractive"], env={
            "RAGCLI_EMBEDDER": "test-hash", "RAGCLI_STORE": str(root / "store"),
            "RAGCLI_AUDIT": str(root / "audit.sqlite3")})
    assert result.exit_code == 0, result.output
    return root


def _snapshot(store: Path, audit: Path) -> tuple[dict[str, str], list[str]]:
    logs = ("writer.lock", "last_run.json")  # not data
    files = {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(store.rglob("*")) if p.is_file() and p.name not in logs}
    records = [json.dumps(r, sort_keys=True) for r in AuditLog(audit).recent(None)]
    return files, records


def test_the_catalogue_has_at_least_30_kinds() -> None:
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)
    assert {c.args[0] for c in CASES} >= {"ingest", "reindex", "ask", "eval", "replay", "traces",
                                          "status"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "w"
    work.mkdir()
    store = tmp_path / "store"
    shutil.copytree(template / "store", store)
    audit = tmp_path / "audit.sqlite3"
    shutil.copy(template / "audit.sqlite3", audit)
    for name, content in case.files.items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    if case.prepare:
        case.prepare(work, store)
    env = {"RAGCLI_EMBEDDER": "test-hash", "RAGCLI_STORE": str(store), "RAGCLI_AUDIT": str(audit),
           **{k: v.replace("{w}", str(work)) for k, v in case.env.items()}}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = [a.replace("{w}", str(work)).replace("{store}", str(store)) for a in case.args]
    before = _snapshot(store, audit)
    if case.id == "ingest-while-another-writer-holds-the-lock":
        with FileLock(str(store / "writer.lock"), timeout=0):
            result = runner.invoke(app, args)
    else:
        result = runner.invoke(app, args)

    assert result.exit_code == case.code, (result.exit_code, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    prefix = "ragcli: warning: " if case.code == ExitCode.PARTIAL else "ragcli: error: "
    assert lines[0].startswith(prefix) and case.fragment in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    after = _snapshot(store, audit)
    assert after[0] == before[0], "the store changed"
    assert after[1][len(after[1]) - len(before[1]):] == before[1], "audit records were lost"
