"""Resource limits: pathological documents are chunked in bounded time and memory, and no chunk
grows past its character bound whatever the tokenizer says. Each document runs in a child process
under a CPU-time limit, so a quadratic regression is killed (and fails the test) rather than
slowing CI down; the numbers are upper bounds, not speed targets (see scripts/bench_*)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ragcli.ingest.chunking import MAX_CHARS_PER_TOKEN

CHILD = r'''
import json, resource, sys, tempfile, time, tracemalloc
from pathlib import Path
resource.setrlimit(resource.RLIMIT_CPU, (60, 60))
from ragcli.ingest.chunking import chunk_document
from ragcli.ingest.sources import load_documents
kind = sys.argv[1]
if kind == "minilm":
    from ragcli.runtimes.embedder import MiniLMEmbedder
    count = MiniLMEmbedder().count_tokens  # the real WordPiece tokenizer (no torch)
else:
    count = lambda t: len(t.split())
text = sys.stdin.read()
with tempfile.TemporaryDirectory() as d:
    path = Path(d) / "doc.md"
    path.write_text(text)
    tracemalloc.start()
    start = time.process_time()
    loaded = load_documents([path])
    chunks = [c for doc in loaded.documents for c in chunk_document(doc, count, 200)]
    print(json.dumps({"cpu_s": time.process_time() - start,
                      "peak_mb": tracemalloc.get_traced_memory()[1] / 1e6,
                      "chunks": len(chunks), "skipped": len(loaded.skipped),
                      "max_chars": max((len(c.search_text) for c in chunks), default=0)}))
'''

PATHOLOGICAL = {
    "2-mb-line-without-spaces": "x" * 2_000_000,
    "200k-brackets": "[" * 100_000 + "]" * 100_000,
    "1-mb-single-paragraph": "word " * 200_000,
    "50k-nested-list-items": "".join("  " * (i % 40) + f"- item {i}\n" for i in range(50_000)),
    "20k-headings-only": "".join(f"{'#' * (1 + i % 6)} Heading {i}\n" for i in range(20_000)),
    "unclosed-code-fence-1-mb": "```\n" + "code line here\n" * 70_000,
    "5000-code-fences": "```\na\n```\n" * 5000,
    "table-with-2000-columns": "|" + "|".join(f"c{i}" for i in range(2000)) + "|\n|"
                               + "|".join("-" * 2000) + "|\n"
                               + ("|" + "|".join("v" * 2000) + "|\n") * 200,
    "200-levels-of-blockquotes": "".join(">" * (i % 200) + f" quote {i}\n" for i in range(20_000)),
    "50k-keys-of-front-matter": "---\n" + "".join(f"k{i}: v{i}\n" for i in range(50_000))
                                + "---\nbody\n",
    "1-mb-heading": "# " + "title " * 200_000 + "\n\ntext\n",
}


@pytest.mark.parametrize("tokenizer", ["minilm", "words"])
@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_markdown_is_bounded(name: str, tokenizer: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", CHILD, tokenizer], input=PATHOLOGICAL[name],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"killed or failed (CPU limit 60 s): {proc.stderr[-500:]}"
    stats = json.loads(proc.stdout)
    assert stats["peak_mb"] < 256, stats
    # title and headings are clipped to a quarter of the budget each, the text to the rest
    assert stats["max_chars"] <= 200 * MAX_CHARS_PER_TOKEN + 2, stats
