"""The second generator backend: an OpenAI-compatible chat-completions server.

llama.cpp's server, llama-cpp-python's, vLLM, Ollama and LM Studio all serve ``POST
{base_url}/chat/completions``. ragcli sends the numbered-passages prompt as chat messages, streams
the answer (server-sent events), and checks it exactly as it checks the local model's (claims.py):
a large model is trusted no more than the small one.

What this backend cannot give, and how ragcli says so:
- the exact model input: the server applies its own chat template, so the audit record keeps the
  exact request (``render`` returns the JSON of the messages sent), not the rendered prompt;
- the model's identity: the record keeps the name the server reports and the response id, and
  ``replay`` reports such a request as ``unverifiable``, never ``identical`` (replay.py);
- token counts before the call: ``count_tokens`` is a conservative estimate (3 bytes a token)
  that keeps the prompt inside ``large_context_tokens``; the server's own counts are recorded.

Only the standard library is used (http.client): nothing to install, nothing imported until a
request goes out. The API key is read from the environment variable ``large_api_key_env`` names,
sent as a bearer token, and never recorded or printed.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BackendInvalidError, BackendRefusedError, BackendUnavailableError
from .generator import Generation, Streamed, TokenCallback

BYTES_PER_TOKEN = 3
"""``count_tokens``'s estimate: BPE tokenizers of English text average 4+ bytes a token, so 3
over-counts, which keeps a prompt inside the server's context rather than over it."""
RETRY_STATUS = (408, 429, 500, 502, 503, 504)
"""HTTP statuses retried (with backoff) before any answer text has arrived."""


