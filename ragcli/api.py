"""ragcli from Python: what the commands do, without the command line.

    import ragcli

    settings = ragcli.load_settings({"store": "/tmp/handbook-store"})
    ragcli.ingest(["corpora/handbook"], settings)
    answer = ragcli.ask("How many weeks of paid parental leave do non-birthing parents get?",
                        settings=settings)
    print(answer.short_answer, answer.request_id)   # audited like `ragcli ask`
    result = ragcli.evaluate("goldens/handbook.jsonl", settings=settings)
    print(result.metrics["string_presence"])

Every function takes a :class:`~ragcli.settings.Settings` (``load_settings()`` reads flags,
``RAGCLI_*``, ``ragcli.toml`` and defaults, as the commands do) and raises a
:class:`~ragcli.errors.RagError` subclass with an ``exit_code`` for what the commands would exit
with. Nothing here imports the command line (typer, rich).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .settings import Settings, load_settings

if TYPE_CHECKING:
    from .answer.answering import Answerer
    from .answer.result import Answer
    from .evaluate.evaluation import EvalResult
    from .ingest.indexing import IndexReport


def answerer(settings: Settings | None = None) -> Answerer:
    """An :class:`~ragcli.answer.answering.Answerer` on the settings' store, embedder and GGUF model
    (loaded on first use and kept: ask it many questions)."""
    from .answer.answering import Answerer
    from .runtimes.embedder import get_embedder
    from .runtimes.generation import LlamaCppGenerator

    settings = settings or load_settings()
    return Answerer(settings, get_embedder(settings.embedder),
                    lambda: LlamaCppGenerator.from_settings(settings))


def ingest(paths: Sequence[Path | str], settings: Settings | None = None, *,
           corpus: str | None = None) -> IndexReport:
    """``ragcli ingest PATHS``: index new and changed documents, never delete."""
    from .ingest.indexing import index_paths
    from .runtimes.embedder import get_embedder

    settings = settings or load_settings()
    return index_paths([Path(p) for p in paths], settings.store, get_embedder(settings.embedder),
                       delete_missing=False, default_acl=settings.default_acl, corpus=corpus)


def reindex(paths: Sequence[Path | str], settings: Settings | None = None, *,
            corpus: str | None = None) -> IndexReport:
    """``ragcli reindex PATHS``: add, update and delete so the store matches its sources."""
    from .ingest.indexing import index_paths
    from .runtimes.embedder import get_embedder

    settings = settings or load_settings()
    return index_paths([Path(p) for p in paths], settings.store, get_embedder(settings.embedder),
                       delete_missing=True, default_acl=settings.default_acl, corpus=corpus)


def ask(question: str, *, user: str = "", groups: Sequence[str] = (),
        settings: Settings | None = None) -> Answer:
    """``ragcli ask QUESTION``: one answer, with its request ID and audit record. For many
    questions keep one :func:`answerer` (the model stays loaded)."""
    return answerer(settings).ask(question, user=user, groups=list(groups))


def evaluate(goldens: Path | str, settings: Settings | None = None, *,
             repeat: int = 1) -> EvalResult:
    """``ragcli eval GOLDENS`` without the gate: every case run and scored, the aggregate metrics
    in ``result.metrics``."""
    from .evaluate.evaluation import evaluate as run
    from .evaluate.evaluation import load_goldens

    return run(load_goldens(Path(goldens)), answerer(settings), repeat=repeat)
