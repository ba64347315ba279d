"""The error tree and the exit codes: the one place where exit codes are defined.

Every failure a user can cause is a :class:`RagError` subclass that carries its exit code; the CLI
turns it into one line on stderr and that code. Anything else is a bug (``ExitCode.INTERNAL``).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of every ragcli command (docs/exit-codes.md, generated from ``WHEN``)."""

    OK = 0
    INTERNAL = 1  # a bug: an exception ragcli did not expect
    USAGE = 2  # bad command-line arguments (also what click/typer use)
    CONFIG = 3  # ragcli.toml or a RAGCLI_* variable is invalid
    INPUT = 4  # an input path is missing, unreadable or not a supported file
    STORE_MISSING = 5  # no store at the configured location, or it holds no chunks
    STORE = 6  # the store exists but cannot be used (damaged, other embedder, newer schema)
    MODEL = 7  # the GGUF model or the embedder cannot be found or loaded
    LOCKED = 8  # another process holds the store's writer lock
    PARTIAL = 9  # ingest finished, but some files were skipped (each with its reason)
    DRIFTED = 10  # replay: the re-run differs from the record (retrieval, prompt or output)
    TRACE_NOT_FOUND = 11  # replay / traces show: no audit record with that request ID
    MODEL_CHANGED = 12  # replay: the recorded model file is missing or its SHA-256 changed
    VERSION_GONE = 13  # replay: the recorded store version no longer exists
    EVAL_REGRESSION = 14  # eval: a stable case that passed fails, or a gated metric fell past its tolerance
    EVAL_LEAK = 15  # eval: a forbidden document reached retrieval, a prompt or a citation
    EVAL_ERROR = 16  # eval: a case errored (it counts as a failure, never as a skip)
    ENGINE = 17  # --engine ray: a Ray task failed after its retries, or results were lost
    TUNE_NOT_BETTER = 18  # tune: the adapter (or tuned reader) did not beat the base on every --eval set
    BACKEND_UNAVAILABLE = 19  # the large model's server cannot be reached, timed out or broke off
    BACKEND_REFUSED = 20  # the large model's server refused the request (key, model name, input)
    BACKEND_INVALID = 21  # the large model's server answered with something not OpenAI-shaped
    UNVERIFIABLE = 22  # replay: the same retrieval and prompt, but a served model answered
    AUDIT_TAMPERED = 23  # traces verify / replay / prune: the audit log's hash chain is broken
    EXPORT_FAILED = 24  # traces export --otlp: the OTLP receiver cannot be reached or refused


