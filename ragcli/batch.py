"""``ask --batch``: many questions answered by one Answerer on one open store, a JSON object out
for every line in, failures included (a bad line never stops the batch)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .answering import Answerer
from .errors import InputError, RagError
from .identity import resolve_identity
from .store import Store


def answer_lines(lines: Iterable[str], answerer: Answerer, *, user: str | None,
                 groups: Sequence[str]) -> Iterator[tuple[dict[str, Any], int]]:
    """For each non-blank line (a JSON string, or ``{"question", "id", "user", "groups"}``),
    the ``ask --json`` object, or ``{"line", "error", "exit_code"}``, with its exit code (0 for an
    answer or a refusal). ``id`` is echoed; ``user`` and ``groups`` default to the caller's and go
    through the same identity rules as ``ask`` (``identity = os`` narrows only)."""
    settings = answerer.settings
    store = Store.open(settings.store)
    held = False  # the vectors go into memory with the first question (Store.hold_vectors)
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        ident = None
        try:
            try:
                item = json.loads(line)
            except ValueError:
                item = None
            if isinstance(item, str):
                item = {"question": item}
            if not isinstance(item, dict) or not isinstance(item.get("question"), str):
                raise InputError(f"line {n}: not a JSON object with a \"question\" string "
                                 "(or a JSON string)")
            ident = item.get("id")
            asked = item.get("groups", list(groups))
            if isinstance(asked, str):
                asked = asked.split(",")
            who = resolve_identity(settings.identity, settings.users_file,
                                   item.get("user") or user, [str(g).strip() for g in asked])
            if not held:  # as chat does (a store that cannot be held is searched through lance)
                held = True
                store.hold_vectors(settings.hold_max_rows)
            result = answerer.ask(item["question"], user=who.user, groups=list(who.groups),
                                  store=store)
            yield {**({"id": ident} if ident is not None else {}), **result.to_json()}, 0
        except RagError as exc:
            code = int(exc.exit_code)
            yield {**({"id": ident} if ident is not None else {}), "line": n, "error": str(exc),
                   "exit_code": code}, code
