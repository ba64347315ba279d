"""chat: one process, the store, embedder and model kept warm, a question per line.

Each question goes through ``Answerer.ask`` exactly as ``ragcli ask`` does: its own request ID and
audit record, replayable. On a terminal: line editing and a persistent history (readline), the
model's output streamed, Ctrl-C stops the answer being made (recorded as interrupted) and returns
to the prompt, Ctrl-D or /quit ends. With stdin not a terminal: no prompt and no banner, one
answer (or one JSON line with --json) per input line, for scripts.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

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

HELP = """commands:
  /groups [a,b]   show or set the groups you ask as (identity = os: only narrower)
  /mode [name]    show or set the mode: auto, generative, extractive
  /route [name]   show or set the route: local, small-first, large (docs/routing.md)
  /sources [N]    the sources of the last answer; with N, the whole passage N
  /why            why the last answer is what it is: scores, confidence, screening
  /replay [ID]    re-run a request (default: the last one) and show what differs
  /reload         read the store again (after an ingest or reindex elsewhere)
  /help           this list
  /quit           leave (or Ctrl-D); Ctrl-C stops an answer being made"""


def chat(
    user: Annotated[str | None, typer.Option("--user", help="Who is asking [default: $USER]",
                    show_default=False)] = None,
    groups: Annotated[str, typer.Option("--groups", help="Comma-separated groups (change them "
                      "with /groups).")] = "",
    store: StoreOpt = None,
    model: Annotated[Path | None, typer.Option("--model", help="GGUF model file, or 'large' "
                     "(the server large_url names)", show_default=False)] = None,
    route: Annotated[str | None, typer.Option("--route", help="local, small-first or large "
                     "(docs/routing.md).", show_default=False)] = None,
    adapter: AdapterOpt = None,
    no_adapter: NoAdapterOpt = False,
    mode: Annotated[str | None, typer.Option("--mode", help="auto, generative or extractive "
                    "(change it with /mode).", show_default=False)] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask question after question in one session; everything stays loaded (exit 0, or the
    exit code of the first question that failed when stdin is not a terminal)."""
    from ..answer.answering import Answerer
    from ..runtimes.embedder import get_embedder
    from ..search.identity import resolve_identity

    model, route = model_or_large(model, route)
    settings = settings_from(config, store=store, model=model, mode=mode, route=route,
                             adapter=adapter_flag(adapter, no_adapter))
    who = resolve_identity(settings.identity, settings.users_file, user,
                           [g.strip() for g in groups.split(",")])
    answerer = Answerer(settings, get_embedder(settings.embedder),
                        lambda: gguf_generator(settings))
    session = Session(answerer, who.user, list(who.groups), user_flag=user,
                      interactive=sys.stdin.isatty(), as_json=as_json)
    code = session.run()
    if code:
        raise typer.Exit(code)


