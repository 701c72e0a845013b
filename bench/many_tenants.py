"""A thousand tenants on one machine: the retrieval service within a memory budget.

Builds T tenants (default 1,000) of N chunks each (default 2,000; ``--chunks 5000`` for the target)
on the embedded defaults (SQLite under a temporary directory, the embedded index), fast:

* vectors are seeded random unit vectors (384-d, the packaged model's size: HNSW cost depends on the
  dimension and the count, not on meaning), texts are 60 words drawn from a 4,000-word synthetic
  vocabulary (BM25 has real postings);
* written through the product's own writer-role index (`EmbeddedVectorIndex.upsert`), and each
  tenant's snapshot built by a real reader (load from the change feed, save), so the service
  loads real snapshots.

Then it starts the real retrieval service in its own process (``retrieval.app.serve``, as
``parley retrieval``), with ``PARLEY_RETRIEVAL_MEMORY_BUDGET_MB`` set, no warm-up (every tenant is
cold until asked) and the answer cache off, and asks through the real `HttpRetrievalClient`, one
request at a time, a distinct question each time (the query embedding is computed every time):

1. warm, 10 tenants: each asked once (cold), then ``--warm-queries`` questions among them;
2. cold first answers: ``--cold`` tenants never asked before, one question each;
3. random order: ``--random`` questions to tenants picked at random among all;
4. sequential sweep: every tenant in turn;
5. warm again, with every tenant served: the 10 most recently asked, ``--warm-queries`` questions
   (ratio against 1: the same service, one residency-full of tenants later);
6. a write for a released tenant: a chunk with a unique word indexed while the tenant is out of
   memory; its next question must cite it.

The service's RSS (``/proc/<pid>/status`` VmRSS) is sampled after every question; reported are the
RSS after start-up (model loaded, no tenant), the maximum per phase, the budget (which covers the
tenants, not the process's fixed ~0.4 GB: ``rss_above_start_within_budget`` compares the growth
above start-up with it), and the index's own estimate (``/metrics``) with the ratio
(RSS - start-up) / estimate, the estimate's calibration.

    .venv/bin/python bench/many_tenants.py --tenants 100 --chunks 2000 --budget-mb 256   # a few minutes
    .venv/bin/python bench/many_tenants.py --chunks 5000 --budget-mb 8192                # the target set-up

Disk: ~2.6 KB per chunk in SQLite plus ~2.2 KB of snapshot (1,000 x 5,000: ~25 GB); the directory
is deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import free_port, wait_until_serving  # noqa: E402
from cli import migrations  # noqa: E402
from parley.db import create_engine, create_sessionmaker, unit_of_work  # noqa: E402
from parley.settings import Settings  # noqa: E402
from parley.vectors import EmbeddedVectorIndex, IndexItem  # noqa: E402

DIM = 384
BATCH = 1000
WORDS = 60


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def vocabulary(size: int = 4000, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "tre", "po", "sun", "dar", "vel", "qui", "ren", "zo", "bra", "fen", "gil", "hor", "ist"]
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def question_maker(rng: random.Random) -> Callable[[], str]:
    """Distinct questions over the tenants' vocabulary (the answer and query-embedding caches miss)."""
    vocab = vocabulary()

    def question() -> str:
        return "What does " + " ".join(rng.sample(vocab, 4)) + " mean?"

    return question


def pct(values: list[float]) -> dict[str, float]:
    a = np.array(values)
    return {"p50": round(float(np.percentile(a, 50)), 1), "p99": round(float(np.percentile(a, 99)), 1), "n": len(values)}


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def tenant_items(tenant_id: str, index: int, chunks: int, vocab: list[str]) -> list[IndexItem]:
    rng = np.random.default_rng(index)
    vectors = rng.standard_normal((chunks, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    picks = rng.integers(0, len(vocab), (chunks, WORDS))
    return [
        IndexItem(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"many:{tenant_id}:{j}")), document_id=f"doc-{j // 20}",
            text=" ".join(vocab[w] for w in picks[j]), vector=vectors[j], title=f"Guide {j // 20}",
            heading_path=["Guide", f"Part {j % 20}"],
        )
        for j in range(chunks)
    ]


