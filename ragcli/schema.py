"""The published JSON Schemas (ragcli/schemas/*.json), loaded from the installed package."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def load_schema(name: str) -> dict[str, Any]:
    """``answer`` (``ragcli ask --json``) or ``trace`` (an audit record)."""
    text = resources.files("ragcli").joinpath(f"schemas/{name}.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def answer_schema() -> dict[str, Any]:
    """JSON Schema of ``ragcli ask --json`` output."""
    return load_schema("answer")


def schema_problems(data: Any, name: str = "answer") -> list[str]:
    """Why ``data`` is not valid against the schema ``name`` (empty when it is)."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(load_schema(name))
    return [f"{name} is not schema-valid at /{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
            for e in validator.iter_errors(data)]
