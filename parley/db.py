"""The metadata store: SQLAlchemy 2 async engine, declarative base, and tenant scoping.

Tenant scoping is enforced here, once, for every ORM statement: a session is bound to a tenant
with :func:`bind_tenant` (or explicitly marked as an admin session with :func:`bind_admin`), and
every ORM SELECT, UPDATE or DELETE touching a :class:`TenantOwned` model is filtered by that
tenant automatically. A session bound to neither that touches tenant-owned rows raises
:class:`~parley.errors.TenantScopeError` instead of silently reading every tenant.

Services never commit; the edge (HTTP middleware, consumer wrapper, CLI command) owns the
transaction through :func:`unit_of_work`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, MetaData, String, event, func
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, ORMExecuteState, Session, mapped_column, with_loader_criteria
from sqlalchemy.types import TypeDecorator

from parley.errors import TenantScopeError
from parley.files import create_private_file, private_dir
from parley.settings import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: UTCDateTime()}


class TimestampMixin:
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, server_default=func.now()
    )


class TenantOwned:
    """Mixin for rows that belong to one tenant. Queries on them are always tenant-filtered."""

    tenant_id: Mapped[str] = mapped_column(String(32), index=True)


# --- tenant scoping -------------------------------------------------------------------------

_TENANT_KEY = "parley_tenant_id"
_ADMIN_KEY = "parley_admin"


def bind_tenant(session: AsyncSession, tenant_id: str) -> AsyncSession:
    """Scope every ORM statement of this session to one tenant."""
    session.info[_TENANT_KEY] = tenant_id
    session.info.pop(_ADMIN_KEY, None)
    return session


def bind_admin(session: AsyncSession) -> AsyncSession:
    """Mark a session as cross-tenant on purpose (admin CLI, workers routing by message tenant)."""
    session.info[_ADMIN_KEY] = True
    session.info.pop(_TENANT_KEY, None)
    return session


def session_tenant(session: AsyncSession | Session) -> str | None:
    return session.info.get(_TENANT_KEY)


def _touches_tenant_owned(state: ORMExecuteState) -> bool:
    for mapper in state.all_mappers:
        if issubclass(mapper.class_, TenantOwned):
            return True
    return False


@event.listens_for(Session, "do_orm_execute")
def _enforce_tenant_scope(state: ORMExecuteState) -> None:
    if not (state.is_select or state.is_update or state.is_delete):
        return
    if state.is_column_load or state.is_relationship_load:
        return  # the parent statement was already scoped
    tenant_id = state.session.info.get(_TENANT_KEY)
    if tenant_id is not None:
        state.statement = state.statement.options(
            with_loader_criteria(TenantOwned, lambda cls: cls.tenant_id == tenant_id, include_aliases=True)
        )
        return
    if state.session.info.get(_ADMIN_KEY):
        return
    if _touches_tenant_owned(state):
        raise TenantScopeError(
            "query on tenant-owned rows from a session bound to no tenant; "
            "use bind_tenant(session, tenant_id) or bind_admin(session)"
        )


@event.listens_for(Session, "before_flush")
def _stamp_tenant(session: Session, flush_context: Any, instances: Any) -> None:
    """New tenant-owned rows take the session's tenant; a row for another tenant is refused."""
    tenant_id = session.info.get(_TENANT_KEY)
    if tenant_id is None:
        return
    for obj in session.new:
        if isinstance(obj, TenantOwned):
            if obj.tenant_id is None:
                obj.tenant_id = tenant_id
            elif obj.tenant_id != tenant_id:
                raise TenantScopeError(f"cannot write a row of tenant {obj.tenant_id} from a session of tenant {tenant_id}")


# --- engines and sessions -------------------------------------------------------------------


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the retrieval process read while workers write; busy_timeout waits out writer locks.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def prepare_sqlite(url: str) -> None:
    """Create the database file of a SQLite URL empty with mode 0600 (its directory 0700) before SQLite
    does (with 0644): SQLite gives its -wal and -shm files the database file's mode. In-memory
    databases and existing files are left alone."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    create_private_file(Path(database))


def create_engine(settings: Settings, application_name: str, **kwargs: Any) -> AsyncEngine:
    """One engine per process, its pool named after the process (visible in pg_stat_activity).

    Its SQL parameters (DM and document text) never reach a log line or an error message
    (``hide_parameters``); a SQLite file it creates is private to this user (`prepare_sqlite`)."""
    url = settings.effective_database_url
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        private_dir(settings.data_dir)
        prepare_sqlite(url)
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    connect_args = kwargs.pop("connect_args", {})
    if url.startswith("postgresql+asyncpg"):
        server = connect_args.setdefault("server_settings", {})
        server["application_name"] = f"parley-{application_name}"
        # Bounded waits: a silent partition (packets dropped, no RST) fails a statement within the
        # command timeout as a connection error (retryable), not at the handler's 25-minute limit.
        connect_args.setdefault("timeout", settings.db_connect_timeout_seconds)
        connect_args.setdefault("command_timeout", settings.db_command_timeout_seconds)
        server.setdefault("statement_timeout", str(int(settings.db_command_timeout_seconds * 1000)))
        server.setdefault("idle_in_transaction_session_timeout",
                          str(int(settings.db_idle_in_transaction_timeout_seconds * 1000)))
        server.setdefault("tcp_keepalives_idle", "30")
        server.setdefault("tcp_keepalives_interval", "10")
        server.setdefault("tcp_keepalives_count", "3")
        kwargs.setdefault("pool_timeout", settings.db_connect_timeout_seconds)
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, connect_args=connect_args, **kwargs)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@contextlib.asynccontextmanager
async def unit_of_work(
    sessions: async_sessionmaker[AsyncSession], *, tenant_id: str | None = None, admin: bool = False
) -> AsyncIterator[AsyncSession]:
    """The edge's transaction: commit on success, roll back on any error."""
    async with sessions() as session:
        if tenant_id is not None:
            bind_tenant(session, tenant_id)
        elif admin:
            bind_admin(session)
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


def sync_engine_of(engine: AsyncEngine) -> Engine:
    return engine.sync_engine
