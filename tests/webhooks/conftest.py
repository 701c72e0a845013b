"""Fixtures of the webhook tests: a local receiver (a real aiohttp server on 127.0.0.1 that answers
as each test scripts it and verifies what it gets), a clock the tests move, and the webhooks
consumer on the in-memory broker over a real migrated database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from parley.bus import Consumer, InMemoryBroker, OutboxRelay, RabbitBroker, Topology, consuming
from parley.crypto import SecretBox, load_secret_box
from parley.db import _sqlite_pragmas, unit_of_work
from parley.settings import Settings
from tenants.service import create_tenant
from tests.conftest import _migrate, run_sync
from tests.support import services, waiting
from webhooks.consumer import WebhookDeps, webhooks_consumer
from webhooks.delivery import client_session
from webhooks.models import WebhookDelivery, WebhookEndpoint
from webhooks.service import create_endpoint

#: Short delay tiers, so retries take milliseconds.
DELAYS = (0.02, 0.05, 0.1)


async def eventually(predicate: Any, *, timeout: float = 20.0, what: str | None = None) -> Any:
    return await waiting.eventually(predicate, timeout=timeout, interval=0.02, what=what)


@dataclass
class Answer:
    """How the receiver answers one request: a status, after ``delay`` seconds, with ``body`` or
    ``huge`` bytes streamed."""

    status: int = 200
    delay: float = 0.0
    body: bytes = b"ok"
    huge: int = 0


@dataclass
class Receiver:
    url: str
    script: list[Answer] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    #: Bytes the receiver managed to write of a huge answer before the sender hung up.
    written: list[int] = field(default_factory=list)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.requests]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver(url="")

    async def hook(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        state.requests.append({"headers": dict(request.headers), "body": body, "path": request.path})
        answer = state.script.pop(0) if state.script else Answer()
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if answer.huge:
            response = web.StreamResponse(status=answer.status)
            response.content_length = answer.huge
            await response.prepare(request)
            sent = 0
            chunk = b"x" * 65536
            try:
                while sent < answer.huge:
                    await response.write(chunk)
                    sent += len(chunk)
            except (ConnectionResetError, ConnectionError, RuntimeError):
                pass
            finally:
                state.written.append(sent)
            return response
        return web.Response(status=answer.status, body=answer.body)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}/hook"
    yield state
    await runner.cleanup()


class Clock:
    """The consumer's clock: real time plus an offset the test moves (no sleeping for 24 h)."""

    def __init__(self) -> None:
        self.offset = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset

    def advance(self, **kwargs: float) -> None:
        self.offset += dt.timedelta(**kwargs)


@dataclass
class Stack:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    broker: Any
    relay: OutboxRelay
    consumer: Consumer
    deps: WebhookDeps
    box: SecretBox
    clock: Clock
    tenant_id: str

    async def endpoint(self, url: str, events: str = "document.indexed,job.completed") -> tuple[WebhookEndpoint, str]:
        async with unit_of_work(self.sessions, tenant_id=self.tenant_id) as session:
            return await create_endpoint(session, tenant_id=self.tenant_id, url=url, event_types=events, box=self.box,
                                         allow_private=True)

    async def deliveries(self, endpoint_id: str | None = None) -> list[WebhookDelivery]:
        async with unit_of_work(self.sessions, tenant_id=self.tenant_id) as session:
            stmt = select(WebhookDelivery).order_by(WebhookDelivery.created_at)
            if endpoint_id:
                stmt = stmt.where(WebhookDelivery.endpoint_id == endpoint_id)
            return list((await session.execute(stmt)).scalars())

    async def endpoint_row(self, endpoint_id: str) -> WebhookEndpoint:
        async with unit_of_work(self.sessions, tenant_id=self.tenant_id) as session:
            return await session.get(WebhookEndpoint, endpoint_id)  # type: ignore[return-value]


def webhook_settings(tmp_path: Path, db_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(data_dir=tmp_path / "var", database_url=db_url, log_json=False,
                                  webhooks_allow_private=True, webhooks_timeout_seconds=0.5, webhooks_max_attempts=4)
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def stack_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture(scope="session")
def webhooks_pg_database() -> Iterator[str]:
    """One PostgreSQL database for this suite (a fresh one per test costs ~3 s); emptied between tests."""
    if not services.reachable(services.PG_HOST, services.PG_PORT):
        pytest.fail(f"PostgreSQL is not reachable on {services.PG_HOST}:{services.PG_PORT}")
    name = run_sync(services.create_pg_database("parley_webhooks_test"))
    _migrate(services.pg_url(name))
    yield services.pg_url(name)
    run_sync(services.drop_pg_database(name))


@pytest.fixture
async def webhooks_db_url(db_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database with real commits: SQLite a fresh file, PostgreSQL shared and emptied."""
    if db_backend == "sqlite":
        path = tmp_path / "parley.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite+aiosqlite:///{path}"
    url = request.getfixturevalue("webhooks_pg_database")
    engine = create_async_engine(url, poolclass=NullPool)
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE tenant, outbox_message, pending_message, processed_message, dead_letter "
                                "RESTART IDENTITY CASCADE"))
    await engine.dispose()
    return url


@pytest.fixture
async def stack(webhooks_db_url: str, tmp_path: Path, stack_overrides: dict[str, Any]) -> AsyncIterator[Stack]:
    db_url = webhooks_db_url
    overrides = dict(stack_overrides)
    on_rabbitmq = overrides.pop("rabbitmq", False)  # the real broker instead of the in-memory one
    settings = webhook_settings(tmp_path, db_url, **overrides)
    engine = create_async_engine(db_url)
    if db_url.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    topology = Topology(prefix=f"tw{uuid.uuid4().hex[:8]}.", delays=DELAYS)
    if on_rabbitmq:
        if not services.reachable("127.0.0.1", 5672):
            pytest.fail("RabbitMQ is not reachable on 127.0.0.1:5672 (scripts/test.sh starts it)")
        broker: Any = RabbitBroker(services.AMQP_URL, topology=topology, connection_name=f"{topology.prefix}webhooks")
    else:
        broker = InMemoryBroker(topology)
    await broker.start()
    relay = OutboxRelay(sessions, broker, sweep_interval=0.2)
    await relay.start()
    http = client_session(allow_private=settings.webhooks_allow_private)
    clock = Clock()
    deps = WebhookDeps.from_settings(settings, sessions=sessions, http=http, tiers=DELAYS, clock=clock)
    consumer = webhooks_consumer(deps, broker)
    async with unit_of_work(sessions, admin=True) as session:
        tenant_id = (await create_tenant(session, name="acme")).id
    try:
        async with consuming(consumer, shutdown_timeout=2.0):
            yield Stack(settings, sessions, broker, relay, consumer, deps, load_secret_box(settings), clock, tenant_id)
    finally:
        await relay.stop()
        await http.close()
        if on_rabbitmq:
            await broker.delete_topology()
        await broker.close()
        await engine.dispose()
