"""Is an answer right? SQuAD's exact match and token F1, and the containment check the gate uses.

Two normalisations, for two jobs:

- :func:`squad_normalize` is the official SQuAD v1.1 one (lower case, punctuation and the articles
  a/an/the removed, white space folded), so exact match and token F1 compare with published numbers.
  Citation markers (``[2]``) are removed first: they are ragcli's, not the answer's.
- :func:`answer_tokens` is stricter about numbers, because the gate decides with it whether a case
  is right: a number is one token (``15`` never contains ``5``; ``3.5`` stays ``3.5`` and is not
  ``35``; ``1,500`` is ``1500``), ``%`` and currency signs are tokens of their own, and a plural
  ``s`` is dropped from words (``16-week`` and ``16 weeks`` are the same answer). An expected answer
  is *contained* in an answer when its tokens occur in the answer's tokens as one contiguous run,
  so ``16 weeks`` is in "Parents get 16 weeks [1]" but not in "16 days and 2 weeks".
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_MARKER = re.compile(r"\[\d{1,3}\]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_TOKEN = re.compile(r"\d+(?:\.\d+)?|[^\W\d_]+|[%$€£¥]")
_ARTICLE_WORDS = frozenset({"a", "an", "the"})


def squad_normalize(text: str) -> str:
    """The official SQuAD v1.1 answer normalisation (after removing citation markers)."""
    text = _MARKER.sub(" ", text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, truths: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised truth (SQuAD EM)."""
    pred = squad_normalize(prediction)
    return 1.0 if any(pred == squad_normalize(t) for t in truths) else 0.0


def token_f1(prediction: str, truth: str) -> float:
    """SQuAD token F1 of one prediction against one truth."""
    pred, gold = squad_normalize(prediction).split(), squad_normalize(truth).split()
    overlap = sum((Counter(pred) & Counter(gold)).values())
    if not overlap:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(gold)
    return 2 * precision * recall / (precision + recall)


def best_f1(prediction: str, truths: Sequence[str]) -> float:
    """SQuAD takes the best F1 over the gold answers."""
    return max((token_f1(prediction, t) for t in truths), default=0.0)


def answer_tokens(text: str) -> list[str]:
    """Tokens for containment: whole numbers, words without a plural ``s``, no articles."""
    text = _THOUSANDS.sub("", _MARKER.sub(" ", text).lower())
    out = []
    for token in _TOKEN.findall(text):
        if token in _ARTICLE_WORDS:
            continue
        if token.isalpha() and len(token) > 3 and token.endswith("s") and not token.endswith("ss"):
            token = token[:-1]
        out.append(token)
    return out


def _contains_run(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    width = len(needle)
    return any(list(haystack[i:i + width]) == list(needle) for i in range(len(haystack) - width + 1))


def contains_answer(prediction: str, truths: Sequence[str]) -> bool:
    """Whether one of ``truths`` occurs in ``prediction`` as a contiguous run of answer tokens."""
    tokens = answer_tokens(prediction)
    return any((needle := answer_tokens(t)) and _contains_run(tokens, needle) for t in truths)
