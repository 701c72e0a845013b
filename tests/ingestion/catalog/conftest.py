"""The catalog stack for tests: the Shopify emulator, a real migrated database (``db_url``: SQLite
and PostgreSQL), real RabbitMQ under a unique prefix, and the real catalog worker process."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.channels.shopify.service import Connected, connect_custom_app
from integrations.shopify.config import ShopifyConfig
from parley.bus import OutboxRelay, RabbitBroker, Topology
from parley.crypto import SecretBox
from parley.db import create_engine, create_sessionmaker, unit_of_work
from knowledge.models import Job, JobItem, Product
from parley.settings import Settings
from parley.vectors.models import VectorEntry
from tenants.models import Tenant
from tenants.service import create_tenant
from tests.integrations.shopify_emulator import ShopifyEmulator, running
from tests.support import services, waiting
from tests.support.processes import stop_process

try:
    from parley.embeddings.local import model_installed

    HAVE_MODEL = model_installed("all-MiniLM-L6-v2")
except Exception:  # pragma: no cover
    HAVE_MODEL = False

REPO = Path(__file__).resolve().parents[3]


@dataclass
class Worker:
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "cli", "worker", "catalog"], env=self.env, cwd=REPO,
                                        stdout=log, stderr=log)
        log.close()

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, unacked deliveries go back to the queue."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        stop_process(self.process, timeout=60)
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@dataclass
class Stack:
    emulator: ShopifyEmulator
    config: ShopifyConfig
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    box: SecretBox
    relay: OutboxRelay
    worker: Worker
    http: aiohttp.ClientSession
    tenant_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    async def connect(self, shop: str, *, tenant_id: str | None = None, webhook_secret: str | None = None) -> Connected:
        """The CLI path (`parley shopify connect`): token checked, installation stored, sync requested."""
        token = self.emulator.issue_token(shop)
        connected = await connect_custom_app(self.sessions, self.box, tenant=tenant_id or self.tenant_id, shop=shop, token=token,
                                             config=self.config, http=self.http, webhook_secret=webhook_secret)
        await self.relay.flush()
        return connected

    async def job(self, job_id: str) -> Job:
        async with unit_of_work(self.sessions, admin=True) as session:
            return (await session.execute(select(Job).where(Job.id == job_id))).scalar_one()

    async def finished(self, job_id: str, timeout: float = 120.0) -> Job:
        async def done() -> Job | None:
            job = await self.job(job_id)
            return job if job.status.value != "running" else None

        try:
            return await eventually(done, timeout=timeout)
        except AssertionError:
            raise AssertionError(f"job {job_id} did not finish; worker log:\n{self.worker.log()}") from None

    async def products(self, shop: str, *, deleted: bool | None = False) -> dict[int, Product]:
        async with unit_of_work(self.sessions, admin=True) as session:
            stmt = select(Product).where(Product.shop_domain == shop)
            if deleted is not None:
                stmt = stmt.where(Product.deleted.is_(deleted))
            return {p.shopify_id: p for p in (await session.execute(stmt)).scalars()}

    async def vectors(self, tenant_id: str | None = None) -> dict[str, VectorEntry]:
        async with unit_of_work(self.sessions, admin=True) as session:
            stmt = select(VectorEntry).where(VectorEntry.tenant_id == (tenant_id or self.tenant_id), VectorEntry.deleted.is_(False))
            return {v.document_id: v for v in (await session.execute(stmt)).scalars()}

    async def index_version(self, tenant_id: str | None = None) -> int:
        async with unit_of_work(self.sessions, admin=True) as session:
            return (await session.execute(select(Tenant.index_version).where(Tenant.id == (tenant_id or self.tenant_id)))).scalar_one()

    async def failed_items(self, job_id: str) -> list[JobItem]:
        async with unit_of_work(self.sessions, admin=True) as session:
            stmt = select(JobItem).where(JobItem.job_id == job_id, JobItem.status == "failed")
            return list((await session.execute(stmt)).scalars())

    async def item_count(self, job_id: str) -> int:
        async with unit_of_work(self.sessions, admin=True) as session:
            return (await session.execute(select(func.count()).select_from(JobItem).where(JobItem.job_id == job_id))).scalar_one()


#: Polls until a condition holds (tests/support/waiting.py), with this suite's bounds.
eventually = partial(waiting.eventually, timeout=60.0, interval=0.1)


@pytest.fixture
def worker_env_extra() -> dict[str, str]:
    """Extra environment for the worker process; a test module overrides this fixture to change it."""
    return {}


@pytest.fixture
async def stack(db_url: str, tmp_path: Path, worker_env_extra: dict[str, str]) -> AsyncIterator[Stack]:
    if not HAVE_MODEL:
        pytest.skip("the local embedding model package is not installed (scripts/bootstrap.sh installs it)")
    emulator = ShopifyEmulator()
    prefix = f"t{uuid.uuid4().hex[:8]}."
    secret_key = Fernet.generate_key().decode()
    async with running(emulator) as base_url:
        config = ShopifyConfig(client_id=emulator.client_id, client_secret=emulator.client_secret,
                               base_url=f"{base_url}/{{shop}}", poll_interval=0.05, bulk_threshold=40, batch_size=10,
                               public_url="http://127.0.0.1:9")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
        env.update(PARLEY_DATABASE_URL=db_url, PARLEY_DATA_DIR=str(tmp_path / "var"), PARLEY_AMQP_PREFIX=prefix,
                   PARLEY_SECRET_KEY=secret_key, PARLEY_MAX_ATTEMPTS="2", PARLEY_LOG_JSON="true",
                   PARLEY_SHOPIFY_CLIENT_ID=config.client_id, PARLEY_SHOPIFY_CLIENT_SECRET=config.client_secret,
                   PARLEY_SHOPIFY_BASE_URL=config.base_url, PARLEY_SHOPIFY_POLL_INTERVAL="0.05",
                   PARLEY_SHOPIFY_BULK_THRESHOLD=str(config.bulk_threshold), PARLEY_SHOPIFY_BATCH_SIZE=str(config.batch_size))
        env.update(worker_env_extra)
        settings = Settings(database_url=db_url, data_dir=tmp_path / "var", amqp_prefix=prefix, secret_key=secret_key)
        engine = create_engine(settings, "test")
        sessions = create_sessionmaker(engine)
        broker = RabbitBroker(services.AMQP_URL, topology=Topology(prefix=prefix), connection_name=f"{prefix}test")
        await broker.start()
        relay = OutboxRelay(sessions, broker)
        async with unit_of_work(sessions) as session:
            tenant = await create_tenant(session, name="acme")
        worker = Worker(env, tmp_path / "worker.log")
        worker.start()
        async with aiohttp.ClientSession() as http:
            stack = Stack(emulator, config, settings, sessions, SecretBox(secret_key.encode()), relay, worker, http, tenant.id)
            try:
                yield stack
            finally:
                code = worker.stop()
                await broker.delete_topology()
                await broker.close()
                await engine.dispose()
        assert code == 0, worker.log()
