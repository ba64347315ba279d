"""Quotes and short answers: from the passages to "16 weeks", with the sentence that says so.

- :func:`locate` finds a sentence (as the extractor cleaned it: markup gone, white space folded)
  in the passage text as stored, so a quote carries offsets into the chunk's text.
- :func:`quote_for` picks the one sentence of a passage that best supports an answer sentence:
  the quote a generated sentence is checked against (claims.py).
- :func:`quote_span` quotes the sentence(s) of a passage that hold a span the extractive reader
  chose (runtimes/reader.py), so the short answer is a substring of its quote there too.
- :func:`choose_span` picks the short answer inside a quote: by the rules alone (spans.rule_spans),
  or by the model's likelihood of each candidate span as the answer (mode ``auto``), plus the rule
  score and a length term. Either way the short answer is a substring of the quote.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..models import Citation, Hit, Quote
from ..runtimes.reader import Reader, choose
from ..search.screening import REDACTED
from ..text import content_terms, coverage
from .extractive import candidates
from .guardrails import support
from .spans import Span, all_spans, rule_spans

SPAN_SYSTEM = "Answer with a few words copied from the text."
"""The instruction the model scores candidate spans under (mode ``auto``)."""
SPAN_EXAMPLES = (
    ("The library opens at 9 a.m. and closes at 6 p.m. on weekdays.",
     "When does the library close on weekdays?", "6 p.m."),
    ("The bridge, designed by Maria Lopez, was completed in 1932 after four years of work.",
     "Who designed the bridge?", "Maria Lopez"),
    ("Most of the island's electricity comes from wind turbines on the northern coast.",
     "Where are the wind turbines?", "the northern coast"),
)
"""Three made-up worked examples shown before the question (written for ragcli, from no data
set): on 200 squad-a questions outside its golden set they raised the chosen spans' token F1
from 0.380 to 0.395 (EM 0.265 -> 0.285), for about 0.3 s more prefill."""
RULE_WEIGHT = 1.0
LENGTH_WEIGHT = 0.3
"""span score = log P(span, end of turn | prompt) + RULE_WEIGHT * rule score + LENGTH_WEIGHT *
words: fitted on those 200 questions (the likelihood alone: F1 0.378; the rules alone 0.31-0.36)."""
_WORDS = re.compile(r"[^\W_]+", re.U)


def locate(sentence: str, text: str) -> tuple[int, int] | None:
    """(start, end) of ``sentence`` in ``text``, allowing any markup, punctuation or white space
    between its words; None when its words do not occur there in order."""
    words = _WORDS.findall(sentence)
    if not words:
        return None
    pattern = r"[\W_]*?".join(re.escape(w) for w in words)
    match = re.search(pattern, text)
    if match is None:
        return None
    end = match.end()
    if sentence.rstrip().endswith((".", "!", "?")) and end < len(text) and text[end] in ".!?":
        end += 1
    return match.start(), end


def make_quote(n: int, hit: Hit, sentence: str) -> Quote:
    where = locate(sentence, hit.text)
    if where is None:
        return Quote(n, hit.chunk_id, sentence, None, None)
    return Quote(n, hit.chunk_id, hit.text[where[0]:where[1]], where[0], where[1])


def quote_for(claim: str, n: int, hit: Hit, question: str = "") -> Quote | None:
    """The one sentence of ``hit`` (passage ``n``) that best supports ``claim``; among equally
    supporting sentences, the one that covers more of ``question``. One sentence, not two: a
    number from the next sentence (another plan's price) must not count. None for a passage
    without sentences."""
    sentences = [s for s, _ in candidates(hit)]
    if not sentences:
        return None
    asked = content_terms(question)
    best = max(range(len(sentences)),
               key=lambda i: (support(claim, sentences[i]), coverage(asked, sentences[i]), -i))
    return make_quote(n, hit, sentences[best])


SPAN_EDGES = " \t\n*_`|#,;:"
"""Markup and separators a span read from a passage's Markdown may begin or end with."""


def readable(text: str) -> str:
    """``text`` as the reader reads it: each redaction marker blanked to as many spaces, so that
    offsets in it are offsets in ``text`` and no span can hold the marker's words."""
    return text.replace(REDACTED, " " * len(REDACTED))


def quote_span(n: int, hit: Hit, start: int, end: int) -> tuple[str, Quote]:
    """The sentence(s) of passage ``n`` that hold ``hit.text[start:end]`` (a span the reader
    chose), as shown (markup removed) and as a quote with offsets into the passage. A span that
    runs over a sentence boundary gets the sentences it runs over; one outside any sentence found
    (a heading, a code line) gets its line."""
    located = []
    for sentence, _ in candidates(hit):
        where = locate(sentence, hit.text)
        if where is not None and where[1] > start and where[0] < end:
            located.append((where, sentence))
    if located:
        begin = min(start, located[0][0][0])
        finish = max(end, located[-1][0][1])
        shown = " ".join(s for _, s in located)
    else:
        begin = hit.text.rfind("\n", 0, start) + 1
        newline = hit.text.find("\n", end)
        finish = len(hit.text) if newline < 0 else newline
        shown = " ".join(hit.text[begin:finish].split())
    return shown, Quote(n, hit.chunk_id, hit.text[begin:finish], begin, finish)


@dataclass(frozen=True)
class Read:
    """What the extractive reader picked, ready to show: the short answer, the cited sentence(s)
    (``text``, with its marker), the quote and the citation."""

    short: str
    text: str
    quote: Quote
    citation: Citation


def read_passages(reader: Reader, question: str, hits: Sequence[Hit], record: dict[str, Any],
                  min_score: float) -> Read | str:
    """The reader's best span across ``hits``, quoted with the sentence that holds it; or, when it
    scores below ``min_score`` (the passages do not seem to answer), the refusal reason. Records
    the reader and its choice (``reader``, ``span_choice``) in ``record``."""
    spans = reader.read(question, [readable(hit.text) for hit in hits])
    best = choose(spans)
    record["reader"] = reader.record()
    ranked = sorted(spans, key=lambda s: (-s.score, s.passage, s.start))[:5]
    record["span_choice"] = {"method": "reader", "chosen": best.text if best else None,
                             "score": best.score if best else None,
                             "candidates": [[s.text, s.score, s.passage + 1] for s in ranked]}
    if best is None or best.score < min_score:
        score = "no span" if best is None else f"its best span scores {best.score:.3f}"
        return f"low_reader_score: {score}, below min_reader_score {min_score:.3f}"
    n = best.passage + 1
    hit = hits[best.passage]
    sentence, quote = quote_span(n, hit, best.start, best.end)
    text = sentence if sentence.endswith((".", "!", "?", "```")) else sentence + "."
    return Read(" ".join(best.text.strip(SPAN_EDGES).split()), f"{text} [{n}]", quote,
                Citation(n, hit.chunk_id, hit.doc_id, hit.source, hit.title, "extract"))


@dataclass(frozen=True)
class Choice:
    span: Span
    method: str  # "rules" or "model"
    scored: tuple[tuple[str, float], ...] = ()  # the best candidates and their scores


# (spans, bonus per span) -> each span's log-likelihood, or None for a span whose likelihood
# plus bonus cannot be the best (Generator.score_continuations)
SpanScorer = Callable[[Sequence[str], Sequence[float]], list[float | None]]
"""continuations -> the model's log-likelihood of each as the answer, end of turn included."""


def span_messages(question: str, quote: str) -> tuple[tuple[str, str], ...]:
    """The chat the model scores candidate spans under (mode ``auto``)."""
    messages = [("system", SPAN_SYSTEM)]
    for text, asked, answer in SPAN_EXAMPLES:
        messages += [("user", f"Text: {text}\n\nQuestion: {asked}"), ("assistant", answer)]
    return (*messages, ("user", f"Text: {quote}\n\nQuestion: {question}"))


def choose_span(question: str, quote: str, scorer: SpanScorer | None = None) -> Choice | None:
    """The short answer in ``quote``: the rules' best span, or with ``scorer`` the span the model
    finds likeliest (plus the rule score and a length term); None when the quote has no
    candidate at all."""
    if quote.startswith("```"):  # a code block: the line that covers the question best
        lines = [ln for ln in quote.splitlines()[1:] if ln.strip() and not ln.startswith("```")]
        if not lines:
            return None
        asked = content_terms(question)
        best = max(lines, key=lambda ln: (coverage(asked, ln), -lines.index(ln)))
        start = quote.index(best)
        return Choice(Span(best.strip(), start, start + len(best)), "rules")
    ruled = rule_spans(question, quote)
    if scorer is None:
        return Choice(ruled[0], "rules", tuple((s.text, round(s.score, 4)) for s in ruled[:5])) \
            if ruled else None
    spans = all_spans(question, quote) or ruled
    if not spans:
        return None
    rule_score = {s.text: s.score for s in ruled}
    bonus = [RULE_WEIGHT * rule_score.get(s.text, -0.5) + LENGTH_WEIGHT * len(s.text.split())
             for s in spans]
    likelihoods = scorer([s.text for s in spans], bonus)
    total = {i: lp + bonus[i] for i, lp in enumerate(likelihoods) if lp is not None}
    order = sorted(total, key=lambda i: (-total[i], spans[i].start))
    return Choice(spans[order[0]], "model",
                  tuple((spans[i].text, round(total[i], 4)) for i in order[:5]))
