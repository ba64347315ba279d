"""Re-run an audited request and say what differs.

- exact (``against="recorded"``): the store checked out at the recorded version, the recorded
  settings, user and groups, the recorded model (its SHA-256 must match). Retrieval, the prompt
  (byte for byte), the raw model output and the final answer must all come out the same.
- drift (``against="latest"``): the same question and identity against the current index and
  current ACLs: which recorded chunks changed, were deleted or are now denied to this user, which
  appeared, and how the prompt and answer changed.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..audit.trace import INTERRUPTED, STARTED, Trace
from ..errors import ModelChangedError, ModelError, TraceNotFoundError, UsageError, VersionGoneError
from ..runtimes.embedder import Embedder
from ..runtimes.generator import Generator
from ..runtimes.reader import get_reader
from ..search.retrieval import effective_groups, load_reranker, reranker_record
from ..settings import Settings
from ..store.store import Store
from .answering import Answerer, redact, redacted_text


@dataclass(frozen=True)
class ReplayReport:
    request_id: str
    against: str  # "recorded" | "latest"
    identical: bool
    recorded_version: int | None
    replayed_version: int | None
    checks: dict[str, bool]  # retrieval, prompt, output, answer, refused
    retrieval: dict[str, list[str]] = field(default_factory=dict)
    diffs: dict[str, str] = field(default_factory=dict)
    answers: dict[str, Any] = field(default_factory=dict)
    served: str | None = None  # the endpoint of a served (remote) model the record used, if any

    @property
    def outcome(self) -> str:
        """identical | drifted | unverifiable: retrieval and prompt the same, but a served model
        answered, whose weights nothing here can check (its output proves nothing either way)."""
        if self.identical:
            return "identical"
        same_input = self.checks.get("retrieval") and self.checks.get("prompt")
        return "unverifiable" if self.served and same_input else "drifted"

    def to_json(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "against": self.against,
                "outcome": self.outcome, "identical": self.identical,
                "served_model": self.served, "recorded_version": self.recorded_version,
                "replayed_version": self.replayed_version, "checks": self.checks,
                "retrieval": self.retrieval, "diffs": self.diffs, "answers": self.answers}


def _diff(old: str, new: str, name: str) -> str:
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), f"recorded/{name}",
                                 f"replayed/{name}", lineterm="", n=1)
    return "\n".join(list(lines)[:200])


def replay(record: Trace, *, against: str, embedder: Embedder,
           generator_factory: Callable[[Path | None, Settings], Generator],
           question: str | None = None) -> ReplayReport:
    """Re-run ``record``; raises VersionGoneError or ModelChangedError when it cannot.

    A record written with ``redact_audit`` holds only hashes of the texts: the caller supplies the
    original ``question`` (checked against its hash), and the re-run is compared hash to hash."""
    if record.get("status") in (STARTED, INTERRUPTED):
        raise TraceNotFoundError(
            f"request {record['request_id']} never completed ({record['status']}: its process "
            "ended before it answered); there is no answer to replay",
            hint=f"'ragcli traces show {record['request_id']}' shows what it had reached")
    redacted = bool(record.get("redacted"))
    if redacted:
        if question is None:
            raise UsageError(f"request {record['request_id']} was recorded with redact_audit",
                             hint="pass the original question with --question to replay it")
        if redacted_text(question) != record.get("question"):
            raise UsageError("--question is not the question of this record (its hash differs)")
    else:
        question = record["question"]
    settings = Settings.from_json(record.get("settings", {}))
    if "span_reader" not in record.get("settings", {}):  # before the reader, auto meant the model
        settings = replace(settings, span_reader="gguf")
    recorded_reader = record.get("reader")
    if recorded_reader:
        reader = get_reader(settings.span_reader)
        shipped = reader.record()["weights_sha256"]
        if shipped != recorded_reader.get("weights_sha256"):
            raise ModelChangedError(f"reader {reader.id} changed: weights SHA-256 "
                                    f"{shipped[:12]}..., recorded "
                                    f"{str(recorded_reader.get('weights_sha256'))[:12]}...")
    recorded_reranker = record.get("reranker") or {}
    if recorded_reranker.get("weights_sha256"):  # a shipped reranker: the same file, or no replay
        current_reranker = reranker_record(load_reranker(settings.reranker, settings.rerank_depth,
                                                          settings.rerank_weight))
        shipped = (current_reranker or {}).get("weights_sha256", "none")
        if shipped != recorded_reranker["weights_sha256"]:
            raise ModelChangedError(f"reranker {recorded_reranker.get('id')} changed: weights "
                                    f"SHA-256 {shipped[:12]}..., recorded "
                                    f"{recorded_reranker['weights_sha256'][:12]}...")
    models = [record.get("model") or {}] + [a.get("model") or {} for a in record.get("attempts", [])
                                            if isinstance(a, dict)]
    served = next((m.get("endpoint") for m in models if m.get("backend") == "openai"), None)
    # the local model's part: the top level's, or under small-first the small attempt's
    recorded_model = next((m for m in models if m.get("sha256")), {}) if served else models[0]
    if recorded_model.get("path"):
        settings = replace(settings, model=Path(recorded_model["path"]))
    recorded_adapter = recorded_model.get("adapter") or {}
    if recorded_model:  # the adapter the record ran with, or none (records before adapters too)
        settings = replace(settings, adapter=recorded_adapter.get("path") or "none")
    generator: Generator | None = None
    if recorded_model.get("sha256"):
        try:
            generator = generator_factory(settings.model, settings)
        except ModelError as exc:
            raise ModelChangedError(f"the recorded model cannot be used: {exc}") from None
        if generator.model_sha256() != recorded_model["sha256"]:
            raise ModelChangedError(f"model {generator.model_path} changed: SHA-256 "
                                    f"{(generator.model_sha256() or 'none')[:12]}..., recorded "
                                    f"{recorded_model['sha256'][:12]}...")
        if generator.adapter_sha256() != recorded_adapter.get("sha256"):
            raise ModelChangedError(f"adapter {generator.adapter_path} changed: SHA-256 "
                                    f"{(generator.adapter_sha256() or 'none')[:12]}..., recorded "
                                    f"{recorded_adapter.get('sha256', '')[:12]}...")
    current = Store.open(settings.store)
    recorded_version = record.get("index_version")
    if against == "recorded" and recorded_version is not None:
        rebuilt = current.rebuild_since(record.get("index_generation"), record.get("created_at", ""))
        if rebuilt is not None:  # the same version number now means another table
            raise VersionGoneError(
                f"store {current.path} was rebuilt after this request ({rebuilt.get('reason')}, "
                f"at {rebuilt.get('at')}): version {recorded_version} of the table it recorded "
                "is gone", hint="'ragcli replay ID --against latest' re-runs it on today's store")
    store = current.at_version(recorded_version) \
        if against == "recorded" and recorded_version is not None else current
    if record.get("vector_leg") == "memory":  # searched by a warm process (chat, ask --batch)
        store.hold_vectors(any_size=True)
    answerer = Answerer(settings, embedder,
                        lambda: generator or generator_factory(settings.model, settings))
    answer, new = answerer.rerun(question, user=record.get("user") or "",
                                 groups=record.get("groups", []), store=store)
    if redacted:
        new = redact(new)
    old_ids = [r["chunk_id"] for r in record.get("retrieved", [])]
    new_ids = [r["chunk_id"] for r in new.get("retrieved", [])]
    old_prompt = record["prompt"].get("text", "") if "prompt" in record else ""
    new_prompt = (new.get("prompt") or {}).get("text", "")
    old_output = record["output"]["raw"] if "output" in record else ""
    new_output = (new.get("output") or {}).get("raw", "")
    checks = {"retrieval": old_ids == new_ids, "prompt": old_prompt == new_prompt,
              "output": old_output == new_output,
              "answer": record.get("answer") == new.get("answer"),
              "short_answer": record.get("short_answer") == new.get("short_answer"),
              "refused": bool(record.get("refused")) == bool(new.get("refused"))}
    retrieval: dict[str, list[str]] = {"recorded": old_ids, "replayed": new_ids,
                                       "appeared": [c for c in new_ids if c not in old_ids],
                                       "disappeared": [c for c in old_ids if c not in new_ids]}
    if against == "latest":
        retrieval.update(_drift(record, current))
    diffs = {name: _diff(old, new_text, name) for name, old, new_text, same in (
        ("prompt", old_prompt, new_prompt, checks["prompt"]),
        ("output", old_output, new_output, checks["output"]),
        ("answer", record.get("answer") or "", new.get("answer") or "", checks["answer"]))
        if not same}
    if served:  # a served model's output is no proof: never "identical"
        checks["model_verified"] = False
    return ReplayReport(record["request_id"], against, all(checks.values()), recorded_version,
                        new.get("index_version"), checks, retrieval, diffs,
                        {"recorded": record.get("answer"), "replayed": new.get("answer"),
                         "recorded_short": record.get("short_answer"),
                         "replayed_short": new.get("short_answer"),
                         "recorded_refused": bool(record.get("refused")),
                         "replayed_refused": bool(new.get("refused"))}, served)


def _drift(record: Trace, current: Store) -> dict[str, list[str]]:
    """How the recorded chunks stand in the current index, for this user's groups."""
    recorded = {r["chunk_id"]: r.get("chunk_hash") for r in record.get("retrieved", [])}
    rows = current.rows(list(recorded), ["chunk_hash", "acl"])
    allowed = set(effective_groups(record.get("groups", [])))
    return {
        "deleted": [c for c in recorded if c not in rows],
        "changed": [c for c in recorded if c in rows and rows[c]["chunk_hash"] != recorded[c]],
        "now_denied": [c for c in recorded if c in rows and not allowed & set(rows[c]["acl"])],
    }


def replay_request(record: Trace, *, generator_factory: Callable[[Path | None, Settings], Generator],
                   against: str = "recorded", question: str | None = None,
                   embedder: Embedder | None = None) -> ReplayReport:
    """:func:`replay` with the embedder the record names: ``embedder`` when it is that one (a
    session's, already loaded), else a new one."""
    from ..runtimes.embedder import get_embedder

    if against not in ("recorded", "latest"):
        raise UsageError("--against must be 'recorded' or 'latest'")
    if embedder is None or embedder.id != record.get("embedder"):
        embedder = get_embedder(Settings.from_json(record.get("settings", {})).embedder)
    return replay(record, against=against, embedder=embedder, question=question,
                  generator_factory=generator_factory)
