"""Short answers: the span of a supporting sentence that answers the question.

A sentence is cut into candidate spans: the runs of words between the question's own words and
punctuation (trimmed of function words), and inside them the typed pieces a question usually asks
for (numbers with their unit, years and dates, runs of capitalised names). Two ways choose among
them, and neither can invent text: every candidate is a substring of the sentence.

- :func:`rule_spans` scores each candidate by whether its type fits the question's type ("how
  many" wants a number, "when" a date, "who"/"where" a name), how close it lies to the question's
  words in the sentence, and its length (no model).
- :func:`all_spans` lists every short span of the sentence, for a model to score by likelihood
  (``Generator.score_continuations``; see answering.py, mode ``auto``).

Measured on 200 squad-a questions outside its golden set (scripts/bench_answers has the tables):
given the sentence, the rules reach token F1 0.31-0.36, the model's choice 0.38; the best span of
the sentence would reach 0.78, so the reader, not the sentence, bounds the short answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..text import STOP_WORDS, content_terms, stem

_TOKEN = re.compile(r"[^\W_]+(?:[.,'’\-][^\W_]+)*|[%$€£]|[^\w\s]")
_EDGE_STOP = STOP_WORDS | frozenset(
    "which while whereas although though because since after before during between among within "
    "without through including include included known called named later both either neither "
    "one s".split())
_JOINERS = frozenset({"of", "de", "and", "von", "van", "la", "le", "du", "del"})
_NUMBER_WORDS = frozenset("one two three four five six seven eight nine ten eleven twelve twenty "
                          "hundred thousand million billion trillion dozen half".split())
_MONTHS = frozenset("january february march april may june july august september october "
                    "november december".split())
_QUESTION_TYPES = (
    ("number", re.compile(r"\bhow (many|much|long|far|old|high|tall|large|big|deep|wide|often|"
                          r"fast|heavy)\b|\bwhat (percentage|percent|number|amount|proportion|"
                          r"fraction|size|price|cost)\b", re.I)),
    ("date", re.compile(r"\bwhen\b|\b(what|which) (year|years|century|decade|date|day|month|"
                        r"time period|era)\b|\bin what year\b", re.I)),
    ("name", re.compile(r"\bwho(m|se)?\b|\bwhere\b|\b(what|which) (person|people|man|woman|king|"
                        r"emperor|scientist|president|leader|country|city|state|town|region|"
                        r"place|continent|river|company|organization|organisation)\b", re.I)),
)


def question_type(question: str) -> str:
    """number, date, name or other: what kind of span would answer ``question``."""
    for name, pattern in _QUESTION_TYPES:
        if pattern.search(question):
            return name
    return "other"


@dataclass(frozen=True)
class Span:
    text: str
    start: int  # character offsets in the sentence
    end: int
    score: float = 0.0


def _is_number(word: str) -> bool:
    return bool(re.fullmatch(r"\d[\d,.]*", word)) or word.lower() in _NUMBER_WORDS


def _is_date_word(word: str) -> bool:
    return bool(re.fullmatch(r"1\d{3}|20\d{2}|\d{1,4}s", word)) or word.lower() in _MONTHS


def _is_name_word(word: str) -> bool:
    return word[:1].isupper() or _is_number(word)


def tokens(sentence: str) -> list[tuple[str, int, int]]:
    """(word or punctuation, start, end) of ``sentence``."""
    return [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(sentence)]


def _segments(question: str, words: list[tuple[str, int, int]]) -> list[tuple[int, int]]:
    """Word index ranges between the question's words and punctuation, trimmed of stop words."""
    asked = content_terms(question)
    out: list[list[int]] = []
    run: list[int] = []
    for i, (word, _, _) in enumerate(words):
        if stem(word.lower()) in asked or (not word[0].isalnum() and word not in "%$€£-'’&"):
            out.append(run)
            run = []
        else:
            run.append(i)
    out.append(run)
    trimmed = []
    for run in out:
        if not run:
            continue
        a, b = run[0], run[-1]
        while a <= b and words[a][0].lower() in _EDGE_STOP:
            a += 1
        while b >= a and words[b][0].lower() in _EDGE_STOP:
            b -= 1
        if a <= b:
            trimmed.append((a, b))
    return trimmed


