"""Fixtures and helpers for the bus tests: real RabbitMQ with a unique topology prefix per test,
real migrated SQLite and PostgreSQL databases with real commits.

``bus_db_url`` is like the shared ``db_url`` fixture but keeps one PostgreSQL database per session
and empties the bus's tables between tests, which is much faster than a database per test.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from alembic import command
from sqlalchemy import event, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from parley.bus import Envelope, Outgoing, RabbitBroker, Topology, stage
from parley.db import _sqlite_pragmas, unit_of_work
from parley.migrations import alembic_config
from parley.models import OutboxMessage
from tests.support import services, waiting

#: Short tiers so retries take milliseconds.
TEST_DELAYS = (0.05, 0.1, 0.2)


def new_topology(**kwargs: Any) -> Topology:
    kwargs.setdefault("delays", TEST_DELAYS)
    return Topology(prefix=f"t{uuid.uuid4().hex[:10]}.", **kwargs)


@pytest.fixture
def topology() -> Topology:
    return new_topology()


@pytest.fixture
async def make_broker(topology: Topology) -> AsyncIterator[Callable[..., Awaitable[RabbitBroker]]]:
    """Start RabbitBrokers on the test's topology (one per simulated process); tear the topology down after."""
    if not services.reachable("127.0.0.1", 5672):
        pytest.fail("RabbitMQ is not reachable on 127.0.0.1:5672")
    brokers: list[RabbitBroker] = []

    async def make(name: str | None = None) -> RabbitBroker:
        broker = RabbitBroker(
            services.AMQP_URL,
            topology=topology,
            connection_name=name or f"{topology.prefix}{len(brokers)}",
            reconnect_interval=0.2,
            publish_timeout=10,
        )
        await broker.start()
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        await broker.close()
    if brokers:
        cleaner = RabbitBroker(services.AMQP_URL, topology=topology, connection_name=f"{topology.prefix}cleanup")
        await cleaner.start()
        await cleaner.delete_topology()
        await cleaner.close()


@pytest.fixture
async def broker(make_broker: Callable[..., Awaitable[RabbitBroker]]) -> RabbitBroker:
    return await make_broker()


BUS_TABLES = ("outbox_message", "pending_message", "processed_message", "dead_letter")


def _migrate(url: str) -> None:
    async def run() -> None:
        engine = create_async_engine(url, poolclass=NullPool)
        cfg = alembic_config()

        def upgrade(sync_connection: Any) -> None:
            cfg.attributes["connection"] = sync_connection
            command.upgrade(cfg, "heads")

        async with engine.begin() as conn:
            await conn.run_sync(upgrade)
        await engine.dispose()

    asyncio.run(run())


@pytest.fixture(scope="session")
def bus_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bus-sqlite") / "parley.db"
    _migrate(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def bus_pg_database() -> Iterator[str]:
    if not services.reachable(services.PG_HOST, services.PG_PORT):
        pytest.fail(f"PostgreSQL is not reachable on {services.PG_HOST}:{services.PG_PORT}")
    name = asyncio.run(services.create_pg_database("parley_bus_test"))
    _migrate(services.pg_url(name))
    yield services.pg_url(name)
    asyncio.run(services.drop_pg_database(name))


@pytest.fixture(params=["sqlite", "postgres"])
def bus_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database whose bus tables are empty; SQLite: a fresh file, PostgreSQL: shared, truncated."""
    if request.param == "sqlite":
        path = tmp_path / "parley.db"
        shutil.copy(request.getfixturevalue("bus_sqlite_template"), path)
        return f"sqlite+aiosqlite:///{path}"
    url = request.getfixturevalue("bus_pg_database")

    async def truncate() -> None:
        engine = create_async_engine(url, poolclass=NullPool)
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {', '.join(BUS_TABLES)} RESTART IDENTITY"))
        await engine.dispose()

    asyncio.run(truncate())
    return url


@pytest.fixture
async def sessions(bus_db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A migrated database (SQLite or PostgreSQL) whose commits are real."""
    engine = create_async_engine(bus_db_url)
    if bus_db_url.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


#: Polls until a condition holds (tests/support/waiting.py), with this suite's bounds.
eventually = partial(waiting.eventually, timeout=20.0, interval=0.02)


async def drain(broker: RabbitBroker, queue_name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take (and ack) every message ready in a queue."""
    channel = await broker.connection.channel()
    taken = []
    try:
        queue = await channel.declare_queue(queue_name, passive=True, robust=False)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            taken.append(message)
    finally:
        await channel.close()
    return taken


async def stage_committed(
    sessions: async_sessionmaker[AsyncSession], envelopes: list[Envelope], routing_key: str
) -> None:
    async with unit_of_work(sessions, admin=True) as session:
        for envelope in envelopes:
            stage(session, envelope, routing_key)


async def count_outbox(sessions: async_sessionmaker[AsyncSession], **where: Any) -> int:
    async with unit_of_work(sessions, admin=True) as session:
        stmt = select(func.count()).select_from(OutboxMessage)
        for column, value in where.items():
            stmt = stmt.where(getattr(OutboxMessage, column) == value)
        return (await session.execute(stmt)).scalar_one()


async def publish_direct(broker: RabbitBroker, envelope: Envelope, routing_key: str, **kwargs: Any) -> None:
    """Publish without the outbox (to feed a consumer in a test)."""
    await broker.publish(Outgoing.of(envelope, **kwargs), routing_key=routing_key)


def close_connection_from_broker(connection_name: str, reason: str = "test: broker-side close") -> None:
    """``rabbitmqctl close_connection`` on the connection whose client-provided name matches."""
    rabbitmqctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    listing = subprocess.run(
        [rabbitmqctl, "-q", "list_connections", "pid", "client_properties"], capture_output=True, text=True, check=True
    ).stdout
    pids = [line.split("\t", 1)[0] for line in listing.splitlines() if f'{{"connection_name","{connection_name}"}}' in line]
    assert pids, f"no connection named {connection_name!r} in:\n{listing}"
    for pid in pids:
        subprocess.run([rabbitmqctl, "-q", "close_connection", pid, reason], check=True, capture_output=True)
