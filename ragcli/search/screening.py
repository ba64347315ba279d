"""Retrieved passages are data, never instructions: find instruction-like text and take it out.

A document anyone can edit (a wiki page, a ticket, a scraped web page) can carry text written for
the model rather than for the reader: "ignore previous instructions", chat-template role tags,
requests to reveal the prompt, citation markers of its own. Such a passage is *flagged* (the flags
go into the audit record) and *screened*: each instruction-like sentence is replaced by
``REDACTED`` before the passage is quoted in the prompt, and the support check and extractive
answers see the screened text too, so an answer can neither be led by nor be built from it.
Chat-template control tokens (which also flag a passage) are removed, so that no passage can
open a turn of its own, and bracketed numbers in a flagged passage are rewritten as ``(n)``, so
that it cannot plant citation markers.

The patterns are deliberately narrow (imperatives aimed at an assistant, not words such as
"password" or "reveal" on their own): the shipped handbook has policy text such as "never reveal
your password" that must stay answerable, and a test checks that no handbook document is flagged
except the poisoned ones.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..models import Hit

REDACTED = "[instruction-like text removed by ragcli]"

_I = re.I
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("override", re.compile(
        r"\b(ignore|disregard|forget|override|bypass)\b[^.!?\n]{0,40}\b(previous|prior|above|"
        r"earlier|preceding|all|any|your|the|these|system)\b[^.!?\n]{0,30}\b(instructions?|rules|"
        r"prompts?|guidelines|directions|polic(y|ies)|guardrails)\b", _I)),
    ("role_tag", re.compile(
        r"<\|[a-z_]{2,20}\|>|\[/?INST\]|<<\/?SYS>>|</?(system|assistant|user)>|"
        r"^\s*#{0,3}\s*(system|assistant)\s*(prompt)?\s*:", _I | re.M)),
    ("persona", re.compile(
        r"\b(you are now|from now on,? you|act as (an?|the) (unrestricted|admin|developer)|"
        r"(enter|switch to|enable) (admin|developer|debug|god) mode|new instructions?:|"
        r"as an ai( language model)?,? you (must|should|will))\b", _I)),
    ("exfiltrate", re.compile(
        r"\b(reveal|print|output|repeat|show|disclose|leak|dump|list)\b[^.!?\n]{0,40}\b("
        r"system prompt|your (instructions|prompt|rules|context)|(the|all|every) (passages|context|"
        r"documents) (you|above)|hidden (text|instructions|passages))", _I)),
    ("directive", re.compile(
        r"\b(assistants?|ai|language models?|chatbots?|llms?)\b[^.!?\n]{0,30}\b(must|should|will|"
        r"shall) (always |now )?(answer|reply|respond|say|tell|include|cite|output)\b|"
        r"\b(always|only) (answer|reply|respond) (with|that)\b|\btell the user (to|that)\b|"
        r"\bcite (this|it)( passage| page| document)? as\b", _I)),
    ("fake_citation", re.compile(r"\[\d{1,3}\]")),
)
_CONTROL_TOKEN = re.compile(r"<\|[a-z_]{2,20}\|>|\[/?INST\]|<<\/?SYS>>", _I)
_MARKER = re.compile(r"\[(\d{1,3})\]")
_SENTENCE = re.compile(r"((?<=[.!?])\s+|\n+)")


def strip_control_tokens(text: str) -> str:
    """``text`` without chat-template control tokens (the runtime would parse them as real ones)."""
    return _CONTROL_TOKEN.sub("", text)


def _defuse(text: str) -> str:
    """No control tokens, and bracketed numbers as ``(n)``: nothing that acts as markup."""
    return _MARKER.sub(r"(\1)", strip_control_tokens(text))


def visible(text: str) -> str:
    """``text`` without the redaction markers: what evidence, support and extraction may use."""
    return text.replace(REDACTED, " ")


def flags(text: str) -> tuple[str, ...]:
    """Names of the rules ``text`` trips, in rule order (empty: nothing instruction-like)."""
    return tuple(name for name, rule in _RULES if rule.search(text))


@dataclass(frozen=True)
class Screened:
    hits: tuple[Hit, ...]  # the same hits, with instruction-like sentences replaced
    flagged: dict[str, tuple[str, ...]]  # chunk_id -> rule names, for flagged passages only
    redacted: dict[str, tuple[str, ...]]  # chunk_id -> the sentences that were taken out


def screen_text(text: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(screened text, rule names, removed sentences) of one passage."""
    names = flags(text)
    removed: list[str] = []
    if set(names) - {"fake_citation"}:
        parts = _SENTENCE.split(text)  # sentence, separator, sentence, ...
        for i in range(0, len(parts), 2):
            if parts[i].strip() and set(flags(parts[i])) - {"fake_citation"}:
                removed.append(parts[i].strip())
                parts[i] = REDACTED
        text = "".join(parts)
    return _defuse(text), names, tuple(removed)


def screen(hits: Sequence[Hit]) -> Screened:
    """Screen every retrieved passage; the text of an unflagged passage is left as it was."""
    out: list[Hit] = []
    flagged: dict[str, tuple[str, ...]] = {}
    redacted: dict[str, tuple[str, ...]] = {}
    for hit in hits:
        names = flags(f"{hit.title}\n{hit.heading_path}\n{hit.text}")
        if not names:
            out.append(hit)
            continue
        text, _, removed = screen_text(hit.text)
        flagged[hit.chunk_id] = names
        if removed:
            redacted[hit.chunk_id] = removed
        out.append(replace(hit, text=text, title=_defuse(hit.title),
                           heading_path=_defuse(hit.heading_path)))
    return Screened(tuple(out), flagged, redacted)
