"""Benchmark the local embedding models: latency, throughput and retrieval quality.

For each installed candidate (parley.embeddings.local.MODELS):

* query latency p50/p99 of one short text (SciFact claims), through the synchronous
  path and through the async `embed_query` (inference thread + event loop hop);
* bulk throughput in chunks/s on ~200-word chunks (cut from SciFact abstracts);
* nDCG@10 and recall@10 on BEIR SciFact (test qrels, 300 queries) with brute-force
  cosine over the model's own vectors; documents are "title text" as MTEB embeds them.

Latency and throughput run one model at a time with `--threads` intra-op threads
(default 1), nothing else running. The quality pass embeds the whole 5,183-document
corpus (~10 min per MiniLM-L6 model on one thread); `--jobs 2` runs two models'
quality passes side by side, one thread each (only throughput suffers, not the scores).

    .venv/bin/python bench/embeddings.py                    # everything, ~25 min
    .venv/bin/python bench/embeddings.py --no-quality       # latency/throughput only, ~1 min
    .venv/bin/python bench/embeddings.py --max-docs 500     # quick quality smoke run (not comparable)

SciFact lives in ../shared/data/scifact (or --scifact DIR); it is a benchmark data set only
(CC BY-NC), never shipped with the product.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from parley.embeddings.local import MODELS, LocalEmbedder, model_installed  # noqa: E402

DEFAULT_SCIFACT = ROOT.parent / "shared" / "data" / "scifact"


def load_scifact(root: Path) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    corpus: dict[str, str] = {}
    with open(root / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            corpus[doc["_id"]] = f"{doc.get('title', '')} {doc['text']}".strip()
    queries: dict[str, str] = {}
    with open(root / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            q = json.loads(line)
            queries[q["_id"]] = q["text"]
    qrels: dict[str, dict[str, int]] = {}
    with open(root / "qrels" / "test.tsv", encoding="utf-8") as fh:
        next(fh)  # header: query-id corpus-id score
        for line in fh:
            qid, did, score = line.rstrip("\n").split("\t")
            qrels.setdefault(qid, {})[did] = int(score)
    return corpus, queries, qrels


def ndcg_at_k(ranked: list[str], rels: dict[str, int], k: int = 10) -> float:
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(rels.values(), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def percentile(values: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(values), p))


def chunks_of_words(corpus: dict[str, str], words: int, count: int) -> list[str]:
    out: list[str] = []
    for text in corpus.values():
        tokens = text.split()
        for i in range(0, len(tokens) - words + 1, words):
            out.append(" ".join(tokens[i : i + words]))
            if len(out) == count:
                return out
    return out


def bench_speed(name: str, threads: int, batch_size: int, corpus: dict[str, str], queries: dict[str, str]) -> dict:
    t0 = time.perf_counter()
    emb = LocalEmbedder(name, threads=threads, batch_size=batch_size)
    load_s = time.perf_counter() - t0
    texts = list(queries.values())[:320]
    for t in texts[:20]:
        emb.embed_query_sync(t)
    sync_ms = []
    for t in texts[20:]:
        s = time.perf_counter()
        emb.embed_query_sync(t)
        sync_ms.append((time.perf_counter() - s) * 1000)

    async def via_loop() -> list[float]:
        out = []
        for t in texts[20:]:
            s = time.perf_counter()
            await emb.embed_query(t)
            out.append((time.perf_counter() - s) * 1000)
        await emb.aclose()
        return out

    async_ms = asyncio.run(via_loop())

    chunks = chunks_of_words(corpus, 200, 96)
    lengths = [len(x) for x in emb.tokenize(chunks)]
    emb.embed_documents_sync(chunks[:8])  # warm-up at full length
    s = time.perf_counter()
    emb.embed_documents_sync(chunks)
    bulk_s = time.perf_counter() - s
    return {
        "model": name,
        "model_id": emb.model_id,
        "threads": threads,
        "load_s": round(load_s, 2),
        "query_p50_ms": round(percentile(sync_ms, 50), 2),
        "query_p99_ms": round(percentile(sync_ms, 99), 2),
        "async_query_p50_ms": round(percentile(async_ms, 50), 2),
        "async_query_p99_ms": round(percentile(async_ms, 99), 2),
        "query_tokens_mean": round(statistics.mean(len(x) for x in emb.tokenize(texts)), 1),
        "bulk_chunks_per_s": round(len(chunks) / bulk_s, 2),
        "bulk_chunk_tokens_mean": round(statistics.mean(lengths), 1),
        "bulk_chunks_truncated": f"{sum(n >= emb.max_length for n in lengths)}/{len(lengths)}",
    }


def bench_quality(name: str, scifact: Path, max_docs: int | None) -> dict:
    corpus, queries, qrels = load_scifact(scifact)
    doc_ids = list(corpus)[:max_docs] if max_docs else list(corpus)
    emb = LocalEmbedder(name, threads=1)  # default batch size
    t0 = time.perf_counter()
    parts = []
    step = 512
    for i in range(0, len(doc_ids), step):
        parts.append(emb.embed_documents_sync([corpus[d] for d in doc_ids[i : i + step]]))
        done = min(i + step, len(doc_ids))
        rate = done / (time.perf_counter() - t0)
        print(f"  [{name}] {done}/{len(doc_ids)} docs, {rate:.1f}/s", file=sys.stderr, flush=True)
    doc_vecs = np.concatenate(parts)
    corpus_s = time.perf_counter() - t0
    qids = [q for q in qrels if q in queries]
    q_vecs = emb.embed_documents_sync([queries[q] for q in qids])
    scores = q_vecs @ doc_vecs.T
    ndcgs, recalls = [], []
    for row, qid in enumerate(qids):
        top = np.argpartition(-scores[row], min(10, len(doc_ids) - 1))[:10]
        top = top[np.argsort(-scores[row][top])]
        ranked = [doc_ids[j] for j in top]
        ndcgs.append(ndcg_at_k(ranked, qrels[qid]))
        relevant = {d for d, r in qrels[qid].items() if r > 0}
        recalls.append(len(relevant & set(ranked)) / len(relevant))
    emb.close()
    return {
        "model": name,
        "docs": len(doc_ids),
        "queries": len(qids),
        "ndcg@10": round(statistics.mean(ndcgs), 4),
        "recall@10": round(statistics.mean(recalls), 4),
        "corpus_embed_s": round(corpus_s, 1),
        "corpus_docs_per_s": round(len(doc_ids) / corpus_s, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated names (default: all)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads for latency/throughput")
    ap.add_argument("--batch-size", type=int, default=8, help="texts per inference batch")
    ap.add_argument("--scifact", type=Path, default=DEFAULT_SCIFACT)
    ap.add_argument("--no-quality", action="store_true", help="skip the SciFact pass")
    ap.add_argument("--max-docs", type=int, default=None, help="embed only the first N corpus docs")
    ap.add_argument("--jobs", type=int, default=1, help="quality passes run in parallel (1 thread each)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    names = [n for n in args.models.split(",") if n]
    missing = [n for n in names if not model_installed(n)]
    for n in missing:
        print(f"skipping {n}: not installed ({MODELS[n].install})", file=sys.stderr)
    names = [n for n in names if n not in missing]
    corpus, queries, _ = load_scifact(args.scifact)

    print(f"# embeddings bench, {dt.datetime.now().isoformat(timespec='minutes')}, "
          f"{platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"# command: {' '.join(sys.argv)}")
    speed = [bench_speed(n, args.threads, args.batch_size, corpus, queries) for n in names]
    print("\n| model | query p50 / p99 ms (sync) | via embed_query p50 / p99 ms | bulk chunks/s "
          "(~200 words) | tokens/chunk (truncated) | load s |")
    print("|---|---|---|---|---|---|")
    for r in speed:
        print(f"| {r['model']} | {r['query_p50_ms']} / {r['query_p99_ms']} | {r['async_query_p50_ms']} / "
              f"{r['async_query_p99_ms']} | {r['bulk_chunks_per_s']} | {r['bulk_chunk_tokens_mean']} "
              f"({r['bulk_chunks_truncated']}) | {r['load_s']} |")
    sys.stdout.flush()

    quality: list[dict] = []
    if not args.no_quality:
        with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [pool.submit(bench_quality, n, args.scifact, args.max_docs) for n in names]
            quality = [f.result() for f in futures]
        print(f"\n| model | SciFact nDCG@10 | recall@10 | docs | corpus docs/s (jobs={args.jobs}) |")
        print("|---|---|---|---|---|")
        for r in quality:
            print(f"| {r['model']} | {r['ndcg@10']} | {r['recall@10']} | {r['docs']} | {r['corpus_docs_per_s']} |")
    if args.json:
        args.json.write_text(json.dumps({"speed": speed, "quality": quality}, indent=2))


if __name__ == "__main__":
    main()
