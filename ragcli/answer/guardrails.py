"""Pure checks on a model's output: citation markers, sentence support, refusals.

Citation integrity is a system property, not a hope: a ``[n]`` marker is kept only if passage ``n``
was retrieved *and* given to the model under the user's ACL; other markers are removed and recorded.
A marked sentence must also be supported by a passage it cites; a sentence without a valid,
supporting marker is attributed to the passage that supports it best, or left out as unsupported.

Support score of a sentence against a passage: the fraction of the sentence's content terms
(lower-cased, lightly stemmed words and numbers, stop words removed; see text.py) that occur in
the passage with its title and headings. Supported means a score of at least ``SUPPORT_THRESHOLD``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..models import Citation, Hit
from ..search.screening import REDACTED, visible
from ..text import content_terms, coverage

SUPPORT_THRESHOLD = 0.5
MARKER = re.compile(r"\s?\[(\d{1,3})\]")
"""A citation marker ``[n]`` with the space before it; group 1 is n."""
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
_LEADING_MARKERS = re.compile(r"^((?:\[\d{1,3}\]\s*)+)")
REFUSAL = "I don't know."
_REFUSAL_PATTERNS = re.compile(r"\b(i don'?t know|i do not know|cannot answer|can't answer|"
                               r"not (?:mentioned|stated|provided) in the passages)\b", re.I)


def split_sentences(text: str) -> list[str]:
    """Sentences (and lines) of ``text``; a marker after a full stop stays with its sentence."""
    sentences: list[str] = []
    pieces = [p for line in text.strip().splitlines() for p in _SENTENCE.split(line)]
    for piece in pieces:
        piece = piece.strip()
        lead = _LEADING_MARKERS.match(piece)
        if lead and sentences:
            sentences[-1] += " " + lead.group(1).strip()
            piece = piece[lead.end():].strip()
        if piece:
            sentences.append(piece)
    return sentences


def support(sentence: str, passage: str) -> float:
    """Fraction of the sentence's content terms that occur in the passage."""
    return coverage(content_terms(MARKER.sub("", sentence)), passage)


def looks_like_refusal(text: str) -> bool:
    return bool(_REFUSAL_PATTERNS.search(text)) or not text.strip()


@dataclass(frozen=True)
class CheckedAnswer:
    text: str
    citations: tuple[Citation, ...]
    invalid_markers: tuple[int, ...]
    unsupported: tuple[str, ...]
    supported_sentences: int


def _citation(n: int, hit: Hit, how: str) -> Citation:
    return Citation(n, hit.chunk_id, hit.doc_id, hit.source, hit.title, how)


def check_answer(raw: str, passages: Sequence[Hit]) -> CheckedAnswer:
    """Keep the supported sentences of ``raw``, each with a valid citation.

    A ``[n]`` marker is invalid unless passage ``n`` was given to the model (retrieved and
    allowed); invalid markers are removed and recorded. A sentence is kept when a passage it cites
    supports it, or else when its best-supporting passage does (then cited with ``how="support"``).
    Sentences that no passage supports are left out of the answer and returned as ``unsupported``.
    """
    invalid: list[int] = []

    def keep(match: re.Match[str]) -> str:
        n = int(match.group(1))
        if 1 <= n <= len(passages):
            return match.group(0)
        invalid.append(n)
        return ""

    text = MARKER.sub(keep, raw.strip()).replace(REDACTED, " ")  # echoed markers are no answer
    cited: dict[int, Citation] = {}
    unsupported: list[str] = []
    out: list[str] = []
    for sentence in split_sentences(text):
        bare = MARKER.sub("", sentence).strip()
        marked = [int(m) for m in MARKER.findall(sentence)]
        backed = [n for n in marked if support(bare, _passage_text(passages[n - 1]))
                  >= SUPPORT_THRESHOLD]
        if backed:
            for n in backed:
                cited.setdefault(n, _citation(n, passages[n - 1], "marker"))
            out.append(bare + " " + "".join(f"[{n}]" for n in backed))
            continue
        scores = [(support(bare, _passage_text(p)), i + 1) for i, p in enumerate(passages)]
        best, n = max(scores, default=(0.0, 0))
        if bare and best >= SUPPORT_THRESHOLD:
            cited.setdefault(n, _citation(n, passages[n - 1], "support"))
            out.append(f"{bare} [{n}]")
        elif bare:
            unsupported.append(bare)
    return CheckedAnswer(" ".join(out), tuple(sorted(cited.values(), key=lambda c: c.n)),
                         tuple(invalid), tuple(unsupported), len(out))


def _passage_text(hit: Hit) -> str:
    return f"{hit.title} {hit.heading_path} {visible(hit.text)}"
