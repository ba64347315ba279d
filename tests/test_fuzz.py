"""Fuzzing the parsers that take user files: front matter + Markdown, HTML, goldens, ragcli.toml,
acl.toml. Whatever the bytes, each parser returns a result or raises its documented error (a
skipped file, InputError, ConfigError); nothing else escapes. (The chunker has its own
properties in test_chunking.py.)"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragcli.errors import ConfigError, InputError
from ragcli.evaluate.evaluation import Golden, load_goldens
from ragcli.ingest.chunking import chunk_document
from ragcli.ingest.sources import load_documents
from ragcli.settings import Settings, load_settings

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

yaml_value = st.one_of(
    st.text(max_size=20), st.integers(), st.floats(allow_nan=True), st.booleans(), st.none(),
    st.lists(st.one_of(st.text(max_size=8), st.integers()), max_size=3),
    st.sampled_from(["[unclosed", "{a: [}", "!!python/object:os.system", "&a [*a]", "'", '"', "\t"]),
)
front_matter = st.dictionaries(st.sampled_from(["title", "acl", "tags", "x", ""]), yaml_value,
                               max_size=4).map(
    lambda d: "".join(f"{k}: {json.dumps(v) if not isinstance(v, str) else v}\n" for k, v in d.items()))
body = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=400)


def _load(name: str, data: str | bytes) -> object:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
        try:
            loaded = load_documents([path])
        except InputError:
            return None
        for document in loaded.documents:  # and the chunker takes whatever the loader made
            chunk_document(document, lambda t: len(t.split()), 50)
        return loaded


@FUZZ
@given(front_matter, body, st.booleans())
def test_front_matter_and_markdown(meta: str, text: str, closed: bool) -> None:
    loaded = _load("doc.md", f"---\n{meta}{'---' if closed else ''}\n{text}")
    assert loaded is not None
    assert len(loaded.documents) + len(loaded.skipped) == 1  # type: ignore[attr-defined]


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_as_markdown_text_and_html(data: bytes) -> None:
    for name in ("a.md", "a.txt", "a.html"):
        loaded = _load(name, data)
        assert loaded is not None
        assert len(loaded.documents) + len(loaded.skipped) == 1  # type: ignore[attr-defined]


html_piece = st.sampled_from(["<main>", "</main>", "<nav>menu</nav>", "<table><tr><td>1</td>",
                              "</table>", "<pre>", "</pre>", "<script>x()</script>", "<h1>T</h1>",
                              "<ul><li>a", "</ul>", "<!--", "-->", "&amp;", "<p>", "text words"])


@FUZZ
@given(st.lists(html_piece, max_size=30).map("".join))
def test_html_structures(html: str) -> None:
    loaded = _load("a.html", html)
    assert loaded is not None
    assert len(loaded.documents) + len(loaded.skipped) == 1  # type: ignore[attr-defined]


golden_value = st.one_of(st.text(max_size=10), st.integers(), st.booleans(), st.none(),
                         st.lists(st.one_of(st.text(max_size=5), st.integers()), max_size=3),
                         st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
golden_row = st.dictionaries(
    st.sampled_from(["id", "question", "user", "groups", "expected_docs", "expected_answers",
                     "must_cite", "must_refuse", "forbidden_docs", "forbidden_answers", "tags",
                     "other"]), golden_value, max_size=8)
golden_line = st.one_of(golden_row.map(json.dumps), st.text(max_size=40),
                        st.sampled_from(["[]", "null", '"x"', "{", ""]))


@FUZZ
@given(st.lists(golden_line, max_size=6))
def test_golden_sets(lines: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.jsonl"
        path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
        try:
            cases = load_goldens(path)
        except InputError as exc:
            assert str(exc)
            return
    assert cases and all(isinstance(c, Golden) and c.id.strip() and c.question.strip() for c in cases)


toml_value = st.one_of(st.integers(min_value=-10**6, max_value=10**6),
                       st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                       st.text(alphabet="abcxyz/._-", max_size=12),
                       st.lists(st.integers(), max_size=2))


def _toml(value: object) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


config_table = st.dictionaries(
    st.sampled_from(["top_k", "candidates", "min_confidence", "mode", "retrieval", "store",
                     "embedder", "max_tokens", "temperature", "redact_audit", "max_answer_chars",
                     "rrf_k", "fts_weight", "context_tokens", "unknown"]), toml_value, max_size=5)


@FUZZ
@given(st.one_of(config_table.map(lambda d: "".join(f"{k} = {_toml(v)}\n" for k, v in d.items())),
                 st.text(max_size=60)))
def test_ragcli_toml(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ragcli.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            result = load_settings({}, config=path, environ={})
        except ConfigError as exc:
            assert str(exc)
            return
    assert isinstance(result, Settings) and result.top_k >= 1


acl_value = st.one_of(st.text(max_size=6), st.integers(), st.lists(st.text(max_size=4), max_size=3),
                      st.lists(st.integers(), max_size=2))


@FUZZ
@given(st.dictionaries(st.sampled_from(["*", "hr/*", "[", "a.md", ""]), acl_value, max_size=3),
       st.text(max_size=30))
def test_acl_toml(rules: dict[str, object], junk: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        text = "".join(f"{json.dumps(k)} = {_toml(v)}\n" for k, v in rules.items()) + junk
        (root / "acl.toml").write_text(text, encoding="utf-8", errors="surrogatepass")
        (root / "a.md").write_text("# A\n\nSome text.\n")
        try:
            loaded = load_documents([root])
        except InputError as exc:
            assert "acl.toml" in str(exc)
            return
    for document in loaded.documents:
        assert document.acl and all(isinstance(g, str) and g for g in document.acl)
