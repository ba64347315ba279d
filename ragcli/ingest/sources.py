"""Discover files and load them into Documents, through a registry of loaders by suffix.

Formats: Markdown with YAML front matter, plain text, HTML (main content, via selectolax), PDF
(pypdf; pages separated by form feeds so chunks know their page numbers) and BEIR-style JSONL
corpora (one ``{"_id", "title", "text"}`` document per line).

ACLs do not depend on how a path was given (a root, a subdirectory, one file, a JSONL file): a
document's front matter ``acl`` (a JSONL row's ``acl``) wins; otherwise the ``acl.toml`` files
found from the file's own directory upwards decide (see :class:`AclResolver`); otherwise the
``default_acl`` setting (public by default). A file that cannot be used (binary, not
UTF-8, empty, too large, unreadable, broken PDF, bad front matter) is *skipped with a reason*; the
run goes on. A path that does not exist at all is an InputError.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import io
import json
import os
import re
import stat
import tomllib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from ..errors import InputError, UsageError, first_line
from ..models import (
    PAGE_BREAK,
    PUBLIC_GROUP,
    Document,
    InvalidAcl,
    corpus_name,
    doc_key,
    parse_acl,
)

MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_JSONL_BYTES = 2 * 1024 * 1024 * 1024  # a JSONL corpus is streamed, not read whole
ACL_FILE = "acl.toml"


class SkipFile(Exception):
    """A file that is left out of the run, with the reason."""


@dataclass(frozen=True)
class Skipped:
    source: str
    reason: str


@dataclass(frozen=True)
class Source:
    """One file to load: where it is, its corpus root, and its doc_id (relative path)."""

    path: Path
    root: Path
    doc_id: str
    named: bool  # given directly on the command line rather than found in a directory
    acl: tuple[str, ...] | None = None  # from acl.toml or default_acl (AclResolver)
    acl_rule: str = ""  # which rule gave ``acl``
    resolver: AclResolver | None = None  # per-row rules of a JSONL corpus
    corpus: str = ""  # the name of the corpus ``root`` is
    target: Path | None = None  # a followed symbolic link's resolved target: what is read

    @property
    def read_path(self) -> Path:
        """The file whose bytes are read: the link's target for a followed link."""
        return self.target or self.path


Loader = Callable[[Source], Iterable[Document]]


def content_hash(title: str, text: str) -> str:
    return hashlib.sha256(f"{title}\n\x00{text}".encode()).hexdigest()


