"""Stores in object storage (``--store s3://bucket/prefix``), against a real S3 API (moto's server)
with the real embedder and LanceDB. Marked ``real``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import HANDBOOK
from ragcli.cli.app import app
from ragcli.errors import ExitCode
from ragcli.store.store import Store

pytestmark = pytest.mark.real
runner = CliRunner()
QUESTION = "How many weeks of paid parental leave do non-birthing parents get?"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket="ragcli-test")
    yield endpoint
    server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh prefix in the bucket; credentials as a user sets them (LanceDB's variables)."""
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_REGION": "us-east-1", "AWS_ENDPOINT": s3_endpoint,
                        "AWS_ALLOW_HTTP": "true"}.items():
        monkeypatch.setenv(name, value)
    return f"s3://ragcli-test/{uuid.uuid4().hex[:8]}"


def cli(*args: str, code: int = 0) -> dict:  # type: ignore[type-arg]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == code, result.output
    return json.loads(result.stdout) if code == 0 else {"stderr": result.stderr}


def test_s3_store_matches_a_local_one(s3: str, tmp_path: Path) -> None:
    local = str(tmp_path / "local")
    cli("ingest", str(HANDBOOK), "--store", local)
    report = cli("ingest", str(HANDBOOK), "--store", s3)
    assert report["added"] == 49 and report["chunks_written"] == 98
    remote_status, local_status = cli("status", "--store", s3), cli("status", "--store", local)
    for key in ("documents", "chunks", "version", "embedder"):
        assert remote_status[key] == local_status[key], key
    assert remote_status["last_run"]["command"] == "ingest" and remote_status["disk_bytes"] is None
    ids = {r["chunk_id"]: r["chunk_hash"] for r in Store.open(s3).scan(["chunk_id", "chunk_hash"])}
    assert ids == {r["chunk_id"]: r["chunk_hash"]
                   for r in Store.open(local).scan(["chunk_id", "chunk_hash"])}
    # nothing changed: nothing written, no new version; every row reads back intact
    again = cli("reindex", str(HANDBOOK), "--store", s3)
    assert again["unchanged"] == 49 and again["chunks_written"] == 0
    assert again["version"] == report["version"]
    assert cli("status", "--store", s3, "--verify")["ok"] is True


def test_ask_and_replay_from_s3(s3: str, tmp_path: Path) -> None:
    cli("ingest", str(HANDBOOK / "hr"), "--store", s3)
    answer = cli("ask", QUESTION, "--store", s3, "--mode", "extractive")
    assert not answer["refused"] and "16 weeks" in answer["answer"]
    replayed = runner.invoke(app, ["replay", answer["request_id"], "--json"])
    assert replayed.exit_code == 0, replayed.output
    assert json.loads(replayed.stdout)["identical"] is True


def test_one_writer_per_s3_store_on_this_host(s3: str) -> None:
    cli("ingest", str(HANDBOOK / "hr"), "--store", s3)
    with Store.open(s3).writer_lock():
        failed = cli("reindex", str(HANDBOOK / "hr"), "--store", s3, code=ExitCode.LOCKED)
    assert "another ragcli process is writing" in failed["stderr"]


@pytest.mark.parametrize("uri", ["ftp://host/store", "s3://", "gs:///prefix"])
def test_bad_store_uris_are_usage_errors(uri: str) -> None:
    failed = cli("status", "--store", uri, code=ExitCode.USAGE)
    assert len(failed["stderr"].strip().splitlines()) == 1 and "URI" in failed["stderr"]


def test_unreachable_object_store_is_one_line(s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    failed = cli("status", "--store", s3, code=ExitCode.STORE)
    assert len(failed["stderr"].strip().splitlines()) == 1
    assert "cannot open store s3://" in failed["stderr"] and "Traceback" not in failed["stderr"]


def test_manifest_is_rewritten_before_any_run_finished(s3: str) -> None:
    """A store created by a run that then died holds only its manifest; the next run with another
    embedder resets it (the manifest row is overwritten, not created twice)."""
    store = Store.open_or_create(s3, "embedder-a", 4)
    store.reset("embedder-b", 4, "a new embedder")
    assert Store.open(s3).manifest.embedder == "embedder-b"
    assert Store.open(s3).last_run() is None
