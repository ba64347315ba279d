"""The reference tables in docs/, generated from the code: settings (ragcli.settings.Settings and
DOCS), exit codes (ragcli.errors.ExitCode and WHEN) and the bad-input catalogue
(tests/test_bad_input.py CASES).

Usage: python scripts/reference.py          rewrite the generated parts of the docs
       python scripts/reference.py --check  exit 1, naming the file, when one is out of date
                                            (scripts/test runs this)

A generated part sits between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->``; the text
around it is written by hand.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def settings_table() -> str:
    from ragcli.settings import DOCS, Settings

    rows = ["| setting | environment | default | meaning |", "|---|---|---|---|"]
    for field in fields(Settings):
        shown, meaning = DOCS[field.name]
        if shown is None:
            value = field.default if field.default is not MISSING else field.default_factory()  # type: ignore[misc]
            if isinstance(value, bool):
                shown = "`true`" if value else "`false`"
            elif isinstance(value, tuple):
                shown = "`[" + ", ".join(f'"{v}"' for v in value) + "]`"
            elif isinstance(value, str):
                shown = f"`{value}`"
            else:
                shown = f"`{value}`"
        rows.append(f"| `{field.name}` | `RAGCLI_{field.name.upper()}` | {_cell(shown)} | "
                    f"{_cell(meaning)} |")
    return "\n".join(rows)


def exit_codes_table() -> str:
    from ragcli.errors import WHEN, ExitCode

    rows = ["| code | name | when |", "|---|---|---|"]
    rows += [f"| {int(code)} | {code.name} | {_cell(WHEN[code])} |" for code in ExitCode]
    return "\n".join(rows)


def bad_input_table() -> str:
    from test_bad_input import CASES

    rows = ["| # | bad input (test id) | command | exit | stderr line contains |",
            "|---|---|---|---|---|"]
    for n, case in enumerate(CASES, 1):
        command = next((a for a in case.args if not a.startswith("-")), "")
        rows.append(f"| {n} | `{case.id}` | {command} | {int(case.code)} {case.code.name} | "
                    f"{_cell(case.fragment)} |")
    return "\n".join(rows)


TABLES: dict[str, tuple[str, Callable[[], str]]] = {
    "settings": ("configuration.md", settings_table),
    "exit-codes": ("exit-codes.md", exit_codes_table),
    "bad-input": ("exit-codes.md", bad_input_table),
}


def render(text: str, name: str, table: str) -> str:
    pattern = re.compile(rf"(<!-- generated: {name} -->\n).*?(<!-- end: {name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"reference: no '<!-- generated: {name} -->' ... '<!-- end: {name} -->' "
                         "block to fill")
    return pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="fail if a generated part is stale")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    stale = []
    for page in sorted({page for page, _ in TABLES.values()}):
        path = args.docs / page
        text = path.read_text(encoding="utf-8")
        new = text
        for name, (where, make) in TABLES.items():
            if where == page:
                new = render(new, name, make())
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    if args.check and stale:
        names = ", ".join(str(p) for p in stale)
        print(f"reference: {names} out of date with the code; run python scripts/reference.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
