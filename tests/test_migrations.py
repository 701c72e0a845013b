"""Alembic is the only way the schema changes: the migrations go up, down and up again on SQLite and
the real PostgreSQL, and they agree with the models (autogenerate finds nothing to do)."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.pool import NullPool
from sqlalchemy.ext.asyncio import create_async_engine

from cli import migrations
from parley.db import Base
from tests.support import services

migrations.load_models()


@pytest.fixture
async def empty_url(db_backend: str, tmp_path: Path):
    if db_backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    name = await services.create_pg_database()
    yield services.pg_url(name)
    await services.drop_pg_database(name)


async def _tables(engine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def test_upgrade_downgrade_upgrade(empty_url: str) -> None:
    # Given an empty database
    engine = create_async_engine(empty_url, poolclass=NullPool)
    try:
        # When it is migrated to head, then back to base, then to head again
        await migrations.upgrade(engine)
        first = await _tables(engine)
        assert await migrations.current_revision(engine) == migrations.head_revision()
        await migrations.downgrade(engine, "base")
        assert await _tables(engine) <= {"alembic_version"}
        await migrations.upgrade(engine)
        # Then every table of the models exists, both times
        assert await _tables(engine) == first
        assert set(Base.metadata.tables) <= first
    finally:
        await engine.dispose()


async def test_models_and_migrations_agree(empty_url: str) -> None:
    engine = create_async_engine(empty_url, poolclass=NullPool)
    try:
        await migrations.upgrade(engine)
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), Base.metadata)
            )
    finally:
        await engine.dispose()
    assert diff == [], f"models and migrations disagree: {diff}"


def test_revisions_are_date_prefixed_and_linear() -> None:
    versions = Path(migrations.alembic_config().get_main_option("script_location")) / "versions"
    files = sorted(p.name for p in versions.glob("*.py"))
    assert files, "no migrations"
    for name in files:
        assert name[:8].isdigit() and name[8] == "_", f"{name} is not date-prefixed (YYYYMMDD_)"
    assert "," not in (migrations.head_revision() or ""), "migrations have more than one head: merge them"