def _open(path: Path, limit: int) -> BinaryIO:
    """``path`` opened for reading without following a symbolic link in its last component
    (O_NOFOLLOW): a file swapped for a link after it was found is refused, not followed. It must
    be a regular file of at most ``limit`` bytes."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except PermissionError:
        raise SkipFile("permission denied") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SkipFile("became a symbolic link after it was found; not followed") from None
        raise SkipFile(f"unreadable: {exc.strerror or exc}") from None
    handle = os.fdopen(fd, "rb")
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        handle.close()
        raise SkipFile("not a regular file")
    if info.st_size > limit:
        handle.close()
        raise SkipFile(f"larger than {limit // (1024 * 1024)} MiB")
    return handle


def _read_bytes(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    with _open(path, limit) as handle:
        try:
            return handle.read()
        except OSError as exc:
            raise SkipFile(f"unreadable: {exc.strerror or exc}") from None


def _decode(raw: bytes) -> str:
    if b"\x00" in raw[:8192]:
        raise SkipFile("binary file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SkipFile(f"not valid UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise SkipFile("empty file")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _read_text(path: Path) -> str:
    return _decode(_read_bytes(path))


def _first_heading(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip() or None
    return None


def _document(source: Source, title: str, text: str, fmt: str,
              acl: tuple[str, ...] | None = None) -> Document:
    if not text.strip():
        raise SkipFile("no text")
    return Document(source.doc_id, str(source.path), title, text,
                    acl or source.acl or (PUBLIC_GROUP,), content_hash(title, text),
                    source.path.stat().st_mtime, fmt, str(source.root),
                    "front matter" if acl else source.acl_rule or "default_acl setting",
                    source.corpus)


def load_markdown(source: Source) -> Iterator[Document]:
    import frontmatter  # small, but only needed when ingesting
    import yaml

    text = _read_text(source.read_path)
    try:
        post = frontmatter.loads(text)
    except (yaml.YAMLError, ValueError) as exc:
        raise SkipFile(f"invalid front matter: {first_line(exc, 1000)}") from None
    meta = post.metadata if isinstance(post.metadata, dict) else {}
    body = post.content
    title = meta.get("title")
    title = str(title) if title is not None else None
    title = title or _first_heading(body) or source.path.stem
    acl = parse_acl(meta["acl"], "front matter") if meta.get("acl") is not None else None
    yield _document(source, title, body, "markdown", acl)


def load_text(source: Source) -> Iterator[Document]:
    text = _read_text(source.read_path)
    title = next((ln.strip() for ln in text.splitlines() if ln.strip()), source.path.stem)[:120]
    yield _document(source, title, text, "text")


_HTML_DROP = "script, style, noscript, nav, header, footer, aside, form, iframe, svg, template"
_HTML_BLOCKS = {"p", "div", "section", "article", "main", "blockquote", "dd", "dt", "figcaption"}


def _html_to_markdown(node: object) -> str:
    """Render an HTML element tree as Markdown-like text that the chunker understands."""
    out: list[str] = []

    def text_of(n: object) -> str:
        return " ".join((n.text(deep=True, separator=" ") or "").split())  # type: ignore[attr-defined]

    def visit(n: object) -> None:
        for child in n.iter(include_text=True):  # type: ignore[attr-defined]
            tag = child.tag
            if tag == "-text":
                words = " ".join((child.text_content or "").split())
                if words:
                    out.append(words + " ")
            elif tag in {"h1", "h2", "h3", "h4", "h5", "h6"}:
                out.append(f"\n\n{'#' * int(tag[1])} {text_of(child)}\n\n")
            elif tag == "pre":
                body = child.text(deep=True) or ""
                out.append(f"\n\n```\n{body.strip(chr(10))}\n```\n\n")
            elif tag == "li":
                out.append(f"\n- {text_of(child)}\n")
            elif tag == "table":
                rows = []
                for i, tr in enumerate(child.css("tr")):
                    cells = [text_of(c).replace("|", "/") for c in tr.css("th, td")]
                    rows.append("| " + " | ".join(cells) + " |")
                    if i == 0:
                        rows.append("|" + "---|" * len(cells))
                out.append("\n\n" + "\n".join(rows) + "\n\n")
            elif tag == "br":
                out.append("\n")
            elif tag in _HTML_BLOCKS:
                out.append("\n\n")
                visit(child)
                out.append("\n\n")
            else:
                visit(child)

    visit(node)
    text = "".join(out)
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def load_html(source: Source) -> Iterator[Document]:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(_read_text(source.read_path))
    for junk in tree.css(_HTML_DROP):
        junk.decompose()
    main = tree.css_first("main") or tree.css_first("article") or tree.css_first("[role=main]") \
        or tree.body
    if main is None:
        raise SkipFile("no HTML body")
    title_node = tree.css_first("title") or tree.css_first("h1")
    title = " ".join(title_node.text().split()) if title_node else ""
    body = _html_to_markdown(main)
    yield _document(source, title or _first_heading(body) or source.path.stem, body, "html")


def load_pdf(source: Source) -> Iterator[Document]:
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    raw = _read_bytes(source.read_path)  # size and permission checks, no link followed
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted:
            raise SkipFile("encrypted PDF")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except SkipFile:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError, RecursionError) as exc:
        raise SkipFile(f"broken PDF: {type(exc).__name__}: {str(exc)[:120]}") from None
    if not any(pages):
        raise SkipFile("PDF has no extractable text")
    text = f"\n{PAGE_BREAK}\n".join(pages)
    yield _document(source, str(meta_title).strip() or source.path.stem, text, "pdf")


def load_jsonl(source: Source) -> Iterator[Document]:
    """A BEIR-style corpus: one document per line; doc_id is the ``_id``."""
    opened = _open(source.read_path, MAX_JSONL_BYTES)  # streamed, not read whole
    mtime = os.fstat(opened.fileno()).st_mtime
    seen: set[str] = set()
    try:
        with io.TextIOWrapper(opened, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    doc_id = str(row["_id"])
                    title = str(row.get("title") or "")
                    text = str(row.get("text") or "")
                except (ValueError, KeyError, TypeError, AttributeError):
                    raise SkipFile(f"line {number} is not a JSON object with an _id") from None
                if doc_id in seen:
                    raise SkipFile(f"line {number}: duplicate _id {doc_id!r}")
                seen.add(doc_id)
                if not text.strip():
                    text = title  # a title-only document is still searchable by its title
                if not text.strip():
                    continue
                acl, rule = (parse_acl(row["acl"], f"line {number}"), "row acl") if row.get("acl") \
                    else (source.acl, source.acl_rule)
                if source.resolver is not None and not row.get("acl"):
                    decided = source.resolver.resolve(source.path, doc_id)
                    acl, rule = decided.groups, decided.rule
                yield Document(doc_id, f"{source.path}#{doc_id}", title or doc_id, text,
                               acl or (PUBLIC_GROUP,), content_hash(title, text),
                               mtime, "jsonl", str(source.root), rule or "default_acl setting",
                               source.corpus)
    except UnicodeDecodeError as exc:
        raise SkipFile(f"not valid UTF-8 (byte {exc.start})") from None


LOADERS: dict[str, Loader] = {
    ".md": load_markdown,
    ".markdown": load_markdown,
    ".txt": load_text,
    ".html": load_html,
    ".htm": load_html,
    ".pdf": load_pdf,
    ".jsonl": load_jsonl,
}


@dataclass(frozen=True)
class AclFile:
    """One ``acl.toml``: glob rules relative to its directory, an optional default, and whether
    the upward search stops here (``root = true``)."""

    path: Path
    rules: tuple[tuple[str, tuple[str, ...]], ...]
    default: tuple[str, ...] | None
    root: bool


@dataclass(frozen=True)
class AclDecision:
    groups: tuple[str, ...]
    rule: str  # e.g. 'corpus/acl.toml: "legal/*"', 'corpus/acl.toml: default', 'default_acl setting'


def read_acl_file(path: Path) -> AclFile:
    """Parse an ``acl.toml``::

        root = true                    # optional: do not look further up for acl.toml files
        default = ["staff"]            # optional: what a file below here that no rule matches gets
        "legal/*" = ["legal"]          # glob (relative to this file's directory) = groups
        [acl]                          # rules may also sit in an [acl] table
        "finance/*.md" = ["finance"]

    Globs use fnmatch rules (``*`` also crosses ``/``); within one file the last match wins."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"{path} is not a readable TOML file: {exc}") from None
    root = data.pop("root", False)
    if not isinstance(root, bool):
        raise InputError(f"{path}: root must be true or false")
    default = None
    if "default" in data:
        try:
            default = parse_acl(data.pop("default"), f"{path} [default]")
        except InvalidAcl as exc:
            raise InputError(str(exc)) from None
    nested = data.pop("acl", {})
    if not isinstance(nested, dict):
        raise InputError(f"{path}: acl must be a table of glob = groups")
    rules = []
    for pattern, groups in [*data.items(), *nested.items()]:  # root, default and acl are reserved
        try:
            rules.append((str(pattern), parse_acl(groups, f"{path} [{pattern}]")))
        except InvalidAcl as exc:
            raise InputError(str(exc)) from None
    return AclFile(path, tuple(rules), default, root)


