"""Benchmark the embedded vector index at the size of one big tenant.

Fills one tenant with N synthetic chunks through the real writer-role index (SQLite by default,
batches of 500 = one transaction each): 384-d unit vectors projected from 500 topic clusters in a
32-d latent space (embedding-like: low intrinsic dimension), texts of ~150 words drawn from a Zipf distribution whose head is English stop words. Then:

* reader cold start from the database (HNSW + tantivy built from the change feed), the snapshot
  write, and a second reader's cold start from that snapshot;
* vector search top-10 p50/p99 through the async API (thread hop + payload fetch included) and in
  the engine alone, with recall@10 against brute force;
* keyword search top-10 p50/p99 (questions of 1-2 stop words and 2-3 content words);
* incremental refresh: the writer commits 100 new entries, then ``reader.refresh`` applies them;
  and the cost of a refresh that finds nothing new.

The reader's index thread runs at ``--index-nice`` (default 0 here, so cold start and refresh
show the work itself; the service default is 19, which yields that work to searches).

    .venv/bin/python bench/vector_index.py              # 100,000 chunks, about 3-5 minutes on 2 cores
    .venv/bin/python bench/vector_index.py --n 20000    # quick
    .venv/bin/python bench/vector_index.py --database-url postgresql+asyncpg://postgres@127.0.0.1/bench_db

No timing here is asserted anywhere; the figures are for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alembic import command  # noqa: E402

from cli import migrations  # noqa: E402
from parley.db import create_engine, create_sessionmaker  # noqa: E402
from parley.settings import Settings  # noqa: E402
from parley.vectors import EmbeddedVectorIndex, IndexItem  # noqa: E402

STOP_WORDS = (
    "the of and to a in is it you that he was for on are with as i his they be at one have this from or had by not "
    "but what some we can out other were all there when up use your how said an each she which do their time if will "
    "way about many then them would"
).split()
BATCH = 500


def vocabulary(size: int, rng: np.random.Generator) -> np.ndarray:
    """Stop words first, then pronounceable made-up words of 2-4 syllables."""
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words: dict[str, None] = dict.fromkeys(STOP_WORDS)
    while len(words) < size:
        words.setdefault("".join(rng.choice(syllables, rng.integers(2, 5))), None)
    return np.array(list(words))


def corpus(n: int, dim: int, seed: int) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    vocab = vocabulary(20_000, rng)
    zipf = 1.0 / np.arange(1, len(vocab) + 1)
    words = rng.choice(len(vocab), (n, 150), p=zipf / zipf.sum())
    texts = [" ".join(vocab[row]) for row in words]
    latent = topics(n, rng)
    return embed(latent, dim, rng), texts, vocab, zipf, latent


LATENT = 32  # sentence embeddings have a low intrinsic dimension; i.i.d. 384-d noise would not


def topics(n: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.standard_normal((500, LATENT)).astype(np.float32)
    return centres[rng.integers(0, 500, n)] + 0.5 * rng.standard_normal((n, LATENT)).astype(np.float32)


_PROJECTION: dict[int, np.ndarray] = {}


def embed(latent: np.ndarray, dim: int, rng: np.random.Generator) -> np.ndarray:
    """A fixed random projection of the latent points to ``dim`` plus a little noise, L2-normalised."""
    projection = _PROJECTION.setdefault(dim, np.random.default_rng(0).standard_normal((LATENT, dim)).astype(np.float32))
    noise = 0.5 * np.sqrt(LATENT / dim) * rng.standard_normal((len(latent), dim)).astype(np.float32)
    vectors = latent @ projection + noise
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def items_for(tenant: str, start: int, vectors: np.ndarray, texts: list[str]) -> list[IndexItem]:
    return [
        IndexItem(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench:{tenant}:{start + i}")),
            document_id=f"doc-{(start + i) // 20}", text=texts[i], vector=vectors[i],
            title=f"Document {(start + i) // 20}", heading_path=["Chapter", f"Section {(start + i) % 20}"],
            metadata={"url": f"https://example.test/doc-{(start + i) // 20}"},
        )
        for i in range(len(texts))
    ]


def percentiles(samples: list[float]) -> str:
    ms = np.array(samples) * 1000
    return f"p50 {np.percentile(ms, 50):.3f} ms  p99 {np.percentile(ms, 99):.3f} ms"


async def migrate(engine) -> None:
    cfg = migrations.alembic_config()

    def upgrade(sync_connection) -> None:
        cfg.attributes["connection"] = sync_connection
        command.upgrade(cfg, "heads")

    async with engine.begin() as conn:
        await conn.run_sync(upgrade)


async def main(args: argparse.Namespace) -> dict:
    work = Path(args.data_dir or tempfile.mkdtemp(prefix="parley-bench-vectors-"))
    settings = Settings(data_dir=work, database_url=args.database_url)
    engine = create_engine(settings, "bench")
    await migrate(engine)
    sessions = create_sessionmaker(engine)
    tenant = "bench" + uuid.uuid4().hex[:12]
    out: dict = {
        "n": args.n, "dim": args.dim, "database": settings.effective_database_url.split("://")[0],
        "index_nice": args.index_nice,
    }
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    say(f"generating {args.n} chunks ...")
    vectors, texts, vocab, zipf, latent = corpus(args.n + 600, args.dim, args.seed)
    writer = EmbeddedVectorIndex(sessions, role="writer")
    t0 = time.perf_counter()
    for start in range(0, args.n, BATCH):
        end = min(start + BATCH, args.n)
        await writer.upsert(tenant, items_for(tenant, start, vectors[start:end], texts[start:end]))
    out["fill_s"] = time.perf_counter() - t0
    say(f"filled in {out['fill_s']:.1f} s ({args.n / out['fill_s']:.0f} chunks/s)")

    options = dict(data_dir=work / "vectors", refresh_interval=0, snapshot_every=10**12, index_nice=args.index_nice)
    reader = EmbeddedVectorIndex(sessions, role="reader", **options)
    t0 = time.perf_counter()
    await reader.warm([tenant])
    out["cold_from_db_s"] = time.perf_counter() - t0
    say(f"reader cold start from the database: {out['cold_from_db_s']:.1f} s")
    t0 = time.perf_counter()
    await reader.snapshot(tenant)
    out["snapshot_write_s"] = time.perf_counter() - t0
    await reader.aclose()

    reader = EmbeddedVectorIndex(sessions, role="reader", **options)
    t0 = time.perf_counter()
    await reader.warm([tenant])
    out["cold_from_snapshot_s"] = time.perf_counter() - t0
    stats = reader.stats(tenant) or {}
    out["reader_memory_mb"] = {"graph": round(stats["graph_bytes"] / 2**20), "payloads": round(stats["payload_bytes"] / 2**20)}
    assert reader.stats(tenant)["origin"] == "snapshot"  # type: ignore[index]
    say(f"reader cold start from the snapshot: {out['cold_from_snapshot_s']:.2f} s")

    rng = np.random.default_rng(args.seed + 1)
    stored = vectors[: args.n]
    near = latent[rng.integers(0, args.n, args.queries)] + 0.3 * rng.standard_normal((args.queries, LATENT)).astype(np.float32)
    queries = embed(near, args.dim, rng)  # a question near some stored chunk
    engine_index = reader._tenants[tenant]  # noqa: SLF001 - the engine without the event-loop hop
    for q in embed(latent[rng.integers(0, args.n, 200)], args.dim, rng):  # warm-up: page in mmapped files
        await reader.vector_search(tenant, q, 10)
        await reader.keyword_search(tenant, " ".join(vocab[rng.integers(0, 5000, 3)]), 10)
    api, raw, recall = [], [], []
    for i, q in enumerate(queries):  # separate passes: a repeated query would find warm caches
        t0 = time.perf_counter()
        hits = await reader.vector_search(tenant, q, 10)
        api.append(time.perf_counter() - t0)
        if i < 200:
            truth = {str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench:{tenant}:{j}")) for j in np.argsort(-(stored @ q))[:10]}
            recall.append(len(truth & {h.id for h in hits}) / 10)
    for q in embed(near + 0.1 * rng.standard_normal(near.shape).astype(np.float32), args.dim, rng):
        t0 = time.perf_counter()
        engine_index.vector_search(q, 10)
        raw.append(time.perf_counter() - t0)
    out["vector_api"], out["vector_engine"], out["recall_at_10"] = percentiles(api), percentiles(raw), float(np.mean(recall))
    say(f"vector search: api {out['vector_api']}, engine {out['vector_engine']}, recall@10 {out['recall_at_10']:.3f}")

    content = np.arange(len(STOP_WORDS), len(vocab))
    content_p = zipf[content] / zipf[content].sum()
    questions = [
        " ".join(list(rng.choice(STOP_WORDS[:30], rng.integers(1, 3))) + list(vocab[rng.choice(content, rng.integers(2, 4), p=content_p)]))
        for _ in range(args.queries)
    ]
    api, raw = [], []
    for question in questions[: args.queries // 2]:
        t0 = time.perf_counter()
        await reader.keyword_search(tenant, question, 10)
        api.append(time.perf_counter() - t0)
    for question in questions[args.queries // 2 :]:
        t0 = time.perf_counter()
        engine_index.keyword_search(question.split(), 10)
        raw.append(time.perf_counter() - t0)
    out["keyword_api"], out["keyword_engine"] = percentiles(api), percentiles(raw)
    say(f"keyword search: api {out['keyword_api']}, engine {out['keyword_engine']}")

    refresh, nothing = [], []
    for round_ in range(5):
        start = args.n + 100 * round_
        await writer.upsert(tenant, items_for(tenant, start, vectors[start : start + 100], texts[start : start + 100]))
        t0 = time.perf_counter()
        await reader.refresh(tenant)
        refresh.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await reader.refresh()
        nothing.append(time.perf_counter() - t0)
    out["refresh_100_ms"] = float(np.median(refresh) * 1000)
    out["refresh_nothing_new_ms"] = float(np.median(nothing) * 1000)
    assert reader.stats(tenant)["count"] == args.n + 500  # type: ignore[index]
    say(f"refresh of 100 new entries: {out['refresh_100_ms']:.1f} ms (median of 5); nothing new: {out['refresh_nothing_new_ms']:.2f} ms")

    await reader.aclose()
    await writer.aclose()
    await engine.dispose()
    out["date"] = dt.date.today().isoformat()
    out["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    if settings.is_sqlite:
        out["db_mb"] = (work / "parley.db").stat().st_size / 1e6
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="chunks in the tenant (default 100,000)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data-dir", help="where the SQLite file and snapshots go (default: a new temp dir)")
    parser.add_argument("--database-url", help="a migratable database instead of SQLite under --data-dir")
    parser.add_argument(
        "--index-nice", type=int, default=0,
        help="niceness of the reader's index thread (the service runs it at 19; 0 measures the work itself)",
    )
    result = asyncio.run(main(parser.parse_args()))
    print(json.dumps(result, indent=2))
