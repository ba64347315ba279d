"""``ask --batch``: many questions answered on one open store, a JSON object out for every line
in, in the order of the lines, failures included (a bad line never stops the batch).

The questions are answered by ``workers`` Answerers at once, each with a model of its own (the
same weights, mapped once) on one core's worth of threads: while one worker's model computes,
another embeds, searches, chooses a sentence or writes its audit record. An answer does not
depend on which worker gave it or on how many there are: the model's scores do not depend on
its thread count (tests/test_real_components.py), and retrieval reads the same held vectors.
A thread reads the lines ahead of the answers (at most two per worker), so a program that
writes a line and waits for its answer before writing the next (a pipe) is answered as it goes.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..errors import InputError, RagError
from ..search.identity import resolve_identity
from ..store.store import Store
from .answering import Answerer

Result = tuple[dict[str, Any], int]


def answer_lines(lines: Iterable[str | bytes], answerers: Answerer | Sequence[Answerer], *,
                 user: str | None, groups: Sequence[str]) -> Iterator[Result]:
    """For each non-blank line (a JSON string, or ``{"question", "id", "user", "groups"}``;
    bytes are read as UTF-8), the ``ask --json`` object, or ``{"line", "error", "exit_code"}``,
    with its exit code (0 for an answer or a refusal), in the order of the lines. ``id`` is
    echoed; ``user`` and ``groups`` default to the caller's and go through the same identity
    rules as ``ask`` (``identity = os`` narrows only). ``answerers``: one per worker (each with
    a generator of its own)."""
    workers = [answerers] if isinstance(answerers, Answerer) else list(answerers)
    if not workers:
        raise ValueError("answer_lines needs at least one answerer")
    settings = workers[0].settings
    store = Store.open(settings.store)
    hold = threading.Lock()
    held = [False]  # the vectors go into memory with the first question (Store.hold_vectors)
    idle: queue.SimpleQueue[Answerer] = queue.SimpleQueue()
    for answerer in workers:
        idle.put(answerer)

    def answer(n: int, line: str | bytes) -> Result:
        ident = None
        try:
            if isinstance(line, bytes):
                try:
                    line = line.decode("utf-8-sig")  # a byte order mark is not the line's
                except UnicodeDecodeError:
                    raise InputError(f"line {n}: not UTF-8 text") from None
            try:
                item = json.loads(line)
            except ValueError:
                item = None
            if isinstance(item, str):
                item = {"question": item}
            if not isinstance(item, dict) or not isinstance(item.get("question"), str):
                raise InputError(f"line {n}: not a JSON object with a \"question\" string "
                                 "(or a JSON string)")
            ident = item.get("id")
            asked = item.get("groups", list(groups))
            if isinstance(asked, str):
                asked = asked.split(",")
            who = resolve_identity(settings.identity, settings.users_file,
                                   item.get("user") or user, [str(g).strip() for g in asked])
            with hold:  # as chat does (a store that cannot be held is searched through lance)
                if not held[0]:
                    held[0] = True
                    store.hold_vectors(settings.hold_max_rows)
            answerer = idle.get()
            try:
                result = answerer.ask(item["question"], user=who.user, groups=list(who.groups),
                                      store=store)
            finally:
                idle.put(answerer)
            return {**({"id": ident} if ident is not None else {}), **result.to_json()}, 0
        except RagError as exc:
            code = int(exc.exit_code)
            return {**({"id": ident} if ident is not None else {}), "line": n,
                    "error": str(exc), "exit_code": code}, code

    if len(workers) == 1:  # no threads: Ctrl-C reaches the question being answered
        for n, line in enumerate(lines, 1):
            if line.strip():
                yield answer(n, line)
        return
    yield from _in_parallel(lines, answer, len(workers))


def _in_parallel(lines: Iterable[str | bytes], answer: Any, workers: int) -> Iterator[Result]:
    """``answer(n, line)`` for every non-blank line on ``workers`` threads, yielded in line
    order. A reader thread submits the lines (at most ``2 * workers`` ahead of what was
    yielded); an error reading them is raised here after the answers before it. When the
    caller stops early (an exception, Ctrl-C, a closed pipe), the questions not started are
    dropped and the ones being answered finish, each with its audit record."""
    ahead: queue.Queue[Future[Result] | BaseException | None] = queue.Queue(maxsize=2 * workers)
    stop = threading.Event()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="ragcli-batch")

    def offer(item: Future[Result] | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for n, line in enumerate(lines, 1):
                if stop.is_set():
                    return
                if line.strip() and not offer(pool.submit(answer, n, line)):
                    return
        except BaseException as exc:  # noqa: BLE001 - raised again on the caller's thread
            offer(exc)
            return
        offer(None)

    reader = threading.Thread(target=read, name="ragcli-batch-reader", daemon=True)
    reader.start()
    try:
        while (item := ahead.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item.result()
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
