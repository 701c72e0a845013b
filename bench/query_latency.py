"""Query latency of the retrieval service at the size of one big tenant, at the service boundary.

One tenant holds N chunks (default 100,000) of SciFact-derived text on the embedded defaults
(SQLite, the embedded index, the local MiniLM embedder with one thread, the offline answerer):

* the first 5.4k chunks are the SciFact abstracts themselves, with their real embeddings (computed
  once and cached, shared with bench/retrieval_quality.py);
* the rest are new chunks of 5-9 sentences drawn from 2-3 random abstracts, with the normalised
  mix of those abstracts' embeddings plus a little noise as their vector (embedding 100k chunks
  for real would take ~3 hours on this machine; the mix keeps the vectors on the embedding
  manifold, which is what HNSW cost depends on, and the texts are real English for BM25).

The index is written through the real writer-role index, the reader snapshot is built once, and
then the real service runs in its own process (``retrieval.app.serve``, as ``parley retrieval``
will) while this process asks through the real `HttpRetrievalClient`, one request at a time:

* misses: distinct SciFact claims never asked before (answer cache and query-embedding cache miss);
* hits: the same claims again.

Reported: client-side wall time p50/p99 for misses and hits, and the service's own per-stage
timings (from the responses) p50/p99. Targets: hit p50 < 2 ms, miss p50 < 12 ms, p99 < 35 ms.

    .venv/bin/python bench/query_latency.py --n 20000          # ~3 min after the embeddings are cached
    .venv/bin/python bench/query_latency.py                     # 100,000 chunks, ~10 min
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import free_port, wait_until_serving  # noqa: E402
from bench.retrieval_quality import DEFAULT_DATA, chunk_corpus, embed_cached, read_jsonl, say  # noqa: E402
from cli import migrations  # noqa: E402
from parley.db import create_engine, create_sessionmaker, unit_of_work  # noqa: E402
from parley.settings import Settings  # noqa: E402
from parley.vectors import EmbeddedVectorIndex, IndexItem  # noqa: E402
from retrieval.config import RetrievalConfig  # noqa: E402
from retrieval.text import split_sentences  # noqa: E402

RETRIEVAL_TOP_K = RetrievalConfig().top_k

BATCH = 500
STAGES = ("rewrite", "cache", "embed", "vector", "keyword", "fusion", "generate", "total")


def synthesize(n: int, base: list[dict[str, Any]], vectors: np.ndarray, seed: int) -> tuple[list[dict[str, Any]], np.ndarray]:
    """The base chunks, then mixed chunks up to ``n`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    sentences = [split_sentences(c["text"]) for c in base]
    chunks = list(base[:n])
    out = np.empty((n, vectors.shape[1]), dtype=np.float32)
    out[: len(chunks)] = vectors[: len(chunks)]
    noise_scale = 0.05
    for j in range(len(chunks), n):
        sources = rng.choice(len(base), rng.integers(2, 4), replace=False)
        picked: list[str] = []
        for s in sources:
            pool = sentences[s] or [base[s]["text"]]
            picked += [pool[i] for i in rng.choice(len(pool), min(len(pool), int(rng.integers(2, 4))), replace=False)]
        weights = rng.dirichlet(np.ones(len(sources)))
        v = (weights[:, None] * vectors[sources]).sum(axis=0) + noise_scale * rng.standard_normal(vectors.shape[1]) / np.sqrt(vectors.shape[1])
        out[j] = v / np.linalg.norm(v)
        chunks.append({"doc": f"mix-{j // 10}", "title": f"Notes {j // 10}", "ordinal": j % 10, "text": " ".join(picked), "heading_path": ["Notes", f"Part {j % 10}"]})
    return chunks, out


def pct(values: list[float]) -> dict[str, float]:
    a = np.array(values)
    return {"p50": round(float(np.percentile(a, 50)), 2), "p99": round(float(np.percentile(a, 99)), 2)}


async def build(args: argparse.Namespace, chunks: list[dict[str, Any]], vectors: np.ndarray, work: Path) -> tuple[str, str]:
    settings = Settings(data_dir=work, database_url=args.database_url, log_json=False)
    engine = create_engine(settings, "bench")
    await migrations.upgrade(engine)
    sessions = create_sessionmaker(engine)
    from tenants.service import create_tenant

    async with unit_of_work(sessions, admin=True) as session:
        tenant_id = (await create_tenant(session, name=f"latency-{uuid.uuid4().hex[:8]}", display_name="Latency")).id
    writer = EmbeddedVectorIndex(sessions, role="writer")
    t0 = time.perf_counter()
    for start in range(0, len(chunks), BATCH):
        await writer.upsert(tenant_id, [
            IndexItem(
                id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"latency:{start + i}")), document_id=c["doc"], text=c["text"],
                vector=vectors[start + i], title=c["title"], heading_path=c["heading_path"],
            )
            for i, c in enumerate(chunks[start : start + BATCH])
        ])
        if (start // BATCH) % 20 == 0:
            say(f"  written {start + BATCH}/{len(chunks)}")
    await writer.aclose()
    say(f"written {len(chunks)} chunks in {time.perf_counter() - t0:.0f} s; building the reader snapshot ...")
    t0 = time.perf_counter()
    reader = EmbeddedVectorIndex(sessions, role="reader", data_dir=work / "vectors", refresh_interval=0, index_nice=0)
    await reader.warm([tenant_id])
    await reader.snapshot(tenant_id)
    await reader.aclose()
    await engine.dispose()
    say(f"snapshot built in {time.perf_counter() - t0:.0f} s")
    return tenant_id, settings.effective_database_url


async def main(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    from parley.crypto import load_service_token
    from retrieval.client import HttpRetrievalClient
    from retrieval.schemas import QueryRequest

    data = Path(args.data)
    work = Path(args.data_dir or tempfile.mkdtemp(prefix="parley-bench-latency-"))
    state_file = work / "bench-state.json"
    state = json.loads(state_file.read_text()) if args.reuse and state_file.exists() else {}
    if state.get("n") == args.n and state.get("model") == args.model:
        tenant_id, url = state["tenant_id"], state["url"]
        say(f"reusing the index in {work}")
    else:
        base = chunk_corpus(read_jsonl(data / "corpus.jsonl"))
        vectors = embed_cached([c["embed"] for c in base], Path(args.cache_dir), args.build_threads, args.model)
        chunks, all_vectors = synthesize(args.n, base, vectors, args.seed)
        tenant_id, url = await build(args, chunks, all_vectors, work)
        state_file.write_text(json.dumps({"n": args.n, "tenant_id": tenant_id, "url": url, "model": args.model}))
        say(f"index kept in {work} (--data-dir {work} --reuse runs again without building)")

    port = free_port()
    env = {
        **os.environ, "PARLEY_DATABASE_URL": url, "PARLEY_DATA_DIR": str(work), "PARLEY_RETRIEVAL_PORT": str(port),
        "PARLEY_LOG_LEVEL": "WARNING", "PARLEY_EMBEDDING_THREADS": str(args.query_threads),
    }
    if args.model:
        env["PARLEY_EMBEDDING_MODEL"] = args.model
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    code = (
        "import asyncio; from parley.settings import Settings; from retrieval.app import RetrievalDeps, serve; "
        "from retrieval.config import RetrievalConfig; s = Settings(); "
        f"asyncio.run(serve(s, deps=RetrievalDeps(config=RetrievalConfig.from_settings(s, top_k={args.top_k}))))"
    )
    log = open(work / "retrieval.log", "w")
    server = await asyncio.create_subprocess_exec(sys.executable, "-c", code, cwd=ROOT, env=env, stdout=log, stderr=log)
    base_url = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {"n": args.n, "queries": args.queries, "top_k": args.top_k, "model": args.model or "default"}
    try:
        t0 = time.perf_counter()
        async with aiohttp.ClientSession() as http:
            await wait_until_serving(http, f"{base_url}/readyz", server, work / "retrieval.log", timeout=600,
                                     interval=0.1)
        out["service_ready_s"] = round(time.perf_counter() - t0, 1)
        say(f"service ready in {out['service_ready_s']} s (loads the snapshot)")

        claims = [q["text"] for q in read_jsonl(data / "queries.jsonl")]
        rng = np.random.default_rng(args.seed)
        rng.shuffle(claims)
        warm, measured = claims[:30], claims[30 : 30 + args.queries]
        client = HttpRetrievalClient(base_url, timeout=30, token=load_service_token(Settings(data_dir=work)))
        for q in warm:
            await client.query(QueryRequest(tenant_id=tenant_id, message=q))
        miss_wall, hit_wall, stages = [], [], {s: [] for s in STAGES}
        found = 0
        for q in measured:
            t = time.perf_counter()
            r = await client.query(QueryRequest(tenant_id=tenant_id, message=q))
            miss_wall.append((time.perf_counter() - t) * 1000)
            assert not r.cached, "a measured miss was served from the cache"
            found += r.found
            for s in STAGES:
                stages[s].append(r.timings[s])
        hit_total = []
        for q in measured:
            t = time.perf_counter()
            r = await client.query(QueryRequest(tenant_id=tenant_id, message=q))
            hit_wall.append((time.perf_counter() - t) * 1000)
            assert r.cached
            hit_total.append(r.timings["total"])
        await client.aclose()
        out["miss_wall_ms"] = pct(miss_wall)
        out["hit_wall_ms"] = pct(hit_wall)
        out["miss_stages_ms"] = {s: pct(v) for s, v in stages.items()}
        out["hit_service_total_ms"] = pct(hit_total)
        out["found_rate"] = round(found / len(measured), 3)
    finally:
        if server.returncode is None:
            server.send_signal(signal.SIGTERM)
            await server.wait()
        log.close()
    out["service_exit_code"] = server.returncode
    out["date"] = dt.date.today().isoformat()
    out["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    say(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="chunks in the tenant (default 100,000)")
    parser.add_argument("--queries", type=int, default=300, help="distinct questions measured (each a miss, then a hit)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="BEIR SciFact directory")
    parser.add_argument("--cache-dir", default=str(ROOT / "var" / "bench-cache"))
    parser.add_argument("--data-dir", help="where the SQLite file and snapshots go (default: a new temp dir)")
    parser.add_argument("--database-url", help="a migratable database instead of SQLite under --data-dir")
    parser.add_argument("--build-threads", type=int, default=2)
    parser.add_argument("--model", default=None, help="local embedding model (PARLEY_EMBEDDING_MODEL); default: the packaged default")
    parser.add_argument("--query-threads", type=int, default=1, help="the service's embedding threads")
    parser.add_argument("--top-k", type=int, default=RETRIEVAL_TOP_K, help="candidates per search leg")
    parser.add_argument("--reuse", action="store_true", help="reuse the index a previous run built in --data-dir")
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
