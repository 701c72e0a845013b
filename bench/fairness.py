"""Fairness between tenants on the real broker and workers: does tenant A's backlog delay tenant B's one upload?

    .venv/bin/python bench/fairness.py                                   # 2,000 documents, 2,000-product sync; ~6 min
    .venv/bin/python bench/fairness.py --backlog 300 --products 300      # quick, ~2 min
    .venv/bin/python bench/fairness.py --parts documents --workers 2
    .venv/bin/python bench/fairness.py --parts documents --backlog 300 --queue-type classic quorum  # both, one run

Processes as ``parley up`` starts them (``cli.supervisor.platform_processes``: nice 19, one
embedding thread), on the embedded defaults (SQLite, a temp data dir, a unique AMQP prefix);
uploads go through ``submit_upload`` and an outbox relay in this process, as the gateway does.

1. Documents. ``--workers`` ``parley worker documents`` processes are running. First B uploads one
   small document ``--probes`` times on idle workers (the baseline latency, upload commit ->
   indexed, from the rows' own timestamps). Then tenant A queues ``--backlog`` small documents
   (SciFact abstracts as .md/.html/.txt/.pdf, one job); while the workers are busy with them,
   B uploads one document, ``--probes`` times, a few seconds apart. Reported per probe: how many of
   A's documents were indexed between B's upload and B's document being indexed (the promise:
   a small constant - what the workers already hold - not A's remaining backlog), A's backlog at
   that moment, and B's latency against the baseline.
2. Catalog. A ``parley worker catalog`` and a ``parley worker documents`` process are running. A
   Shopify emulator store (tests/integrations/shopify_emulator.py, driven as bench/shopify_sync.py
   does) holds ``--products`` products for tenant A, connected through ``connect_custom_app``, which
   starts a full sync. While the catalog worker indexes it, B uploads one document ``--probes``
   times. Catalog jobs and document jobs are separate queues consumed by separate processes, so
   nothing of A's sync is ever queued ahead of B's document; what they share is the CPU (both at
   nice 19) and, on SQLite, the single write lock. Reported: B's latency against its idle
   baseline, and how many of A's products were indexed meanwhile.

``--queue-type``: classic queues (fairness by message priority) and/or quorum queues (no priorities
on RabbitMQ 3.10: a fast and a bulk lane per job kind, workers take the fast lane first); with both,
the documents part runs once per type, one after the other on the same machine, for a side-by-side.

Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import delete_topology, stop_process  # noqa: E402
from bench.ingest import render, texts  # noqa: E402
from bench.isolation import base_env, load, platform_spec, say, spawn_spec, wait_log  # noqa: E402
from cli import migrations  # noqa: E402
from parley import runtime  # noqa: E402
from parley.blobs import BlobStore  # noqa: E402
from parley.bus import OutboxRelay  # noqa: E402
from parley.db import create_engine, create_sessionmaker, unit_of_work  # noqa: E402
from knowledge.repository import JobRepository  # noqa: E402
from knowledge.service import create_job, submit_upload  # noqa: E402
from knowledge.models import Document, DocumentStatus  # noqa: E402
from parley.settings import Settings  # noqa: E402
from tenants import service as tenants  # noqa: E402

READY = {"documents-worker": "documents-worker consuming", "catalog-worker": "catalog-worker consuming"}  # parley/worker.py


class Stack:
    """A fresh data dir, prefix and database, an outbox relay here, and platform worker processes."""

    def __init__(self, keep: bool, queue_type: str = "classic", **extra_env: str) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="parley-fairness-"))
        self.prefix = f"bench{uuid.uuid4().hex[:6]}."
        self.settings = Settings(data_dir=self.work, amqp_prefix=self.prefix, amqp_queue_type=queue_type, log_json=True)
        self.env = base_env(data_dir=self.work, amqp_prefix=self.prefix, amqp_queue_type=queue_type, **extra_env)
        self.keep = keep
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.blobs = BlobStore(self.settings.effective_blob_dir)

    async def __aenter__(self) -> Stack:
        self.engine = create_engine(self.settings, "bench")
        await migrations.upgrade(self.engine)
        self.sessions = create_sessionmaker(self.engine)
        self.broker = runtime.rabbit_broker(self.settings, "bench")
        await self.broker.start()
        self.relay = OutboxRelay(self.sessions, self.broker)
        await self.relay.start()
        return self

    async def start(self, name: str, n: int = 1) -> None:
        spec = platform_spec(self.settings, name)
        for i in range(n):
            log = self.work / f"{name}-{i}.log"
            proc = spawn_spec(spec, self.env, log)
            self.procs[f"{name}-{i}"] = proc
            await wait_log(log, READY[name], proc)

    async def tenant(self, name: str) -> str:
        async with unit_of_work(self.sessions, admin=True) as s:
            return (await tenants.create_tenant(s, name=f"{name}-{uuid.uuid4().hex[:6]}")).id

    async def upload(self, tenant_id: str, files: list[tuple[str, bytes]], *, per_commit: int = 100) -> tuple[str, list[str]]:
        """One job of ``files``; returns (job id, document ids). Committed in slices: the relay publishes as they commit."""
        async with unit_of_work(self.sessions, tenant_id=tenant_id) as s:
            job_id = (await create_job(s, tenant_id=tenant_id, kind="documents", description="bench", total=len(files))).id
        ids = []
        for start in range(0, len(files), per_commit):
            stored = [(name, await self.blobs.put_bytes(tenant_id, data, max_bytes=self.settings.max_upload_bytes))
                      for name, data in files[start : start + per_commit]]
            async with unit_of_work(self.sessions, tenant_id=tenant_id) as s:
                for name, blob in stored:
                    ids.append((await submit_upload(s, tenant_id=tenant_id, source="bench", filename=name,
                                                    declared_mime=None, blob=blob, job_id=job_id)).document.id)
        return job_id, ids

    async def document(self, tenant_id: str, document_id: str) -> Document:
        async with unit_of_work(self.sessions, tenant_id=tenant_id) as s:
            return await s.get(Document, document_id)  # type: ignore[return-value]

    async def __aexit__(self, *exc: object) -> None:
        codes = {k: stop_process(p, timeout=40) for k, p in self.procs.items()}
        bad = {k: c for k, c in codes.items() if c not in (0, None)}
        if bad:
            say(f"worker exit codes {bad}; logs in {self.work}")
        await self.relay.stop()
        await delete_topology(self.broker)
        await self.engine.dispose()
        if not self.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            say(f"kept {self.work}")


async def probe(stack: Stack, tenant_b: str, i: int, *, timeout: float = 300.0) -> Document:
    """B uploads one small document and waits until it is indexed (or fails)."""
    body = f"# Store policy {i}\n\nTenant B's returns are accepted for 30 days; probe {uuid.uuid4().hex}.\n".encode()
    _job, (doc_id,) = await stack.upload(tenant_b, [(f"policy-{i}.md", body)])
    t0 = time.monotonic()
    while True:
        doc = await stack.document(tenant_b, doc_id)
        if doc.status in (DocumentStatus.indexed, DocumentStatus.failed):
            return doc
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"B's document still {doc.status.value} after {timeout:.0f}s; logs in {stack.work}")
        await asyncio.sleep(0.05)


def latency_s(doc: Document) -> float:
    return (doc.indexed_at - doc.created_at).total_seconds() if doc.indexed_at else float("nan")


async def count_indexed(stack: Stack, tenant_id: str, *, after: dt.datetime | None = None, until: dt.datetime | None = None) -> int:
    from sqlalchemy import func, select

    stmt = select(func.count()).select_from(Document).where(Document.tenant_id == tenant_id,
                                                            Document.status == DocumentStatus.indexed)
    if after is not None:
        stmt = stmt.where(Document.indexed_at > after)
    if until is not None:
        stmt = stmt.where(Document.indexed_at <= until)
    async with unit_of_work(stack.sessions, tenant_id=tenant_id) as s:
        return (await s.execute(stmt)).scalar_one()


async def products_written(stack: Stack, tenant_id: str, doc: Document) -> int:
    """A's product rows written between B's upload and B's document being indexed."""
    from sqlalchemy import func, select

    from knowledge.models import Product

    stmt = select(func.count()).select_from(Product).where(
        Product.tenant_id == tenant_id, Product.updated_at > doc.created_at, Product.updated_at <= doc.indexed_at)
    async with unit_of_work(stack.sessions, tenant_id=tenant_id) as s:
        return (await s.execute(stmt)).scalar_one()


