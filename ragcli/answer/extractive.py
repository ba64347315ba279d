"""Extractive answers: the best-supporting sentences of the retrieved passages, cited, no model.

Deterministic and fast, for CI and for when a small model is not trusted. Each candidate is a
sentence, list item or table row of a passage (a table row is read as "header: value" pairs); its
score is the fraction of the question's content terms found in it together with its heading path,
ties broken by passage rank. The best candidate is the answer; the runner-up is added when it
scores at least 80 % of the best and comes from another block.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..ingest.chunking import split_blocks
from ..models import Citation, Hit
from ..search.screening import visible
from ..text import content_terms, coverage
from .guardrails import split_sentences

_MARKUP = re.compile(r"\*\*|__|`")
_LIST_PREFIX = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])\s+")


@dataclass(frozen=True)
class Extract:
    text: str
    citations: tuple[Citation, ...]
    score: float
    sentence: str = ""  # the best-scoring sentence (where a short answer is looked for)
    n: int = 0  # the passage it is from (1-based)


def _table_rows(table: str) -> list[str]:
    lines = [ln.strip().strip("|") for ln in table.splitlines()]
    cells = [[c.strip() for c in ln.split("|")] for ln in lines]
    if len(cells) < 3 or not set("".join(cells[1])) <= set("-: "):
        return [" ".join(ln.split()) for ln in lines]
    header = cells[0]
    return ["; ".join(f"{h}: {v}" for h, v in zip(header, row, strict=False) if v)
            for row in cells[2:]]


def candidates(hit: Hit) -> list[tuple[str, int]]:
    """(sentence, block number) pairs of a passage, in order, markup removed."""
    out: list[tuple[str, int]] = []
    for number, block in enumerate(split_blocks(visible(hit.text))):
        if block.kind == "table":
            pieces = _table_rows(block.text)
        elif block.kind == "code":
            pieces = [block.text]
        else:
            pieces = split_sentences(" ".join(block.text.split()))
        for piece in pieces:
            clean = _MARKUP.sub("", _LIST_PREFIX.sub("", piece)).strip() \
                if block.kind != "code" else piece
            if clean:
                out.append((clean, number))
    return out


Similarity = Callable[[str, Sequence[str]], Sequence[float]]
"""(question, sentences) -> cosine similarity of each sentence to the question (the embedder)."""
SIMILARITY_WEIGHT = 1.0
RESCORED = 8
"""With a ``similarity``, the ``RESCORED`` best sentences by coverage are ranked again by coverage
+ SIMILARITY_WEIGHT * cosine. On 400 squad-a questions outside its golden set the chosen sentence
held a gold answer for 78.0 % of them, against 74.8 % by coverage alone."""


_NUMBER = r"(\d[\d,]*(?:\.\d+)?)"
_RANGES = (  # (pattern, low group or None, high group or None)
    (re.compile(_NUMBER + r"\s*(?:to|-|–|and)\s*" + _NUMBER), 1, 2),
    (re.compile(r"\b(?:up to|below|under|less than|at most)\s+" + _NUMBER, re.I), None, 1),
    (re.compile(r"\b(?:above|over|more than|at least|from)\s+" + _NUMBER, re.I), 1, None),
)
RANGE_BONUS = 0.5
"""Added to a sentence's score when a number in the question falls in a range it states ("a
purchase of 20,000" and the row "10,000 to 50,000; Approval needed: CFO"): limits and tiers are
tables of ranges, and no word of the question names the right row."""


def _value(text: str) -> float:
    return float(text.replace(",", ""))


def in_range(question: str, sentence: str) -> bool:
    """Whether a number of ``question`` lies within a range ``sentence`` states."""
    numbers = [_value(n) for n in re.findall(_NUMBER, question)]
    if not numbers:
        return False
    for pattern, low, high in _RANGES:
        for match in pattern.finditer(sentence):
            lo = _value(match.group(low)) if low else float("-inf")
            hi = _value(match.group(high)) if high else float("inf")
            if any(lo <= n <= hi and (lo, hi) != (n, n) for n in numbers):
                return True
    return False


def extract_answer(question: str, passages: Sequence[Hit],
                   similarity: Similarity | None = None) -> Extract | None:
    terms = content_terms(question)
    scored = []
    for rank, hit in enumerate(passages):
        for order, (sentence, block) in enumerate(candidates(hit)):
            score = coverage(terms, f"{hit.heading_path} {sentence}")
            if score > 0 and in_range(question, sentence):
                score += RANGE_BONUS
            scored.append((score, -rank, -order, sentence, rank, block))
    if not scored:
        return None
    scored.sort(reverse=True)
    if scored[0][0] <= 0:
        return None
    if similarity is not None:
        top = [e for e in scored[:RESCORED] if e[0] > 0]
        cosines = similarity(question, [e[3] for e in top])
        ranked = sorted(range(len(top)),
                        key=lambda i: (-(top[i][0] + SIMILARITY_WEIGHT * cosines[i]), i))
        scored = [top[i] for i in ranked] + scored[len(top):]
    best = scored[0]
    chosen = [best]
    for entry in scored[1:]:
        if entry[0] >= 0.8 * best[0] and (entry[4], entry[5]) != (best[4], best[5]):
            chosen.append(entry)
            break
    chosen.sort(key=lambda e: (e[4], -e[2]))  # reading order
    parts: list[str] = []
    citations: dict[int, Citation] = {}
    for _, _, _, sentence, rank, _ in chosen:
        hit = passages[rank]
        sentence = sentence if sentence.endswith((".", "!", "?", "```")) else sentence + "."
        parts.append(f"{sentence} [{rank + 1}]")
        citations.setdefault(rank + 1, Citation(rank + 1, hit.chunk_id, hit.doc_id, hit.source,
                                                hit.title, "extract"))
    return Extract(" ".join(parts), tuple(citations.values()), best[0], best[3], best[4] + 1)
