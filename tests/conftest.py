"""Shared fixtures: real SQLite and PostgreSQL databases built by `alembic upgrade head`.

- `db` (parametrised sqlite / postgres): one rolled-back transaction per test. Code under test
  commits as usual; its commits become savepoints inside the test's outer transaction.
- `db_url` (parametrised): a fresh migrated database whose commits are real, for tests where
  other processes (workers, services) must see the data.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from cli import migrations
from parley.db import _sqlite_pragmas
from parley.settings import Settings
from tests.support import services

from sqlalchemy import event
from sqlalchemy.pool import NullPool


def run_sync(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, even when an event loop is running in this
    thread (async fixtures request sync ones through getfixturevalue)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _migrate(url: str) -> None:
    async def run() -> None:
        engine = create_async_engine(url, poolclass=NullPool)
        await migrations.upgrade(engine)
        await engine.dispose()

    run_sync(run())


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "parley.db"
    _migrate(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    if not services.reachable(services.PG_HOST, services.PG_PORT):
        pytest.fail(
            f"PostgreSQL is not reachable on {services.PG_HOST}:{services.PG_PORT}; "
            "run the README's test command (scripts/test.sh), which starts it"
        )
    name = run_sync(services.create_pg_database())
    _migrate(services.pg_url(name))
    yield name
    run_sync(services.drop_pg_database(name))


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated PostgreSQL database that is never connected to after migrating: each test's fresh
    database (`db_url`) is a copy of it, instead of running every migration again per test."""
    name = run_sync(services.create_pg_database("parley_template"))
    _migrate(services.pg_url(name))
    yield name
    run_sync(services.drop_pg_database(name))


@pytest.fixture(params=["sqlite", "postgres"])
def db_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "var", log_json=False)


@dataclass
class Db:
    backend: str
    url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]


def _engine(url: str) -> AsyncEngine:
    engine = create_async_engine(url, poolclass=NullPool)
    if url.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


@pytest.fixture
def db_url(db_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh migrated database with real commits."""
    if db_backend == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        path = tmp_path / "parley.db"
        shutil.copy(template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    if not services.reachable(services.PG_HOST, services.PG_PORT):
        pytest.fail("PostgreSQL is not reachable; run scripts/test.sh, which starts it")
    name = run_sync(services.create_pg_database(template=request.getfixturevalue("pg_template")))
    yield services.pg_url(name)
    run_sync(services.drop_pg_database(name))


@pytest.fixture
async def db(db_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Db]:
    """A migrated database inside one transaction that is rolled back after the test."""
    if db_backend == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        path = tmp_path / "parley.db"
        shutil.copy(template, path)
        url = f"sqlite+aiosqlite:///{path}"
    else:
        url = services.pg_url(request.getfixturevalue("pg_database"))
    engine = _engine(url)
    async with engine.connect() as conn:
        outer = await conn.begin()
        sessions = async_sessionmaker(
            bind=conn, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
        yield Db(db_backend, url, engine, sessions)
        await outer.rollback()
    await engine.dispose()
