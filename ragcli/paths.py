"""Where ragcli keeps things on this machine (the XDG base directories), and how it writes a
report file: the one place both are decided.

| what | where |
|---|---|
| store (setting ``store``) | ``$XDG_DATA_HOME/ragcli/store`` (``~/.local/share``) |
| audit log (setting ``audit``) | ``$XDG_STATE_HOME/ragcli/audit.sqlite3`` (``~/.local/state``) |
| writer locks of object-storage stores | ``$XDG_STATE_HOME/ragcli/locks`` |
| chat history | ``$XDG_STATE_HOME/ragcli/chat_history`` |
| exported embedders | ``$RAGCLI_MODEL_CACHE``, else ``$XDG_CACHE_HOME/ragcli/models`` (``~/.cache``) |
| model SHA-256 cache | ``$XDG_CACHE_HOME/ragcli/sha256.json`` |
| BEIR stores of ``eval --beir`` | ``$XDG_DATA_HOME/ragcli/beir/<name>`` |
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path


def _xdg(variable: str, *fallback: str) -> Path:
    value = os.environ.get(variable)
    return Path(value) if value else Path.home().joinpath(*fallback)


def data_home() -> Path:
    return _xdg("XDG_DATA_HOME", ".local", "share") / "ragcli"


def state_home() -> Path:
    return _xdg("XDG_STATE_HOME", ".local", "state") / "ragcli"


def cache_home() -> Path:
    return _xdg("XDG_CACHE_HOME", ".cache") / "ragcli"


def default_store() -> Path:
    return data_home() / "store"


def default_audit() -> Path:
    return state_home() / "audit.sqlite3"


def lock_dir() -> Path:
    return state_home() / "locks"


def chat_history() -> Path:
    return state_home() / "chat_history"


def model_cache() -> Path:
    """Exported embedders (derived files: deleting them only costs one export)."""
    override = os.environ.get("RAGCLI_MODEL_CACHE")
    return Path(override) if override else cache_home() / "models"


def sha256_cache() -> Path:
    return cache_home() / "sha256.json"


def prompt_cache() -> Path:
    """The span prompt's shared part as the model's keys and values (runtimes/prompt_cache.py)."""
    return cache_home() / "prompts"


def write_cache(path: Path, data: bytes) -> bool:
    """Put a cache file in place whole (a temporary file of this process renamed over it, so
    concurrent writers never mix), creating the owner-only directory; False when it cannot be
    written: a read-only cache only costs time."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        return False
    return True


def beir_store(name: str) -> Path:
    return data_home() / "beir" / name


def check_output_path(path: Path | None, flag: str) -> None:
    """Fail before any work when an output file given by ``flag`` could not be written."""
    from .errors import InputError

    if path is None:
        return
    if path.is_dir():
        raise InputError(f"{flag} {path} is a directory")
    if not path.parent.is_dir():
        raise InputError(f"{flag} {path}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError(f"{flag} {path} is not writable")


def write_output(path: Path, text: str, flag: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a temporary file renamed into place)."""
    from .errors import InputError

    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {flag} {path}: {exc.strerror or exc}") from None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_file_sha256(path: Path) -> str:
    """``file_sha256``, remembered per file identity: device, inode, size, mtime and ctime.

    Hashing the 98 MB default model took a few hundred milliseconds on every ``ask``. Any write to
    the file, or a new file at the path, changes its ctime or inode (which no user can set back),
    so a changed model is always hashed again. Kept in ``$XDG_CACHE_HOME/ragcli/sha256.json``."""
    import json

    stat = path.stat()
    key = f"{os.path.realpath(path)}|{stat.st_dev}|{stat.st_ino}|{stat.st_size}|{stat.st_mtime_ns}|" \
          f"{stat.st_ctime_ns}"

    cache = sha256_cache()
    try:
        known = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    if isinstance(known.get(key), str):
        return str(known[key])
    digest = file_sha256(path)
    known = {k: v for k, v in known.items() if not k.startswith(f"{os.path.realpath(path)}|")}
    known[key] = digest
    write_cache(cache, json.dumps(known, indent=1).encode("utf-8"))
    return digest


URI_SCHEMES = ("s3", "s3+ddb", "gs", "az", "abfs", "abfss")


_URI = re.compile(r"^([a-z][a-z0-9+.-]*)://")


def is_uri(location: object) -> bool:
    """True for an object-storage store location such as ``s3://bucket/prefix``."""
    return isinstance(location, str) and _URI.match(location) is not None


def check_uri(location: str) -> str:
    """``location`` if it is an object-storage URI ragcli can use, else a one-line error."""
    match = _URI.match(location)
    scheme = match.group(1) if match else ""
    if scheme not in URI_SCHEMES or not location[len(scheme) + 3:].split("/")[0]:
        raise ValueError(f"{location!r} is not a store directory or an "
                         f"{', '.join(s + '://' for s in URI_SCHEMES[:4])} URI with a bucket")
    return location.rstrip("/")
