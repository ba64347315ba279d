"""Discover files and load them into Documents, through a registry of loaders by suffix.

A file that cannot be used (binary, not UTF-8, empty, too large, unreadable, bad front matter) is
*skipped with a reason*; the run goes on. A path that does not exist at all is an InputError.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .models import PUBLIC_GROUP, Document

MAX_FILE_BYTES = 20 * 1024 * 1024
_GROUP = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class SkipFile(Exception):
    """A file that is left out of the run, with the reason."""


@dataclass(frozen=True)
class Skipped:
    source: str
    reason: str


Loader = Callable[[Path, str, str], Document]


def content_hash(title: str, text: str) -> str:
    return hashlib.sha256(f"{title}\n\x00{text}".encode()).hexdigest()


def parse_acl(value: object, where: str) -> tuple[str, ...]:
    """Normalise an ``acl`` value (a group or a list of groups) to a sorted tuple."""
    if value is None:
        return (PUBLIC_GROUP,)
    groups = [value] if isinstance(value, str) else value
    if not isinstance(groups, list) or not groups:
        raise SkipFile(f"{where}: acl must be a group name or a non-empty list of group names")
    for group in groups:
        if not isinstance(group, str) or not _GROUP.match(group):
            raise SkipFile(f"{where}: invalid acl group {group!r}")
    return tuple(sorted(set(groups)))


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise SkipFile(f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
        raw = path.read_bytes()
    except PermissionError:
        raise SkipFile("permission denied") from None
    except OSError as exc:
        raise SkipFile(f"unreadable: {exc.strerror or exc}") from None
    if b"\x00" in raw[:8192]:
        raise SkipFile("binary file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SkipFile(f"not valid UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise SkipFile("empty file")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _first_heading(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip() or None
    return None


def load_markdown(path: Path, doc_id: str, source: str) -> Document:
    import frontmatter  # small, but only needed when ingesting
    import yaml

    text = _read_text(path)
    try:
        post = frontmatter.loads(text)
    except (yaml.YAMLError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SkipFile(f"invalid front matter: {first}") from None
    meta = post.metadata if isinstance(post.metadata, dict) else {}
    body = post.content
    if not body.strip():
        raise SkipFile("no text after the front matter")
    title = meta.get("title")
    if title is not None and not isinstance(title, str):
        title = str(title)
    title = title or _first_heading(body) or path.stem
    acl = parse_acl(meta.get("acl"), "front matter")
    return Document(doc_id, source, title, body, acl, content_hash(title, body),
                    path.stat().st_mtime, "markdown")


def load_text(path: Path, doc_id: str, source: str) -> Document:
    text = _read_text(path)
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), path.stem)
    title = first[:120]
    return Document(doc_id, source, title, text, (PUBLIC_GROUP,), content_hash(title, text),
                    path.stat().st_mtime, "text")


LOADERS: dict[str, Loader] = {
    ".md": load_markdown,
    ".markdown": load_markdown,
    ".txt": load_text,
}


def _walk(root: Path) -> Iterator[Path]:
    """Files below root in a stable order; follows no symlinked directories (no loops)."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def discover(paths: Iterable[Path]) -> Iterator[tuple[Path, Path, bool]]:
    """Yield (file, corpus root, named) for every file under the given paths.

    ``named`` is true for a file given directly rather than found in a directory. A path that
    does not exist raises InputError before anything is yielded.
    """
    paths = list(paths)
    for path in paths:
        if not path.exists():
            raise InputError(f"no such file or directory: {path}")
    for path in paths:
        path = path.resolve()
        if path.is_dir():
            for file in _walk(path):
                yield file, path, False
        else:
            yield path, path.parent, True


@dataclass(frozen=True)
class Loaded:
    documents: list[Document]
    skipped: list[Skipped]  # supported or named files that could not be used, with the reason
    ignored: int  # files of unsupported types found while walking a directory


def load_documents(paths: Iterable[Path]) -> Loaded:
    """Load every supported file under ``paths``; say what was skipped and why."""
    documents: dict[str, Document] = {}
    skipped: list[Skipped] = []
    ignored = 0
    for file, root, named in discover(paths):
        loader = LOADERS.get(file.suffix.lower())
        if loader is None:
            if named:
                skipped.append(Skipped(str(file), f"unsupported file type {file.suffix or '(none)'}"))
            else:
                ignored += 1
            continue
        doc_id = file.relative_to(root).as_posix()
        try:
            document = loader(file, doc_id, str(file))
        except SkipFile as exc:
            skipped.append(Skipped(str(file), str(exc)))
            continue
        documents[doc_id] = document
    return Loaded(list(documents.values()), skipped, ignored)
