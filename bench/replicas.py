"""Questions per second with one and with two retrieval replicas, same data, same client concurrency.

    .venv/bin/python bench/replicas.py                                   # 32 tenants x 1,000 chunks, ~3 minutes
    .venv/bin/python bench/replicas.py --tenants 64 --chunks 2000 --seconds 20 --rounds 3

Builds T tenants of N chunks exactly as bench/many_tenants.py does (seeded random 384-d unit vectors,
60-word synthetic texts, written through the writer-role index, snapshots built by a real reader),
then starts two real retrieval processes with ``parley retrieval`` (as ``parley up
--retrieval-replicas 2`` does: one data directory, one database, one embedding thread each, answer
cache off, offline answerer), both warmed (every tenant loaded) before anything is measured.

Then, alternating 1, 2, 1, 2, ... for ``--rounds`` rounds (so drift and other load on the shared
machine fall on both alike), ``--concurrency`` C closed-loop clients ask distinct questions (the
answer and query-embedding caches always miss) to random tenants for ``--seconds`` through the
gateway's real client, `retrieval.replicas.ReplicatedRetrievalClient`: over the first replica only,
then over both (tenants spread by rendezvous hashing). Reported: questions/s of each round, the
median of each configuration and their ratio, the client p50/p99, how the questions split between
the two replicas, and each replica's CPU seconds per question. The client runs on the same two cores
as the replicas; its CPU share is printed too (if it is large, the client is part of the ceiling).
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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import cpu_seconds, free_port, load_average, stop_process, wait_until_serving  # noqa: E402
from bench.many_tenants import build, pct, question_maker, say  # noqa: E402
from parley.settings import Settings  # noqa: E402


def start_replica(work: Path, url: str, name: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    """``parley retrieval`` on a free port, on the bench's database and data directory."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PARLEY_", "OPENAI_"))}
    env.update(PARLEY_DATABASE_URL=url, PARLEY_DATA_DIR=str(work), PARLEY_RETRIEVAL_PORT=str(port),
               PARLEY_LOG_LEVEL="WARNING", PARLEY_LOG_JSON="true", PARLEY_EMBEDDING_THREADS="1",
               OMP_NUM_THREADS="1", PARLEY_RETRIEVAL_ANSWER_CACHE_SIZE="0", PARLEY_RETRIEVAL_ANSWERER="extractive")
    log = work / f"{name}.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "cli", "retrieval"], cwd=ROOT, env=env, stdout=fh, stderr=fh,
                                start_new_session=True)
    return proc, f"http://127.0.0.1:{port}", log


async def measure(args: argparse.Namespace, work: Path, tenant_ids: list[str], url: str) -> dict[str, Any]:
    import aiohttp

    from parley.crypto import load_service_token
    from retrieval.replicas import ReplicatedRetrievalClient
    from retrieval.schemas import QueryRequest

    token = load_service_token(Settings(data_dir=work))  # generated before the replicas start: one for both
    replicas = [start_replica(work, url, f"retrieval-{i + 1}") for i in range(2)]
    rng = random.Random(args.seed)
    question = question_maker(rng)
    out: dict[str, Any] = {"tenants": len(tenant_ids), "chunks_per_tenant": args.chunks, "concurrency": args.concurrency,
                           "seconds_per_round": args.seconds, "rounds": []}

    try:
        async with aiohttp.ClientSession() as http:
            for proc, base_url, log in replicas:  # /readyz: model loaded and every tenant warmed
                await wait_until_serving(http, f"{base_url}/readyz", proc, log, timeout=900)
        urls = [base_url for _, base_url, _ in replicas]
        clients = {1: ReplicatedRetrievalClient(urls[:1], token=token, timeout=60, try_timeout=30),
                   2: ReplicatedRetrievalClient(urls, token=token, timeout=60, try_timeout=30)}
        for client in clients.values():  # warm the code paths of both replicas
            for _ in range(20):
                await client.query(QueryRequest(tenant_id=rng.choice(tenant_ids), message=question()))
        me = os.getpid()
        for round_no in range(args.rounds):
            for n in (1, 2):
                client = clients[n]
                latencies: list[float] = []
                errors = 0
                deadline = time.monotonic() + args.seconds
                answered0 = {s["url"]: s["answered"] for s in client.states()}

                async def asker() -> None:
                    nonlocal errors
                    while time.monotonic() < deadline:
                        t = time.perf_counter()
                        try:
                            await client.query(QueryRequest(tenant_id=rng.choice(tenant_ids), message=question()))
                        except Exception:  # noqa: BLE001 - counted and reported, the run goes on
                            errors += 1
                            continue
                        latencies.append((time.perf_counter() - t) * 1000)

                cpu0 = [cpu_seconds(p.pid) for p, _, _ in replicas]
                client_cpu0, wall0 = cpu_seconds(me), time.perf_counter()
                await asyncio.gather(*(asker() for _ in range(args.concurrency)))
                wall = time.perf_counter() - wall0
                cpu = [cpu_seconds(p.pid) - c for (p, _, _), c in zip(replicas, cpu0)]
                split = {s["url"]: s["answered"] - answered0[s["url"]] for s in client.states()}
                row = {
                    "round": round_no + 1, "replicas": n, "questions": len(latencies), "errors": errors,
                    "questions_per_s": round(len(latencies) / wall, 1), "client_ms": pct(latencies),
                    "split": [split.get(u, 0) for u in urls],
                    "replica_cpu_ms_per_question": [round(c * 1000 / max(split.get(u, 0), 1), 2) if split.get(u) else None
                                                    for u, c in zip(urls, cpu)],
                    "client_cpu_share": round((cpu_seconds(me) - client_cpu0) / wall, 2), "load": load_average(),
                }
                say(f"  {row}")
                out["rounds"].append(row)
        for client in clients.values():
            await client.aclose()
    finally:
        for proc, _, _ in replicas:
            stop_process(proc, timeout=30)
    medians = {n: statistics.median(r["questions_per_s"] for r in out["rounds"] if r["replicas"] == n) for n in (1, 2)}
    out["questions_per_s_1_replica"] = medians[1]
    out["questions_per_s_2_replicas"] = medians[2]
    out["ratio"] = round(medians[2] / medians[1], 2) if medians[1] else None
    out["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"questions/s: 1 replica {medians[1]}, 2 replicas {medians[2]}, ratio {out['ratio']} "
          f"(medians of {args.rounds} rounds, {args.concurrency} clients)", file=sys.stderr, flush=True)
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="parley-bench-replicas-", dir=args.tmp))
    try:
        t0 = time.perf_counter()
        tenant_ids, url = await build(args, work)
        say(f"built {len(tenant_ids)} tenants x {args.chunks} chunks in {time.perf_counter() - t0:.0f} s")
        return await measure(args, work, tenant_ids, url)
    finally:
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=32)
    parser.add_argument("--chunks", type=int, default=1000, help="chunks per tenant")
    parser.add_argument("--concurrency", type=int, default=8, help="closed-loop clients, the same for 1 and 2 replicas")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (1 replica, 2 replicas)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--tmp", default=None, help="parent of the temporary directory (default: the system's)")
    parser.add_argument("--database-url", help="a migratable database instead of SQLite under the directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse_args())), indent=2))
