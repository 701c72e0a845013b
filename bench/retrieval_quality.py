"""Retrieval quality on BEIR SciFact through the real retrieval service.

Each of the 5,183 abstracts becomes one document of one tenant: title as its heading, the abstract
as its text, chunked by ``ingestion.documents.chunking`` (most abstracts are one chunk), embedded
by the local model and written through the real writer-role vector index into a migrated SQLite
database. Every query is asked through the query API (`InProcessRetrievalClient` over the real
`RetrievalService`, answer cache off) with ``"sources": 10``, and the ranked sources it returns -
the first ten distinct abstracts of the service's ranking - are scored against the qrels: nDCG@10
and recall@10 (BEIR's definitions, binary relevance here).

Modes: keyword only (the tantivy BM25 leg), vector only (MiniLM + HNSW), and hybrid (fusion as
flagged; defaults: the product's settings). ``--compare-previous`` adds the previous defaults (RRF,
title weight 1). ``--tune`` sweeps title weights and fusion settings on the *train* qrels only, then
reports the best of them on test next to the flagged one - test never chooses anything. ``--answers`` also asks every test
query through `RetrievalService.query` and reports how often an answer was found and how often its
first citation is a relevant abstract (the relevance threshold's calibration check).

Published nDCG@10 on the test split: BM25 0.665 (BEIR) / 0.679 (Anserini); all-MiniLM-L6-v2 ~0.645.

    .venv/bin/python bench/retrieval_quality.py                 # ~5-10 min the first time (embeds the corpus, cached after)
    .venv/bin/python bench/retrieval_quality.py --tune --answers
    .venv/bin/python bench/retrieval_quality.py --method convex --vector-weight 0.5 --keyword-weight 0.5

Embeddings are cached under ``--cache-dir`` (default ``var/bench-cache``), keyed by model and texts.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingestion.documents.chunking import chunk_document  # noqa: E402
from ingestion.documents.model import Block, ExtractedDocument  # noqa: E402
from cli import migrations  # noqa: E402
from parley.db import create_engine, create_sessionmaker, unit_of_work  # noqa: E402
from parley.settings import Settings  # noqa: E402
from parley.vectors import EmbeddedVectorIndex, IndexItem  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "scifact"
BATCH = 500


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- data ----------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(path) as fh:
        next(fh)  # header
        for line in fh:
            qid, doc, score = line.rstrip("\n").split("\t")
            if int(score) > 0:
                qrels.setdefault(qid, {})[doc] = int(score)
    return qrels


def chunk_corpus(corpus: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One chunk list per abstract: the title is the heading, so it leads the embedded text."""
    out = []
    for doc in corpus:
        blocks = [Block("paragraph", doc["text"])] if doc["text"].strip() else [Block("paragraph", doc["title"])]
        if doc["title"].strip():
            blocks.insert(0, Block("heading", doc["title"], level=1))
        for chunk in chunk_document(ExtractedDocument("text/plain", tuple(blocks), title=doc["title"])):
            out.append({
                "doc": doc["_id"], "title": doc["title"], "ordinal": chunk.ordinal, "text": chunk.text,
                "heading_path": list(chunk.heading_path), "embed": chunk.embedding_text(),
            })
    return out


def embed_cached(texts: list[str], cache_dir: Path, threads: int, model: str | None = None) -> np.ndarray:
    """Document embeddings from the cache file, or computed once with ``threads`` threads and saved."""
    from parley.embeddings.local import LocalEmbedder, resolve_model

    spec = resolve_model(model)
    digest = hashlib.sha256((spec.model_id + "\x00" + "\x00".join(texts)).encode()).hexdigest()[:16]
    path = cache_dir / f"embeddings-{digest}.npy"
    if path.exists():
        vectors = np.load(path)
        if vectors.shape[0] == len(texts):
            say(f"embeddings from {path}")
            return vectors
    cache_dir.mkdir(parents=True, exist_ok=True)
    embedder = LocalEmbedder(model, threads=threads, batch_size=32)
    out = np.empty((len(texts), embedder.dimension), dtype=np.float32)
    t0 = time.perf_counter()
    step = 256
    for start in range(0, len(texts), step):
        out[start : start + step] = embedder.embed_documents_sync(texts[start : start + step])
        done = min(start + step, len(texts))
        say(f"  embedded {done}/{len(texts)} ({done / (time.perf_counter() - t0):.1f}/s)")
    embedder.close()
    np.save(path, out)
    return out


# --- metrics -------------------------------------------------------------------------------------


def ndcg_at(ranked: list[str], rels: dict[str, int], k: int = 10) -> float:
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(rels.values(), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: list[str], rels: dict[str, int], k: int = 10) -> float:
    return len(set(ranked[:k]) & set(rels)) / len(rels) if rels else 0.0