WHEN = {
    ExitCode.OK: "success (a refusal is a successful answer)",
    ExitCode.INTERNAL: "a bug; `RAGCLI_DEBUG=1` shows the traceback",
    ExitCode.USAGE: "bad arguments (unknown option, missing argument, bad flag value, unknown "
                    "`--engine`, a store URI ragcli cannot use), empty or over-long question",
    ExitCode.CONFIG: "invalid `ragcli.toml` or `RAGCLI_*` value",
    ExitCode.INPUT: "an input path does not exist or has no supported file, an `acl.toml`, golden "
                    "set or baseline is invalid, a report path cannot be written, a reindex would "
                    "empty a corpus, `--engine ray` without Ray installed or reachable",
    ExitCode.STORE_MISSING: "no store at the location, or it is empty",
    ExitCode.STORE: "store unusable: damaged manifest or data files (`status --verify`), vectors "
                    "of another embedder, another format, an object store that cannot be "
                    "reached; audit log cannot be opened",
    ExitCode.MODEL: "GGUF file, adapter or embedder missing, not a GGUF file, or cannot be loaded",
    ExitCode.LOCKED: "another process is writing to the store",
    ExitCode.PARTIAL: "ingest/reindex finished but skipped some files (each listed with its "
                      "reason on stderr)",
    ExitCode.DRIFTED: "replay: retrieval, prompt, output or answer differ from the record",
    ExitCode.TRACE_NOT_FOUND: "no audit record with that request ID; `traces verify`/`prune`: no "
                              "audit log at the path",
    ExitCode.MODEL_CHANGED: "replay: the recorded model or adapter file is missing or its SHA-256 "
                            "changed",
    ExitCode.VERSION_GONE: "replay: the recorded store version no longer exists, or the store was "
                           "rebuilt into a new table since (the message names the rebuild)",
    ExitCode.EVAL_REGRESSION: "eval: a stable case that passed in the baseline fails, or a gated "
                              "metric is worse by more than its tolerance; `--update-baseline` "
                              "would drop a passing case not named with `--accept-regression`",
    ExitCode.EVAL_LEAK: "eval: a forbidden document was retrieved, put in a prompt or cited",
    ExitCode.EVAL_ERROR: "eval: a case errored",
    ExitCode.ENGINE: "`--engine ray`: a Ray task failed after Ray's retries, or results were lost; "
                     "documents committed before are kept and the same command continues",
    ExitCode.TUNE_NOT_BETTER: "tune: the adapter (`--reader`: the tuned reader) was written but "
                              "is not better than the base model (the current reader) on every "
                              "`--eval` set",
    ExitCode.BACKEND_UNAVAILABLE: "the large model's server (`large_url`) cannot be reached, "
                                  "gave no response within `large_timeout` after "
                                  "`large_retries` retries, or broke off mid-answer; the audit "
                                  "record says which (docs/routing.md)",
    ExitCode.BACKEND_REFUSED: "the large model's server refused the request: HTTP 401/403 (the "
                              "key in `large_api_key_env`) or another 4xx (unknown model, input "
                              "too long), or an error event mid-stream",
    ExitCode.BACKEND_INVALID: "the large model's server answered with something that is not an "
                              "OpenAI chat completion (not JSON, no choices)",
    ExitCode.UNVERIFIABLE: "replay: retrieval and prompt are the same as recorded, but the answer "
                           "came from a served model whose weights cannot be checked, so the "
                           "re-asked output cannot prove the record (never reported as identical)",
    ExitCode.AUDIT_TAMPERED: "`traces verify`, `traces prune` or `replay`: the audit log's hash "
                             "chain is broken: a record was edited, deleted, reordered or "
                             "inserted, or the chain's head or a prune checkpoint was changed "
                             "(the message names the first; a key that is missing is exit 3)",
    ExitCode.EXPORT_FAILED: "`traces export --otlp`: the OTLP receiver cannot be reached, timed "
                            "out or did not take the spans, or the `otel` extra is not installed "
                            "(records sent before the failure are counted in the message)",
}
"""When each exit code happens; docs/exit-codes.md is generated from it (scripts/reference.py)."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name if it has none), for one-line errors
    from libraries whose messages run to many lines (LanceDB, Ray, YAML)."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


class RagError(Exception):
    """Base of every error a user can cause or fix; carries its exit code."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class EngineError(RagError):
    exit_code = ExitCode.ENGINE


class UsageError(RagError):
    exit_code = ExitCode.USAGE


class ConfigError(RagError):
    exit_code = ExitCode.CONFIG


class InputError(RagError):
    exit_code = ExitCode.INPUT


class StoreMissingError(RagError):
    exit_code = ExitCode.STORE_MISSING


class StoreError(RagError):
    exit_code = ExitCode.STORE


class EmbedderMismatchError(StoreError):
    """The store's vectors were made by another embedder than the one configured."""


class ModelError(RagError):
    exit_code = ExitCode.MODEL


class LockedError(RagError):
    exit_code = ExitCode.LOCKED


class TraceNotFoundError(RagError):
    exit_code = ExitCode.TRACE_NOT_FOUND


class AuditTamperedError(RagError):
    exit_code = ExitCode.AUDIT_TAMPERED


class ExportFailedError(RagError):
    exit_code = ExitCode.EXPORT_FAILED


class ModelChangedError(RagError):
    exit_code = ExitCode.MODEL_CHANGED


class VersionGoneError(RagError):
    exit_code = ExitCode.VERSION_GONE


class BackendUnavailableError(RagError):
    exit_code = ExitCode.BACKEND_UNAVAILABLE


class BackendRefusedError(RagError):
    exit_code = ExitCode.BACKEND_REFUSED


class BackendInvalidError(RagError):
    exit_code = ExitCode.BACKEND_INVALID


BackendError = (BackendUnavailableError, BackendRefusedError, BackendInvalidError)
"""What a call to the large model's server raises."""


class RegressionError(RagError):
    """``eval --update-baseline`` would drop a passing case that was not accepted by name."""

    exit_code = ExitCode.EVAL_REGRESSION
