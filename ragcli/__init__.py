"""ragcli: retrieval-augmented answers from a small local model, with permissions enforced
inside retrieval, refusal by design, claim-checked citations and an audit record per answer.

The public API (everything else is internal and may change between versions):

    load_settings(flags=None, *, config=None)   Settings from flags, RAGCLI_*, ragcli.toml
    Settings                                    the frozen settings object
    ingest(paths, settings=None)                ``ragcli ingest``: index new/changed documents
    reindex(paths, settings=None)               ``ragcli reindex``: add, update, delete
    ask(question, *, user, groups, settings)    ``ragcli ask``: one audited Answer
    answerer(settings=None)                     an Answerer that keeps the model loaded
    evaluate(goldens, settings=None)            ``ragcli eval`` without the gate: EvalResult
    Answer, Answerer, EvalResult, IndexReport   what those return
    Trace                                       an audit record (Answer.trace), typed
    Store                                       the on-disk (or object-storage) store
    RagError, ExitCode                          every error a user can cause, and its exit code

    >>> import ragcli
    >>> settings = ragcli.load_settings({"store": "/tmp/handbook-store"})
    >>> ragcli.ingest(["corpora/handbook"], settings)          # doctest: +SKIP
    >>> ragcli.ask("Who approves expenses?", settings=settings).short_answer  # doctest: +SKIP

docs/library.md has the whole example. Names are imported on first use, so ``import ragcli``
stays cheap (``ragcli --help`` loads no model runtime).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["Answer", "Answerer", "EvalResult", "ExitCode", "IndexReport", "RagError", "Settings",
           "Store", "Trace", "__version__", "answerer", "ask", "evaluate", "ingest", "load_settings",
           "reindex"]

_WHERE = {"Answer": "answer.result", "Answerer": "answer.answering", "EvalResult": "evaluate.evaluation",
          "ExitCode": "errors", "IndexReport": "ingest.indexing", "RagError": "errors",
          "Settings": "settings", "Store": "store.store", "Trace": "audit.trace", "answerer": "api",
          "ask": "api",
          "evaluate": "api", "ingest": "api", "load_settings": "settings", "reindex": "api"}


def _version() -> str:
    """One source: the installed distribution's metadata (pyproject.toml's ``version``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ragcli")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    elif name in _WHERE:
        value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    else:
        raise AttributeError(f"module 'ragcli' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
