"""Questions per second per retrieval core, and the service's memory per 1,000 chunks.

    .venv/bin/python bench/retrieval_throughput.py --tenants 10 --chunks 10000 --concurrency 1 4 8 --seconds 20

Builds T tenants of N chunks each exactly as bench/many_tenants.py does (seeded random 384-d unit
vectors, 60-word synthetic texts, written through the writer-role index, snapshots built by a real
reader), starts the real retrieval service in its own process (``retrieval.app.serve``: one embedding
thread, int8 question embeddings, offline answerer, answer cache off, no warm-up), and then:

1. memory: the service's VmRSS after start-up (model loaded, no tenant), then after one question to
   every tenant (all resident): (loaded - start) / (T x N / 1,000) is the memory per 1,000 chunks;
2. throughput: for each ``--concurrency`` C, C clients ask distinct questions (so the answer cache and
   the query-embedding cache always miss) to random tenants through the real `HttpRetrievalClient`
   for ``--seconds``, closed loop. Reported: questions/s, client p50/p99, and the service's CPU seconds
   per question (``/proc/<pid>/stat``), whose inverse is questions/s per fully used core. The service is
   one process with one event loop and one embedding thread, so it uses at most about one core: the
   q/s at the highest concurrency is one replica's ceiling on one core.

Every figure is printed with the machine's load average (the machine is shared: other processes take
CPU from the service, which the CPU-per-question figure is less sensitive to than q/s).
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import closed_loop, cpu_seconds, load_average, wait_until_serving  # noqa: E402
from bench.many_tenants import build, pct, question_maker, rss_mb, say, start_service  # noqa: E402
from parley.settings import Settings  # noqa: E402


async def measure(args: argparse.Namespace, work: Path, tenant_ids: list[str], url: str) -> dict[str, Any]:
    import aiohttp

    from parley.crypto import load_service_token
    from retrieval.client import HttpRetrievalClient
    from retrieval.schemas import QueryRequest

    out: dict[str, Any] = {"tenants": len(tenant_ids), "chunks_per_tenant": args.chunks}
    server, base_url, log = await start_service(work, url, args.budget_mb)
    rng = random.Random(args.seed)
    question = question_maker(rng)

    try:
        async with aiohttp.ClientSession() as http:
            await wait_until_serving(http, f"{base_url}/readyz", server, work / "retrieval.log", timeout=600)
            client = HttpRetrievalClient(base_url, timeout=60, token=load_service_token(Settings(data_dir=work)))
            await asyncio.sleep(1.0)  # let start-up's allocations settle before the baseline
            start = rss_mb(server.pid)
            for tenant_id in tenant_ids:  # every tenant resident
                await client.query(QueryRequest(tenant_id=tenant_id, message=question()))
            loaded = rss_mb(server.pid)
            chunks = len(tenant_ids) * args.chunks
            out["memory"] = {
                "rss_start_mb": round(start), "rss_all_resident_mb": round(loaded), "chunks_resident": chunks,
                "mb_per_1000_chunks": round((loaded - start) / (chunks / 1000), 2), "load": load_average(),
            }
            say(f"memory: {out['memory']}")
            for _ in range(20):  # warm the code paths
                await client.query(QueryRequest(tenant_id=rng.choice(tenant_ids), message=question()))

            out["throughput"] = []
            for concurrency in args.concurrency:
                cpu0, wall0 = cpu_seconds(server.pid), time.perf_counter()
                latencies, errors = await closed_loop(
                    lambda: client.query(QueryRequest(tenant_id=rng.choice(tenant_ids), message=question())),
                    concurrency=concurrency, seconds=args.seconds)
                wall, cpu = time.perf_counter() - wall0, cpu_seconds(server.pid) - cpu0
                row = {
                    "concurrency": concurrency, "questions": len(latencies), "errors": errors,
                    "questions_per_s": round(len(latencies) / wall, 1), "client_ms": pct(latencies),
                    "service_cpu_ms_per_question": round(cpu * 1000 / max(len(latencies), 1), 2),
                    "service_cpu_share": round(cpu / wall, 2),
                    "questions_per_core_s": round(len(latencies) / cpu, 1) if cpu else None,
                    "load": load_average(),
                }
                say(f"  {row}")
                out["throughput"].append(row)
            await client.aclose()
    finally:
        if server.returncode is None:
            server.send_signal(signal.SIGTERM)
            await server.wait()
        log.close()
    out["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.data_dir or tempfile.mkdtemp(prefix="parley-bench-rthru-", dir=args.tmp))
    state_file = work / "bench-state.json"
    state = json.loads(state_file.read_text()) if args.reuse and state_file.exists() else {}
    try:
        if state.get("tenants") == args.tenants and state.get("chunks") == args.chunks:
            tenant_ids, url = state["tenant_ids"], state["url"]
            say(f"reusing {work}")
        else:
            t0 = time.perf_counter()
            tenant_ids, url = await build(args, work)
            say(f"built {args.tenants} x {args.chunks} chunks in {time.perf_counter() - t0:.0f} s")
            state_file.write_text(json.dumps({"tenants": args.tenants, "chunks": args.chunks, "tenant_ids": tenant_ids, "url": url}))
        return await measure(args, work, tenant_ids, url)
    finally:
        if not args.data_dir:
            shutil.rmtree(work, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Example: bench/retrieval_throughput.py --tenants 10 --chunks 10000 --concurrency 1 4 8")
    parser.add_argument("--tenants", type=int, default=10, help="tenants built (default 10)")
    parser.add_argument("--chunks", type=int, default=10_000, help="chunks per tenant (default 10,000)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8],
                        help="closed-loop clients asking at once, one measurement each (default: 1 4 8)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per concurrency level (default 20)")
    parser.add_argument("--budget-mb", type=int, default=4096,
                        help="PARLEY_RETRIEVAL_MEMORY_BUDGET_MB; keep it above the tenants' size so all stay resident")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--tmp", default=None, help="parent of the temporary directory (default: the system's)")
    parser.add_argument("--data-dir", help="build in (or with --reuse, measure) this directory; kept")
    parser.add_argument("--database-url", help="a migratable database instead of SQLite under the directory")
    parser.add_argument("--reuse", action="store_true", help="reuse what a previous run built in --data-dir")
    args = parser.parse_args(argv)
    if args.tenants < 1 or args.chunks < 1 or args.seconds <= 0 or min(args.concurrency) < 1:
        parser.error("--tenants, --chunks, --seconds and every --concurrency must be positive")
    return args


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse_args())), indent=2))