class AclResolver:
    """The ACL of a file, from the ``acl.toml`` files in its directory and every directory above
    it, up to one that says ``root = true`` or the filesystem root.

    Farther files apply first and nearer ones refine them: in each file, from the farthest to the
    nearest, its ``default`` (for everything below it) and then its matching rules replace what
    was decided so far, so the nearest matching rule wins. A file no rule matches gets
    ``default_acl`` (public unless set otherwise). Front matter beats all of this (in the loaders).
    The result is the same whether a corpus, a subdirectory or a single file was given."""

    def __init__(self, default_acl: tuple[str, ...] = (PUBLIC_GROUP,)) -> None:
        self.default_acl = default_acl
        self._files: dict[Path, AclFile | None] = {}

    def _acl_file(self, directory: Path) -> AclFile | None:
        if directory not in self._files:
            path = directory / ACL_FILE
            self._files[directory] = read_acl_file(path) if path.is_file() else None
        return self._files[directory]

    def chain(self, directory: Path) -> list[AclFile]:
        """The acl.toml files that govern ``directory``, farthest first."""
        found = []
        for candidate in (directory, *directory.parents):
            acl_file = self._acl_file(candidate)
            if acl_file is not None:
                found.append(acl_file)
                if acl_file.root:
                    break
        return found[::-1]

    def resolve(self, path: Path, row_id: str | None = None) -> AclDecision:
        """``path``'s ACL; with ``row_id``, a document of a JSONL corpus (globs then match
        ``file.jsonl#row_id`` as well as ``file.jsonl``)."""
        path = path.resolve()
        decision = AclDecision(self.default_acl, "default_acl setting")
        for acl_file in self.chain(path.parent):
            relative = path.relative_to(acl_file.path.parent).as_posix()
            names = (relative, f"{relative}#{row_id}") if row_id is not None else (relative,)
            if acl_file.default is not None:
                decision = AclDecision(acl_file.default, f"{acl_file.path}: default")
            for pattern, groups in acl_file.rules:
                if any(fnmatch.fnmatchcase(name, pattern) for name in names):
                    decision = AclDecision(groups, f'{acl_file.path}: "{pattern}"')
        return decision


