"""retrieval -> refusal gate -> (span choice | generation) -> claim checks; returns an Answer and
writes its audit record.

Refusal is decided here, by the system, before any model runs: no readable evidence, or evidence
below ``Settings.min_confidence``, means "I don't know" and the closest sources searched. Then, by
mode: ``auto`` lets a reader choose the short answer: the model scores the spans of the best
sentence (``span_reader = gguf``, the default; reading.py), or the extractive reader trained here
reads the passages and picks the best span across them, quoted with the sentence that holds it
(``span_reader = minilm``; runtimes/reader.py; a score below ``min_reader_score`` is a refusal);
``extractive`` lets rules choose (no model);
``generative`` has the model write, and checks every claim of it against the one sentence it
cites (claims.py): a failure is repaired with the verified extract, or refused, never shown. An
answer that declines, or of which no sentence is supported, is a refusal too. Every request,
answered, refused or failed, leaves exactly one audit record.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from .. import __version__
from ..audit.trace import INTERRUPTED, TRACE_FORMAT, AuditLog, read_trace
from ..errors import BackendError, RagError, UsageError
from ..ids import new_id
from ..models import Citation, Hit, Quote, Verification
from ..runtimes.embedder import Embedder
from ..runtimes.generator import Generator, TokenCallback, model_record
from ..runtimes.reader import Reader, get_reader
from ..schema import schema_problems
from ..search.retrieval import Retrieval, effective_groups, evidence, retrieve_configured
from ..search.screening import Screened, screen
from ..settings import Settings
from ..store.store import Store
from .choosing import choose_short, usage_of
from .claims import failed_claims
from .extractive import extract_answer
from .guardrails import MARKER, REFUSAL, check_answer, looks_like_refusal, split_sentences
from .prompting import build_prompt, prompt_style
from .reading import make_quote, quote_for, read_passages, span_messages
from .result import Answer
from .spans import rule_spans

MAX_QUESTION_CHARS = 2000
ROUTE_LOCAL, ROUTE_SMALL_FIRST, ROUTE_LARGE = "local", "small-first", "large"
ROUTE_SMALL = "small"
"""The attempt made by the local GGUF model (``route``'s values are in settings.py)."""
ATTEMPT_FIELDS = ("status", "refused", "refusal_reason", "answer", "short_answer", "quote",
                  "verification", "citations", "prompt", "model", "output", "guardrails",
                  "span_choice", "reader", "output_checks")
"""What one model's attempt writes into an audit record: under ``small-first`` each attempt keeps
its own copy in ``attempts`` and the record's top level holds the one shown."""
ESCALATING_REFUSALS = ("unsupported_answer", "unverified_claim", "model_declined", "output_check",
                       "context_budget", "low_reader_score")
"""Refusals of the small model that the large one may do better on: its answer failed the checks
or did not fit. Refusals for lack of evidence (none readable, confidence below min_confidence)
never escalate: a larger model has no more right to answer without evidence."""


@dataclass
class Answerer:
    """Answers questions against one store; builds the generator only when it is needed."""

    settings: Settings
    embedder: Embedder
    generator_factory: Callable[[], Generator]
    large_factory: Callable[[], Generator] | None = None  # None: the server ``large_url`` names
    cpu_time: Callable[[], float] = time.process_time  # what ``cost.cpu_s`` counts (ask --batch's
    # workers: time.thread_time, their own thread's, not the process's, which others share)
    reader_factory: Callable[[], Reader] | None = None  # None: get_reader(settings.span_reader)
    _generator: Generator | None = field(default=None, init=False)
    _reader: Reader | None = field(default=None, init=False, repr=False)
    _large: Generator | None = field(default=None, init=False, repr=False)
    _warming: threading.Thread | None = field(default=None, init=False, repr=False)

    def generator(self) -> Generator:
        if self._generator is None:
            self._generator = self.generator_factory()
        return self._generator

    @property
    def uses_reader(self) -> bool:
        """Whether the extractive reader picks short answers (then no GGUF model is needed)."""
        settings = self.settings
        return settings.mode == "auto" and settings.span_reader != "gguf" and settings.route != ROUTE_LARGE

    def reader(self) -> Reader:
        if self._reader is None:
            self._reader = (self.reader_factory or partial(get_reader, self.settings.span_reader))()
        return self._reader

    def large(self) -> Generator:
        """The large model (``route`` small-first or large): ``large_factory``'s, else the
        OpenAI-compatible server the settings name (no request is made until it answers)."""
        if self._large is None:
            if self.large_factory is not None:
                self._large = self.large_factory()
            else:
                from ..runtimes.remote import OpenAIGenerator, endpoint_from_settings

                self._large = OpenAIGenerator(endpoint_from_settings(self.settings))
        return self._large

    def prefetch(self) -> None:
        """Get the model ready while the question is embedded and searched, so that a cold
        ``ask`` pays less than retrieval plus model start-up: the GGUF weights load here, on the
        calling thread (llama.cpp silences the process's stdout and stderr while it loads, which
        must not swallow an answer or an error printed meanwhile), and in mode ``auto`` the span
        prompt's shared part (instruction and worked examples) is then put in the model's
        cache on a background thread (read from the prompt cache, else evaluated). The
        generator's methods wait for that (a lock in the generator), so nothing runs on the
        model concurrently, and nothing computed changes: span scores are the same with that
        part cached or not (tests/test_real_components.py).
        A failure while warming is raised again by the first real use, on the calling thread."""
        if self.uses_reader:  # the reader's session instead of the model (a fake has no load)
            getattr(self.reader(), "load", lambda: None)()
            return
        if self.settings.mode == "extractive" or self._warming is not None \
                or self.settings.route == ROUTE_LARGE:
            return
        generator = self.generator()
        load = getattr(generator, "load", None)
        if load is None:  # a generator without a separate load step: nothing to get ahead of
            return
        load(scoring=self.settings.mode == "auto")
        prepare = getattr(generator, "prepare_scoring", None)
        if self.settings.mode != "auto" or prepare is None:
            return

        def warm() -> None:
            try:
                prepare(span_messages("Warm up?", "Warm up."))
            except Exception:  # noqa: BLE001, S110 - the real call fails the same way, in ask
                pass

        self._warming = threading.Thread(target=warm, name="ragcli-prefetch", daemon=True)
        self._warming.start()

    def with_settings(self, settings: Settings) -> Answerer:
        """The same embedder and (loaded) generator under other settings (chat's /mode)."""
        other = Answerer(settings, self.embedder, self.generator_factory, self.large_factory,
                         self.cpu_time, self.reader_factory)
        other._generator = self._generator
        other._reader = self._reader if settings.span_reader == self.settings.span_reader else None
        other._large = self._large if settings.large_url == self.settings.large_url else None
        return other

    def ask(self, question: str, *, user: str, groups: Sequence[str],
            on_token: TokenCallback | None = None, store: Store | None = None) -> Answer:
        """Answer, and leave the request's audit record whatever happens: written when the
        request starts, updated with the exact prompt before generation, completed at the end
        (a process killed in between leaves a record that reads as interrupted; Ctrl-C, which
        chat catches, completes it as interrupted). ``store``: an open store to re-use."""
        request_id = new_id()
        started = time.perf_counter()
        cpu = self.cpu_time()
        record = self._base_record(request_id, question, user, groups)
        audit = AuditLog.of(self.settings)

        def kept(data: dict[str, Any]) -> dict[str, Any]:
            return redact(data) if self.settings.redact_audit else data

        audit.start(kept(record))
        try:
            answer = self._answer(request_id, question, user, groups, record, on_token, store,
                                  checkpoint=lambda: audit.update(kept(record)))
        except KeyboardInterrupt:
            record.update(status=INTERRUPTED, error={"type": "KeyboardInterrupt",
                                                     "message": "stopped by the user"})
            record["timings_ms"] = {"total": (time.perf_counter() - started) * 1000}
            record["cost"] = self.cost(record, self.cpu_time() - cpu)
            audit.complete(kept(record))
            raise
        except Exception as exc:
            code = int(exc.exit_code) if isinstance(exc, RagError) else 1
            record["error"] = {"type": type(exc).__name__, "message": str(exc), "exit_code": code}
            record["timings_ms"] = {"total": (time.perf_counter() - started) * 1000}
            record["cost"] = self.cost(record, self.cpu_time() - cpu)
            audit.complete(kept(record))
            raise
        answer.timings_ms["total"] = (time.perf_counter() - started) * 1000
        record["timings_ms"] = dict(answer.timings_ms)
        record["cost"] = self.cost(record, self.cpu_time() - cpu)
        final = kept(record)
        audit.complete(final)
        return replace(answer, cost=record["cost"], trace=read_trace(final),
                       reader=record.get("reader"))

    def cost(self, record: dict[str, Any], cpu_s: float) -> dict[str, Any]:
        """What a request cost: this process's CPU seconds, wall time, tokens per model (the
        server's own counts for the large one) and their price in USD under the ``usd_per_*``
        settings (0 unless set)."""
        settings = self.settings
        usage = record.get("usage") or {}
        large = usage.get(ROUTE_LARGE) or {}
        tokens = {"prompt": sum(int(u.get("prompt_tokens") or 0) for u in usage.values()),
                  "completion": sum(int(u.get("completion_tokens") or 0) for u in usage.values())}
        usd = (int(large.get("prompt_tokens") or 0) * settings.usd_per_1k_prompt
               + int(large.get("completion_tokens") or 0) * settings.usd_per_1k_completion) / 1000 \
            + cpu_s * settings.usd_per_cpu_hour / 3600
        return {"cpu_s": round(cpu_s, 4),
                "wall_ms": round((record.get("timings_ms") or {}).get("total", 0.0), 3),
                "tokens": tokens, "by_model": usage, "usd": round(usd, 8)}

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
            "format": TRACE_FORMAT,
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
        if settings.route != ROUTE_LOCAL:
            self.large()  # no large model configured fails now, not at the first escalation
        # checks the model file now (the weights load on first use); extractive needs no model,
        # nor does route large (the large model writes or picks the span; rules repair)
        generator = None if settings.mode == "extractive" or settings.route == ROUTE_LARGE \
            or self.uses_reader else self.generator()
        usage: dict[str, dict[str, Any]] = record.setdefault("usage", {})
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
                     invalid: Sequence[int] = (), unsupported: Sequence[str] = (), *,
                     short: str, quote: Quote, check: Verification) -> Answer:
            answer = Answer(request_id, question, text, False, settings.mode, tuple(citations),
                            hits, None, confidence, tuple(invalid), tuple(unsupported),
                            timings, screened.flagged, short, quote, check)
            problems = output_problems(answer, passages, groups, settings.max_answer_chars)
            if problems:
                record["output_checks"] = problems
                return refuse("output_check: " + "; ".join(problems))
            record.update(status="answered", answer=text, short_answer=short,
                          quote=quote.__dict__, verification=_check_record(check),
                          citations=[c.__dict__ for c in citations])
            return answer

        def read() -> Answer:
            """The extractive reader's best span across the passages (reading.read_passages)."""
            start = time.perf_counter()
            picked = read_passages(self.reader(), question, hits, record,
                                   settings.min_reader_score)
            timings["read"] = (time.perf_counter() - start) * 1000
            if isinstance(picked, str):
                return refuse(picked)
            bad = failed_claims(picked.short, picked.quote.text)
            if bad:  # the span is a substring of its quote: never expected, still never shown
                record["verification"] = {"outcome": "refused", "source": "reader-span",
                                          "failed": bad}
                return refuse("unverified_claim: " + "; ".join(bad[:3]))
            return answered(picked.text, (picked.citation,), hits, short=picked.short,
                            quote=picked.quote, check=Verification("verified", "reader-span"))

        def extracted(failed: Sequence[str] = (), chooser: Generator | None = None) -> Answer:
            """The extract (the best-covering sentence) and a span of it as the short answer:
            ``chooser``'s choice (a model: mode auto), the rules' otherwise. ``failed``: the
            generated answer this repairs failed those checks."""
            start = time.perf_counter()
            extract = extract_answer(question, hits, self.similarity)
            timings["extract"] = (time.perf_counter() - start) * 1000
            if extract is None:
                if failed:
                    record["verification"] = {"outcome": "refused", "source": "model",
                                              "failed": list(failed)}
                    return refuse("unverified_claim: " + "; ".join(failed[:3]))
                return refuse("unsupported_answer: no sentence of the passages covers the question")
            quote = make_quote(extract.n, hits[extract.n - 1], extract.sentence)
            start = time.perf_counter()
            choice = choose_short(chooser, question, extract.sentence, record, seed=settings.seed,
                                  usage_key=ROUTE_SMALL if chooser is generator else ROUTE_LARGE,
                                  checkpoint=checkpoint)
            timings["span"] = (time.perf_counter() - start) * 1000
            short = choice.span.text if choice else extract.sentence
            source = "model-span" if choice and choice.method == "model" else "extract"
            bad = failed_claims(short, quote.text) + failed_claims(extract.sentence, quote.text)
            if bad:  # a span or sentence of the quote itself: never expected, still never shown
                record["verification"] = {"outcome": "refused", "source": source, "failed": bad}
                return refuse("unverified_claim: " + "; ".join(bad[:3]))
            check = Verification("repaired" if failed else "verified", source, tuple(failed))
            return answered(extract.text, extract.citations, hits, short=short, quote=quote,
                            check=check)

        if not found.hits:
            return refuse("no_readable_evidence: nothing in the store is readable by these groups")
        if confidence < settings.min_confidence:
            return refuse(f"low_confidence: best evidence {confidence:.3f} is below "
                          f"min_confidence {settings.min_confidence:.3f}")

        def generated(model: Generator, *, large: bool) -> Answer:
            """The model writes the answer from the numbered passages; every claim is checked."""
            start = time.perf_counter()
            style = prompt_style(settings.large_prompt_style if large else settings.prompt_style, model)
            prompt = build_prompt(question, hits, render=model.render, style=style,
                                  count_tokens=model.count_tokens, context_tokens=model.context_tokens,
                                  answer_tokens=settings.max_tokens)
            timings["prompt"] = (time.perf_counter() - start) * 1000
            record["prompt"] = {"text": prompt.text, "tokens": prompt.tokens,
                                "messages": [list(m) for m in prompt.messages],
                                "passages": [h.chunk_id for h in prompt.passages],
                                "dropped": list(prompt.dropped)}
            if large:
                record["prompt"]["tokens_estimated"] = True  # the server's count is in usage
            record["model"] = model_record(model)
            if not prompt.passages:
                return refuse("context_budget: no passage fits the model's context window")
            if checkpoint is not None:
                checkpoint()  # the exact prompt is on disk before the model runs
            generation = model.generate(prompt.text, max_tokens=settings.max_tokens,
                                        temperature=settings.temperature, seed=settings.seed,
                                        on_token=on_token)
            timings.update({f"{'large_' if large else ''}generation_{k}": v
                            for k, v in generation.timings_ms.items()})
            record["model"] = model_record(model)  # what the server said of itself, if remote
            record["model"]["sampling"] = generation.sampling
            record["output"] = {"raw": generation.text, "tokens": generation.tokens,
                                "finish_reason": generation.finish_reason}
            usage[ROUTE_LARGE if large else ROUTE_SMALL] = usage_of(model, prompt.tokens,
                                                                    generation.tokens)
            if looks_like_refusal(generation.text):
                return refuse("model_declined: the model said it does not know")
            checked = check_answer(generation.text, prompt.passages)
            record["guardrails"] = {"invalid_citations": list(checked.invalid_markers),
                                    "unsupported_sentences": list(checked.unsupported),
                                    "supported_sentences": checked.supported_sentences}
            if checked.supported_sentences == 0:
                return refuse("unsupported_answer: no sentence of the model's answer is "
                              "supported by a passage")
            verified = verify_generated(question, checked.text, prompt.passages)
            if isinstance(verified, list):  # a claim not in its quote: never shown as an answer
                return extracted(failed=verified)
            short, quote = verified
            return answered(checked.text, checked.citations, prompt.passages,
                            checked.invalid_markers, checked.unsupported, short=short,
                            quote=quote, check=Verification("verified", "model"))

        def by_large() -> Answer:  # mode auto: the large model picks the span; else it writes
            return extracted(chooser=self.large()) if settings.mode == "auto" \
                else generated(self.large(), large=True)

        if settings.route == ROUTE_LARGE:
            record["route"] = {"policy": ROUTE_LARGE, "taken": ROUTE_LARGE, "escalated": False}
            return replace(by_large(), route=record["route"])
        if settings.mode == "generative":
            small = generated(generator, large=False)  # type: ignore[arg-type]
        else:
            small = read() if self.uses_reader else extracted(chooser=generator)
        if settings.route != ROUTE_SMALL_FIRST:
            return small
        reason = escalation_reason(small, settings.escalate_below)
        record["route"] = {"policy": ROUTE_SMALL_FIRST, "taken": ROUTE_SMALL,
                           "escalated": reason is not None, "reason": reason}
        if reason is None:
            return replace(small, route=record["route"])
        first = {k: record.pop(k) for k in ATTEMPT_FIELDS if k in record}
        record["attempts"] = [{"route": ROUTE_SMALL, **first}]
        record.update(status="failed", refused=False)
        try:
            large = by_large()
        except BackendError as exc:  # the small model's checked result stands; said so
            for k in ATTEMPT_FIELDS:
                record.pop(k, None)
            record.update(first)
            record["attempts"].append({"route": ROUTE_LARGE, "error": {
                "type": type(exc).__name__, "message": str(exc), "exit_code": int(exc.exit_code)}})
            record["route"]["error"] = str(exc)
            return replace(small, route=record["route"])
        second = {k: record[k] for k in ATTEMPT_FIELDS if k in record}
        record["attempts"].append({"route": ROUTE_LARGE, **second})
        if large.refused and not small.refused:  # the verified small answer stands
            for k in second:
                record.pop(k)
            record.update(first)
            return replace(small, route=record["route"])
        record["route"]["taken"] = ROUTE_LARGE
        return replace(large, route=record["route"])

    def similarity(self, question: str, sentences: Sequence[str]) -> list[float]:
        """Cosine of each sentence to the question (the store's embedder; unit vectors)."""
        import numpy as np

        vectors = np.asarray(self.embedder.embed([question, *sentences]), dtype=np.float64)
        return [float(v @ vectors[0]) for v in vectors[1:]]


