"""The ragcli command line: wires the subcommands (one small module each) into one app.

Commands stay thin: parse flags into Settings, call the library, render. Errors become exit
codes in one place (common.RagGroup). Nothing heavy is imported at module level, so
``ragcli --help`` stays instant.
"""

from __future__ import annotations

import typer

from . import acl, ask, chat, evaluate, index, models, traces, tune
from .common import RagGroup

app = typer.Typer(
    cls=RagGroup,
    name="ragcli",
    help="Retrieval-augmented answers from a small local model, with permissions, "
    "citations and an audit trail.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

app.command()(index.ingest)
app.command()(index.reindex)
app.command()(ask.ask)
app.command()(chat.chat)
app.command()(index.status)
app.command()(acl.acl)
app.add_typer(traces.traces_app, name="traces")
app.add_typer(models.models_app, name="models")
app.command()(traces.replay)
app.command("eval")(evaluate.eval_command)
app.command()(tune.tune)


READER_COMMANDS = ("ask", "chat")
"""Commands whose process only reads a store and hands no pandas data to pyarrow: lance is
imported without pandas there (store.import_lance, 0.45 s of a cold ask)."""


def main() -> None:
    import sys

    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    if command in READER_COMMANDS:  # here, not in the commands: the process must be the CLI's
        from ..store.backings import reader_process

        reader_process()
    app()
