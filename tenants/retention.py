"""A tenant's retention settings: what Parley keeps of its data, and for how long.

One row per tenant that chose something (`parley retention set`, the dashboard's Privacy page);
every field left empty takes the platform default from the settings (``PARLEY_RETENTION_*``):

- ``raw_files``: ``keep`` an uploaded file after it is indexed, or ``delete`` it then (the
  document and its chunks stay and answer questions; the document says "original not kept").
- ``transcript_days``: days a conversation's messages, replies and turns are kept (0: for ever).
- ``dead_letter_days``: days a dead letter is kept.

The sweeps that apply them live with the data they remove (`bot.privacy.retention`); the document
worker reads ``raw_files`` when a document becomes indexed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from parley.db import Base, TenantOwned, TimestampMixin, bind_admin
from parley.errors import InvalidInput
from parley.repository import TenantRepository
from parley.settings import Settings

RAW_FILE_MODES = ("keep", "delete")
#: The most days any retention may be set to (about 100 years: "for ever" is 0).
MAX_DAYS = 36_500


class RetentionPolicy(TenantOwned, TimestampMixin, Base):
    __tablename__ = "retention_policy"

    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), primary_key=True)
    raw_files: Mapped[str | None] = mapped_column(String(16))  # keep / delete; None: the platform default
    transcript_days: Mapped[int | None] = mapped_column(Integer)  # 0: for ever; None: the platform default
    dead_letter_days: Mapped[int | None] = mapped_column(Integer)  # None: the platform default


@dataclass(frozen=True)
class Retention:
    """A tenant's effective retention, each value with where it came from (``tenant`` or ``default``)."""

    raw_files: str
    transcript_days: int
    dead_letter_days: int
    source: dict[str, str]

    @property
    def delete_raw_files(self) -> bool:
        return self.raw_files == "delete"

    def transcripts_cutoff(self, now: dt.datetime) -> dt.datetime | None:
        return now - dt.timedelta(days=self.transcript_days) if self.transcript_days else None

    def dead_letters_cutoff(self, now: dt.datetime) -> dt.datetime:
        return now - dt.timedelta(days=self.dead_letter_days)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> dict[str, str]:
        """Each setting as a person reads it."""
        return {
            "raw files": "deleted after indexing (only chunks kept)" if self.delete_raw_files else "kept",
            "transcripts": f"{self.transcript_days} days" if self.transcript_days else "kept for ever",
            "dead letters": f"{self.dead_letter_days} days",
        }


def defaults(settings: Settings) -> Retention:
    return Retention(settings.retention_raw_files, settings.retention_transcript_days,
                     settings.retention_dead_letter_days, {k: "default" for k in ("raw_files", "transcript_days",
                                                                                    "dead_letter_days")})


def effective(row: RetentionPolicy | None, settings: Settings) -> Retention:
    base = defaults(settings)
    if row is None:
        return base
    values = {"raw_files": base.raw_files, "transcript_days": base.transcript_days,
              "dead_letter_days": base.dead_letter_days}
    source = dict(base.source)
    for name in values:
        value = getattr(row, name)
        if value is not None:
            values[name] = value
            source[name] = "tenant"
    return Retention(source=source, **values)  # type: ignore[arg-type]


class RetentionRepository(TenantRepository[RetentionPolicy]):
    model = RetentionPolicy
    noun = "retention policy"

    async def row(self) -> RetentionPolicy | None:
        return (await self.session.execute(self.select())).scalar_one_or_none()


async def get_retention(session: AsyncSession, *, tenant_id: str, settings: Settings) -> Retention:
    return effective(await RetentionRepository(session, tenant_id).row(), settings)


async def raw_files_mode(session: AsyncSession, *, tenant_id: str, default: str) -> str:
    """``keep`` or ``delete``: what becomes of the tenant's uploaded files once indexed (the document
    worker asks; ``default`` is PARLEY_RETENTION_RAW_FILES)."""
    row = await RetentionRepository(session, tenant_id).row()
    return row.raw_files if row is not None and row.raw_files else default


_UNSET = object()


def _days(name: str, value: Any, *, allow_zero: bool) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value).strip())
        except ValueError:
            raise InvalidInput(f"{name} is a number of days, not {value!r}") from None
    low = 0 if allow_zero else 1
    if not low <= value <= MAX_DAYS:
        raise InvalidInput(f"{name} must be between {low} and {MAX_DAYS:,} days" + (" (0: keep for ever)" if allow_zero else ""))
    return value


async def set_retention(session: AsyncSession, *, tenant_id: str, settings: Settings, raw_files: Any = _UNSET,
                        transcript_days: Any = _UNSET, dead_letter_days: Any = _UNSET) -> Retention:
    """Change some of a tenant's retention settings (None: back to the platform default); the
    others stay. Bad values are an `InvalidInput` naming the setting, and nothing changes."""
    repo = RetentionRepository(session, tenant_id)
    changes: dict[str, Any] = {}
    if raw_files is not _UNSET:
        if raw_files is not None and raw_files not in RAW_FILE_MODES:
            raise InvalidInput(f"raw files are either 'keep' or 'delete', not {raw_files!r}")
        changes["raw_files"] = raw_files
    if transcript_days is not _UNSET:
        changes["transcript_days"] = _days("transcript retention", transcript_days, allow_zero=True)
    if dead_letter_days is not _UNSET:
        changes["dead_letter_days"] = _days("dead-letter retention", dead_letter_days, allow_zero=False)
    row = await repo.row()
    if row is None:
        row = repo.add(RetentionPolicy())
    for name, value in changes.items():
        setattr(row, name, value)
    await session.flush()
    return effective(row, settings)


async def all_policies(session: AsyncSession, settings: Settings) -> dict[str, Retention]:
    """Every tenant's effective retention that differs from none (tenants without a row use the
    defaults): tenant id -> `Retention`. For the sweeps, in an admin session."""
    from tenants.models import Tenant

    bind_admin(session)
    rows = {r.tenant_id: r for r in (await session.execute(select(RetentionPolicy))).scalars()}
    tenant_ids = list((await session.execute(select(Tenant.id))).scalars())
    return {t: effective(rows.get(t), settings) for t in tenant_ids}
