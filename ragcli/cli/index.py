"""ingest, reindex, status."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import ExitCode
from . import render
from .common import ConfigOpt, JsonOpt, StoreOpt, progress_bar, settings_from

PathsArg = Annotated[list[Path], typer.Argument(help="Files or directories (corpus roots); a "
                                             "BEIR-style .jsonl file is a corpus of its own.",
                                             show_default=False)]


EngineOpt = Annotated[str, typer.Option("--engine", help="Where chunking and embedding run: 'local' "
                                       "(this process) or 'ray' (Ray Data; pip install "
                                       "'ragcli[ray]'). The store has one writer either way.",
                                       show_default=True)]
CorpusOpt = Annotated[str | None, typer.Option("--corpus", help="Name of the corpus PATH starts "
                                               "[default: its directory name]. Documents of "
                                               "different corpora never share an identity; "
                                               "naming a known corpus at a new place moves it.",
                                               show_default=False)]
FollowOpt = Annotated[bool, typer.Option("--follow-symlinks", help="Also index files that a "
                                         "symbolic link in the corpus points to outside it, "
                                         "under the link's name, with the ACL the rules give "
                                         "the target (by default such links are skipped and "
                                         "counted). Links to directories are never followed.")]
RayAddressOpt = Annotated[str | None, typer.Option("--ray-address", help="Ray cluster to use with "
                                                   "--engine ray (default: a local Ray on this "
                                                   "machine's cores).", show_default=False)]


def _engine(engine: str, ray_address: str | None) -> Any:
    from ..errors import UsageError

    if engine not in ("local", "ray"):
        raise UsageError(f"--engine must be 'local' or 'ray', not {engine!r}")
    if engine == "local":
        if ray_address:
            raise UsageError("--ray-address needs --engine ray")
        return None
    from ..ingest.distributed import RayEngine

    return RayEngine(ray_address)


def _index(paths: list[Path], store: str | None, config: Path | None, as_json: bool,
           *, delete_missing: bool, rebuild: bool = False, allow_empty: bool = False,
           engine: str = "local", ray_address: str | None = None,
           corpus: str | None = None, follow_symlinks: bool = False) -> None:
    from ..errors import UsageError
    from ..ingest.indexing import index_paths
    from ..runtimes.embedder import get_embedder

    if corpus is not None and len(paths) != 1:
        raise UsageError("--corpus names one corpus: give exactly one PATH with it")
    settings = settings_from(config, store=store)
    runner = _engine(engine, ray_address)
    embedder = get_embedder(settings.embedder)
    report = index_paths(paths, settings.store, embedder, delete_missing=delete_missing,
                         rebuild=rebuild, allow_empty=allow_empty, progress=progress_bar(as_json),
                         engine=runner, default_acl=settings.default_acl, corpus=corpus,
                         follow_symlinks=follow_symlinks)
    if as_json:
        render.print_json(report.to_json())
    else:
        render.index_summary(report, "reindexed" if delete_missing else "ingested")
    if report.skipped:
        raise typer.Exit(int(ExitCode.PARTIAL))


def ingest(paths: PathsArg, store: StoreOpt = None, config: ConfigOpt = None,
           as_json: JsonOpt = False, engine: EngineOpt = "local",
           ray_address: RayAddressOpt = None, corpus: CorpusOpt = None,
           follow_symlinks: FollowOpt = False) -> None:
    """Index Markdown, text, HTML, PDF and JSONL files (only new or changed ones are embedded)."""
    _index(paths, store, config, as_json, delete_missing=False, engine=engine,
           ray_address=ray_address, corpus=corpus, follow_symlinks=follow_symlinks)


def reindex(paths: PathsArg, store: StoreOpt = None, config: ConfigOpt = None,
            as_json: JsonOpt = False,
            rebuild: Annotated[bool, typer.Option("--rebuild", help="Drop every chunk and embed all "
                                                  "sources again (the repair for a damaged store).")]
            = False,
            allow_empty: Annotated[bool, typer.Option("--allow-empty", help="Delete the documents "
                                                      "of a corpus directory that is now empty.")]
            = False, engine: EngineOpt = "local", ray_address: RayAddressOpt = None,
            corpus: CorpusOpt = None, follow_symlinks: FollowOpt = False) -> None:
    """Bring the store in line with its sources: add, update and delete; safe to run from cron."""
    _index(paths, store, config, as_json, delete_missing=True, rebuild=rebuild,
           allow_empty=allow_empty, engine=engine, ray_address=ray_address, corpus=corpus,
           follow_symlinks=follow_symlinks)


def status(store: StoreOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False,
           verify: Annotated[bool, typer.Option("--verify", help="Read back every row and file; "
                                                "exit 6 if anything is damaged, with the repair.")]
           = False) -> None:
    """What the store holds, when it was last indexed, and which sources changed since."""
    from ..errors import StoreError
    from ..ingest.indexing import status_document, verify_report
    from ..runtimes.generation import describe_model
    from ..store.store import Store

    settings = settings_from(config, store=store)
    opened = Store.open(settings.store)
    if not verify:
        data = status_document(opened, settings.default_acl, settings.hold_max_rows)
        data["model"] = describe_model(settings.model)  # audit records name it by this SHA-256
        if settings.route != "local":
            data["large"] = {"route": settings.route, "url": settings.large_url,
                             "model": settings.large_model}
        render.print_json(data) if as_json else render.status(data)
        return
    result = verify_report(opened)
    if as_json:
        render.print_json({"store": str(opened.path), **result.to_json()})
    if not result.ok:
        raise StoreError(f"store {opened.path} is damaged: {result.summary()}",
                         hint=f"repair: {result.repair_command()}")
    if not as_json:
        render.verified(opened.path, result.rows, result.documents)