# --- the index and the service ---------------------------------------------------------------------


async def build(args: argparse.Namespace, chunks: list[dict[str, Any]], vectors: np.ndarray) -> tuple[Any, Any, str, Path]:
    work = Path(args.data_dir or tempfile.mkdtemp(prefix="parley-bench-quality-"))
    settings = Settings(data_dir=work, database_url=args.database_url, log_json=False)
    engine = create_engine(settings, "bench")
    await migrations.upgrade(engine)
    sessions = create_sessionmaker(engine)
    from tenants.service import create_tenant

    async with unit_of_work(sessions, admin=True) as session:
        tenant = await create_tenant(session, name=f"scifact-{uuid.uuid4().hex[:8]}", display_name="SciFact")
        tenant_id = tenant.id
    writer = EmbeddedVectorIndex(sessions, role="writer")
    t0 = time.perf_counter()
    for start in range(0, len(chunks), BATCH):
        batch = chunks[start : start + BATCH]
        await writer.upsert(tenant_id, [
            IndexItem(
                id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"scifact:{c['doc']}:{c['ordinal']}")), document_id=c["doc"],
                text=c["text"], vector=vectors[start + i], title=c["title"], heading_path=c["heading_path"],
            )
            for i, c in enumerate(batch)
        ])
    await writer.aclose()
    say(f"indexed {len(chunks)} chunks in {time.perf_counter() - t0:.1f} s")
    return engine, sessions, tenant_id, work


