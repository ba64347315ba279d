"""retrieval -> prompting -> generation -> guardrails; returns an Answer and writes its audit record.

Refusal is decided here, by the system, before any model runs: no readable evidence, or evidence
below ``Settings.min_confidence``, means "I don't know" and the closest sources searched. After
generation, an answer that declines, or of which no sentence is supported by a passage, is also a
refusal. Every request, answered, refused or failed, leaves exactly one audit record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import __version__
from .embedder import Embedder
from .errors import RagError, UsageError
from .extractive import extract_answer
from .generation import Generator, TokenCallback
from .guardrails import REFUSAL, check_answer, looks_like_refusal
from .ids import new_id
from .models import Answer
from .prompting import build_prompt
from .retrieval import Retrieval, retrieve_configured
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
        """Answer, and append the request's audit record whatever happens."""
        request_id = new_id()
        started = time.perf_counter()
        record = self._base_record(request_id, question, user, groups)
        audit = AuditLog(self.settings.audit)
        try:
            answer = self._answer(request_id, question, user, groups, record, on_token)
        except RagError as exc:
            record["error"] = {"type": type(exc).__name__, "message": str(exc),
                               "exit_code": int(exc.exit_code)}
            record["timings_ms"] = {"total": (time.perf_counter() - started) * 1000}
            audit.append(record)
            raise
        except Exception as exc:
            record["error"] = {"type": type(exc).__name__, "message": str(exc), "exit_code": 1}
            record["timings_ms"] = {"total": (time.perf_counter() - started) * 1000}
            audit.append(record)
            raise
        answer.timings_ms["total"] = (time.perf_counter() - started) * 1000
        record["timings_ms"] = dict(answer.timings_ms)
        audit.append(record)
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
            "status": "failed",
            "refused": False,
        }

    def _answer(self, request_id: str, question: str, user: str, groups: Sequence[str],
                record: dict[str, Any], on_token: TokenCallback | None,
                store: Store | None = None) -> Answer:
        settings = self.settings
        if not question.strip():
            raise UsageError("the question is empty")
        if len(question) > MAX_QUESTION_CHARS:
            raise UsageError(f"the question is longer than {MAX_QUESTION_CHARS} characters")
        extractive = settings.mode == "extractive"
        # checks the model file now (the weights load on first use); extractive needs no model
        generator = None if extractive else self.generator()
        store = store or Store.open(settings.store)
        store.require_embedder(self.embedder.id)
        start = time.perf_counter()
        found = retrieve_configured(store, self.embedder, question, groups, settings)
        timings = {"retrieve": (time.perf_counter() - start) * 1000, **found.timings_ms}
        record.update(_retrieval_record(found))
        store.pin_version(found.version)  # cleanup keeps the version this record points at

        def refuse(reason: str) -> Answer:
            record.update(status="refused", refused=True, refusal_reason=reason, answer=REFUSAL)
            return Answer(request_id, question, REFUSAL, True, settings.mode, (), found.hits,
                          reason, found.confidence, timings_ms=timings)

        if not found.hits:
            return refuse("no_readable_evidence: nothing in the store is readable by these groups")
        if found.confidence < settings.min_confidence:
            return refuse(f"low_confidence: best evidence {found.confidence:.3f} is below "
                          f"min_confidence {settings.min_confidence:.3f}")
        if generator is None:
            start = time.perf_counter()
            extract = extract_answer(question, found.hits)
            timings["extract"] = (time.perf_counter() - start) * 1000
            if extract is None:
                return refuse("unsupported_answer: no sentence of the passages covers the question")
            record.update(status="answered", answer=extract.text,
                          citations=[c.__dict__ for c in extract.citations])
            return Answer(request_id, question, extract.text, False, "extractive",
                          extract.citations, found.hits, None, found.confidence,
                          timings_ms=timings)
        start = time.perf_counter()
        prompt = build_prompt(question, found.hits, render=generator.render,
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
        record.update(status="answered", answer=checked.text,
                      citations=[c.__dict__ for c in checked.citations])
        return Answer(request_id, question, checked.text, False, "generative", checked.citations,
                      found.hits, None, found.confidence, checked.invalid_markers,
                      checked.unsupported, timings)


def _retrieval_record(found: Retrieval) -> dict[str, Any]:
    return {
        "index_version": found.version,
        "acl_filter": found.acl_filter,
        "effective_groups": list(found.groups),
        "confidence": found.confidence,
        "retrieved": [{"chunk_id": h.chunk_id, "doc_id": h.doc_id, "chunk_hash": h.chunk_hash,
                       "score": h.score, "vector_score": h.vector_score,
                       "fts_score": h.fts_score} for h in found.hits],
    }