def _typed_pieces(words: list[tuple[str, int, int]], a: int, b: int) -> set[tuple[int, int]]:
    """Runs of names or numbers inside words[a..b] (a number keeps the word after it: its unit)."""
    pieces = set()
    i = a
    while i <= b:
        j = i
        if _is_name_word(words[i][0]):
            while j + 1 <= b and (_is_name_word(words[j + 1][0]) or (
                    words[j + 1][0].lower() in _JOINERS | {"%"} and j + 2 <= b
                    and _is_name_word(words[j + 2][0]))):
                j += 1
            while j > i and words[j][0].lower() in _JOINERS:
                j -= 1
            pieces.add((i, j))
            # a number keeps the word after it, its unit, even when the question names the unit
            if _is_number(words[j][0]) and j + 1 < len(words) and words[j + 1][0].isalpha() \
                    and words[j + 1][0].lower() not in _EDGE_STOP:
                pieces.add((i, j + 1))
        i = j + 1
    return pieces


_HEADER = re.compile(r"(?:^|; )([^:;]{1,80}): ")


def _in_header(sentence: str, start: int, end: int) -> bool:
    """Whether [start, end) lies inside a column name of a table row read as "header: value; ..."
    (extractive.candidates): a header names the question's subject, never its answer."""
    return any(m.start(1) <= start and end <= m.end(1) for m in _HEADER.finditer(sentence))


def rule_spans(question: str, sentence: str, max_words: int = 8) -> list[Span]:
    """Candidate spans of ``sentence`` for ``question``, best first (see the module docstring)."""
    kind = question_type(question)
    words = tokens(sentence)
    asked = content_terms(question)
    near = [i for i, (w, _, _) in enumerate(words) if stem(w.lower()) in asked]
    found: dict[tuple[int, int], float] = {}
    for a, b in _segments(question, words):
        for x, y in {(a, b)} | _typed_pieces(words, a, b):
            if y - x + 1 > max_words:
                continue
            run = [w for w, _, _ in words[x:y + 1]]
            alpha = [w for w in run if w[0].isalpha()]
            names = bool(alpha) and any(w[0].isupper() for w in alpha) and all(
                w[0].isupper() or w.lower() in _JOINERS for w in alpha)
            fits = {"number": any(_is_number(w) for w in run),
                    "date": any(_is_date_word(w) for w in run),
                    "name": names, "other": True}[kind]
            distance = min((min(abs(p - x), abs(p - y)) for p in near), default=10)
            score = 2.0 * fits + 1.0 / (1 + distance) - 0.05 * max(0, len(run) - 3)
            if kind == "other" and names:
                score += 0.1
            found[(x, y)] = max(score, found.get((x, y), score))
    spans = [Span(sentence[words[x][1]:words[y][2]], words[x][1], words[y][2], score)
             for (x, y), score in found.items()
             if not _in_header(sentence, words[x][1], words[y][2])]
    spans.sort(key=lambda s: (-s.score, s.start, s.end))
    return spans


def all_spans(question: str, sentence: str, max_words: int = 6) -> list[Span]:
    """Every span of up to ``max_words`` words that starts and ends on a content word and is not
    only the question's own words, in reading order (for a model to score)."""
    words = tokens(sentence)
    asked = content_terms(question)
    seen: set[str] = set()
    out = []
    for i in range(len(words)):
        for j in range(i, min(len(words), i + max_words)):
            run = [w for w, _, _ in words[i:j + 1]]
            if not run[0][0].isalnum() or (not run[-1][0].isalnum() and run[-1] not in "%"):
                continue
            if run[0].lower() in _EDGE_STOP or run[-1].lower() in _EDGE_STOP:
                continue
            if all(stem(w.lower()) in asked or not w[0].isalnum() for w in run):
                continue
            text = sentence[words[i][1]:words[j][2]]
            if text not in seen and not _in_header(sentence, words[i][1], words[j][2]):
                seen.add(text)
                out.append(Span(text, words[i][1], words[j][2]))
    return out
