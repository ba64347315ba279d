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

# typer >= 0.29 raises its own copy of click's exceptions; older typer raises click's
_CLICK_ERRORS: tuple[type[Exception], ...] = tuple(
    {click.ClickException, getattr(typer, "TyperException", click.ClickException)})
_PASS_THROUGH: tuple[type[BaseException], ...] = (
    typer.Exit, typer.Abort, click.exceptions.Exit, click.Abort, SystemExit, *_CLICK_ERRORS)
"""What ``invoke`` lets through untouched: exits, aborts and usage errors (``_main`` maps them)."""


class RagGroup(TyperGroup):
    """Turns a RagError into one line on stderr and its exit code; never a traceback.

    Command-line mistakes (unknown option, missing argument, bad value) are one line too, with
    exit code 2, instead of click's boxed usage text."""

    # typer's TyperGroup.main has keyword-only parameters of its own; these are click's, which
    # typer accepts and passes on
    def main(self, args: Any = None,  # type: ignore[override]
             prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        previous = os.umask(0o077)  # store, audit log and reports: owner-only (0600 / 0700)
        os.umask(previous | 0o077)
        try:
            return self._main(args, prog_name, complete_var, standalone_mode, **extra)
        finally:
            os.umask(previous)

    def _main(self, args: Any, prog_name: str | None, complete_var: str | None,
              standalone_mode: bool, **extra: Any) -> Any:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _CLICK_ERRORS as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `ragcli`: the help, not an error
                print(exc.format_message())  # type: ignore[attr-defined]
                if not standalone_mode:
                    return 0
                sys.exit(0)
            ctx = getattr(exc, "ctx", None)
            where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            render.error(" ".join(exc.format_message().split()) + where)  # type: ignore[attr-defined]
            code = getattr(exc, "exit_code", int(ExitCode.USAGE))
            if not standalone_mode:
                raise SystemExit(code) from None
            sys.exit(code)
        except (click.Abort, typer.Abort):
            render.error("aborted")
            sys.exit(int(ExitCode.INTERNAL) if standalone_mode else 1)
        if standalone_mode:
            sys.exit(result if isinstance(result, int) else 0)
        return result

    def invoke(self, ctx: Any) -> Any:  # a click Context: typer's own copy of click, or click
        try:
            return super().invoke(ctx)
        except RagError as exc:
            render.error(str(exc))
            raise SystemExit(int(exc.exit_code)) from None
        except _PASS_THROUGH:
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


StoreOpt = Annotated[str | None, typer.Option("--store", help="Store directory, or an s3://, "
                     "gs:// or az:// URI [env RAGCLI_STORE; ragcli.toml 'store']",
                     show_default=False)]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="ragcli.toml to read "
                      "[env RAGCLI_CONFIG; default ./ragcli.toml]", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


AdapterOpt = Annotated[str | None, typer.Option("--adapter", help="LoRA adapter (GGUF) for the "
                       "model [default: the 'adapter' setting: an adapter shipped for the shipped model, "
                       "if one ships (none does yet)]",
                       show_default=False)]
NoAdapterOpt = Annotated[bool, typer.Option("--no-adapter", help="Run the model without any "
                         "adapter (to compare).")]


def adapter_flag(adapter: str | None, no_adapter: bool) -> str | None:
    """The ``adapter`` setting the flags ask for (None: the configured one)."""
    from ..errors import UsageError

    if adapter is not None and no_adapter:
        raise UsageError("--adapter and --no-adapter cannot go together")
    return "none" if no_adapter else adapter


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


def model_or_large(model: Path | None, route: str | None) -> tuple[Path | None, str | None]:
    """``--model large`` asks for the large model (``route = large``); a file of that name is
    ``--model ./large``."""
    if model is not None and str(model) == "large":
        from ..errors import UsageError

        if route not in (None, "large"):
            raise UsageError(f"--model large and --route {route} contradict each other")
        return None, "large"
    return model, route


def gguf_generator(settings: Any, model: Path | None = None) -> Any:
    """The GGUF generator ``settings`` describe (the weights load on first use)."""
    from ..runtimes.generation import LlamaCppGenerator

    return LlamaCppGenerator.from_settings(settings, model)


