"""Real PostgreSQL and RabbitMQ for tests: fresh databases per test session, reachability checks."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

PG_HOST = os.environ.get("PARLEY_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PARLEY_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("PARLEY_TEST_PG_USER", "postgres")
AMQP_URL = os.environ.get("PARLEY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pg_url(database: str) -> str:
    return f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


async def create_pg_database(prefix: str = "parley_test", *, template: str | None = None) -> str:
    """A new empty database, or a copy of ``template`` (PostgreSQL copies its files: ~15x faster than
    running the migrations again; the template must have no open connection)."""
    import asyncpg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    finally:
        await conn.close()
    return name


async def drop_pg_database(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def free_port() -> int:
    """A loopback port nothing listens on now: connections to it are refused, and a server may take it."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
