"""Word-level text helpers shared by the confidence measure and the citation guardrail."""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)*")
STOP_WORDS = frozenset("""a an the and or but if of to in on at by for with from as is are was were
be been being it its this that these those there their they them he she his her we our you your i
me my do does did done can could should would may might must will shall not no yes so than then
also about into over under up down out what which who whom whose when where why how all any each
every some such only own same other more most very just have has had having get gets got many much
long often kind tell please""".split())
_SUFFIXES = ("ing", "ed", "es", "s", "ly")


def stem(word: str) -> str:
    """A deliberately light suffix stripper: 'listens' and 'listen' meet, 'price' stays."""
    for suffix in _SUFFIXES:
        if len(word) > 4 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_terms(text: str) -> set[str]:
    """Lower-cased, stemmed words and numbers of ``text`` without stop words."""
    return {stem(w) for w in _WORD.findall(text.lower()) if w not in STOP_WORDS}


def coverage(question_terms: set[str], passage: str) -> float:
    """Fraction of ``question_terms`` that occur in ``passage`` (0 when there are none)."""
    if not question_terms:
        return 0.0
    return len(question_terms & content_terms(passage)) / len(question_terms)