async def build(args: argparse.Namespace, work: Path) -> tuple[list[str], str]:
    from tenants.service import create_tenant

    settings = Settings(data_dir=work, database_url=args.database_url, log_json=False)
    engine = create_engine(settings, "bench")
    await migrations.upgrade(engine)
    sessions = create_sessionmaker(engine)
    vocab = vocabulary()
    tenant_ids = []
    async with unit_of_work(sessions, admin=True) as session:
        for i in range(args.tenants):
            tenant_ids.append((await create_tenant(session, name=f"many-{i:05d}", display_name=f"Tenant {i}")).id)
    writer = EmbeddedVectorIndex(sessions, role="writer")
    # the snapshot builder holds one tenant: loading the next releases (and snapshots) the previous one
    reader = EmbeddedVectorIndex(sessions, role="reader", data_dir=work / "vectors", refresh_interval=0, index_nice=0,
                                 max_tenants=1, trim_memory=False)
    t0 = time.perf_counter()
    for i, tenant_id in enumerate(tenant_ids):
        items = tenant_items(tenant_id, i, args.chunks, vocab)
        for start in range(0, len(items), BATCH):
            await writer.upsert(tenant_id, items[start : start + BATCH])
        await reader.vector_search(tenant_id, items[0].vector, 1)  # loads it (warm() stops at the cap), releasing the previous
        if i % 10 == 9 or i == len(tenant_ids) - 1:
            rate = (i + 1) / (time.perf_counter() - t0)
            say(f"  built {i + 1}/{len(tenant_ids)} tenants ({rate:.2f}/s, ~{(len(tenant_ids) - i - 1) / rate:.0f} s left)")
    await reader.aclose()  # snapshots the last one
    await writer.aclose()
    await engine.dispose()
    return tenant_ids, settings.effective_database_url


async def metrics(http: Any, base_url: str) -> dict[str, float]:
    async with http.get(f"{base_url}/metrics") as response:
        text = await response.text()
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
            if line.startswith("parley_retrieval_") and " " in line and "{" not in line}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    from parley.crypto import load_service_token
    from retrieval.client import HttpRetrievalClient
    from retrieval.schemas import QueryRequest

    work = Path(args.data_dir or tempfile.mkdtemp(prefix="parley-bench-many-", dir=args.tmp))
    state_file = work / "bench-state.json"
    state = json.loads(state_file.read_text()) if args.reuse and state_file.exists() else {}
    out: dict[str, Any] = {"tenants": args.tenants, "chunks": args.chunks, "budget_mb": args.budget_mb}
    try:
        if state.get("tenants") == args.tenants and state.get("chunks") == args.chunks:
            tenant_ids, url = state["tenant_ids"], state["url"]
            say(f"reusing {work}")
        else:
            t0 = time.perf_counter()
            tenant_ids, url = await build(args, work)
            out["build_s"] = round(time.perf_counter() - t0)
            state_file.write_text(json.dumps({"tenants": args.tenants, "chunks": args.chunks, "tenant_ids": tenant_ids, "url": url}))
        out["disk_gb"] = round(sum(p.stat().st_size for p in work.rglob("*") if p.is_file()) / 1e9, 2)
        return await measure(args, work, tenant_ids, url, out, aiohttp, HttpRetrievalClient, QueryRequest, load_service_token)
    finally:
        if not args.keep and not args.data_dir:
            shutil.rmtree(work, ignore_errors=True)
        elif args.keep:
            say(f"kept {work} (--data-dir {work} --reuse measures again without building)")


async def start_service(work: Path, url: str, budget_mb: int) -> tuple[Any, str, Any]:
    """The real retrieval service in its own process (``retrieval.app.serve``), one embedding thread, no
    warm-up, answer cache off, offline answerer; returns the process, its base URL and its open log file."""
    port = free_port()
    env = {
        **os.environ, "PARLEY_DATABASE_URL": url, "PARLEY_DATA_DIR": str(work), "PARLEY_RETRIEVAL_PORT": str(port),
        "PARLEY_LOG_LEVEL": "WARNING", "PARLEY_EMBEDDING_THREADS": "1", "PARLEY_RETRIEVAL_MEMORY_BUDGET_MB": str(budget_mb),
    }
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    code = (
        "import asyncio; from parley.settings import Settings; from retrieval.app import RetrievalDeps, serve; "
        "from retrieval.config import RetrievalConfig; s = Settings(); "
        "asyncio.run(serve(s, deps=RetrievalDeps(config=RetrievalConfig.from_settings(s).with_(warm_tenants=False, answer_cache_size=0))))"
    )
    log = open(work / "retrieval.log", "w")
    server = await asyncio.create_subprocess_exec(sys.executable, "-c", code, cwd=ROOT, env=env, stdout=log, stderr=log)
    return server, f"http://127.0.0.1:{port}", log


