"""The error tree and the exit codes: the one place where exit codes are defined.

Every failure a user can cause is a :class:`RagError` subclass that carries its exit code; the CLI
turns it into one line on stderr and that code. Anything else is a bug (``ExitCode.INTERNAL``).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of every ragcli command (documented in README.md)."""

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
    TUNE_NOT_BETTER = 18  # tune: the adapter did not beat the base model on every --eval set


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


class ModelChangedError(RagError):
    exit_code = ExitCode.MODEL_CHANGED


class VersionGoneError(RagError):
    exit_code = ExitCode.VERSION_GONE


class RegressionError(RagError):
    """``eval --update-baseline`` would drop a passing case that was not accepted by name."""

    exit_code = ExitCode.EVAL_REGRESSION