def escalation_reason(small: Answer, escalate_below: float) -> str | None:
    """Why ``small-first`` hands a question to the large model, or None: the small model's answer
    failed the checks (refused, or repaired with an extract), or it passed with a confidence
    below ``escalate_below``."""
    if small.refused:
        reason = (small.refusal_reason or "").split(":", 1)[0]
        return f"small_{reason}" if reason in ESCALATING_REFUSALS else None
    if small.verification is not None and small.verification.outcome == "repaired":
        return "small_answer_repaired"
    if small.confidence < escalate_below:
        return "confidence_below_escalate_below"
    return None


def verify_generated(question: str, text: str, passages: Sequence[Hit]) -> list[str] | tuple[str, Quote]:
    """Check every sentence of a generated (already citation-checked) answer against the quote it
    cites: the failures, or the short answer and the first sentence's quote."""
    failures: list[str] = []
    first: tuple[str, Quote] | None = None
    for sentence in split_sentences(text):
        marked = [int(m) for m in MARKER.findall(sentence)]
        bare = MARKER.sub("", sentence).strip()
        quotes = [q for n in marked
                  if (q := quote_for(bare, n, passages[n - 1], question)) is not None]
        if not quotes:
            failures.append(f"no quote found for: {bare[:80]}")
            continue
        problems = [failed_claims(bare, q.text) for q in quotes]
        best = min(range(len(quotes)), key=lambda i: len(problems[i]))
        failures.extend(problems[best])
        if first is None and not problems[best]:
            spans = [s.text for s in rule_spans(question, quotes[best].text) if s.text in bare]
            first = (spans[0] if spans else bare, quotes[best])
    if failures or first is None:
        return failures or ["no sentence could be checked"]
    return first


