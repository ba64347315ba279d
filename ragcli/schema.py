"""The published JSON Schemas (ragcli/schemas/*.json), loaded from the installed package."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def answer_schema() -> dict[str, Any]:
    """JSON Schema of ``ragcli ask --json`` output."""
    text = resources.files("ragcli").joinpath("schemas/answer.schema.json").read_text("utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


def schema_problems(data: dict[str, Any]) -> list[str]:
    """Why ``data`` is not a valid ``ask --json`` object (empty when it is)."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(answer_schema())
    return [f"output is not schema-valid at /{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
            for e in validator.iter_errors(data)]