async def measure(args, work, tenant_ids, url, out, aiohttp, HttpRetrievalClient, QueryRequest, load_service_token) -> dict[str, Any]:  # noqa: ANN001
    server, base_url, log = await start_service(work, url, args.budget_mb)
    rng = random.Random(args.seed)
    question = question_maker(rng)
    asked: list[str] = []  # tenants in the order asked
    rss: dict[str, float] = {}

    try:
        async with aiohttp.ClientSession() as http:
            await wait_until_serving(http, f"{base_url}/readyz", server, work / "retrieval.log", timeout=600)
            client = HttpRetrievalClient(base_url, timeout=60, token=load_service_token(Settings(data_dir=work)))
            out["rss_start_mb"] = round(rss_mb(server.pid))

            async def ask(tenant_id: str, phase: str, message: str | None = None) -> tuple[float, Any]:
                t = time.perf_counter()
                r = await client.query(QueryRequest(tenant_id=tenant_id, message=message or question()))
                ms = (time.perf_counter() - t) * 1000
                asked.append(tenant_id)
                rss[phase] = max(rss.get(phase, 0.0), rss_mb(server.pid))
                return ms, r

            ten = tenant_ids[:10]
            for t in ten:
                await ask(t, "warm10")
            warm10 = [(await ask(rng.choice(ten), "warm10"))[0] for _ in range(args.warm_queries)]
            out["warm_10_tenants_ms"] = pct(warm10)

            cold_pool = list(tenant_ids[10:])
            rng.shuffle(cold_pool)
            cold, cold_stages = [], {}
            for t in cold_pool[: args.cold]:
                ms, r = await ask(t, "cold")
                cold.append(ms)
                for stage, v in r.timings.items():
                    cold_stages.setdefault(stage, []).append(v)
            out["cold_first_answer_ms"] = pct(cold)
            out["cold_service_stages_p50_ms"] = {k: round(float(np.percentile(v, 50)), 1) for k, v in cold_stages.items()}

            for _ in range(args.random):
                await ask(rng.choice(tenant_ids), "random")
            for t in tenant_ids:
                await ask(t, "sweep")
            recent = list(dict.fromkeys(reversed(asked)))[:10]
            warm_all = [(await ask(rng.choice(recent), "warm_all"))[0] for _ in range(args.warm_queries)]
            out["warm_after_all_tenants_ms"] = pct(warm_all)
            out["warm_ratio"] = {k: round(out["warm_after_all_tenants_ms"][k] / out["warm_10_tenants_ms"][k], 2) for k in ("p50", "p99")}

            figures = await metrics(http, base_url)
            out["resident_tenants"] = int(figures.get("parley_retrieval_resident_tenants", 0))
            out["estimated_mb"] = round(figures.get("parley_retrieval_resident_bytes", 0) / 2**20)
            out["loads"] = int(figures.get("parley_retrieval_tenant_loads_total", 0))
            out["evictions"] = int(figures.get("parley_retrieval_tenant_evictions_total", 0))
            rss_now = rss_mb(server.pid)
            out["estimate_calibration"] = round((rss_now - out["rss_start_mb"]) / max(out["estimated_mb"], 1), 2)
            out["rss_max_mb"] = {k: round(v) for k, v in rss.items()}
            out["rss_max_above_start_mb"] = round(max(rss.values()) - out["rss_start_mb"])
            out["rss_above_start_within_budget"] = out["rss_max_above_start_mb"] <= args.budget_mb

            # a write for a released tenant: the least recently asked tenant is out of memory now
            out["write_while_released_found"] = await write_while_released(work, url, asked, ask)
            await client.aclose()
    finally:
        if server.returncode is None:
            server.send_signal(signal.SIGTERM)
            await server.wait()
        log.close()
    out["service_exit_code"] = server.returncode
    out["date"] = dt.date.today().isoformat()
    out["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    return out


async def write_while_released(work: Path, url: str, asked: list[str], ask: Any) -> bool:
    from tenants.repository import TenantDirectory

    order = list(dict.fromkeys(reversed(asked)))
    tenant_id = order[-1]  # least recently asked: released long ago
    settings = Settings(data_dir=work, database_url=url, log_json=False)
    engine = create_engine(settings, "bench-writer")
    sessions = create_sessionmaker(engine)
    writer = EmbeddedVectorIndex(sessions, role="writer")
    vector = np.random.default_rng(0).standard_normal(DIM).astype(np.float32)
    await writer.upsert(tenant_id, [IndexItem(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"many:{tenant_id}:late")), document_id="late-news",
        text="The zeppelin desk opens at nine on Saturdays.", vector=vector / np.linalg.norm(vector), title="Zeppelin desk",
    )])
    async with unit_of_work(sessions, admin=True) as session:
        await TenantDirectory(session).bump_index_version(tenant_id)
    await writer.aclose()
    await engine.dispose()
    _, response = await ask(tenant_id, "write", "When does the zeppelin desk open?")
    return any(c.title == "Zeppelin desk" for c in response.citations)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--chunks", type=int, default=2000, help="chunks per tenant (the target: 5000)")
    parser.add_argument("--budget-mb", type=int, default=2048, help="PARLEY_RETRIEVAL_MEMORY_BUDGET_MB of the service")
    parser.add_argument("--cold", type=int, default=200, help="cold first answers measured")
    parser.add_argument("--random", type=int, default=1000, help="questions to random tenants")
    parser.add_argument("--warm-queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--tmp", default=None, help="parent of the temporary directory (default: the system's)")
    parser.add_argument("--data-dir", help="build in (or with --reuse, measure) this directory; kept")
    parser.add_argument("--database-url", help="a migratable database instead of SQLite under the directory")
    parser.add_argument("--reuse", action="store_true", help="reuse what a previous run built in --data-dir")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
