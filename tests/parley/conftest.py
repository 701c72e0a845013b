"""Fixtures of the kernel tests: real RabbitMQ with a unique topology prefix per test, and real migrated
SQLite and PostgreSQL databases whose commits are real (the bus tests; helpers in ``bus_support.py``).

``bus_db_url`` is like the shared ``db_url`` fixture of ``tests/conftest.py`` but keeps one PostgreSQL
database per session and empties the bus's tables between tests, which is much faster than a database
per test. Its SQLite side copies the shared ``sqlite_template``.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from parley.bus import RabbitBroker, Topology
from parley.db import _sqlite_pragmas
from tests.conftest import _migrate, run_sync
from tests.parley.bus_support import new_topology
from tests.support import services

#: The bus's tables, emptied between the tests that share one PostgreSQL database (``bus_db_url``).
BUS_TABLES = ("outbox_message", "pending_message", "processed_message", "dead_letter")


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


@pytest.fixture(scope="session")
def bus_pg_database() -> Iterator[str]:
    """The bus tests' own PostgreSQL database (they commit, so not the shared ``pg_database``); its URL."""
    if not services.reachable(services.PG_HOST, services.PG_PORT):
        pytest.fail(f"PostgreSQL is not reachable on {services.PG_HOST}:{services.PG_PORT}")
    name = run_sync(services.create_pg_database("parley_bus_test"))
    _migrate(services.pg_url(name))
    yield services.pg_url(name)
    run_sync(services.drop_pg_database(name))


@pytest.fixture
def bus_db_url(db_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database whose bus tables are empty; SQLite: a fresh file, PostgreSQL: shared, truncated."""
    if db_backend == "sqlite":
        path = tmp_path / "parley.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
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
