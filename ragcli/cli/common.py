"""What every command shares: the error-mapping group, common options, settings, progress."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from ..errors import ExitCode, RagError
from . import render


class RagGroup(TyperGroup):
    """Turns a RagError into one line on stderr and its exit code; never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RagError as exc:
            render.error(str(exc))
            raise SystemExit(int(exc.exit_code)) from None
        except (typer.Exit, click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            render.error("interrupted")
            raise SystemExit(130) from None
        except Exception as exc:  # a bug: say so in one line, unless debugging
            if os.environ.get("RAGCLI_DEBUG"):
                raise
            render.error(f"internal error: {type(exc).__name__}: {exc} "
                         "(set RAGCLI_DEBUG=1 for a traceback)")
            raise SystemExit(int(ExitCode.INTERNAL)) from None


StoreOpt = Annotated[Path | None, typer.Option("--store", help="Store directory "
                     "[env RAGCLI_STORE; ragcli.toml 'store']", show_default=False)]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="ragcli.toml to read "
                      "[env RAGCLI_CONFIG; default ./ragcli.toml]", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


AuditOpt = Annotated[Path | None, typer.Option("--audit", help="Audit log [env RAGCLI_AUDIT]",
                     show_default=False)]


def settings_from(config: Path | None, **flags: Any) -> Any:
    from ..settings import load_settings

    return load_settings(flags, config=config)


def progress_bar(quiet: bool) -> Any:
    if quiet or not sys.stderr.isatty():
        return None
    from rich.progress import Progress

    progress = Progress(console=render.stderr(), transient=True)
    task = progress.add_task("embedding documents", total=None)
    progress.start()

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)
        if done >= total:
            progress.stop()

    return update


def gguf_generator(settings: Any, model: Path | None = None) -> Any:
    """The GGUF generator ``settings`` describe (the weights load on first use)."""
    from ..generation import LlamaCppGenerator

    return LlamaCppGenerator(model if model is not None else settings.model,
                             context_tokens=settings.context_tokens, threads=settings.threads,
                             seed=settings.seed)
