"""Claim-level checks: does the quote an answer cites say what the answer says?

Whatever produced an answer (the model, a span, a sentence), each of its claims must be in the
quote it cites, not merely somewhere in the passage: the Team plan answered with the Business price
is caught, because the quote about the Team plan does not hold that number. Checked without a
large model, by what can be read off the words:

- every number (``1,500`` = ``1500``; ``16-week`` = ``16 weeks``), with the unit or currency that
  goes with it (``16 weeks`` needs 16 followed by weeks; ``$40`` needs ``$40``), every year and date;
- every named entity (a capitalised word that is not the sentence's first word or a stop word);
- every negation (not, no, never, ...): an answer that adds one contradicts its quote;
- and the sentence as a whole: at least ``SUPPORT_THRESHOLD`` of its content words are the
  quote's (``guardrails.support``).

``failed_claims`` lists what failed, in words a reader understands; an empty list is verified.
"""

from __future__ import annotations

import re

from ..text import STOP_WORDS, content_terms
from .guardrails import MARKER, SUPPORT_THRESHOLD, split_sentences, support

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_AMOUNT = re.compile(r"([$€£¥])?\s?(\d+(?:\.\d+)?)(?:\s?-\s?|\s)?(%|[A-Za-z]+)?")
_WORD = re.compile(r"[^\W\d_][\w'’\-]*")
_NEGATIONS = frozenset({"not", "no", "never", "none", "neither", "nor", "cannot", "without"})
_NOT_UNITS = STOP_WORDS | frozenset({"and", "or", "to", "per", "th", "st", "nd", "rd"})


def _plain(text: str) -> str:
    return _THOUSANDS.sub("", MARKER.sub(" ", text)).replace("’", "'")


def amounts(text: str) -> list[tuple[str, str, str]]:
    """(currency, number, unit) of every number in ``text``; unit '' when none follows."""
    out = []
    for match in _AMOUNT.finditer(_plain(text)):
        currency, number, unit = match.group(1) or "", match.group(2), match.group(3) or ""
        unit = "" if unit.lower() in _NOT_UNITS else _singular(unit.lower())
        out.append((currency, number, unit))
    return out


def _singular(unit: str) -> str:
    return unit[:-1] if len(unit) > 2 and unit.endswith("s") and not unit.endswith("ss") else unit


def names(text: str) -> set[str]:
    """Lower-cased capitalised words of ``text`` that are not a sentence's first word or stop words."""
    out = set()
    for sentence in split_sentences(_plain(text)):
        for i, match in enumerate(_WORD.finditer(sentence)):
            word = match.group()
            if i and word[0].isupper() and word.lower() not in STOP_WORDS:
                out.add(word.lower())
    return out


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(_plain(text))}


def failed_claims(answer: str, quote: str) -> list[str]:
    """What ``answer`` claims that ``quote`` does not hold (empty: every check passed)."""
    failures = []
    quoted = amounts(quote)
    numbers = {n for _, n, _ in quoted}
    for currency, number, unit in amounts(answer):
        if number not in numbers:
            failures.append(f"number {currency}{number} is not in the quote")
        elif currency and (currency, number) not in {(c, n) for c, n, _ in quoted}:
            failures.append(f"amount {currency}{number} is not in the quote")
        elif unit and (number, unit) not in {(n, u) for _, n, u in quoted}:
            failures.append(f"'{number} {unit}' is not in the quote")
    quote_words = _words(quote)
    for name in sorted(names(answer) - quote_words):
        failures.append(f"name '{name}' is not in the quote")
    for negation in sorted((_words(answer) & _NEGATIONS) - quote_words):
        failures.append(f"'{negation}' is not in the quote")
    for sentence in split_sentences(MARKER.sub("", answer)):
        if content_terms(sentence) and support(sentence, quote) < SUPPORT_THRESHOLD:
            failures.append(f"sentence not supported by the quote: {sentence[:80]}")
    return failures