def walk(root: Path, links: list[Path] | None = None) -> Iterator[Path]:
    """Files below root in a stable order (file links among them). A symbolic link to a
    directory is never followed, inside the root or out of it (no loops, no way out): it is
    appended to ``links`` when given."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        kept = []
        for name in sorted(d for d in dirnames if not d.startswith(".")):
            if os.path.islink(os.path.join(dirpath, name)):
                if links is not None:
                    links.append(Path(dirpath) / name)
            else:
                kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            if not name.startswith(".") and name != ACL_FILE:
                yield Path(dirpath) / name


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def follow_link(link: Path, root: Path, others: Sequence[Path], follow_symlinks: bool) -> Path:
    """The target to read for the file symbolic link ``link`` found under ``root``, or SkipFile
    saying why it is not indexed. The corpus root is a boundary: a link whose target is outside
    it (or inside a nested corpus) is skipped unless ``follow_symlinks``. A link that is read
    gets the ACL the rules give its target (AclResolver resolves links), never a looser one."""
    try:
        target = Path(os.path.realpath(link, strict=True))
    except (OSError, RuntimeError):  # dangling, or a loop of links
        raise SkipFile("broken symbolic link") from None
    if not target.is_file():
        raise SkipFile(f"symbolic link to {target}, not a regular file")
    inside = _within(target, root) and not any(_within(target, o) for o in others)
    if not inside and not follow_symlinks:
        raise SkipFile(f"symbolic link to {target}, outside the corpus root {root} "
                       "(--follow-symlinks indexes it)")
    return target


CORPUS_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass
class Corpora:
    """A store's corpora: name -> root (absolute path). Documents of different corpora never share
    an identity (``corpus:doc_id``), and a path always lands in the same corpus, however it is given.

    - A path inside a known root belongs to that corpus; its doc_ids are relative to that root.
    - Any other path starts a corpus: a directory or JSONL file is its own root, another file's
      root is its directory; the name is ``--corpus NAME`` or :func:`corpus_name`.
    - A name is never silently reused: a new root whose name is taken by another root is an
      error, unless ``--corpus`` names it explicitly, which says the corpus moved there.
    """

    roots: dict[str, str] = field(default_factory=dict)

    def place(self, path: Path, name: str | None = None) -> tuple[str, Path]:
        """(corpus name, corpus root) for ``path`` (resolved); registers a new corpus."""
        if name is not None and not CORPUS_NAME.match(name):
            raise UsageError(f"invalid corpus name {name!r}: letters, digits and _ . - only, "
                             "at most 64")
        inside = [(n, Path(r)) for n, r in self.roots.items()
                  if path == Path(r) or Path(r) in path.parents]
        if inside:
            known, root = max(inside, key=lambda item: len(str(item[1])))
            if name is None or name == known:
                return known, root
            raise UsageError(f"{path} belongs to corpus {known!r} ({root}); --corpus {name} "
                             "cannot claim it")
        root = path if path.is_dir() or path.suffix.lower() == ".jsonl" else path.parent
        chosen = name or corpus_name(root)
        if chosen in self.roots and Path(self.roots[chosen]) != root and name is None:
            raise InputError(f"corpus name {chosen!r} is already used by {self.roots[chosen]}",
                             hint=f"name the corpus at {root} with --corpus NAME (or --corpus "
                                  f"{chosen} if the corpus moved there)")
        self.roots[chosen] = str(root)
        return chosen, root

    def nested(self, root: Path) -> list[Path]:
        """Known corpus roots strictly inside ``root``: their files belong to them, not to it."""
        return [Path(r) for r in self.roots.values() if root in Path(r).parents]


def discover(paths: Iterable[Path], resolver: AclResolver | None = None,
             corpora: Corpora | None = None, name: str | None = None, *,
             follow_symlinks: bool = False, links: list[Skipped] | None = None) -> Iterator[Source]:
    """Yield a Source for every file under the given paths, with its corpus and ACL.

    A path that does not exist raises InputError before anything is yielded. See
    :class:`Corpora` for which corpus a path lands in; doc_ids are relative to that corpus's root
    (a JSONL file's rows are its ``_id`` values). Symbolic links found in a directory are
    followed only as :func:`follow_link` allows; those that are not are appended to ``links``
    with the reason (a path named on the command line is the user's choice: it is resolved).
    """
    skipped_links = links if links is not None else []
    resolver = resolver or AclResolver()
    corpora = corpora if corpora is not None else Corpora()
    paths = list(paths)
    for path in paths:
        if not path.exists():
            raise InputError(f"no such file or directory: {path}")

    def source(file: Path, root: Path, corpus: str, named: bool) -> Source:
        decided = resolver.resolve(file)
        jsonl = file.suffix.lower() == ".jsonl"
        doc_id = file.name if file == root else file.relative_to(root).as_posix()
        return Source(file, root, doc_id, named, decided.groups, decided.rule,
                      resolver if jsonl else None, corpus)

    for path in paths:
        path = path.resolve()
        corpus, root = corpora.place(path, name)
        if path.is_dir():
            others = corpora.nested(path)
            directories: list[Path] = []
            for file in walk(path, directories):
                if any(other in file.parents for other in others):
                    continue
                if not file.is_symlink():
                    yield source(file, root, corpus, False)
                    continue
                try:
                    target = follow_link(file, root, others, follow_symlinks)
                except SkipFile as exc:
                    skipped_links.append(Skipped(str(file), str(exc)))
                    continue
                yield replace(source(file, root, corpus, False), target=target)
            skipped_links += [Skipped(str(d), "symbolic link to a directory: never followed")
                              for d in directories]
        else:
            yield source(path, root, corpus, True)


@dataclass
class Loaded:
    documents: list[Document] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)  # files that could not be used, and why
    ignored: int = 0  # files of unsupported types found while walking a directory
    # what was read whole: (corpus, doc_id prefix) of each directory or JSONL file given ("" for a
    # corpus root); reindex deletes a stored document under a scope only if it was not found there
    scopes: set[tuple[str, str]] = field(default_factory=set)
    unreadable: set[str] = field(default_factory=set)  # doc_keys of files skipped: never delete
    links: list[Skipped] = field(default_factory=list)  # symbolic links not followed, and why
    corpora: Corpora = field(default_factory=Corpora)  # the store's corpora, with any new ones


def load_documents(paths: Iterable[Path], default_acl: tuple[str, ...] = (PUBLIC_GROUP,),
                   corpora: Corpora | None = None, name: str | None = None, *,
                   follow_symlinks: bool = False) -> Loaded:
    """Load every supported file under ``paths`` into its corpus; say what was skipped and why.
    A link that is not followed is not a document (reindex deletes one indexed before)."""
    paths = list(paths)
    loaded = Loaded(corpora=corpora if corpora is not None else Corpora())
    documents: dict[str, Document] = {}
    for source in discover(paths, AclResolver(default_acl), loaded.corpora, name,
                           follow_symlinks=follow_symlinks, links=loaded.links):
        loader = LOADERS.get(source.path.suffix.lower())
        if loader is None:
            if source.named:
                loaded.skipped.append(Skipped(str(source.path),
                                              f"unsupported file type {source.path.suffix or '(none)'}"))
            else:
                loaded.ignored += 1
            continue
        try:
            batch = list(loader(source))
        except (SkipFile, InvalidAcl) as exc:  # an invalid acl in a file leaves that file out
            loaded.skipped.append(Skipped(str(source.path), str(exc)))
            loaded.unreadable.add(doc_key(source.corpus, source.doc_id))
            if source.path.suffix.lower() == ".jsonl":  # a broken JSONL corpus deletes nothing
                loaded.unreadable.add(f"{source.corpus}:*")
            continue
        for document in batch:
            documents[document.doc_key] = document
    loaded.documents = list(documents.values())
    for path in paths:
        resolved = path.resolve()
        if resolved.is_dir() or resolved.suffix.lower() == ".jsonl":
            corpus, root = loaded.corpora.place(resolved, name)
            prefix = "" if resolved == root else resolved.relative_to(root).as_posix()
            if f"{corpus}:*" not in loaded.unreadable or prefix:
                loaded.scopes.add((corpus, prefix))
    return loaded


def in_scope(scopes: set[tuple[str, str]], corpus: str, doc_id: str) -> bool:
    """Whether ``corpus:doc_id`` lies under one of ``scopes`` (Loaded.scopes)."""
    return any(c == corpus and (not prefix or doc_id.startswith(prefix + "/"))
               for c, prefix in scopes)


def explain_acls(paths: Iterable[Path], default_acl: tuple[str, ...] = (PUBLIC_GROUP,)
                 ) -> tuple[list[Document], list[Skipped]]:
    """The documents under ``paths`` as ingest would index them, each with its ``acl`` and the
    ``acl_rule`` that gave it (``ragcli acl``); nothing is written."""
    loaded = load_documents(paths, default_acl)
    return sorted(loaded.documents, key=lambda d: (d.root, d.doc_id)), loaded.skipped

