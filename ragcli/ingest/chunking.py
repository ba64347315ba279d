"""Markdown/text -> chunks that never cut a code block, table, list item or numbered clause.

Sizes are in tokens of the embedder's tokenizer (``count_tokens``), measured on exactly what gets
embedded (``Chunk.search_text``: heading path + body), so no chunk exceeds what the embedder reads.
A block larger than the budget on its own is split on line boundaries (a table repeats its header
row in every piece); a single line larger than the budget is split on word boundaries.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ..models import PAGE_BREAK, Chunk, Document

CountTokens = Callable[[str], int]

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_LIST_ITEM = re.compile(r"^\s{0,3}(?:[-*+]|\d{1,3}[.)])\s+")
_CLAUSE = re.compile(r"^\s{0,3}\d{1,3}(?:\.\d{1,3})+\.?\s+")
_TABLE_ROW = re.compile(r"^\s*\|")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])")
MAX_CHARS_PER_TOKEN = 10  # a chunk is never longer than max_tokens * this many characters


@dataclass(frozen=True)
class Block:
    kind: str  # paragraph | code | table | item | clause
    text: str
    headings: tuple[str, ...]
    page: int = 1  # 1 + the number of form feeds (PDF page breaks) before the block


def split_blocks(text: str) -> Iterator[Block]:
    """Yield the structural blocks of a Markdown (or plain) text, in order."""
    headings: list[tuple[int, str]] = []
    lines = text.split("\n")
    i = 0
    page = 1

    def path() -> tuple[str, ...]:
        return tuple(h for _, h in headings)

    while i < len(lines):
        line = lines[i]
        if not line.strip():
            page += line.count("\f")
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence:
            marker = fence.group(1)
            j = i + 1
            while j < len(lines) and not lines[j].lstrip().startswith(marker):
                j += 1
            end = min(j + 1, len(lines))
            yield Block("code", "\n".join(lines[i:end]), path(), page)
            i = end
            continue
        heading = _HEADING.match(line)
        if heading:
            level = len(heading.group(1))
            while headings and headings[-1][0] >= level:
                headings.pop()
            headings.append((level, heading.group(2).strip()))
            i += 1
            continue
        if _TABLE_ROW.match(line):
            j = i + 1
            while j < len(lines) and _TABLE_ROW.match(lines[j]):
                j += 1
            yield Block("table", "\n".join(lines[i:j]), path(), page)
            i = j
            continue
        kind = "clause" if _CLAUSE.match(line) else "item" if _LIST_ITEM.match(line) else "paragraph"
        j = i + 1
        while j < len(lines):
            nxt = lines[j]
            if not nxt.strip():
                # a blank line ends a paragraph, but an indented continuation keeps an item open
                k = j + 1
                if kind == "item" and k < len(lines) and lines[k].startswith(("  ", "\t")) \
                        and not _LIST_ITEM.match(lines[k]):
                    j = k
                    continue
                break
            if _HEADING.match(nxt) or _TABLE_ROW.match(nxt) or _CLAUSE.match(nxt):
                break
            if _LIST_ITEM.match(nxt) and not nxt.startswith(("    ", "\t")):
                break
            if _FENCE.match(nxt) and not (kind == "item" and nxt.startswith(("  ", "\t"))):
                break
            if _FENCE.match(nxt):  # a fenced block inside a list item belongs to the item
                marker = _FENCE.match(nxt).group(1)  # type: ignore[union-attr]
                k = j + 1
                while k < len(lines) and not lines[k].lstrip().startswith(marker):
                    k += 1
                j = min(k + 1, len(lines))
                continue
            j += 1
        yield Block(kind, "\n".join(lines[i:j]).rstrip(), path(), page)
        i = j


def _pack(units: list[str], sep: str, budget: int, count: CountTokens) -> list[str]:
    """Greedily join ``units`` with ``sep`` into pieces of at most ``budget`` tokens.

    Uses the sum of per-unit counts (each unit is tokenized once: linear, not quadratic) and then
    checks each piece whole, moving units to the next piece in the rare case where joining changes
    the count.
    """
    pieces: list[list[str]] = []
    current: list[str] = []
    used = 0
    for unit in units:
        cost = count(unit)
        if current and used + cost > budget:
            pieces.append(current)
            current, used = [], 0
        current.append(unit)
        used += cost
    if current:
        pieces.append(current)
    out: list[str] = []
    queue = pieces
    while queue:
        piece = queue.pop(0)
        carry: list[str] = []
        while len(piece) > 1 and count(sep.join(piece)) > budget:
            carry.insert(0, piece.pop())
        out.append(sep.join(piece))
        if carry:
            queue.insert(0, carry)
    return out


def _split_words(line: str, budget: int, count: CountTokens) -> list[str]:
    """Split a too-long line at sentence ends where possible, else between words."""
    sentences = [s for s in _SENTENCE_END.split(line) if s]
    units: list[str] = []
    for sentence in sentences:
        if count(sentence) <= budget:
            units.append(sentence)
        else:
            units.extend(_pack(sentence.split(" "), " ", budget, count))
    out: list[str] = []
    for piece in _pack(units, " ", budget, count):
        out.extend(_cut(piece, budget, count) if count(piece) > budget else [piece])
    return out


def _cut(piece: str, budget: int, count: CountTokens) -> list[str]:
    """Cut a "word" longer than the budget (a base64 blob, a run of brackets) by characters.

    Each part is the longest prefix within the budget, found by bisection inside a window of
    ``budget * MAX_CHARS_PER_TOKEN`` characters: the tokenizer only ever sees a window, so the
    work is linear in the length of the piece (re-tokenizing the rest each time was quadratic:
    100 s for 200,000 brackets)."""
    out: list[str] = []
    while piece:
        window = piece[:budget * MAX_CHARS_PER_TOKEN]
        if len(window) == len(piece) and count(window) <= budget:
            out.append(piece)
            break
        lo, hi = 1, len(window)  # the largest k with count(window[:k]) <= budget
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count(window[:mid]) <= budget:
                lo = mid
            else:
                hi = mid - 1
        out.append(piece[:lo])
        piece = piece[lo:]
    return out


def _split_block(block: Block, budget: int, count: CountTokens) -> list[str]:
    """Split one oversized block on line boundaries (tables repeat their header)."""
    lines = block.text.split("\n")
    header: list[str] = []
    if block.kind == "table" and len(lines) > 2 and set(lines[1].replace("|", "").strip()) <= set("-: "):
        header, lines = lines[:2], lines[2:]
    room = budget - (count("\n".join(header)) + 1 if header else 0)
    pieces: list[str] = []
    run: list[str] = []
    for line in lines:
        if count(line) > room:
            pieces.extend("\n".join(header + [p]) for p in _pack(run, "\n", room, count))
            run = []
            pieces.extend(_split_words(line, budget, count))
        else:
            run.append(line)
    pieces.extend("\n".join(header + [p]) for p in _pack(run, "\n", room, count))
    return pieces


def _clip(text: str, budget: int, count: CountTokens) -> str:
    """The longest prefix of ``text`` (whole words) within ``budget`` tokens.

    ``count`` is bounded (see :func:`bounded`), so a prefix within budget has at most
    ``budget * MAX_CHARS_PER_TOKEN`` characters: only that many words are ever considered, and the
    cut is found by bisection (popping one word at a time took minutes on a 1 MB heading)."""
    limit = budget * MAX_CHARS_PER_TOKEN
    if len(text) <= limit and count(text) <= budget:
        return text
    words = text.split(" ", limit + 1)[:limit + 1]
    lo, hi = 0, len(words)  # the largest n with count(" ".join(words[:n])) <= budget
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(" ".join(words[:mid])) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def bounded(count_tokens: CountTokens) -> CountTokens:
    """``count_tokens`` that also counts a token per ``MAX_CHARS_PER_TOKEN`` characters.

    WordPiece reads any word over 100 characters as one [UNK] token, so 200 KB without a space
    would be "one token" and one chunk; with this bound no chunk is longer than
    ``max_tokens * MAX_CHARS_PER_TOKEN`` characters. Ordinary text (about 4-5 characters a token)
    is counted exactly as before."""
    def count(text: str) -> int:
        return max(count_tokens(text), -(-len(text) // MAX_CHARS_PER_TOKEN))
    return count


def chunk_document(document: Document, count_tokens: CountTokens, max_tokens: int) -> list[Chunk]:
    """Cut a document into chunks of at most ``max_tokens`` embedder tokens of ``search_text``.

    The title and heading path are part of every chunk's ``search_text``; they are clipped to a
    quarter of the budget each, so that a pathological title cannot crowd out the text.
    """
    count_tokens = bounded(count_tokens)
    chunks: list[Chunk] = []
    pending: list[str] = []
    pending_path: tuple[str, ...] | None = None
    pending_pages: set[int] = set()
    paged = PAGE_BREAK in document.text
    title = _clip(document.title, max_tokens // 4, count_tokens)

    def make(text: str, headings: tuple[str, ...], pages: Iterable[int] = ()) -> Chunk:
        ordinal = len(chunks)
        heading_path = _clip(" > ".join(headings), max_tokens // 4, count_tokens)
        probe = Chunk("", document.doc_id, ordinal, document.source, title, heading_path,
                      text, "", document.doc_hash, document.acl)
        digest = hashlib.sha256(probe.search_text.encode("utf-8")).hexdigest()
        return Chunk(f"{document.doc_key}#{ordinal}", document.doc_id, ordinal, document.source,
                     title, heading_path, text, digest, document.doc_hash, document.acl,
                     tuple(sorted(pages)) if paged else (), document.corpus)

    def budget_for(headings: tuple[str, ...]) -> int:
        probe = make("", headings)
        return max(1, max_tokens - count_tokens(probe.search_text) - 1)

    def flush() -> None:
        nonlocal pending, pending_path, pending_pages
        if pending and pending_path is not None:
            chunks.append(make("\n\n".join(pending), pending_path, pending_pages))
        pending, pending_path, pending_pages = [], None, set()

    for block in split_blocks(document.text):
        budget = budget_for(block.headings)
        if pending_path is not None and block.headings != pending_path:
            flush()
        if count_tokens(block.text) > budget:
            flush()
            for piece in _split_block(block, budget, count_tokens):
                chunks.append(make(piece, block.headings, [block.page]))
            continue
        if pending and count_tokens("\n\n".join([*pending, block.text])) > budget:
            flush()
        pending.append(block.text)
        pending_path = block.headings
        pending_pages.add(block.page)
    flush()
    return chunks
