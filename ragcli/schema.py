"""The published JSON Schemas (ragcli/schemas/*.json), loaded from the installed package."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def answer_schema() -> dict[str, Any]:
    """JSON Schema of ``ragcli ask --json`` output."""
    text = resources.files("ragcli").joinpath("schemas/answer.schema.json").read_text("utf-8")
    return json.loads(text)  # type: ignore[no-any-return]
