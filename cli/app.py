"""The root of the `parley` command and what every command shares.

Every command builds its dependencies from `Settings()` and owns its transaction: it either
completes or changes nothing. Errors are printed as one readable line with a non-zero exit.
:func:`database` is the one place that opens the engine, checks the schema, resolves a tenant
and disposes of the engine; :func:`publish_outbox` hands what a command staged to RabbitMQ.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from parley.errors import ParleyError
from parley.settings import Settings

T = TypeVar("T")

out = Console()
err = Console(stderr=True)


class Ctx:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.settings = Settings()


def error_id() -> str:
    return uuid.uuid4().hex[:12]


def run_async(fn: Callable[..., Awaitable[T]]) -> Callable[..., T]:
    """Run an async command; domain errors become one red line and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return asyncio.run(fn(*args, **kwargs))
        except ParleyError as exc:
            err.print(f"[red]error:[/red] {exc.message}", highlight=False)
            sys.exit(1)
        except (ConnectionError, OSError) as exc:
            err.print(f"[red]error:[/red] cannot reach a service: {exc}", highlight=False)
            sys.exit(1)
        except Exception as exc:  # noqa: BLE001 - the edge: unknown errors get an id, the traceback is logged
            eid = error_id()
            logging.getLogger("parley.cli").exception("unexpected error %s", eid)
            err.print(f"[red]unexpected error {eid}:[/red] {type(exc).__name__}: {exc}", highlight=False)
            sys.exit(1)

    return wrapper


def emit(ctx: Ctx, rows: list[dict[str, Any]], columns: list[str], *, title: str | None = None) -> None:
    if ctx.as_json:
        click.echo(json.dumps(rows, default=str, indent=2))
        return
    if not rows:
        out.print(f"(no {title or 'rows'})")
        return
    table = Table(title=title, show_lines=False)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    out.print(table)



# --- the database, the tenant, the outbox -----------------------------------------------------


@dataclass(frozen=True)
class TenantRef:
    id: str
    name: str


@dataclass
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    async def tenant(self, name_or_id: str) -> TenantRef:
        """The tenant named (or with the id) `name_or_id`; a clear error when there is none."""
        from parley.db import unit_of_work
        from tenants import service

        async with unit_of_work(self.sessions, admin=True) as session:
            tenant = await service.get_tenant(session, name_or_id=name_or_id)
            return TenantRef(tenant.id, tenant.name)

    def admin(self) -> contextlib.AbstractAsyncContextManager[AsyncSession]:
        from parley.db import unit_of_work

        return unit_of_work(self.sessions, admin=True)

    def scoped(self, tenant_id: str) -> contextlib.AbstractAsyncContextManager[AsyncSession]:
        from parley.db import unit_of_work

        return unit_of_work(self.sessions, tenant_id=tenant_id)


async def ensure_migrated(engine: AsyncEngine) -> None:
    from cli import migrations

    current = await migrations.current_revision(engine)
    if current is None:
        raise ParleyError("the database has no schema yet: run `parley migrate` first", code="not_migrated")


@contextlib.asynccontextmanager
async def database(settings: Settings, name: str = "cli", *, migrated: bool = True) -> AsyncIterator[Database]:
    """The engine and sessions of a command (its pool named `name`), checked to have a schema
    (unless `migrated=False`), always disposed of."""
    from parley.db import create_engine, create_sessionmaker

    engine = create_engine(settings, name)
    try:
        if migrated:
            await ensure_migrated(engine)
        yield Database(engine, create_sessionmaker(engine))
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def rabbit(settings: Settings, name: str) -> AsyncIterator[Any]:
    """A started RabbitMQ broker named after the command, always closed."""
    from parley import runtime

    broker = runtime.rabbit_broker(settings, name)
    try:
        await broker.start()
        yield broker
    finally:
        await broker.close()


async def publish_outbox(db: Database, broker: Any) -> None:
    """Hand what the command committed to the outbox to RabbitMQ now (any relay would, later)."""
    from parley.bus import OutboxRelay

    await OutboxRelay(db.sessions, broker).flush()


# --- the root ---------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of tables.")
@click.version_option(package_name="parley")
@click.pass_context
def main(click_ctx: click.Context, as_json: bool) -> None:
    """Parley: an AI agent for each tenant's Slack and Instagram DMs, grounded in its documents and
    Shopify catalog.

    Configuration comes from PARLEY_* environment variables; with none set, everything runs on
    the embedded defaults under ./var (SQLite, local blobs and index, local embedding model,
    offline answerer). See README.md for the full table.
    """
    click_ctx.obj = Ctx(as_json)
    from parley.logging import configure_logging

    configure_logging(process_name="cli", level="WARNING", json_lines=False)


def has_command(path: list[str]) -> bool:
    """Is `parley <path...>` a command of this build? (Processes not built yet are not started.)"""
    command: click.Command = main
    for name in path:
        if not isinstance(command, click.Group) or name not in command.commands:
            return False
        command = command.commands[name]
    return True
