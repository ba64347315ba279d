"""Where a store lives, and how its libraries are opened: a local directory or object storage
(the manifest, last run and writer lock differ; ``_backing`` is the one seam), LanceDB's
connection, and ``import lance`` without pandas for reader processes."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import StoreError, first_line
from ..paths import is_uri

MANIFEST = "ragcli.json"
LAST_RUN = "last_run.json"
META = "ragcli_meta"  # manifest and last run of a store in object storage


_READER_PROCESS = False


def reader_process() -> None:
    """Declare this process a reader that hands no pandas objects to pyarrow (the CLI's ``ask``
    and ``chat`` processes, cli.app.main): lance is then imported without pandas
    (``import_lance``)."""
    global _READER_PROCESS
    _READER_PROCESS = True


class _NoPandas:
    """A meta path finder that makes ``import pandas`` fail (import_lance)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas":
            raise ModuleNotFoundError("pandas is not imported by a reader process", name=name)


def import_lance() -> Any:
    """``import lance``; in a reader process (``reader_process``) without importing pandas.

    pyarrow.dataset, which lance imports, imports pandas as it starts (0.45 s of a 2.7 s cold
    ``ask`` on 2 cores) though retrieval never uses it. Kept out, pyarrow treats pandas as absent
    for the rest of the process (a pandas Series given to ``pyarrow.array`` would convert as a
    plain sequence; ``to_pandas`` still imports it), which is why only the CLI's query commands
    ask for it, not ``eval`` (ragas hands pandas data to pyarrow) or a library caller. lance
    itself looks for pandas lazily and still finds it."""
    if _READER_PROCESS and "pyarrow.dataset" not in sys.modules and "pandas" not in sys.modules:
        blocker = _NoPandas()
        sys.meta_path.insert(0, blocker)
        try:
            import pyarrow.dataset  # noqa: F401 - its import is the point
        finally:
            sys.meta_path.remove(blocker)
    import lance

    return lance


class _Directory:
    """Where a store's own files live when it is a local directory: the manifest and the last
    run as JSON files beside the LanceDB data, the writer lock in it. (The one other place a
    directory differs from object storage is reading: a local table is read through lance
    itself, see ``Store._reader``.)"""

    remote = False
    _FILES = {"manifest": MANIFEST, "last_run": LAST_RUN}

    def __init__(self, path: Path) -> None:
        self.path = path

    def where(self, key: str) -> str:
        return str(self.path / self._FILES[key])

    def read(self, key: str) -> str | None:
        file = self.path / self._FILES[key]
        return file.read_text(encoding="utf-8") if file.is_file() else None

    def write(self, key: str, text: str) -> None:
        """Whole or not at all: a temporary file renamed into place, owner-only."""
        try:
            tmp = self.path / (self._FILES[key] + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path / self._FILES[key])
        except OSError as exc:
            raise StoreError(f"cannot write store {key} in {self.path}: {exc}") from None

    def create(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"store path {self.path} exists and is not a directory")
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StoreError(f"cannot create store at {self.path}: {exc.strerror or exc}") from None

    def lock_file(self) -> Path:
        return self.path / "writer.lock"

    def disk_bytes(self) -> int | None:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())


class _ObjectStorage:
    """Where a store's own files live in object storage (``s3://``, ``gs://``, ``az://``): the
    manifest and last run as rows of a small LanceDB table (one commit each), the writer lock on
    the one writing host (docs/scaling.md)."""

    remote = True

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def where(self, key: str) -> str:
        return f"{self.uri}/{META}"

    def read(self, key: str) -> str | None:
        return _read_meta(self.uri, key)

    def write(self, key: str, text: str) -> None:
        db = _connect(self.uri)
        rows = _meta_rows(db)
        exists = bool(rows) or META in db.list_tables().tables
        rows[key] = text
        data = [{"key": k, "value": v} for k, v in sorted(rows.items())]
        try:  # overwriting is one new table version; creating says nothing about a missing table
            db.create_table(META, data=data, mode="overwrite" if exists else "create")
        except (OSError, RuntimeError, ValueError) as exc:
            raise StoreError(f"cannot write to store {self.uri}: {first_line(exc)}") from None

    def create(self) -> None:
        pass  # a prefix exists once something is written under it

    def lock_file(self) -> Path:
        from ..paths import lock_dir

        locks = lock_dir()
        locks.mkdir(parents=True, exist_ok=True, mode=0o700)
        return locks / (hashlib.sha256(self.uri.encode()).hexdigest()[:16] + ".lock")

    def disk_bytes(self) -> int | None:
        return None  # listing a bucket is not free


def _backing(path: Path | str) -> _Directory | _ObjectStorage:
    """The seam between a directory and object storage (every difference but reading)."""
    return _ObjectStorage(str(path)) if is_uri(path) else _Directory(Path(path))


def _connect(location: Path | str) -> Any:
    import lancedb

    if is_uri(location):
        try:
            return lancedb.connect(f"{location}/lancedb")
        except (OSError, RuntimeError, ValueError) as exc:
            raise StoreError(f"cannot open store {location}: {first_line(exc)}",
                             hint="check the URI and the credentials in the environment "
                                  "(docs/scaling.md: Object storage)") from None
    return lancedb.connect(str(Path(location) / "lancedb"))


def _meta_rows(db: Any) -> dict[str, str]:
    try:
        if META not in db.list_tables().tables:
            return {}
        return {r["key"]: r["value"] for r in db.open_table(META).to_arrow().to_pylist()}
    except (OSError, RuntimeError, ValueError) as exc:
        raise StoreError(f"cannot read store metadata: {first_line(exc)}",
                         hint="check the URI and the credentials in the environment "
                              "(docs/scaling.md: Object storage)") from None


def _read_meta(location: str, key: str) -> str | None:
    return _meta_rows(_connect(location)).get(key)
