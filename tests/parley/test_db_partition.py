"""A silent network partition between a process and PostgreSQL is a bounded stall (issue 19, gap 2).

asyncpg has no command timeout by default: a statement whose packets vanish (no RST, no FIN) waited
until the consumer's 25-minute handler timeout. `parley.db.create_engine` now sets asyncpg's
``command_timeout`` and connect ``timeout``, the server's ``statement_timeout`` and
``idle_in_transaction_session_timeout``, TCP keepalives and the pool timeout from settings. A small
TCP forwarder stands between the engine and PostgreSQL and starts swallowing packets.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from parley.bus.errors import Failure
from parley.db import create_engine, create_sessionmaker, unit_of_work
from parley.settings import Settings
from tests.support import services

pytestmark = pytest.mark.postgres


class Forwarder:
    """127.0.0.1:<port 0> -> PostgreSQL. ``swallow()`` drops every byte both ways without closing;
    ``heal()`` forwards again, closing the connections whose bytes were dropped (they are desynced)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.swallowing = False
        self._cut: set[asyncio.StreamWriter] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pump(reader, up_writer, writer), self._pump(up_reader, writer, up_writer),
                             return_exceptions=True)
        for w in (writer, up_writer):
            w.close()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, own: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            if self.swallowing:
                self._cut |= {sink, own}
                continue
            sink.write(data)
            await sink.drain()
        sink.close()

    def swallow(self) -> None:
        self.swallowing = True

    def heal(self) -> None:
        self.swallowing = False
        for writer in self._cut:
            writer.close()
        self._cut.clear()

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def forwarder():
    if not services.reachable(services.PG_HOST, services.PG_PORT):
        pytest.fail(f"PostgreSQL is not reachable on {services.PG_HOST}:{services.PG_PORT}")
    proxy = Forwarder(services.PG_HOST, services.PG_PORT)
    port = await proxy.start()
    yield proxy, port
    await proxy.close()


async def test_a_silent_partition_fails_a_statement_within_the_timeout_and_heals(forwarder, tmp_path: Path) -> None:
    proxy, port = forwarder
    # Given an engine of the app, reaching PostgreSQL through the forwarder, with 1-second timeouts
    url = f"postgresql+asyncpg://{services.PG_USER}@127.0.0.1:{port}/postgres"
    settings = Settings(data_dir=tmp_path / "var", database_url=url, db_command_timeout_seconds=1.0,
                        db_connect_timeout_seconds=1.0)
    engine = create_engine(settings, "partition-test")
    sessions = create_sessionmaker(engine)
    try:
        async with unit_of_work(sessions, admin=True) as session:
            assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
            shown = (await session.execute(text("SHOW statement_timeout"))).scalar_one()
        assert shown == "1s"
        # When the network starts dropping packets in the middle of a handler's transaction
        proxy.swallow()
        failure = None
        async with asyncio.timeout(60) as bound:  # generous: without the timeouts this hangs for 25 minutes
            try:
                async with unit_of_work(sessions, admin=True) as session:
                    await session.execute(text("SELECT 1"))
            except Exception as exc:  # noqa: BLE001 - what the consumer would see
                failure = Failure.of(exc)
        # Then the statement failed instead of hanging, as an error the consumer retries
        assert not bound.expired()
        assert failure is not None and failure.retryable
        # and opening a new connection during the partition fails within the connect timeout too
        async with asyncio.timeout(60) as bound:
            with pytest.raises(Exception):
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        assert not bound.expired()
        # When the network heals, the same engine works again
        proxy.heal()
        async with asyncio.timeout(60):
            async with unit_of_work(sessions, admin=True) as session:
                assert (await session.execute(text("SELECT 2"))).scalar_one() == 2
    finally:
        proxy.heal()
        await asyncio.wait_for(engine.dispose(), 30)
