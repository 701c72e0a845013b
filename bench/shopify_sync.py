"""Shopify catalog sync on the embedded defaults: products indexed per second, and webhook-to-searchable lag.

    .venv/bin/python bench/shopify_sync.py                      # 10,000 products, ~8-10 minutes on 2 cores
    .venv/bin/python bench/shopify_sync.py --products 1000      # quick
    .venv/bin/python bench/shopify_sync.py --database-url postgresql+asyncpg://postgres@127.0.0.1/bench_db

1. A local Shopify emulator (tests/integrations/shopify_emulator.py) serves a store of N products:
   the real listings of ../shared/data/catalog (Shopify's product-import CSVs and the Leipzig
   retail listings) first, then synthetic apparel up to N. The store is connected through
   ``connect_custom_app`` (the ``parley shopify connect`` path); one real ``python -m
   ingestion.catalog`` process (SQLite + the embedded vector index + the local embedding model,
   one embedding thread, like ``parley up``) runs the bulk export, the fan-out and the indexing.
   Products/s is measured from the sync request to the job's close; the same product texts are
   then embedded in-process on one thread for the ratio to the embedder's own limit.
2. Webhook lag: the gateway's real ``/shopify/webhooks`` route (``setup_shopify``) receives a
   signed ``products/update`` renaming a product to a unique word; the lag is the time from the
   POST until a reader-role index (the retrieval service's, refresh every 1 s) finds the product
   by that word. Repeated ``--webhooks`` times, one at a time, with the worker otherwise idle.

No figure is asserted anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import delete_topology, stop_process  # noqa: E402
from bot.channels.shopify import connect_custom_app, setup_shopify  # noqa: E402
from integrations.shopify.config import ShopifyConfig  # noqa: E402
from integrations.shopify.products import from_graphql  # noqa: E402
from cli import migrations  # noqa: E402
from parley import runtime  # noqa: E402
from parley.bus import OutboxRelay  # noqa: E402
from parley.crypto import SecretBox  # noqa: E402
from parley.db import create_engine, create_sessionmaker, unit_of_work  # noqa: E402
from knowledge.repository import JobRepository  # noqa: E402
from parley.settings import Settings  # noqa: E402
from parley.vectors import create_vector_index  # noqa: E402
from tenants import service as tenants  # noqa: E402
from tests.integrations.catalog_data import CatalogMissing, csv_catalog, synthetic_catalog  # noqa: E402
from tests.integrations.shopify_emulator import ShopifyEmulator, running  # noqa: E402



def catalog(n: int) -> tuple[list[dict], int]:
    try:
        real = csv_catalog(min(n, 6800))[:n]
    except CatalogMissing:
        real = []
    return real + synthetic_catalog(n - len(real), start=len(real)), len(real)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--products", type=int, default=10_000)
    ap.add_argument("--webhooks", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=25)
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--raw-sample", type=int, default=500)
    ap.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    args = ap.parse_args()

    shop = f"bench-{uuid.uuid4().hex[:8]}.myshopify.com"  # unique: a --database-url may be reused
    nodes, real = catalog(args.products)
    print(f"store: {len(nodes):,} products ({real:,} from ../shared/data/catalog, {len(nodes) - real:,} synthetic), "
          f"{sum(len(n['variants']) for n in nodes):,} variants; cores: {os.cpu_count()}; {platform.processor() or platform.machine()}")
    tmp = Path(tempfile.mkdtemp(prefix="parley-shopify-bench-"))
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    secret_key = Fernet.generate_key().decode()
    emulator = ShopifyEmulator()
    emulator.add_products(shop, nodes)
    async with running(emulator) as base_url, aiohttp.ClientSession() as http:
        config = ShopifyConfig(client_id=emulator.client_id, client_secret=emulator.client_secret,
                               base_url=f"{base_url}/{{shop}}", poll_interval=0.2, batch_size=args.batch_size)
        settings = Settings(data_dir=tmp / "var", database_url=args.database_url, amqp_prefix=prefix, secret_key=secret_key,
                            log_json=True)
        engine = create_engine(settings, "bench")
        await migrations.upgrade(engine)
        sessions = create_sessionmaker(engine)
        async with unit_of_work(sessions) as session:
            tenant_id = (await tenants.create_tenant(session, name=f"bench-{uuid.uuid4().hex[:8]}")).id
        broker = runtime.rabbit_broker(settings, "bench")
        await broker.start()
        relay = OutboxRelay(sessions, broker)
        await relay.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
        env.update(PARLEY_DATA_DIR=str(settings.data_dir), PARLEY_AMQP_PREFIX=prefix, PARLEY_SECRET_KEY=secret_key,
                   PARLEY_LOG_JSON="true", PARLEY_SHOPIFY_CLIENT_ID=config.client_id,
                   PARLEY_SHOPIFY_CLIENT_SECRET=config.client_secret, PARLEY_SHOPIFY_BASE_URL=config.base_url,
                   PARLEY_SHOPIFY_POLL_INTERVAL="0.2", PARLEY_SHOPIFY_BATCH_SIZE=str(args.batch_size))
        if args.database_url:
            env["PARLEY_DATABASE_URL"] = args.database_url
        log = open(tmp / "worker.log", "wb")
        worker = subprocess.Popen([sys.executable, "-m", "cli", "worker", "catalog"], env=env, cwd=ROOT, stdout=log, stderr=log)
        reader = create_vector_index(settings, role="reader", sessions=sessions)
        try:
            # --- 1. full sync -------------------------------------------------------------
            await asyncio.sleep(8)  # let the worker load its model: the figure is the sync, not the start-up
            t0 = time.perf_counter()
            connected = await connect_custom_app(sessions, SecretBox(secret_key.encode()), tenant=tenant_id, shop=shop,
                                                 token=emulator.issue_token(shop), config=config, http=http)
            await relay.flush()
            while True:
                async with unit_of_work(sessions, tenant_id=tenant_id) as session:
                    job = await JobRepository(session, tenant_id).get(connected.job_id)
                if job.status.value != "running":
                    break
                if worker.poll() is not None:
                    raise SystemExit(f"the worker died; see {tmp / 'worker.log'}")
                await asyncio.sleep(0.5)
            elapsed = time.perf_counter() - t0
            rate = job.done / elapsed
            print(f"full sync: {job.done:,}/{job.total:,} indexed ({job.failed} failed) in {elapsed:.1f}s = {rate:.1f} products/s")

            # --- 2. webhook -> searchable ------------------------------------------------------
            app = web.Application()
            setup_shopify(app, settings=settings, sessions=sessions, box=SecretBox(secret_key.encode()), config=config, http=http)
            await reader.warm([tenant_id])  # type: ignore[attr-defined]
            lags = []
            async with TestClient(TestServer(app, host="127.0.0.1")) as gateway:
                ids = sorted(emulator.shops[shop].products)
                for i in range(args.webhooks):
                    word = f"zq{uuid.uuid4().hex[:10]}"
                    pid = ids[(i * 7919) % len(ids)]
                    emulator.update_product(shop, pid, title=f"Renamed {word}")
                    body, headers = emulator.signed_webhook("products/update", shop, emulator.rest_payload(shop, pid))
                    t0 = time.perf_counter()
                    response = await gateway.post("/shopify/webhooks", data=body, headers=headers)
                    assert response.status == 200, await response.text()
                    while not await reader.keyword_search(tenant_id, word, 1):
                        if time.perf_counter() - t0 > 60:
                            raise SystemExit(f"product {pid} not searchable after 60s; see {tmp / 'worker.log'}")
                        await asyncio.sleep(0.02)
                    lags.append((time.perf_counter() - t0) * 1000)
            print(f"webhook -> searchable ms over {len(lags)}: p50 {pct(lags, .5):.0f}  p95 {pct(lags, .95):.0f}  "
                  f"max {max(lags):.0f}  (reader refresh interval 1 s)")
        finally:
            stop_process(worker, timeout=60)
            log.close()
            await reader.aclose()
            await relay.stop()
            await delete_topology(broker)
            await engine.dispose()

    # --- 3. the embedder alone on the same texts ---------------------------------------------
    embedder = runtime.embedder(Settings(embedding_threads=1))
    step = max(1, len(nodes) // args.raw_sample)  # spread over the whole catalog: its parts differ in text length
    sample = [from_graphql(n, shop=shop).search_text() for n in nodes[::step][: args.raw_sample]]
    await embedder.embed_documents(sample[:8])
    t0 = time.perf_counter()
    await embedder.embed_documents(sample)
    raw = len(sample) / (time.perf_counter() - t0)
    print(f"raw embedding, 1 thread, same product texts: {raw:.1f} texts/s; sync / raw = {rate / raw:.2f}")
    print(f"summary: products={job.done} seconds={elapsed:.1f} products_per_s={rate:.1f} raw_per_s={raw:.1f} "
          f"webhook_lag_p50_ms={statistics.median(lags):.0f} webhook_lag_p95_ms={pct(lags, .95):.0f}")
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"data kept in {tmp}")


if __name__ == "__main__":
    asyncio.run(main())