@dataclass
class Session:
    answerer: Any
    user: str
    groups: list[str]
    user_flag: str | None = None
    interactive: bool = False
    as_json: bool = False
    last: Any = None
    first_error: int = 0
    store: Any = field(default=None, repr=False)
    _last_run: tuple[int, int] | None = field(default=None, repr=False)

    def run(self) -> int:
        self.store = self._open_store()
        self._last_run = self._last_run_stamp()
        history = self._readline() if self.interactive else None
        if self.interactive:
            import signal

            # Ctrl-C must stop an answer even when the shell that started us ignored SIGINT (a
            # background job inherits SIG_IGN, and Python then never raises KeyboardInterrupt)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            render.stderr().print(f"ragcli chat: store {self.answerer.settings.store}, mode "
                                  f"{self.answerer.settings.mode}, as {self.user} "
                                  f"({', '.join(self.groups) or 'public only'}); /help for "
                                  "commands, Ctrl-D to leave")
        self._warm()
        try:
            while True:
                line = self._read()
                if line is None:
                    break
                line = line.strip()
                if not line:
                    continue
                if line.startswith("/"):
                    if not self._command(line):
                        break
                    continue
                self._ask(line)
        finally:
            if history is not None:
                _save_history(history)
        return 0 if self.interactive else self.first_error

    # ------------------------------------------------------------------ input

    def _readline(self) -> Path | None:
        try:
            import readline
        except ImportError:  # not on every platform: plain input() then
            return None
        from ..paths import chat_history

        history = chat_history()
        try:
            readline.read_history_file(history)
        except OSError:
            pass
        readline.set_history_length(1000)
        return history

    def _read(self) -> str | None:
        if not self.interactive:
            line = sys.stdin.readline()
            return line if line else None
        while True:
            try:
                return input("ragcli> ")
            except EOFError:
                render.stderr().print()
                return None
            except KeyboardInterrupt:  # at the prompt: a fresh line, as shells do
                render.stderr().print("^C")

    def _warm(self) -> None:
        """Load what the first question would: the embedder, the reader (mode auto) or the model
        in the modes that use it (with the shared span prompt in the model's cache under
        ``span_reader = gguf``), and the store's vectors
        (``Store.hold_vectors``)."""
        self.store.hold_vectors(self.answerer.settings.hold_max_rows)
        self.answerer.prefetch()
        self.answerer.embedder.embed(["warm up"])

    # ------------------------------------------------------------------ questions

    def _ask(self, question: str) -> None:
        from ..errors import RagError

        self._notice_newer_version()
        stream = None if self.as_json else render.token_stream()
        try:
            result = self.answerer.ask(question, user=self.user, groups=self.groups,
                                       on_token=stream, store=self.store)
        except KeyboardInterrupt:
            render.stderr().print()
            render.warning("stopped; the request is recorded as interrupted")
            return
        except RagError as exc:
            render.error(str(exc))
            self.first_error = self.first_error or int(exc.exit_code)
            return
        self.last = result
        if self.as_json:
            render.print_json_line(result.to_json())
        else:
            render.answer(result)

    # ------------------------------------------------------------------ commands

    def _command(self, line: str) -> bool:
        from ..errors import RagError

        name, _, arg = line.partition(" ")
        arg = arg.strip()
        handlers = {"/help": self._help, "/groups": self._groups, "/mode": self._mode,
                    "/route": self._route,
                    "/sources": self._sources, "/why": self._why, "/replay": self._replay,
                    "/reload": self._reload}
        if name in ("/quit", "/exit"):
            return False
        handler = handlers.get(name)
        if handler is None:
            render.error(f"unknown command {name}; /help lists them")
            return True
        try:
            handler(arg)
        except RagError as exc:
            render.error(str(exc))
        return True

    def _help(self, arg: str) -> None:
        render.stdout().print(HELP)

    def _groups(self, arg: str) -> None:
        if arg:
            from ..search.identity import resolve_identity

            settings = self.answerer.settings
            who = resolve_identity(settings.identity, settings.users_file, self.user_flag,
                                   [g.strip() for g in arg.split(",")])
            self.groups = list(who.groups)
        render.stdout().print(f"groups: {', '.join(self.groups) or '(public only)'}")

    def _mode(self, arg: str) -> None:
        self._choose("mode", arg)

    def _route(self, arg: str) -> None:
        self._choose("route", arg)

    def _choose(self, name: str, arg: str) -> None:
        """Show the setting ``name`` (mode, route), or set it to ``arg`` for the next questions."""
        from ..errors import UsageError
        from ..settings import _CHOICES

        if arg:
            if arg not in _CHOICES[name]:
                raise UsageError(f"{name} {arg!r}: {', '.join(_CHOICES[name])}")
            answerer = self.answerer.with_settings(replace(self.answerer.settings, **{name: arg}))
            if answerer.settings.route != "local":
                answerer.large()  # no large model configured: said now, the setting unchanged
            self.answerer = answerer
        render.stdout().print(f"{name}: {getattr(self.answerer.settings, name)}")

    def _need_last(self) -> Any:
        from ..errors import UsageError

        if self.last is None:
            raise UsageError("no answer yet: ask a question first")
        return self.last

    def _sources(self, arg: str) -> None:
        from ..errors import UsageError
        from ..models import section_label

        last = self._need_last()
        out = render.stdout()
        if not arg:
            for n, hit in enumerate(last.retrieved, 1):
                out.print(f"[{n}] {hit.chunk_id}  {section_label(hit.title, hit.heading_path)}")
            return
        if not arg.isdigit() or not 1 <= int(arg) <= len(last.retrieved):
            raise UsageError(f"/sources {arg}: give a number from 1 to {len(last.retrieved)}")
        hit = last.retrieved[int(arg) - 1]
        out.print(f"[{arg}] {hit.chunk_id}  {section_label(hit.title, hit.heading_path)}  "
                  f"({hit.source})")
        out.print(hit.text, markup=False, highlight=False)

    def _why(self, arg: str) -> None:
        last = self._need_last()
        out = render.stdout()
        threshold = self.answerer.settings.min_confidence
        out.print(f"request {last.request_id}: confidence {last.confidence:.3f} "
                  f"(min_confidence {threshold:.2f}), mode {last.mode}"
                  + (f", refused: {last.refusal_reason}" if last.refused else ""))
        for n, hit in enumerate(last.retrieved, 1):
            vector = "-" if hit.vector_score is None else f"{hit.vector_score:.3f}"
            fts = "-" if hit.fts_score is None else f"{hit.fts_score:.2f}"
            out.print(f"  [{n}] fused {hit.score:.4f}  cosine {vector}  bm25 {fts}  "
                      f"evidence {hit.evidence:.3f}  {hit.chunk_id}")
        for chunk, flags in (last.flagged or {}).items():
            out.print(f"  screened {chunk}: {', '.join(flags)}")
        if last.verification is not None:
            check = last.verification
            out.print(f"  verification: {check.outcome} ({check.source})"
                      + (f"; failed: {'; '.join(check.failed)}" if check.failed else ""))

    def _reload(self, arg: str) -> None:
        """Open the store again: the session answers from the version it opened (and holds
        its vectors) until told, so an ingest or reindex elsewhere shows up only after this.
        A store that cannot be read now (emptied, another embedder) is said, and the session
        keeps the one it had."""
        settings = self.answerer.settings
        before = self._version(self.store)
        store = self._open_store()
        after = store.version
        store.hold_vectors(settings.hold_max_rows)
        self.store = store
        self._last_run = self._last_run_stamp()
        render.stdout().print(f"store {settings.store}: version {after}"
                              + (" (unchanged)" if after == before else
                                 f" (was {before})" if before is not None else ""))

    def _open_store(self) -> Any:
        """The configured store, checked to hold this embedder's vectors."""
        from ..store.store import Store

        store = Store.open(self.answerer.settings.store)
        store.require_embedder(self.answerer.embedder.id)
        return store

    def _last_run_stamp(self) -> tuple[int, int] | None:
        """When and how big the store's last-run file is (every ingest and reindex rewrites
        it); None for object storage, where looking costs a request."""
        if self.store.remote:
            return None
        try:
            stat = Path(self.store.backing.where("last_run")).stat()
        except OSError:
            return (0, 0)
        return stat.st_mtime_ns, stat.st_size

    def _notice_newer_version(self) -> None:
        """Say once (on stderr) that an ingest or reindex made a newer version than the one
        this session answers from; ``/reload`` reads it. A stat per question, no store read
        unless the last-run file changed."""
        stamp = self._last_run_stamp()
        if stamp is None or stamp == self._last_run:
            return
        self._last_run = stamp
        run = self.store.last_run() or {}
        newer, current = run.get("version"), self._version(self.store)
        if isinstance(newer, int) and newer != current:
            render.warning(f"the store has a newer version ({newer}, by {run.get('command', 'a write')} "
                           f"at {run.get('finished_at', '?')}) than this session's "
                           f"({'empty' if current is None else current}); /reload reads it")

    @staticmethod
    def _version(store: Any) -> int | None:
        from ..errors import RagError

        try:
            return int(store.version)
        except RagError:  # an empty store has no version yet
            return None

    def _replay(self, arg: str) -> None:
        from ..answer.replay import replay_request
        from ..audit.trace import AuditLog

        record, _ = AuditLog.of(self.answerer.settings).verified(
            arg or self._need_last().request_id)
        render.replay(replay_request(record, embedder=self.answerer.embedder,
                                     generator_factory=lambda path, s: gguf_generator(s, path)))


def _save_history(path: Path) -> None:
    import readline

    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        readline.write_history_file(path)
        path.chmod(0o600)
    except OSError:
        pass  # a read-only state directory only costs the history