def _check_record(check: Verification) -> dict[str, Any]:
    return {"outcome": check.outcome, "source": check.source, "failed": list(check.failed)}


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
    for name in ("question", "answer", "short_answer"):
        if isinstance(out.get(name), str):
            out[name] = redacted_text(out[name])
    if isinstance(out.get("quote"), dict):
        out["quote"] = dict(out["quote"], text=redacted_text(out["quote"].get("text", "")))
    if isinstance(out.get("span_choice"), dict):  # spans of passage text
        choice = out["span_choice"]
        out["span_choice"] = dict(choice, chosen=redacted_text(choice.get("chosen", "")),
                                  candidates=[[redacted_text(c[0]), *c[1:]]
                                              for c in choice.get("candidates", [])])
    if isinstance(out.get("verification"), dict):  # failures quote the answer's words
        check = out["verification"]
        out["verification"] = dict(check, failed=[redacted_text(f) for f in check.get("failed", [])])
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
    if isinstance(out.get("attempts"), list):  # small-first: each model's attempt, texts too
        out["attempts"] = [{k: v for k, v in redact(a).items() if k != "redacted"}
                           if isinstance(a, dict) else a for a in out["attempts"]]
    return out


def redacted_text(text: str) -> str:
    return f"[redacted sha256:{hashlib.sha256(text.encode('utf-8')).hexdigest()}]"


def _retrieval_record(found: Retrieval, flagged: dict[str, tuple[str, ...]],
                      confidence: float) -> dict[str, Any]:
    record = {
        "index_version": found.version,
        "vector_leg": found.vector_leg,  # memory | lance: replay searches the same way
        "acl_filter": found.acl_filter,
        "effective_groups": list(found.groups),
        "confidence": confidence,  # after screening: removed text is no evidence
        "retrieved": [{"chunk_id": h.chunk_id, "doc_id": h.doc_id, "chunk_hash": h.chunk_hash,
                       "score": h.score, "vector_score": h.vector_score,
                       "fts_score": h.fts_score, "flags": list(flagged.get(h.chunk_id, ())),
                       **({} if h.rerank_score is None else {"rerank_score": h.rerank_score})}
                      for h in found.hits],
    }
    if found.reranker is not None:
        record["reranker"] = found.reranker
    return record