async def baseline(stack: Stack, tenant_b: str, probes: int) -> list[float]:
    await probe(stack, tenant_b, 999)  # not counted: the worker's first document warms its parser fork server
    out = []
    for i in range(probes):
        out.append(latency_s(await probe(stack, tenant_b, 1000 + i)))
        await asyncio.sleep(0.5)
    return out


async def documents_part(args: argparse.Namespace, queue_type: str = "classic") -> dict[str, Any]:
    say(f"documents ({queue_type} queues): tenant A queues {args.backlog} documents; {args.workers} document worker(s); "
        f"load {load()}")
    files = [render(i, t, b) for i, (t, b) in enumerate(texts(args.backlog))]
    async with Stack(args.keep, queue_type) as stack:
        await stack.start("documents-worker", args.workers)
        a, b = await stack.tenant("a"), await stack.tenant("b")
        base = await baseline(stack, b, args.probes)
        say(f"  B alone: {[round(x, 2) for x in base]} s")
        t0 = time.monotonic()
        job_id, _ids = await stack.upload(a, files)
        await stack.relay.flush()
        queued_s = time.monotonic() - t0
        say(f"  A's {len(files)} documents queued in {queued_s:.1f}s")
        rows = []
        for i in range(args.probes):
            await asyncio.sleep(args.probe_gap)
            before = await count_indexed(stack, a)
            doc = await probe(stack, b, i)
            ahead = await count_indexed(stack, a, after=doc.created_at, until=doc.indexed_at)
            rows.append({"a_indexed_before": before, "a_backlog": len(files) - before, "a_indexed_while_b_waited": ahead,
                         "b_latency_s": round(latency_s(doc), 3), "b_status": doc.status.value})
            say(f"  probe {i}: A's backlog {len(files) - before}; {ahead} of A's documents indexed before B's; "
                f"B indexed in {latency_s(doc):.2f}s")
        async with unit_of_work(stack.sessions, tenant_id=a) as s:
            job = await JobRepository(s, a).get(job_id)
        return {"queue_type": queue_type, "backlog": len(files), "workers": args.workers, "queued_in_s": round(queued_s, 1),
                "b_alone_s": [round(x, 3) for x in base], "probes": rows,
                "a_done_at_end": job.done, "a_failed_at_end": job.failed, "load": load()}


