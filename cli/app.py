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
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cli.shell import ParleyRoot, debug_flag, wants_json
from parley.errors import ParleyError
from parley.settings import Settings

T = TypeVar("T")

out = Console()
err = Console(stderr=True)


class Ctx:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.settings = load_settings()


def load_settings() -> Settings:
    """`Settings()` from the environment and the .env file; a value that does not parse (or a
    PARLEY_ENV_FILE that is not there) is one line per problem and exit code 2, not a traceback."""
    from pydantic import ValidationError

    from parley.settings import SettingsError, env_file, mask_url

    try:
        return Settings()
    except SettingsError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
    except ValidationError as exc:
        try:
            source = env_file()
        except SettingsError:
            source = None
        for problem in exc.errors():
            name = ".".join(str(p) for p in problem["loc"])
            err.print(f"[red]error:[/red] setting PARLEY_{name.upper()}: {problem['msg']} "
                      f"(got {mask_url(str(problem.get('input')))[:60]!r}"
                      + (f"; from the environment or {source}" if source else "") + ")", highlight=False)
    sys.exit(2)


def settings_origin(settings: Settings) -> str:
    """One line: where the settings came from and where the data is (`parley config`, `parley up`)."""
    from parley.settings import SettingsError, env_file, setting_sources

    try:
        dotenv = env_file()
    except SettingsError:
        dotenv = None
    counts = {source: 0 for source in ("environment", ".env")}
    for source in setting_sources(dotenv=dotenv).values():
        if source in counts:
            counts[source] += 1
    return (f"settings: {counts['environment']} from the environment, "
            + (f"{counts['.env']} from {dotenv}" if dotenv else "no .env file")
            + f", the rest defaults; data directory {settings.data_dir.resolve()}")


def where(settings: Settings) -> str:
    """The data directory and database a command works on, for error messages (password masked)."""
    from parley.settings import mask_url

    return f"data directory {settings.data_dir.resolve()}, database {mask_url(settings.effective_database_url)}"


