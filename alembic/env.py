"""Async Alembic environment for SQLite (batch mode) and PostgreSQL.

The URL comes from Parley's settings unless a caller passes a live connection in
``config.attributes["connection"]`` (tests and `parley migrate` inside a running loop) or a URL
in ``config.attributes["url"]``.
"""

from __future__ import annotations

import asyncio
from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from parley.db import Base, UTCDateTime, prepare_sqlite
from parley.files import private_dir
from cli.migrations import load_models
from parley.settings import Settings

load_models()

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.attributes.get("url") or Settings().effective_database_url


def render_item(type_: str, obj: object, autogen_context: object) -> str | bool:
    """Migrations spell our UTC column type as plain SQL types, so they never import Parley code."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=render_item,
    )


def do_run_migrations(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    url = _url()
    if url.startswith("sqlite"):
        private_dir(Settings().data_dir)
        prepare_sqlite(url)  # created 0600 (SQLite would make it 0644)
    engine = create_async_engine(url, poolclass=pool.NullPool, hide_parameters=True)
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)
    await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
