"""Shopify webhook ack latency on the gateway's real ``/shopify/webhooks`` route, per kind of delivery.

    .venv/bin/python bench/shopify_webhook_ack.py --deliveries 500
    .venv/bin/python bench/shopify_webhook_ack.py --database-url postgresql+asyncpg://postgres@127.0.0.1/parley_bench

The route (``setup_shopify`` on its own app, as the gateway mounts it) on a fresh migrated database
(SQLite file by default), two connected stores: one through the public app (deliveries signed with
the app's client secret), one through a custom app (signed with its own secret, looked up per
delivery). Deliveries are sent one at a time (latency, not throughput), signed as Shopify signs
them (the test emulator's ``signed_webhook``):

* accepted: distinct ``products/update`` bodies -> verification, dedupe lookup + inserts, one outbox row;
* replayed: the same bytes again under new ``X-Shopify-Event-Id`` / ``X-Shopify-Webhook-Id`` -> a duplicate;
* custom app: distinct bodies for the custom-app store -> its secret read and decrypted, then as accepted;
* forged: a bad signature -> 401.

Prints p50 / p95 / p99 in milliseconds for each, measured from send to the answer.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from aiohttp.test_utils import TestServer  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402

from bot.channels.shopify import setup_shopify  # noqa: E402
from cli import migrations  # noqa: E402
from integrations.shopify.config import ShopifyConfig  # noqa: E402
from parley.crypto import SecretBox  # noqa: E402
from parley.db import create_engine, create_sessionmaker, unit_of_work  # noqa: E402
from parley.settings import Settings  # noqa: E402
from tenants.models import ChannelKind  # noqa: E402
from tenants.service import create_tenant, install_channel  # noqa: E402
from tests.integrations.shopify_emulator import ShopifyEmulator  # noqa: E402

PUBLIC, CUSTOM, CUSTOM_SECRET = "bench-public.myshopify.com", "bench-custom.myshopify.com", "bench-custom-secret"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def product(i: int) -> dict:
    return {"id": 9_000_000 + i, "title": f"Bench product {i}", "handle": f"bench-{i}", "status": "active",
            "updated_at": "2026-12-01T10:00:00Z", "variants": [{"id": 8_000_000 + i, "price": "10.00", "sku": f"B{i}"}]}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deliveries", type=int, default=500, help="deliveries of each kind")
    ap.add_argument("--database-url", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # each refused delivery logs a warning line: not the figure

    tmp = Path(tempfile.mkdtemp(prefix="parley-webhook-bench-"))
    secret_key = Fernet.generate_key().decode()
    box = SecretBox(secret_key.encode())
    emulator = ShopifyEmulator()
    config = ShopifyConfig(client_id=emulator.client_id, client_secret=emulator.client_secret, public_url="http://bench.test")
    settings = Settings(data_dir=tmp / "var", database_url=args.database_url, secret_key=secret_key, log_json=True)
    engine = create_engine(settings, "bench")
    await migrations.upgrade(engine)
    sessions = create_sessionmaker(engine)
    async with unit_of_work(sessions) as session:
        tenant_id = (await create_tenant(session, name=f"bench-{os.getpid()}-{time.time_ns()}")).id
    async with unit_of_work(sessions, admin=True) as session:
        for shop, details, secrets in ((PUBLIC, {"token_kind": "expiring_offline"}, {"access_token": "shpat_public"}),
                                       (CUSTOM, {"token_kind": "custom_app"},
                                        {"access_token": "shpat_custom", "webhook_secret": CUSTOM_SECRET})):
            await install_channel(session, box=box, tenant_id=tenant_id, kind=ChannelKind.shopify, external_id=shop,
                                  display_name=shop, details=details, secrets=secrets)
    print(f"database: {settings.effective_database_url.split('://')[0]}; cores: {os.cpu_count()}; "
          f"{platform.processor() or platform.machine()}; {args.deliveries} deliveries of each kind, one at a time")

    app = web.Application()
    async with aiohttp.ClientSession() as http:
        setup_shopify(app, settings=settings, sessions=sessions, box=box, config=config, http=http)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        url = str(server.make_url("/shopify/webhooks"))
        try:
            async def post(body: bytes, headers: dict[str, str], expect: int) -> float:
                t0 = time.perf_counter()
                async with http.post(url, data=body, headers=headers) as response:
                    await response.read()
                    assert response.status == expect, (response.status, await response.text())
                return (time.perf_counter() - t0) * 1000

            n = args.deliveries
            sent = [emulator.signed_webhook("products/update", PUBLIC, product(i)) for i in range(n)]
            kinds: dict[str, list[float]] = {"accepted": [], "replayed": [], "custom app": [], "forged": []}
            for body, headers in sent:
                kinds["accepted"].append(await post(body, headers, 200))
            for i, (body, headers) in enumerate(sent):
                fresh = {**headers, "X-Shopify-Event-Id": f"replay-{i}", "X-Shopify-Webhook-Id": f"replay-{i}"}
                kinds["replayed"].append(await post(body, fresh, 200))
            for i in range(n):
                body, headers = emulator.signed_webhook("products/update", CUSTOM, product(n + i), secret=CUSTOM_SECRET)
                kinds["custom app"].append(await post(body, headers, 200))
            for i in range(n):
                body, headers = emulator.signed_webhook("products/update", PUBLIC, product(i), secret="not-the-secret")
                kinds["forged"].append(await post(body, headers, 401))
            for kind, values in kinds.items():
                print(f"{kind:>11}: p50 {pct(values, .5):6.2f} ms  p95 {pct(values, .95):6.2f} ms  "
                      f"p99 {pct(values, .99):6.2f} ms  mean {statistics.fmean(values):6.2f} ms")
        finally:
            await server.close()
            await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
