import re

from hypothesis import given, settings
from hypothesis import strategies as st

from ragcli.ingest.chunking import chunk_document, split_blocks
from ragcli.ingest.sources import content_hash
from ragcli.models import Document


def words(text: str) -> int:
    return len(text.split())


def doc(text: str, title: str = "T") -> Document:
    return Document("d.md", "/x/d.md", title, text, ("public",), content_hash(title, text))


def test_heading_path_and_blocks() -> None:
    text = "# Security\n\n## Passwords\n\n### Rotation\n\nChange it within 24 hours.\n"
    [chunk] = chunk_document(doc(text, "Security"), words, 100)
    assert chunk.heading_path == "Security > Passwords > Rotation"
    assert chunk.text == "Change it within 24 hours."
    assert "Rotation" in chunk.search_text


def test_code_block_and_table_stay_whole() -> None:
    code = "```bash\necho one\n\necho two\n```"
    table = "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |"
    text = f"# H\n\nIntro.\n\n{code}\n\nMiddle.\n\n{table}\n"
    chunks = chunk_document(doc(text), words, 24)
    assert any(code in c.text for c in chunks)
    assert any(table in c.text for c in chunks)


def test_numbered_clauses_are_separate_blocks() -> None:
    text = "## 2. Term\n2.1 The term is twelve months\nand renews.\n2.2 Either party may end it.\n"
    kinds = [(b.kind, b.text) for b in split_blocks(text)]
    assert kinds == [("clause", "2.1 The term is twelve months\nand renews."),
                     ("clause", "2.2 Either party may end it.")]


def test_oversized_table_repeats_header() -> None:
    rows = "\n".join(f"| r{i} | v{i} |" for i in range(40))
    text = f"| key | value |\n|---|---|\n{rows}\n"
    chunks = chunk_document(doc(text), words, 30)
    assert len(chunks) > 1
    for chunk in chunks:
        assert chunk.text.startswith("| key | value |\n|---|---|")
        assert words(chunk.search_text) <= 30


def test_oversized_line_is_split_by_words() -> None:
    text = " ".join(f"w{i}" for i in range(500))
    chunks = chunk_document(doc(text), words, 50)
    assert all(words(c.search_text) <= 50 for c in chunks)
    assert " ".join(c.text for c in chunks).split() == text.split()


def test_chunk_ids_are_ordinal_and_stable() -> None:
    text = "# A\n\none\n\n# B\n\ntwo\n"
    first = chunk_document(doc(text), words, 100)
    again = chunk_document(doc(text), words, 100)
    assert [c.chunk_id for c in first] == ["d.md#0", "d.md#1"]
    assert [c.chunk_hash for c in first] == [c.chunk_hash for c in again]


# ---- properties ------------------------------------------------------------------------------
line = st.one_of(
    st.text(alphabet="abcdefgh ", min_size=1, max_size=60).map(str.strip).filter(bool),
    st.sampled_from(["# Head", "## Sub head", "- item one", "1. first", "| a | b |",
                     "|---|---|", "2.1 clause text", "    indented"]),
)
fenced = st.lists(st.text(alphabet="xyz ", min_size=1, max_size=20), min_size=1, max_size=6).map(
    lambda body: "```\n" + "\n".join(body) + "\n```")
markdown = st.lists(st.one_of(line, fenced, st.just("")), min_size=1, max_size=40).map("\n".join)


@settings(max_examples=150, deadline=None)
@given(markdown, st.integers(min_value=20, max_value=80))
def test_chunks_cover_text_in_order_within_limit(text: str, limit: int) -> None:
    chunks = chunk_document(doc(text), words, limit)
    for chunk in chunks:
        assert words(chunk.search_text) <= limit
    heading = re.compile(r"^#{1,6}\s")
    expected = [w for ln in text.splitlines() if not heading.match(ln) for w in ln.split()]
    got = [w for c in chunks for w in c.text.split()]
    assert got == expected


@settings(max_examples=150, deadline=None)
@given(markdown)
def test_fences_are_never_split_when_they_fit(text: str) -> None:
    chunks = chunk_document(doc(text), words, 200)
    for chunk in chunks:
        assert chunk.text.count("```") % 2 == 0