async def catalog_part(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp
    from cryptography.fernet import Fernet

    from bench.shopify_sync import catalog
    from bot.channels.shopify import connect_custom_app
    from integrations.shopify.config import ShopifyConfig
    from parley.crypto import SecretBox
    from tests.integrations.shopify_emulator import ShopifyEmulator, running

    shop = f"fair-{uuid.uuid4().hex[:8]}.myshopify.com"
    nodes, real = catalog(args.products)
    say(f"catalog: tenant A's store of {len(nodes)} products ({real} real); load {load()}")
    emulator = ShopifyEmulator()
    emulator.add_products(shop, nodes)
    secret_key = Fernet.generate_key().decode()
    async with running(emulator) as base_url, aiohttp.ClientSession() as http:
        config = ShopifyConfig(client_id=emulator.client_id, client_secret=emulator.client_secret,
                               base_url=f"{base_url}/{{shop}}", poll_interval=0.2)
        extra = dict(secret_key=secret_key, shopify_client_id=config.client_id, shopify_client_secret=config.client_secret,
                     shopify_base_url=config.base_url, shopify_poll_interval="0.2")
        async with Stack(args.keep, **extra) as stack:
            await stack.start("documents-worker")
            await stack.start("catalog-worker")
            a, b = await stack.tenant("shop-a"), await stack.tenant("b")
            base = await baseline(stack, b, args.probes)
            say(f"  B alone: {[round(x, 2) for x in base]} s")
            t0 = time.monotonic()
            connected = await connect_custom_app(stack.sessions, SecretBox(secret_key.encode()), tenant=a, shop=shop,
                                                 token=emulator.issue_token(shop), config=config, http=http)
            await stack.relay.flush()

            async def sync_state() -> Any:
                async with unit_of_work(stack.sessions, tenant_id=a) as s:
                    return await JobRepository(s, a).get(connected.job_id)

            while (job := await sync_state()).done < min(100, len(nodes) // 10):  # the sync is under way
                if time.monotonic() - t0 > 600:
                    raise SystemExit(f"the sync made no progress; logs in {stack.work}")
                await asyncio.sleep(0.5)
            rows = []
            for i in range(args.probes):
                state = await sync_state()
                if state.status.value != "running":
                    say("  the sync finished before every probe ran: use more --products")
                    break
                doc = await probe(stack, b, i)
                meanwhile = await products_written(stack, a, doc)
                rows.append({"a_products_done_before": state.done, "a_products_indexed_while_b_waited": meanwhile,
                             "b_latency_s": round(latency_s(doc), 3), "b_status": doc.status.value})
                say(f"  probe {i}: A's sync at {state.done}/{len(nodes)}; {meanwhile} of A's products written meanwhile; "
                    f"B indexed in {latency_s(doc):.2f}s")
                await asyncio.sleep(args.probe_gap)
            job = await sync_state()
            elapsed = time.monotonic() - t0
            return {"products": len(nodes), "b_alone_s": [round(x, 3) for x in base], "probes": rows,
                    "a_sync_done": job.done, "a_sync_status": job.status.value,
                    "a_products_per_s": round(job.done / elapsed, 1), "load": load()}


async def main(args: argparse.Namespace) -> None:
    out: dict[str, Any] = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                           "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                           "load_before": load()}
    if "documents" in args.parts:
        out["documents"] = [await documents_part(args, queue_type) for queue_type in args.queue_type]
    if "catalog" in args.parts:
        out["catalog"] = await catalog_part(args)
    print()
    for d in out.get("documents", []):
        ahead = [r["a_indexed_while_b_waited"] for r in d["probes"]]
        print(f"documents, {d['queue_type']} queues: A queued {d['backlog']} ({d['workers']} worker(s)); B's document was indexed after "
              f"{', '.join(map(str, ahead))} of A's documents (A's backlog then: "
              f"{', '.join(str(r['a_backlog']) for r in d['probes'])}); "
              f"B's latency {statistics.median(r['b_latency_s'] for r in d['probes']):.2f}s median vs "
              f"{statistics.median(d['b_alone_s']):.2f}s alone")
    if "catalog" in out:
        c = out["catalog"]
        if c["probes"]:
            print(f"catalog: during A's {c['products']}-product sync ({c['a_products_per_s']} products/s), B's document took "
                  f"{statistics.median(r['b_latency_s'] for r in c['probes']):.2f}s median "
                  f"(max {max(r['b_latency_s'] for r in c['probes']):.2f}s) vs {statistics.median(c['b_alone_s']):.2f}s alone; "
                  f"A's products indexed meanwhile: {', '.join(str(r['a_products_indexed_while_b_waited']) for r in c['probes'])}")
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=["documents", "catalog"], default=["documents", "catalog"])
    parser.add_argument("--backlog", type=int, default=2000, help="tenant A's queued documents")
    parser.add_argument("--products", type=int, default=2000, help="products in tenant A's store")
    parser.add_argument("--workers", type=int, default=1, help="document worker processes (parley up starts one)")
    parser.add_argument("--probes", type=int, default=5, help="B's single uploads, each measured")
    parser.add_argument("--probe-gap", type=float, default=3.0, help="seconds between B's probes")
    parser.add_argument("--queue-type", nargs="+", choices=["classic", "quorum"], default=["classic"],
                        help="PARLEY_AMQP_QUEUE_TYPE of the documents part; several: one run each, for a comparison")
    parser.add_argument("--keep", action="store_true", help="keep the data directories (logs, database)")
    asyncio.run(main(parser.parse_args()))
