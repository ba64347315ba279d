"""Golden sets: the questions an evaluation asks, with what a right answer holds.

Format (JSON Lines, one case per line)::

    {"id": "leave-1", "question": "...", "user": "ana", "groups": ["hr"],
     "expected_docs": ["hr/parental-leave.md"], "expected_answers": ["16 weeks"],
     "must_cite": true, "must_refuse": false, "forbidden_docs": ["hr/salary-bands.md"],
     "tags": ["numeric"]}

``forbidden_answers`` lists text that must appear neither in the answer nor in the prompt (the
payload of a poisoned document, say). Only ``id`` and ``question`` are required.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..models import GROUP_NAME

_FIELDS = {"id": str, "question": str, "user": str, "groups": list, "expected_docs": list,
           "expected_answers": list, "must_cite": bool, "must_refuse": bool,
           "forbidden_docs": list, "forbidden_answers": list, "tags": list}


@dataclass(frozen=True)
class Golden:
    id: str
    question: str
    user: str = "eval"
    groups: tuple[str, ...] = ()
    expected_docs: tuple[str, ...] = ()
    expected_answers: tuple[str, ...] = ()
    must_cite: bool = False
    must_refuse: bool = False
    forbidden_docs: tuple[str, ...] = ()
    forbidden_answers: tuple[str, ...] = ()  # text (e.g. an injected payload) that must not be
    # in the answer nor reach the prompt; compared case-insensitively
    tags: tuple[str, ...] = ()


def load_goldens(path: Path) -> list[Golden]:
    """Read and validate a golden set; the first bad line is an InputError naming it."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read golden set {path}: {exc}") from None
    cases: list[Golden] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(row, dict):
            raise InputError(f"{where}: a golden case must be a JSON object")
        unknown = sorted(set(row) - set(_FIELDS))
        if unknown:
            raise InputError(f"{where}: unknown field(s): {', '.join(unknown)}")
        for name in ("id", "question"):
            if not isinstance(row.get(name), str) or not row[name].strip():
                raise InputError(f"{where}: '{name}' must be a non-empty string")
        for name, kind in _FIELDS.items():
            if name in row and not isinstance(row[name], kind):
                raise InputError(f"{where}: '{name}' must be a {kind.__name__}")
            if kind is list and any(not isinstance(v, str) for v in row.get(name, [])):
                raise InputError(f"{where}: '{name}' must be a list of strings")
        bad = [g for g in row.get("groups", []) if not GROUP_NAME.match(g)]
        if bad:
            raise InputError(f"{where}: invalid group name {bad[0]!r}")
        if row["id"] in seen:
            raise InputError(f"{where}: duplicate id {row['id']!r}")
        seen.add(row["id"])
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                  for k, v in row.items()}
        cases.append(Golden(**fields))
    if not cases:
        raise InputError(f"golden set {path} has no cases")
    return cases


def set_name(goldens: Path) -> str:
    """A golden set's name: its file's stem, or its directory's name for a goldens.jsonl."""
    return goldens.resolve().parent.name if goldens.stem == "goldens" else goldens.stem