async def main(args: argparse.Namespace) -> dict[str, Any]:
    logging.basicConfig(level=logging.WARNING)
    from parley.embeddings import CachedQueryEmbedder
    from parley.embeddings.local import LocalEmbedder
    from retrieval.answer import ExtractiveAnswerer
    from retrieval.config import FusionConfig, RetrievalConfig
    from retrieval.client import InProcessRetrievalClient
    from retrieval.schemas import QueryRequest
    from retrieval.service import RetrievalService

    data = Path(args.data)
    corpus = read_jsonl(data / "corpus.jsonl")
    queries = {q["_id"]: q["text"] for q in read_jsonl(data / "queries.jsonl")}
    test, train = read_qrels(data / "qrels" / "test.tsv"), read_qrels(data / "qrels" / "train.tsv")
    chunks = chunk_corpus(corpus)
    say(f"{len(corpus)} abstracts -> {len(chunks)} chunks; {len(test)} test and {len(train)} train queries")
    vectors = embed_cached([c["embed"] for c in chunks], Path(args.cache_dir), args.build_threads, args.model)
    engine, sessions, tenant_id, work = await build(args, chunks, vectors)

    reader = EmbeddedVectorIndex(
        sessions, role="reader", data_dir=work / "vectors", refresh_interval=0, title_weight=args.title_weight
    )
    t0 = time.perf_counter()
    await reader.warm([tenant_id])
    say(f"reader loaded in {time.perf_counter() - t0:.1f} s")
    local = LocalEmbedder(args.model, threads=args.query_threads, query_int8=not args.query_fp32)
    embedder = CachedQueryEmbedder(local, maxsize=4096)
    hybrid = FusionConfig(method=args.method, k=args.k, vector_weight=args.vector_weight, keyword_weight=args.keyword_weight)
    config = RetrievalConfig(top_k=args.top_k, answer_cache_size=0, fusion=hybrid)

    def service_with(fusion: FusionConfig) -> RetrievalService:
        return RetrievalService(
            embedder=embedder, index=reader, sessions=sessions, answerer=ExtractiveAnswerer(), config=config.with_(fusion=fusion)
        )

    service = service_with(hybrid)

    async def evaluate(qrels: dict[str, dict[str, int]], fusion: FusionConfig, title_weight: float | None = None) -> dict[str, float]:
        """Score the ranked sources the query API returns (``"sources": 10``), through the in-process client."""
        reader.title_weight = args.title_weight if title_weight is None else title_weight
        client = InProcessRetrievalClient(service_with(fusion))
        ndcg, recall = [], []
        for qid, rels in qrels.items():
            r = await client.query(QueryRequest(tenant_id=tenant_id, message=queries[qid], sources=10))
            ranked = [s.document_id for s in r.sources or []]
            ndcg.append(ndcg_at(ranked, rels))
            recall.append(recall_at(ranked, rels))
        reader.title_weight = args.title_weight
        # no timings here: bench/query_latency.py measures latency
        return {"ndcg@10": round(float(np.mean(ndcg)), 4), "recall@10": round(float(np.mean(recall)), 4)}

    out: dict[str, Any] = {
        "chunks": len(chunks), "top_k": args.top_k, "model": embedder.model_id, "query_int8": local.query_int8,
        "title_weight": args.title_weight, "scored_on": "QueryResponse.sources (sources=10)", "test": {},
    }
    modes: dict[str, tuple[FusionConfig, float | None]] = {
        "keyword": (FusionConfig(vector_weight=0.0), None),
        "vector": (FusionConfig(keyword_weight=0.0), None),
        f"hybrid ({hybrid.method}, k={hybrid.k}, w_v={hybrid.vector_weight}, w_k={hybrid.keyword_weight})": (hybrid, None),
    }
    if args.compare_previous:
        modes["keyword, title weight 1.0"] = (FusionConfig(vector_weight=0.0), 1.0)
        modes["hybrid rrf k=60, title weight 1.0 (the previous default)"] = (FusionConfig("rrf", 60, 1.0, 1.0), 1.0)
    for name, (fusion, tw) in modes.items():
        out["test"][name] = await evaluate(test, fusion, tw)
        say(f"test  {name:55s} {out['test'][name]}")

    if args.tune:
        fusions = [FusionConfig("rrf", 60, 1.0, 1.0)]
        fusions += [FusionConfig("convex", 60, a, round(1 - a, 2)) for a in (0.4, 0.5, 0.6)]
        grid = [(tw, f) for tw in (0.2, 0.3, 0.5, 1.0) for f in fusions]
        scored = []
        for tw, fusion in grid:
            result = await evaluate(train, fusion, tw)
            scored.append((result["ndcg@10"], tw, fusion))
            say(f"train title_weight={tw} {fusion} {result}")
        _, best_tw, best = max(scored, key=lambda s: s[0])
        out["tuned_on_train"] = {"title_weight": best_tw, "fusion": dataclasses.asdict(best), "train_ndcg@10": max(s[0] for s in scored)}
        out["train_sweep"] = [{"title_weight": tw, "fusion": dataclasses.asdict(f), "ndcg@10": n} for n, tw, f in scored]
        name = f"hybrid tuned on train (title {best_tw}, {best.method}, k={best.k}, w_v={best.vector_weight}, w_k={best.keyword_weight})"
        out["test"][name] = await evaluate(test, best, best_tw)
        say(f"best on train: title {best_tw} {best}; on test: {out['test'][name]}")

    if args.answers:
        found = first_relevant = 0
        for qid, rels in test.items():
            r = await service.query(QueryRequest(tenant_id=tenant_id, message=queries[qid]))
            found += r.found
            first_relevant += bool(r.citations and r.citations[0].document_id in rels)
        out["answers"] = {"found_rate": round(found / len(test), 3), "first_citation_relevant": round(first_relevant / len(test), 3)}
        say(f"answers: {out['answers']}")

    await embedder.aclose()
    await reader.aclose()
    await engine.dispose()
    out["date"] = dt.date.today().isoformat()
    out["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="BEIR SciFact directory")
    parser.add_argument("--cache-dir", default=str(ROOT / "var" / "bench-cache"))
    parser.add_argument("--data-dir", help="where the SQLite file and snapshots go (default: a new temp dir)")
    parser.add_argument("--database-url", help="a migratable database instead of SQLite under --data-dir")
    parser.add_argument("--model", default=None, help="local embedding model (PARLEY_EMBEDDING_MODEL); default: the packaged default")
    _defaults = Settings()
    parser.add_argument("--method", choices=["rrf", "convex"], default=_defaults.retrieval_fusion_method)
    parser.add_argument("--k", type=int, default=_defaults.retrieval_fusion_k, help="RRF constant")
    parser.add_argument("--vector-weight", type=float, default=_defaults.retrieval_fusion_vector_weight)
    parser.add_argument("--keyword-weight", type=float, default=_defaults.retrieval_fusion_keyword_weight)
    parser.add_argument("--title-weight", type=float, default=_defaults.keyword_title_weight,
                        help="the title field's weight in the BM25 leg (PARLEY_KEYWORD_TITLE_WEIGHT)")
    parser.add_argument("--query-fp32", action="store_true", help="embed queries in fp32 (PARLEY_EMBEDDING_QUERY_INT8=false)")
    parser.add_argument("--compare-previous", action="store_true", help="also score the previous defaults (RRF, title weight 1)")
    parser.add_argument("--top-k", type=int, default=40, help="candidates per leg (the service default)")
    parser.add_argument("--build-threads", type=int, default=2, help="embedding threads while indexing")
    parser.add_argument("--query-threads", type=int, default=1, help="embedding threads for queries (the service default)")
    parser.add_argument("--tune", action="store_true", help="sweep fusion settings on the train qrels")
    parser.add_argument("--answers", action="store_true", help="also ask every test query through query()")
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
