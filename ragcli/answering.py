"""retrieval -> prompting -> generation -> guardrails; returns an Answer and writes its audit record.

Refusal is decided here, by the system, before any model runs: no readable evidence, or evidence
below ``Settings.min_confidence``, means "I don't know" and the closest sources searched. After
generation, an answer that declines, or of which no sentence is supported by a passage, is also a
refusal. Every request, answered, refused or failed, leaves exactly one audit record.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from . import __version__
from .embedder import Embedder
from .errors import RagError, UsageError
from .extractive import extract_answer
from .generation import Generator, TokenCallback
from .guardrails import REFUSAL, check_answer, looks_like_refusal
from .ids import new_id
from .models import Answer, Citation, Hit
from .prompting import build_prompt
from .retrieval import Retrieval, effective_groups, evidence, retrieve_configured
from .schema import schema_problems
from .screening import Screened, screen
from .settings import Settings
from .store import Store
from .trace import AuditLog

MAX_QUESTION_CHARS = 2000


@dataclass
class Answerer:
    """Answers questions against one store; builds the generator only when it is needed."""

    settings: Settings
    embedder: Embedder
    generator_factory: Callable[[], Generator]
    _generator: Generator | None = field(default=None, init=False)

    def generator(self) -> Generator:
        if self._generator is None:
            self._generator = self.generator_factory()
        return self._generator

    def ask(self, question: str, *, user: str, groups: Sequence[str],
            on_token: TokenCallback | None = None) -> Answer:
        """Answer, and leave the request's audit record whatever happens: written when the
        request starts, updated with the exact prompt before generation, completed at the end
        (a process killed in between leaves a record that reads as interrupted)."""
        request_id = new_id()
        started = time.perf_counter()
        record = self._base_record(request_id, question, user, groups)
        audit = AuditLog(self.settings.audit)

        def kept(data: dict[str, Any]) -> dict[str, Any]:
            return redact(data) if self.settings.redact_audit else data

        audit.start(kept(record))
        try:
            answer = self._answer(request_id, question, user, groups, record, on_token,
                                  checkpoint=lambda: audit.update(kept(record)))
        except Exception as exc:
            code = int(exc.exit_code) if isinstance(exc, RagError) else 1
            record["error"] = {"type": type(exc).__name__, "message": str(exc), "exit_code": code}
            record["timings_ms"] = {"total": (time.perf_counter() - started) * 1000}
            audit.complete(kept(record))
            raise
        answer.timings_ms["total"] = (time.perf_counter() - started) * 1000
        record["timings_ms"] = dict(answer.timings_ms)
        audit.complete(kept(record))
        return answer

    def rerun(self, question: str, *, user: str, groups: Sequence[str],
              store: Store) -> tuple[Answer, dict[str, Any]]:
        """Run the same pipeline against ``store`` (e.g. a pinned version) without auditing:
        what ``replay`` compares with the recorded request."""
        record = self._base_record(new_id(), question, user, groups)
        answer = self._answer(record["request_id"], question, user, groups, record, None, store)
        return answer, record

    def _base_record(self, request_id: str, question: str, user: str,
                     groups: Sequence[str]) -> dict[str, Any]:
        return {
            "request_id": request_id,
            "created_at": datetime.now(UTC).isoformat(),
            "user": user,
            "groups": sorted(set(groups)),
            "question": question,
            "ragcli_version": __version__,
            "config_hash": self.settings.fingerprint(),
            "settings": self.settings.to_json(),
            "store": str(self.settings.store),
            "embedder": self.embedder.id,
            "mode": self.settings.mode,
            "identity": self.settings.identity,  # caller: asserted by the caller; os: the OS account
            "status": "failed",
            "refused": False,
        }

    def _answer(self, request_id: str, question: str, user: str, groups: Sequence[str],
                record: dict[str, Any], on_token: TokenCallback | None,
                store: Store | None = None,
                checkpoint: Callable[[], None] | None = None) -> Answer:
        settings = self.settings
        if not question.strip():
            raise UsageError("the question is empty")
        if len(question) > MAX_QUESTION_CHARS:
            raise UsageError(f"the question is longer than {MAX_QUESTION_CHARS} characters")
        effective_groups(groups)  # a group name no ACL could hold fails before any work
        extractive = settings.mode == "extractive"
        # checks the model file now (the weights load on first use); extractive needs no model
        generator = None if extractive else self.generator()
        store = store or Store.open(settings.store)
        store.require_embedder(self.embedder.id)
        start = time.perf_counter()
        found = retrieve_configured(store, self.embedder, question, groups, settings)
        timings = {"retrieve": (time.perf_counter() - start) * 1000, **found.timings_ms}
        screened, hits, confidence = screen_retrieval(question, found)
        record.update(_retrieval_record(found, screened.flagged, confidence))
        record["index_generation"] = store.manifest.generation  # see Store.reset
        if screened.flagged:
            record["screening"] = {c: {"flags": list(f), "redacted": list(screened.redacted.get(c, ()))}
                                   for c, f in screened.flagged.items()}
        store.pin_version(found.version)  # cleanup keeps the version this record points at

        def refuse(reason: str) -> Answer:
            record.update(status="refused", refused=True, refusal_reason=reason, answer=REFUSAL)
            return Answer(request_id, question, REFUSAL, True, settings.mode, (), hits,
                          reason, confidence, timings_ms=timings, flagged=screened.flagged)

        def answered(text: str, citations: Sequence[Citation], passages: Sequence[Hit],
                     invalid: Sequence[int] = (), unsupported: Sequence[str] = ()) -> Answer:
            answer = Answer(request_id, question, text, False, settings.mode, tuple(citations),
                            hits, None, confidence, tuple(invalid), tuple(unsupported),
                            timings, screened.flagged)
            problems = output_problems(answer, passages, groups, settings.max_answer_chars)
            if problems:
                record["output_checks"] = problems
                return refuse("output_check: " + "; ".join(problems))
            record.update(status="answered", answer=text, citations=[c.__dict__ for c in citations])
            return answer

        if not found.hits:
            return refuse("no_readable_evidence: nothing in the store is readable by these groups")
        if confidence < settings.min_confidence:
            return refuse(f"low_confidence: best evidence {confidence:.3f} is below "
                          f"min_confidence {settings.min_confidence:.3f}")
        if generator is None:
            start = time.perf_counter()
            extract = extract_answer(question, hits)
            timings["extract"] = (time.perf_counter() - start) * 1000
            if extract is None:
                return refuse("unsupported_answer: no sentence of the passages covers the question")
            return answered(extract.text, extract.citations, hits)
        start = time.perf_counter()
        prompt = build_prompt(question, hits, render=generator.render,
                              count_tokens=generator.count_tokens,
                              context_tokens=generator.context_tokens,
                              answer_tokens=settings.max_tokens)
        timings["prompt"] = (time.perf_counter() - start) * 1000
        record["prompt"] = {"text": prompt.text, "tokens": prompt.tokens,
                            "messages": [list(m) for m in prompt.messages],
                            "passages": [h.chunk_id for h in prompt.passages],
                            "dropped": list(prompt.dropped)}
        record["model"] = {"path": str(generator.model_path), "sha256": generator.model_sha256(),
                           "runtime": generator.runtime()}
        if not prompt.passages:
            return refuse("context_budget: no passage fits the model's context window")
        if checkpoint is not None:
            checkpoint()  # the exact prompt is on disk before the model runs
        generation = generator.generate(prompt.text, max_tokens=settings.max_tokens,
                                        temperature=settings.temperature, seed=settings.seed,
                                        on_token=on_token)
        timings.update({f"generation_{k}": v for k, v in generation.timings_ms.items()})
        record["model"]["sampling"] = generation.sampling
        record["output"] = {"raw": generation.text, "tokens": generation.tokens,
                            "finish_reason": generation.finish_reason}
        if looks_like_refusal(generation.text):
            return refuse("model_declined: the model said it does not know")
        checked = check_answer(generation.text, prompt.passages)
        record["guardrails"] = {"invalid_citations": list(checked.invalid_markers),
                                "unsupported_sentences": list(checked.unsupported),
                                "supported_sentences": checked.supported_sentences}
        if checked.supported_sentences == 0:
            return refuse("unsupported_answer: no sentence of the model's answer is supported "
                          "by a passage")
        return answered(checked.text, checked.citations, prompt.passages,
                        checked.invalid_markers, checked.unsupported)


def screen_retrieval(question: str, found: Retrieval) -> tuple[Screened, tuple[Hit, ...], float]:
    """Screen the retrieved passages (see screening.py) and score them again: text that was taken
    out is no evidence. Returns the screening, the screened hits and the confidence."""
    screened = screen(found.hits)
    hits = tuple(replace(h, evidence=evidence(question, h)) if h.chunk_id in screened.redacted
                 else h for h in screened.hits)
    return screened, hits, max((h.evidence for h in hits), default=0.0)


def output_problems(answer: Answer, passages: Sequence[Hit], groups: Sequence[str],
                    max_chars: int) -> list[str]:
    """What is wrong with an answer about to be returned; any problem turns it into a refusal.

    The checks hold whatever produced the answer (model, extractive, a future reranker): every
    citation points at a passage that was given to the model and is readable by these groups,
    the answer is within ``max_chars``, and the JSON output is valid against the published schema.
    """
    problems = []
    given = {h.chunk_id: h for h in passages}
    readable = set(effective_groups(groups))
    for c in answer.citations:
        if c.chunk_id not in given:
            problems.append(f"citation [{c.n}] points at {c.chunk_id}, which was not given")
        elif not readable & set(given[c.chunk_id].acl):
            problems.append(f"citation [{c.n}] points at {c.chunk_id}, which these groups may not read")
    if answer.citations and not answer.answer.strip():
        problems.append("citations without an answer")
    if len(answer.answer) > max_chars:
        problems.append(f"answer is {len(answer.answer)} characters, over max_answer_chars {max_chars}")
    problems.extend(schema_problems(answer.to_json()))
    return problems


def redact(record: dict[str, Any]) -> dict[str, Any]:
    """The record with the question, prompt, model output and answer replaced by their hashes
    (``redact_audit``): equal texts still compare equal, e.g. in ``replay``; nothing is readable."""
    out = dict(record, redacted=True)
    for name in ("question", "answer"):
        if isinstance(out.get(name), str):
            out[name] = redacted_text(out[name])
    if isinstance(out.get("prompt"), dict):
        prompt = dict(out["prompt"], text=redacted_text(out["prompt"].get("text", "")))
        prompt["messages"] = [[role, redacted_text(text)] for role, text in prompt.get("messages", [])]
        out["prompt"] = prompt
    if isinstance(out.get("output"), dict):
        out["output"] = dict(out["output"], raw=redacted_text(out["output"].get("raw", "")))
    if isinstance(out.get("screening"), dict):  # the sentences screening took out are passage text
        out["screening"] = {chunk: dict(entry, redacted=[redacted_text(t) for t in entry.get("redacted", [])])
                            for chunk, entry in out["screening"].items()}
    if isinstance(out.get("guardrails"), dict):
        out["guardrails"] = dict(out["guardrails"], unsupported_sentences=[
            redacted_text(t) for t in out["guardrails"].get("unsupported_sentences", [])])
    return out


def redacted_text(text: str) -> str:
    return f"[redacted sha256:{hashlib.sha256(text.encode('utf-8')).hexdigest()}]"


def _retrieval_record(found: Retrieval, flagged: dict[str, tuple[str, ...]],
                      confidence: float) -> dict[str, Any]:
    return {
        "index_version": found.version,
        "acl_filter": found.acl_filter,
        "effective_groups": list(found.groups),
        "confidence": confidence,  # after screening: removed text is no evidence
        "retrieved": [{"chunk_id": h.chunk_id, "doc_id": h.doc_id, "chunk_hash": h.chunk_hash,
                       "score": h.score, "vector_score": h.vector_score,
                       "fts_score": h.fts_score, "flags": list(flagged.get(h.chunk_id, ()))}
                      for h in found.hits],
    }
