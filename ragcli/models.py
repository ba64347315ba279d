"""Frozen value objects that flow between the stages (docs/development.md shows how they flow)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PUBLIC_GROUP = "public"
"""The ACL group of documents that carry no ``acl``: every user may read them."""

GROUP_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
"""What a group name may be, in a document's ACL and in a request alike: no quotes, spaces or
SQL syntax ever reach the search filter, whatever escaping would have done."""

PAGE_BREAK = "\f"
"""Separates the pages of a paged document's text (PDF), so chunks know their page numbers."""


def section_label(title: str, heading_path: str) -> str:
    """"Title > Heading > Sub", without repeating a title that is also the first heading."""
    if not heading_path:
        return title
    if not title or heading_path == title or heading_path.startswith(title + " > "):
        return heading_path
    return f"{title} > {heading_path}"


@dataclass(frozen=True)
class Document:
    """One source document, loaded and normalised to text."""

    doc_id: str  # stable: path relative to the corpus root (posix), or a JSONL ``_id``
    source: str  # where it came from (absolute path, or path#_id)
    title: str
    text: str
    acl: tuple[str, ...]
    doc_hash: str  # sha256 of title and text (not the ACL): what decides "changed"
    mtime: float = 0.0
    format: str = "markdown"
    root: str = ""  # the corpus root it was found under (a directory, or a JSONL file)
    acl_rule: str = ""  # what gave ``acl``: front matter, an acl.toml rule or default, the setting
    corpus: str = ""  # the name of its corpus (sources.Corpora): doc_ids are unique within one

    @property
    def doc_key(self) -> str:
        """What identifies the document in a store: ``corpus:doc_id``."""
        return doc_key(self.corpus, self.doc_id)


def doc_key(corpus: str, doc_id: str) -> str:
    return f"{corpus}:{doc_id}" if corpus else doc_id


@dataclass(frozen=True)
class Chunk:
    """A searchable piece of a document; knows its provenance and who may read it."""

    chunk_id: str  # "<doc_id>#<ordinal>"
    doc_id: str
    ordinal: int
    source: str
    title: str
    heading_path: str  # "Security policy > Passwords > Rotation"
    text: str
    chunk_hash: str
    doc_hash: str
    acl: tuple[str, ...]
    pages: tuple[int, ...] = ()  # PDF pages the chunk's text comes from (1-based); () otherwise
    corpus: str = ""

    @property
    def doc_key(self) -> str:
        return doc_key(self.corpus, self.doc_id)

    @property
    def search_text(self) -> str:
        """What is embedded and full-text indexed: title, heading path and body."""
        head = section_label(self.title, self.heading_path)
        return f"{head}\n{self.text}" if head else self.text


@dataclass(frozen=True)
class Hit:
    """A chunk returned by retrieval, with the scores that ranked it."""

    chunk_id: str
    doc_id: str
    source: str
    title: str
    heading_path: str
    text: str
    chunk_hash: str
    acl: tuple[str, ...]
    score: float  # fused rank score (reciprocal rank fusion)
    vector_score: float | None = None  # cosine similarity to the question, if the vector leg found it
    fts_score: float | None = None  # BM25 score, if the full-text leg found it
    evidence: float = 0.0  # 0.5 * cosine + 0.5 * question-term coverage (retrieval.evidence)
    corpus: str = ""  # the corpus the document belongs to (doc_id is unique within it)
    rerank_score: float | None = None  # the reranker's relevance, if it reordered this hit


@dataclass(frozen=True)
class Prompt:
    """The exact text handed to the model, and the passages it numbers."""

    messages: tuple[tuple[str, str], ...]  # (role, content)
    text: str  # messages rendered with the model's chat template: byte-exact model input
    passages: tuple[Hit, ...]  # passage [n] is passages[n - 1]
    tokens: int
    dropped: tuple[str, ...] = ()  # chunk ids that did not fit the context budget


@dataclass(frozen=True)
class Citation:
    n: int
    chunk_id: str
    doc_id: str
    source: str
    title: str = ""
    how: str = "marker"  # "marker": the model wrote [n]; "support": attributed by overlap


@dataclass(frozen=True)
class Quote:
    """The exact sentence(s) of passage ``n`` that support an answer; ``start``/``end`` are
    character offsets into that chunk's text (None when markup kept the sentence from being
    found there verbatim: then ``text`` is the sentence as read, markup removed)."""

    n: int
    chunk_id: str
    text: str
    start: int | None = None
    end: int | None = None


@dataclass(frozen=True)
class Verification:
    """What the claim checks (claims.py) made of an answer before it was shown.

    outcome: ``verified`` (every claim is in its quote), ``repaired`` (the produced answer failed
    and was replaced by a verified extract), ``refused`` (it failed and nothing verified could
    replace it). ``failed`` names the claims that failed; ``source`` what produced the answer
    shown: model (generated), model-span (a span the model chose), reader-span (a span the
    extractive reader chose), extract (rules, no model)."""

    outcome: str
    source: str
    failed: tuple[str, ...] = ()


class InvalidAcl(ValueError):
    """An ``acl`` value that is not a group name or a non-empty list of them (ingestion skips the
    file that holds it; a setting or an ``acl.toml`` that holds it is a one-line error)."""


def parse_acl(value: object, where: str) -> tuple[str, ...]:
    """Normalise an ``acl`` value (a group or a list of groups) to a sorted tuple."""
    groups = [value] if isinstance(value, str) else value
    if not isinstance(groups, list) or not groups:
        raise InvalidAcl(f"{where}: acl must be a group name or a non-empty list of group names")
    for group in groups:
        if not isinstance(group, str) or not GROUP_NAME.match(group):
            raise InvalidAcl(f"{where}: invalid acl group {group!r}")
    return tuple(sorted(set(groups)))


def corpus_name(root: Path) -> str:
    """The name a corpus root gets unless ``--corpus`` names it: its basename (a JSONL file's stem),
    with characters a name may not hold replaced by ``-``."""
    base = root.stem if root.suffix.lower() == ".jsonl" else root.name
    return re.sub(r"[^A-Za-z0-9_.-]", "-", base)[:64].strip(".") or "corpus"
