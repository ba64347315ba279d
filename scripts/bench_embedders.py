"""See scripts/bench_embedders: which MiniLM variant gives the same vectors on every x86-64 CPU.

Each candidate embeds the same texts (SciFact abstracts and handbook paragraphs) one at a time;
its vectors are compared with the fp32 sentence-transformers (torch) model, the reference. With
``--emulate-avx2`` every ONNX candidate runs a second time in a child process under
``qemu-x86_64 -cpu Haswell``: AVX2, FMA and F16C but no AVX-512 and no VNNI, the instruction set of
the AMD EPYC CI runners, whatever CPU this machine has. onnxruntime picks its kernels from CPUID,
so the child runs the code those machines run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ragcli.runtimes.embedder import ONNX_VARIANTS, MiniLMEmbedder, OnnxMiniLMEmbedder, OnnxVariant

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "data" / "scifact" / "corpus.jsonl"
# candidates measured here besides the product's variants; not offered to users
ONNX_VARIANTS.setdefault("int8r", OnnxVariant({"weight_type": "QInt8", "reduce_range": True},
                                             cpu_dependent=True))
ONNX_VARIANTS.setdefault("u8u8", OnnxVariant({"weight_type": "QUInt8"},
                                            cpu_dependent=True))
ONNX_VARIANTS.setdefault("int8-x64prec", OnnxVariant({"weight_type": "QInt8"},
                                                    {"session.x64quantprecision": "1"},
                                                    cpu_dependent=True))
CANDIDATES = ["fp32", "int8", "int8r", "int8-x64prec", "u8u8"]


def texts(count: int) -> list[str]:
    """SciFact abstracts (long, technical) and handbook paragraphs (short, numeric), alternating,
    so that the first N texts (what --emulate-avx2 N embeds) hold both kinds."""
    scifact: list[str] = []
    if SCIFACT.is_file():
        with SCIFACT.open(encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                scifact.append(f"{row['title']}\n{row['text']}")
                if len(scifact) >= count:
                    break
    handbook = handbook_paragraphs()
    mixed = [t for pair in zip(scifact, handbook, strict=False) for t in pair]
    longer = scifact if len(scifact) > len(handbook) else handbook
    return (mixed + longer[len(mixed) // 2:])[:count]


def handbook_paragraphs() -> list[str]:
    return [paragraph.strip() for path in sorted((ROOT / "corpora" / "handbook").rglob("*.md"))
            for paragraph in path.read_text(encoding="utf-8").split("\n\n")
            if len(paragraph.split()) >= 5]


def reference_texts() -> list[str]:
    """What tests/data/minilm-fp32-reference.npz holds (only this project's own text): every
    eighth handbook paragraph, golden questions and edge cases (a text longer than the model
    reads, a single word, non-ASCII)."""
    questions = [json.loads(line)["question"] for line in
                 (ROOT / "goldens" / "handbook.jsonl").read_text(encoding="utf-8").splitlines()[:12]]
    return handbook_paragraphs()[::8][:24] + questions + [
        "x" * 3000, "short", "Überstunden werden ausgezahlt, 15 € pro Stunde."]


def write_reference(path: Path) -> None:
    """Vectors of the fp32 sentence-transformers (torch) model: the reference that the default
    embedder is checked against on every machine (tests/test_real_components.py)."""
    items = reference_texts()
    vectors = MiniLMEmbedder().embed(items)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, texts=np.array(items), vectors=vectors.astype(np.float32))
    print(f"wrote {path}: {len(items)} texts x {vectors.shape[1]}")


def embed_all(embedder: object, items: list[str]) -> tuple[np.ndarray, float]:
    embedder.embed(items[:1])  # type: ignore[attr-defined]  # load outside the clock
    start = time.perf_counter()
    vectors = np.vstack([embedder.embed([t]) for t in items])  # type: ignore[attr-defined]
    return vectors, len(items) / (time.perf_counter() - start)


def child(variant: str, count: int, out: Path) -> None:
    vectors, rate = embed_all(OnnxMiniLMEmbedder(variant), texts(count))
    np.save(out, vectors)
    out.with_suffix(".json").write_text(json.dumps({"rate": rate}))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def emulated(variant: str, count: int, work: Path) -> tuple[np.ndarray, float]:
    out = work / f"{variant}-avx2.npy"
    command = ["qemu-x86_64", "-cpu", "Haswell", sys.executable, __file__, "--child", variant,
               "--texts", str(count), "--out", str(out)]
    subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
    return np.load(out), json.loads(out.with_suffix(".json").read_text())["rate"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=300, help="texts to embed (default 300)")
    parser.add_argument("--emulate-avx2", type=int, default=0, metavar="N",
                        help="also run each ONNX candidate on N texts under qemu -cpu Haswell")
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--write-reference", type=Path, metavar="NPZ",
                        help="write the torch fp32 reference vectors (tests/data/...) and stop")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.texts, args.out)
        return
    if args.write_reference:
        write_reference(args.write_reference)
        return
    items = texts(args.texts)
    reference, ref_rate = embed_all(MiniLMEmbedder(), items)
    work = ROOT / ".ragcli" / "bench-embedders"
    work.mkdir(parents=True, exist_ok=True)
    print(f"{len(items)} texts; reference: sentence-transformers fp32 on torch ({ref_rate:.1f} texts/s)")
    print(f"{'candidate':<14} {'where':<13} {'min cos':>9} {'p1 cos':>9} {'median':>9} "
          f"{'texts/s':>8}  {'max |native-avx2|':>17}")
    for variant in args.candidates.split(","):
        vectors, rate = embed_all(OnnxMiniLMEmbedder(variant), items)
        cos = cosines(vectors, reference)
        print(f"{variant:<14} {'this CPU':<13} {cos.min():9.5f} {np.percentile(cos, 1):9.5f} "
              f"{statistics.median(cos):9.6f} {rate:8.1f}")
        if args.emulate_avx2:
            n = min(args.emulate_avx2, len(items))
            avx2, avx2_rate = emulated(variant, n, work)
            cos2 = cosines(avx2, reference[:n])
            diff = float(np.abs(avx2 - vectors[:n]).max())
            print(f"{variant:<14} {'AVX2 (qemu)':<13} {cos2.min():9.5f} {np.percentile(cos2, 1):9.5f} "
                  f"{statistics.median(cos2):9.6f} {avx2_rate:8.2f}  {diff:17.2e}")


if __name__ == "__main__":
    main()
