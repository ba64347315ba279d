"""The answer ``ask`` returns (schemas/answer.schema.json), with the audit record it was written as.

It lives with the answer stage rather than among the shared value objects (models.py) because it
carries its :class:`~ragcli.audit.trace.Trace`: the audit log sits below answering, the shared
objects below the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..audit.trace import Trace
from ..models import Citation, Hit, Quote, Verification


@dataclass(frozen=True)
class Answer:
    """What ``ask`` returns; ``to_json`` follows schemas/answer.schema.json."""

    request_id: str
    question: str
    answer: str
    refused: bool
    mode: str
    citations: tuple[Citation, ...] = ()
    retrieved: tuple[Hit, ...] = ()
    refusal_reason: str | None = None
    confidence: float = 0.0
    invalid_citations: tuple[int, ...] = ()
    unsupported_sentences: tuple[str, ...] = ()
    timings_ms: dict[str, float] = field(default_factory=dict)
    flagged: dict[str, tuple[str, ...]] = field(default_factory=dict)  # chunk_id -> screening flags
    short_answer: str | None = None  # the span that answers ("16 weeks"); None when refused
    quote: Quote | None = None  # the sentence(s) the short answer is taken from and checked on
    verification: Verification | None = None  # None: refused before any answer was produced
    route: dict[str, Any] | None = None  # route small-first / large: which model answered, and why
    cost: dict[str, Any] = field(default_factory=dict)  # CPU seconds, tokens, USD (answering.py)
    reader: dict[str, Any] | None = None  # the extractive reader that read the passages, if one did
    trace: Trace | None = field(default=None, compare=False, repr=False)  # its audit record

    def to_json(self) -> dict[str, object]:
        quote = self.quote
        check = self.verification
        return {
            "request_id": self.request_id,
            "question": self.question,
            "answer": self.answer,
            "short_answer": self.short_answer,
            "quote": None if quote is None else {"n": quote.n, "chunk_id": quote.chunk_id,
                                                 "text": quote.text, "start": quote.start,
                                                 "end": quote.end},
            "verification": None if check is None else {
                "outcome": check.outcome, "source": check.source, "failed": list(check.failed)},
            "refused": self.refused,
            "refusal_reason": self.refusal_reason,
            "mode": self.mode,
            "confidence": round(self.confidence, 6),
            "citations": [
                {"n": c.n, "chunk_id": c.chunk_id, "doc_id": c.doc_id, "source": c.source,
                 "title": c.title, "how": c.how}
                for c in self.citations
            ],
            "retrieved": [
                {"chunk_id": h.chunk_id, "doc_id": h.doc_id, "source": h.source,
                 "score": round(h.score, 6),
                 "vector_score": None if h.vector_score is None else round(h.vector_score, 6),
                 "fts_score": None if h.fts_score is None else round(h.fts_score, 6),
                 "evidence": round(h.evidence, 6),
                 **({} if h.rerank_score is None else {"rerank_score": h.rerank_score})}
                for h in self.retrieved
            ],
            "invalid_citations": list(self.invalid_citations),
            "unsupported_sentences": list(self.unsupported_sentences),
            "flagged_passages": [{"chunk_id": c, "flags": list(f)} for c, f in self.flagged.items()],
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
            "route": self.route,
            "cost": self.cost,
            "reader": self.reader,
        }
