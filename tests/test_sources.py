from pathlib import Path

import pytest

from ragcli.errors import InputError
from ragcli.ingest.sources import load_documents


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_front_matter_title_and_acl(tmp_path: Path) -> None:
    write(tmp_path / "c" / "hr" / "pay.md", "---\ntitle: Pay\nacl: [hr, finance]\n---\n# X\n\nBody.\n")
    write(tmp_path / "c" / "open.md", "# Open doc\n\nHello.\n")
    loaded = load_documents([tmp_path / "c"])
    docs = {d.doc_id: d for d in loaded.documents}
    assert docs["hr/pay.md"].title == "Pay"
    assert docs["hr/pay.md"].acl == ("finance", "hr")
    assert docs["open.md"].title == "Open doc"
    assert docs["open.md"].acl == ("public",)


def test_bad_files_are_skipped_with_reasons(tmp_path: Path) -> None:
    root = tmp_path / "c"
    write(root / "good.md", "fine\n")
    write(root / "empty.md", "  \n")
    write(root / "binary.txt", b"abc\x00def")
    write(root / "latin1.txt", "caf\xe9".encode("latin-1"))
    write(root / "badfm.md", "---\nacl: [unclosed\n---\nbody\n")
    write(root / "badacl.md", "---\nacl: [\"a b\"]\n---\nbody\n")
    write(root / "image.png", b"\x89PNG")
    loaded = load_documents([root])
    assert [d.doc_id for d in loaded.documents] == ["good.md"]
    reasons = {Path(s.source).name: s.reason for s in loaded.skipped}
    assert reasons["empty.md"] == "empty file"
    assert reasons["binary.txt"] == "binary file"
    assert "UTF-8" in reasons["latin1.txt"]
    assert "front matter" in reasons["badfm.md"]
    assert "invalid acl group" in reasons["badacl.md"]
    assert loaded.ignored == 1  # the png, found by walking the directory


def test_missing_path_raises_before_anything(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_documents([tmp_path / "nope"])


def test_symlink_loop_does_not_hang(tmp_path: Path) -> None:
    root = tmp_path / "c"
    write(root / "a.md", "text\n")
    (root / "loop").symlink_to(root, target_is_directory=True)
    loaded = load_documents([root])
    assert [d.doc_id for d in loaded.documents] == ["a.md"]