def run_async(fn: Callable[..., Awaitable[T]]) -> Callable[..., T]:
    """Run an async command. Its errors are the root group's guard's (`cli.shell`): one line, exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


def is_id_column(name: str) -> bool:
    return name == "id" or name.endswith(("_id", " id")) or name == "sync_job"


#: Shortest id prefix a table shows when whole ids leave the other columns no room.
SHORT_ID = 8
#: Width a non-id column needs to stay readable (a file name, a status, a date).
READABLE_COLUMN = 14


def shortest_unique_prefixes(ids: list[str], minimum: int = SHORT_ID) -> dict[str, str]:
    """Each id's shortest prefix (at least ``minimum`` characters) that no other id in ``ids`` shares;
    every command takes a unique prefix wherever it takes an id (`parley.repository.resolve_id`)."""
    unique = sorted(set(ids))
    out: dict[str, str] = {}
    for i, value in enumerate(unique):
        need = minimum
        for other in (unique[i - 1] if i else "", unique[i + 1] if i + 1 < len(unique) else ""):
            common = len(next((value[:k] for k in range(min(len(value), len(other)), 0, -1)
                               if value[:k] == other[:k]), ""))
            need = max(need, common + 1)
        out[value] = value[:need]
    return out


def emit(ctx: Ctx, rows: list[dict[str, Any]], columns: list[str], *, title: str | None = None) -> None:
    """Rows as a table (or JSON with --json). Ids are never cut with an ellipsis: they are shown whole
    when the terminal has room for them and for the other columns, else as their shortest unique
    prefixes (which every command accepts), so an id can always be copied and used."""
    if ctx.as_json:
        click.echo(json.dumps(rows, default=str, indent=2))
        return
    if not rows:
        out.print(f"(no {title or 'rows'})")
        return

    def cell(row: dict[str, Any], col: str) -> str:
        return "" if row.get(col) is None else str(row.get(col))

    def widest(col: str) -> int:
        return max([len(col)] + [len(cell(row, col)) for row in rows])

    id_columns = [c for c in columns if is_id_column(c)]
    needed = sum(widest(c) if c in id_columns else min(widest(c), READABLE_COLUMN) for c in columns) + 3 * len(columns) + 1
    short: dict[str, dict[str, str]] = {}
    if id_columns and needed > out.width:
        short = {c: shortest_unique_prefixes([cell(row, c) for row in rows if cell(row, c)]) for c in id_columns}
    table = Table(title=title, show_lines=False)
    for col in columns:
        if col in id_columns:
            width = max([len(col)] + [len(short[col].get(cell(row, col), "")) if col in short else len(cell(row, col))
                                      for row in rows])
            table.add_column(col, no_wrap=True, min_width=width)
        else:
            table.add_column(col, overflow="fold")  # a long file name breaks across lines, never cut
    for row in rows:
        table.add_row(*(short[c].get(cell(row, c), cell(row, c)) if c in short else cell(row, c) for c in columns))
    out.print(table)
    if short:
        out.print("ids shortened to unique prefixes, which every command takes (--json or a wider terminal "
                  "shows them whole)", style="dim", highlight=False)


# --- the database, the tenant, the outbox -----------------------------------------------------


async def find_tenant(session: AsyncSession, name_or_id: str) -> Any:
    """The tenant with this name, id or unique id prefix (`parley.repository.resolve_id`)."""
    from sqlalchemy import select

    from parley.errors import NotFound
    from parley.repository import MIN_PREFIX, resolve_id
    from tenants import service
    from tenants.models import Tenant

    try:
        return await service.get_tenant(session, name_or_id=name_or_id)
    except NotFound:
        if len(name_or_id.strip()) < MIN_PREFIX:
            raise
        try:
            return await resolve_id(session, select(Tenant), Tenant.id, name_or_id, noun="tenant", label=Tenant.name)
        except NotFound:
            pass
        raise


@dataclass(frozen=True)
class TenantRef:
    id: str
    name: str


@dataclass
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    #: Where this database is (`where`), said in errors a wrong data directory would cause.
    location: str = ""

    async def tenant(self, name_or_id: str) -> TenantRef:
        """The tenant named (or with the id) `name_or_id`; a clear error, saying which data directory
        and database were searched, when there is none."""
        from parley.db import unit_of_work
        from parley.errors import NotFound

        try:
            async with unit_of_work(self.sessions, admin=True) as session:
                tenant = await find_tenant(session, name_or_id)
                return TenantRef(tenant.id, tenant.name)
        except NotFound as exc:
            if not self.location:
                raise
            raise NotFound(f"{exc.message}; looked in the {self.location}") from exc

    def admin(self) -> contextlib.AbstractAsyncContextManager[AsyncSession]:
        from parley.db import unit_of_work

        return unit_of_work(self.sessions, admin=True)

    def scoped(self, tenant_id: str) -> contextlib.AbstractAsyncContextManager[AsyncSession]:
        from parley.db import unit_of_work

        return unit_of_work(self.sessions, tenant_id=tenant_id)


async def ensure_migrated(engine: AsyncEngine, location: str = "") -> None:
    from cli import migrations

    current = await migrations.current_revision(engine)
    if current is None:
        raise not_migrated(location)


def not_migrated(location: str = "") -> ParleyError:
    """"No schema yet", with where the command looked: the usual cause is the wrong data directory."""
    return ParleyError("the database has no schema yet: run `parley migrate` first"
                       + (f" ({location}; if your data is elsewhere, set PARLEY_DATA_DIR or PARLEY_DATABASE_URL,"
                          " e.g. in the .env file)" if location else ""), code="not_migrated")


@contextlib.asynccontextmanager
async def database(settings: Settings, name: str = "cli", *, migrated: bool = True) -> AsyncIterator[Database]:
    """The engine and sessions of a command (its pool named `name`), checked to have a schema
    (unless `migrated=False`), always disposed of."""
    from parley.db import create_engine, create_sessionmaker

    location = where(settings)
    if migrated and settings.is_sqlite and not settings.effective_database_url.endswith(":memory:"):
        path = settings.effective_database_url.split(":///", 1)[1].split("?", 1)[0]
        if not Path(path).exists():  # do not create an empty database only to say it has no schema
            raise not_migrated(location)
    engine = create_engine(settings, name)
    try:
        if migrated:
            await ensure_migrated(engine, location)
        yield Database(engine, create_sessionmaker(engine), location)
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


@click.group(cls=ParleyRoot, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, expose_value=False, callback=debug_flag,
              help="On an unexpected error, print its traceback too (it is always written to "
                   "<data dir>/logs/cli-errors.log).")
@click.version_option(package_name="parley")
@click.pass_context
def main(click_ctx: click.Context) -> None:
    """Parley: an AI agent for each tenant's Slack and Instagram DMs, grounded in its documents and
    Shopify catalog.

    Configuration comes from PARLEY_* environment variables and the .env file (`parley config`
    shows which); with none set, everything runs on the embedded defaults in the checkout's var/
    (SQLite, local blobs and index, local embedding model, offline answerer), whatever the current
    directory. See README.md for the full table.
    """
    click_ctx.obj = Ctx(wants_json(click_ctx))
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
