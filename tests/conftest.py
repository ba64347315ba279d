from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from fakes import EchoGenerator, HashEmbedder
from ragcli import settings as settings_module
from ragcli.runtimes.embedder import EMBEDDERS

ROOT = Path(__file__).resolve().parent.parent
HANDBOOK = ROOT / "corpora" / "handbook"


def at_once(work: Callable[[int], object], threads: int) -> list[BaseException]:
    """Run ``work(0)``, ..., ``work(threads - 1)`` on that many threads released together; what
    they raised (nothing, when the code under test is safe to share)."""
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run(n: int) -> None:
        start.wait()
        try:
            work(n)
        except BaseException as exc:  # noqa: BLE001 - collected for the caller's assertion
            errors.append(exc)

    started = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()
    return errors

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# exported ONNX embedders are shared by all tests (each test gets its own XDG_CACHE_HOME)
MODEL_CACHE = os.environ.get("RAGCLI_MODEL_CACHE") or str(
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ragcli" / "models")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own data/state dirs and cwd; no RAGCLI_* from the caller leaks in."""
    for name in list(os.environ):
        if name.startswith("RAGCLI_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("RAGCLI_MODEL_CACHE", MODEL_CACHE)  # not per test: an export takes 15 s
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(settings_module, "SYSTEM_CONFIG", tmp_path / "etc" / "ragcli.toml")
    monkeypatch.setitem(EMBEDDERS, "test-hash", HashEmbedder)  # undone after the test
    return tmp_path


@pytest.fixture(scope="session")
def handbook_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The handbook indexed once per session with the hash embedder; use ``handbook_store``."""
    from ragcli.ingest.indexing import ingest

    path = tmp_path_factory.mktemp("handbook") / "store"
    ingest([HANDBOOK], path, HashEmbedder())
    return path


@pytest.fixture
def handbook_store(handbook_template: Path, tmp_path: Path) -> Path:
    """This test's own copy of the handbook store (hash embedder), at ``tmp_path/store``."""
    import shutil

    path = tmp_path / "store"
    shutil.copytree(handbook_template, path)
    return path


@pytest.fixture
def hash_embedder() -> HashEmbedder:
    return HashEmbedder()


@pytest.fixture
def echo_generator() -> EchoGenerator:
    return EchoGenerator()


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The CLI on the test embedder, with a store and an audit log of this test's own and a low
    refusal bar (0.1), as environment variables (also for subprocesses: ``{**os.environ, **env}``)."""
    values = {"RAGCLI_EMBEDDER": "test-hash", "RAGCLI_STORE": str(tmp_path / "store"),
              "RAGCLI_AUDIT": str(tmp_path / "audit.sqlite3"), "RAGCLI_MIN_CONFIDENCE": "0.1"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def ask_json(question: str, *groups: str) -> dict:  # type: ignore[type-arg]
    """``ragcli ask --mode extractive --json`` in process; it must exit 0."""
    import json

    from typer.testing import CliRunner

    from ragcli.cli.app import app

    args = ["ask", question, "--mode", "extractive", "--json"]
    for group in groups:
        args += ["--groups", group]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def reseal_from(path: Path, first: int, tamper: str | None = None) -> None:
    """What a forger without the key can do: edit (``tamper``, SQL), then recompute the links
    from sequence number ``first`` on and the head with SHA-256, as ragcli would have."""
    import sqlite3

    from ragcli.audit import chain

    signer = chain.Signer()
    with sqlite3.connect(path) as connection:
        if tamper:
            connection.execute(tamper)
        rows = connection.execute("SELECT request_id, created_at, user, status, refused, record, "
                                  "seq, prev FROM traces WHERE seq >= ? ORDER BY seq",
                                  (first,)).fetchall()
        prev = rows[0][7]
        for request_id, created_at, user, status, refused, text, seq, _ in rows:
            link = signer.seal("record", chain.record_header(seq, prev, request_id, created_at,
                                                             user, status, refused), text.encode())
            connection.execute("UPDATE traces SET prev = ?, link = ? WHERE request_id = ?",
                               (prev, link, request_id))
            prev = link
        head = chain.read_head(connection)
        assert head is not None
        chain._write_head(connection, signer, chain.Head(rows[-1][6], prev, head.began))