@dataclass(frozen=True)
class Endpoint:
    """Where the large model is served. ``base_url`` like ``http://127.0.0.1:8080/v1``."""

    base_url: str
    model: str
    api_key_env: str = "RAGCLI_LARGE_API_KEY"
    timeout_s: float = 60.0
    retries: int = 2
    context_tokens: int = 4096

    def public_url(self) -> str:
        """The URL without user, password, query or fragment: what records and messages show."""
        parts = urllib.parse.urlsplit(self.base_url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def endpoint_from_settings(settings: Any) -> Endpoint:
    from ..errors import ConfigError

    if not settings.large_url:
        raise ConfigError("no large model is configured",
                          hint="set large_url (and large_model) in ragcli.toml or "
                               "RAGCLI_LARGE_URL; docs/routing.md")
    return Endpoint(settings.large_url, settings.large_model, settings.large_api_key_env,
                    settings.large_timeout, settings.large_retries,
                    settings.large_context_tokens)


class OpenAIGenerator:
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint (the Generator protocol
    of generation.py, without span scoring: such servers do not score given continuations)."""

    model_path: Path | None = None
    adapter_path: Path | None = None
    backend = "openai"
    scores_spans = False  # no API scores given continuations: it writes a span answer instead

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.context_tokens = endpoint.context_tokens
        self.last: dict[str, Any] = {}  # what the last response said of itself (for the record)

    def record(self) -> dict[str, Any]:
        """What an audit record says of the model (never the key)."""
        return {"backend": self.backend, "endpoint": self.endpoint.public_url(),
                "model": self.endpoint.model,
                "api_key_env": self.endpoint.api_key_env,
                "api_key_set": bool(os.environ.get(self.endpoint.api_key_env)),
                **{k: v for k, v in self.last.items() if k in ("served_model", "response_id",
                                                               "system_fingerprint", "attempts")}}

    def model_sha256(self) -> None:
        return None  # a served model's bytes cannot be seen from here

    def adapter_sha256(self) -> None:
        return None

    def runtime(self) -> str:
        return f"openai-compatible server at {self.endpoint.public_url()}"

    def render(self, messages: Sequence[tuple[str, str]]) -> str:
        """The exact ``messages`` JSON sent: what this backend can record of the model's input."""
        return json.dumps([{"role": r, "content": c} for r, c in messages], ensure_ascii=False)

    def count_tokens(self, text: str) -> int:
        return len(text.encode("utf-8")) // BYTES_PER_TOKEN + 1

    def score_continuations(self, *args: Any, **kwargs: Any) -> Any:
        from .generator import PromptTooLong

        raise PromptTooLong("an OpenAI-compatible server does not score continuations")

    def generate(self, prompt: str, *, max_tokens: int, temperature: float, seed: int,
                 on_token: TokenCallback | None = None) -> Generation:
        """Stream a chat completion of the messages ``prompt`` holds (``render``'s JSON)."""
        messages = json.loads(prompt)
        self.last = {}
        body = {"model": self.endpoint.model, "messages": messages, "max_tokens": max_tokens,
                "temperature": temperature, "top_p": 1.0, "seed": seed, "stream": True,
                "stream_options": {"include_usage": True}}
        sampling = {"temperature": temperature, "top_p": 1.0, "max_tokens": max_tokens,
                    "seed": seed}
        streamed = Streamed(on_token)
        finish = "unknown"
        usage: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        try:
            for event in self._stream(body, lambda n: meta.update(attempts=n)):
                if not isinstance(event, dict):
                    raise BackendInvalidError(f"{self._where()} sent a stream event that is not a "
                                              f"JSON object: {str(event)[:80]!r}")
                if event.get("error"):
                    raise BackendRefusedError(f"{self._where()} reported an error mid-stream: "
                                              f"{_error_text(event['error'])}")
                meta.setdefault("response_id", event.get("id"))
                if event.get("model"):
                    meta["served_model"] = event["model"]
                if event.get("system_fingerprint"):
                    meta["system_fingerprint"] = event["system_fingerprint"]
                if isinstance(event.get("usage"), dict):
                    usage = event["usage"]
                choices = event.get("choices")
                if choices is None:
                    continue
                if not isinstance(choices, list):
                    raise BackendInvalidError(f"{self._where()} sent 'choices' that is not a list")
                for choice in choices[:1]:
                    delta = choice.get("delta") if isinstance(choice, dict) else None
                    if not isinstance(delta, dict):
                        raise BackendInvalidError(f"{self._where()} sent a chunk without a 'delta' "
                                                  "object (not an OpenAI chat-completions stream)")
                    text = delta.get("content") or ""
                    if not isinstance(text, str):
                        raise BackendInvalidError(f"{self._where()} sent content that is not text")
                    streamed.add(text)
                    if choice.get("finish_reason"):
                        finish = str(choice["finish_reason"])
        except (BackendUnavailableError, BackendRefusedError, BackendInvalidError) as exc:
            raise _scrubbed(exc, os.environ.get(self.endpoint.api_key_env)) from None
        chunks = len(streamed.pieces)
        if finish == "unknown":
            raise BackendUnavailableError(
                f"{self._where()} ended the stream before the answer finished "
                f"(after {chunks} chunks)", hint="nothing was shown as an answer")
        self.last = {k: v for k, v in meta.items() if v is not None and k != "attempts"}
        completion = usage.get("completion_tokens")
        self.last["usage"] = {
            "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": completion if completion is not None else chunks,
            "source": "server" if usage else "estimated prompt, counted stream chunks"}
        self.last["attempts"] = int(meta.get("attempts", 1))
        return Generation(streamed.text, int(self.last["usage"]["completion_tokens"] or 0),
                          finish, sampling, streamed.timings_ms())

    # ---- HTTP ---------------------------------------------------------------------------------
    def _where(self) -> str:
        return f"the large model at {self.endpoint.public_url()}"

    def _stream(self, body: dict[str, Any], on_attempt: Callable[[int], None]) -> Iterator[Any]:
        """The decoded ``data:`` events of a streamed completion. Connection failures and
        ``RETRY_STATUS`` answers are retried ``retries`` times (0.5 s, 1 s, ...) before the first
        event; after it, a failure is final (text may already be on the user's screen)."""
        endpoint = self.endpoint
        parts = urllib.parse.urlsplit(endpoint.base_url)
        path = parts.path.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        key = os.environ.get(endpoint.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        payload = json.dumps(body).encode("utf-8")
        last_error = ""
        for attempt in range(endpoint.retries + 1):
            if attempt:
                time.sleep(min(0.5 * 2 ** (attempt - 1), 8.0))
            on_attempt(attempt + 1)
            kind = http.client.HTTPSConnection if parts.scheme == "https" else \
                http.client.HTTPConnection
            connection = kind(parts.hostname or "", parts.port, timeout=endpoint.timeout_s)
            try:
                connection.request("POST", path, body=payload, headers=headers)
                response = connection.getresponse()
            except TimeoutError:
                last_error = f"no response within {endpoint.timeout_s:g} s"
                connection.close()
                continue
            except (OSError, http.client.HTTPException) as exc:
                last_error = _os_error(exc)
                connection.close()
                continue
            try:
                if response.status in RETRY_STATUS:
                    last_error = f"HTTP {response.status} {response.reason}: " \
                                 f"{_error_text(_read_error(response))}"
                    continue
                if response.status in (401, 403):
                    raise BackendRefusedError(
                        f"{self._where()} refused the request: HTTP {response.status} "
                        f"({_error_text(_read_error(response))})",
                        hint=f"check the key in ${endpoint.api_key_env}")
                if response.status >= 400:
                    raise BackendRefusedError(
                        f"{self._where()} refused the request: HTTP {response.status} "
                        f"{_error_text(_read_error(response))}")
                yield from self._events(response)
                return
            finally:
                connection.close()
        raise BackendUnavailableError(
            f"{self._where()} cannot be reached: {last_error}"
            + (f" ({endpoint.retries + 1} attempts)" if endpoint.retries else ""),
            hint="is the server running? large_url, large_timeout and large_retries set this")

    def _events(self, response: http.client.HTTPResponse) -> Iterator[Any]:
        kind = response.getheader("Content-Type", "")
        try:
            if "text/event-stream" not in kind:  # a server that ignored stream=true
                raw = response.read()
                try:
                    yield _as_chunk(json.loads(raw))
                except ValueError:
                    raise BackendInvalidError(f"{self._where()} answered with something that is "
                                              f"not JSON: {raw[:60]!r}") from None
                return
            while True:
                line = response.readline()
                if not line:
                    return  # end of stream: generate() checks that a finish_reason came
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue  # comments (": ping"), event names, blank separators
                data = line[5:].strip()
                if data == b"[DONE]":
                    return
                try:
                    yield json.loads(data)
                except ValueError:
                    raise BackendInvalidError(f"{self._where()} sent a stream event that is not "
                                              f"JSON: {data[:60]!r}") from None
        except TimeoutError:
            raise BackendUnavailableError(
                f"{self._where()} stopped sending for {self.endpoint.timeout_s:g} s "
                "mid-answer", hint="nothing was shown as an answer; large_timeout sets this"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise BackendUnavailableError(f"{self._where()} broke off the answer: "
                                          f"{_os_error(exc)}",
                                          hint="nothing was shown as an answer") from None


def _scrubbed(exc: BackendUnavailableError | BackendRefusedError | BackendInvalidError,
              key: str | None) -> BackendUnavailableError | BackendRefusedError | BackendInvalidError:
    """The error with the API key cut out of its text: a server may quote what it was sent in
    an error message, and the message reaches the terminal and the audit record."""
    if not key or (key not in exc.message and key not in (exc.hint or "")):
        return exc
    return type(exc)(exc.message.replace(key, "[the API key]"),
                     hint=exc.hint.replace(key, "[the API key]") if exc.hint else None)


def _as_chunk(data: Any) -> Any:
    """A non-streamed completion as one stream chunk (message -> delta)."""
    if isinstance(data, dict) and isinstance(data.get("choices"), list):
        chunk = dict(data)
        chunk["choices"] = [dict(c, delta=c.get("message") or {}) if isinstance(c, dict) else c
                            for c in data["choices"]]
        return chunk
    if isinstance(data, dict) and data.get("error"):
        return data
    raise BackendInvalidError(f"the large model's answer is JSON but not a chat completion: "
                              f"{str(data)[:80]!r}")


def _read_error(response: http.client.HTTPResponse) -> Any:
    try:
        raw = response.read(4096)
    except (OSError, http.client.HTTPException):
        return ""
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip()


def _error_text(error: Any) -> str:
    """The message of an OpenAI-style error body, on one line, short."""
    if isinstance(error, dict):
        inner = error.get("error", error)
        error = inner.get("message", inner) if isinstance(inner, dict) else inner
        if isinstance(error, dict | list):
            error = json.dumps(error)[:200]
    return " ".join(str(error).split())[:200] or "no message"


def _os_error(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return " ".join(str(exc).split())[:200] or type(exc).__name__
