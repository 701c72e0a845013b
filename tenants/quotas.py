"""Plans and quotas: a tenant's limits and the atomic counting of what it uses.

Limits come from the settings (``PARLEY_PLAN_MAX_*``, :class:`PlanDefaults`) unless the tenant's
plan (``tenant_plan``, `parley plans set`) overrides them; ``0`` is unlimited, a null override is
the default.

Counting is never a read-then-check. :func:`consume` makes sure the tenant's ``tenant_usage`` row
exists (an insert-or-ignore), locks it (``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite the
insert took the database's write lock, which serialises every writer), checks every positive
change against its limit and applies them all, in the caller's unit of work: the action and its
count commit together or not at all. A refusal raises `QuotaExceeded` before anything changes.
Releases (a deleted document, a removed product) are the same call with negative changes, which
never refuse. A change that takes the place of something (a new version of a document) is
checked by its net change, so a tenant at its limit can still replace a file.

Stored resources count exactly what is stored (`knowledge.usage.recount` recomputes them), rates
count within their UTC period (``day``/``month``/``hour`` beside the counter) and start again at
zero in a new one. A question is counted once per message (:func:`charge_question`: a
``quota_charge`` row keyed by the message, inserted with the count), so a redelivery or a
recovered answer counts nothing twice.

A refusal is announced once per resource per hour per tenant as a ``quota.exceeded`` tenant event
(:func:`note_refusal`), in a unit of work of its own: the refused action's is rolled back.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.bus.contracts import stage_event
from parley.db import unit_of_work, utcnow
from parley.errors import InvalidInput, QuotaExceeded
from parley.settings import Settings
from tenants.quota_models import QuotaCharge, TenantPlan, TenantUsage

__all__ = ["QuotaExceeded", "PlanDefaults", "RESOURCES", "consume", "release", "charge_question", "note_refusal",
           "limits_for", "usage_report", "set_plan", "clear_plan", "parse_limit", "set_stored"]

log = logging.getLogger("parley.quotas")

#: Largest limit taken: counts up to 10^12, bytes up to 2^60 (the settings' bounds too).
MAX_COUNT = 10**12
MAX_BYTES = 2**60


@dataclass(frozen=True)
class Resource:
    name: str  # the resource in errors, events and the API: "documents"
    counter: str  # the TenantUsage column
    period: str | None = None  # "day" / "month" / "hour": a rate
    label: str = ""  # for people: "documents", "stored bytes"

    @property
    def limit_field(self) -> str:
        return f"max_{self.name}"

    @property
    def rate(self) -> bool:
        return self.period is not None

    @property
    def bytes(self) -> bool:
        return self.name == "stored_bytes"


RESOURCES: dict[str, Resource] = {r.name: r for r in (
    Resource("documents", "documents", label="documents"),
    Resource("stored_bytes", "blob_bytes", label="stored files"),
    Resource("chunks", "chunks", label="indexed sections"),
    Resource("products", "products", label="catalog products"),
    Resource("questions_per_day", "questions_day", "day", label="questions today"),
    Resource("questions_per_month", "questions_month", "month", label="questions this month"),
    Resource("uploads_per_hour", "uploads_hour", "hour", label="uploads this hour"),
)}
LIMIT_FIELDS = tuple(r.limit_field for r in RESOURCES.values())


def _setting_default(name: str) -> int:
    return int(Settings.model_fields[f"plan_{name}"].default)


@dataclass(frozen=True)
class PlanDefaults:
    """The limits of a tenant without its own (``PARLEY_PLAN_MAX_*``); 0 is unlimited. Built from
    the settings by each process (:meth:`from_settings`); the bare constructor holds the settings'
    own defaults."""

    max_documents: int = _setting_default("max_documents")
    max_stored_bytes: int = _setting_default("max_stored_bytes")
    max_chunks: int = _setting_default("max_chunks")
    max_products: int = _setting_default("max_products")
    max_questions_per_day: int = _setting_default("max_questions_per_day")
    max_questions_per_month: int = _setting_default("max_questions_per_month")
    max_uploads_per_hour: int = _setting_default("max_uploads_per_hour")

    @classmethod
    def from_settings(cls, settings: Settings) -> PlanDefaults:
        return cls(**{f: getattr(settings, f"plan_{f}") for f in LIMIT_FIELDS})


# --- periods ---------------------------------------------------------------------------------

def periods(now: dt.datetime) -> dict[str, str]:
    now = now.astimezone(dt.UTC)
    return {"day": now.strftime("%Y-%m-%d"), "month": now.strftime("%Y-%m"), "hour": now.strftime("%Y-%m-%dT%H")}


def seconds_to_next(period: str, now: dt.datetime) -> float:
    now = now.astimezone(dt.UTC)
    if period == "hour":
        start = now.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    elif period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0) + dt.timedelta(days=1)
    else:
        first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        start = (first + dt.timedelta(days=32)).replace(day=1)
    return max(1.0, (start - now).total_seconds())


# --- limits ----------------------------------------------------------------------------------

def parse_limit(name: str, value: Any) -> int:
    """A limit a person gave: a whole number from 0 (unlimited) up to the largest taken; bytes may
    carry a unit (``500MB``, ``2GiB``). `InvalidInput` with the reason otherwise."""
    resource = RESOURCES.get(name.removeprefix("max_"))
    if resource is None:
        raise InvalidInput(f"unknown limit {name!r}; the limits are {', '.join(LIMIT_FIELDS)}")
    text = str(value).strip().replace("_", "").replace(",", "")
    factor = 1
    if resource.bytes:
        # 1024-based, as every size Parley shows ("2 GB" is what `plans show` prints for 2GB)
        units = {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4, "kb": 1024, "mb": 1024**2,
                 "gb": 1024**3, "tb": 1024**4, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "b": 1}
        lowered = text.lower()
        for unit in sorted(units, key=len, reverse=True):
            if lowered.endswith(unit) and lowered[: -len(unit)].strip():
                text, factor = lowered[: -len(unit)].strip(), units[unit]
                break
    try:
        number = int(text) * factor
    except ValueError:
        what = "a whole number of bytes (units: KB, MB, GB, KiB, MiB, GiB)" if resource.bytes else "a whole number"
        raise InvalidInput(f"{resource.limit_field} must be {what}, not {value!r}") from None
    top = MAX_BYTES if resource.bytes else MAX_COUNT
    if number < 0:
        raise InvalidInput(f"{resource.limit_field} cannot be negative ({value}); use 0 for unlimited")
    if number > top:
        raise InvalidInput(f"{resource.limit_field} {value} is beyond any real plan (at most {top:,}); use 0 for unlimited")
    return number


async def plan_of(session: AsyncSession, tenant_id: str) -> TenantPlan | None:
    return (await session.execute(select(TenantPlan).where(TenantPlan.tenant_id == tenant_id))).scalar_one_or_none()


async def limits_for(session: AsyncSession, tenant_id: str, defaults: PlanDefaults) -> dict[str, int | None]:
    """resource name -> its limit for this tenant, None when unlimited."""
    plan = await plan_of(session, tenant_id)
    out: dict[str, int | None] = {}
    for resource in RESOURCES.values():
        own = getattr(plan, resource.limit_field) if plan is not None else None
        value = own if own is not None else getattr(defaults, resource.limit_field)
        out[resource.name] = value or None
    return out


async def set_plan(session: AsyncSession, *, tenant_id: str, limits: Mapping[str, Any], name: str | None = None,
                   clear: bool = False) -> TenantPlan:
    """Set (or with ``clear`` reset to the defaults) the tenant's own limits. ``limits``: limit field
    -> value (0 unlimited, None back to the default), each checked before anything is written."""
    checked = {field: (None if value is None else parse_limit(field, value)) for field, value in limits.items()}
    if name is not None and len(name) > 32:
        raise InvalidInput("a plan name has at most 32 characters")
    plan = await plan_of(session, tenant_id)
    if plan is None:
        plan = TenantPlan(tenant_id=tenant_id)
        session.add(plan)
    if clear:
        for field in LIMIT_FIELDS:
            setattr(plan, field, None)
        plan.name = None
    for field, value in checked.items():
        setattr(plan, f"max_{field.removeprefix('max_')}", value)
    if name is not None:
        plan.name = name or None
    plan.updated_at = utcnow()
    await session.flush()
    return plan


async def clear_plan(session: AsyncSession, *, tenant_id: str) -> TenantPlan:
    return await set_plan(session, tenant_id=tenant_id, limits={}, clear=True)


# --- the counters ----------------------------------------------------------------------------

def _insert_ignore(session: AsyncSession, table: Any, values: dict[str, Any], index: list[str]) -> Any:
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    builder = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return builder(table).values(**values).on_conflict_do_nothing(index_elements=index)


async def lock_usage(session: AsyncSession, tenant_id: str, *, now: dt.datetime | None = None) -> TenantUsage:
    """The tenant's usage row, created if missing and locked until the caller's transaction ends;
    a rate whose period has passed starts again at zero."""
    now = now or utcnow()
    await session.execute(_insert_ignore(session, TenantUsage, {
        "tenant_id": tenant_id, "documents": 0, "blob_bytes": 0, "chunks": 0, "products": 0, "questions_day": 0,
        "day": "", "questions_month": 0, "month": "", "uploads_hour": 0, "hour": "", "updated_at": now,
    }, ["tenant_id"]))
    stmt = (select(TenantUsage).where(TenantUsage.tenant_id == tenant_id).with_for_update()
            .execution_options(populate_existing=True))
    usage = (await session.execute(stmt)).scalar_one()
    current = periods(now)
    for resource in RESOURCES.values():
        if resource.period and getattr(usage, resource.period) != current[resource.period]:
            setattr(usage, resource.period, current[resource.period])
            setattr(usage, resource.counter, 0)
    return usage


async def consume(session: AsyncSession, *, tenant_id: str, defaults: PlanDefaults, now: dt.datetime | None = None,
                  what: str = "", credit: Mapping[str, int] | None = None, **changes: int) -> TenantUsage:
    """Apply ``changes`` (resource name -> change; questions=1 counts one for the day and the month)
    to the tenant's locked usage row, in the caller's unit of work. Any positive change that would
    pass its limit raises `QuotaExceeded` (naming the first one) and changes nothing. ``credit``:
    what the action frees later (the version a new one replaces once indexed), taken off for the
    check only. ``what`` names the thing asked for in the refusal ("report.pdf")."""
    now = now or utcnow()
    deltas = _deltas(changes)
    usage = await lock_usage(session, tenant_id, now=now)
    _check(usage, deltas, await limits_for(session, tenant_id, defaults) if any(d > 0 for d in deltas.values()) else {},
           credit=credit, what=what, now=now)
    for name, delta in deltas.items():
        resource = RESOURCES[name]
        value = int(getattr(usage, resource.counter)) + delta
        if value < 0:  # drift from before counting existed (or a bug): never below nothing; recount repairs
            log.warning("usage counter went below zero", extra={"tenant_id": tenant_id, "resource": name})
            value = 0
        setattr(usage, resource.counter, value)
    usage.updated_at = now
    await session.flush()
    return usage


def _check(usage: TenantUsage | None, deltas: Mapping[str, int], limits: Mapping[str, int | None], *,
           credit: Mapping[str, int] | None, what: str, now: dt.datetime) -> None:
    current = periods(now)
    for name, delta in deltas.items():
        resource = RESOURCES[name]
        used = int(getattr(usage, resource.counter)) if usage is not None else 0
        if usage is not None and resource.period and getattr(usage, resource.period) != current[resource.period]:
            used = 0
        limit = limits.get(name)
        if delta > 0 and limit is not None and used + delta - (credit or {}).get(name, 0) > limit:
            raise refusal(resource, limit=limit, used=used, requested=delta, what=what, now=now)


async def check(session: AsyncSession, *, tenant_id: str, defaults: PlanDefaults, now: dt.datetime | None = None,
                what: str = "", credit: Mapping[str, int] | None = None, **changes: int) -> None:
    """`consume`'s refusal without locking or writing anything: the early check before expensive
    work (embedding a document), which `consume` repeats, locked, when the work is written."""
    now = now or utcnow()
    deltas = _deltas(changes)
    if not any(d > 0 for d in deltas.values()):
        return
    usage = (await session.execute(select(TenantUsage).where(TenantUsage.tenant_id == tenant_id))).scalar_one_or_none()
    _check(usage, deltas, await limits_for(session, tenant_id, defaults), credit=credit, what=what, now=now)


async def room(session: AsyncSession, *, tenant_id: str, defaults: PlanDefaults, resource: str,
               lock: bool = False) -> int | None:
    """How much of a stored resource may still be added (None: unlimited); ``lock`` locks the row."""
    limit = (await limits_for(session, tenant_id, defaults))[resource]
    if limit is None:
        return None
    if lock:
        usage: TenantUsage | None = await lock_usage(session, tenant_id)
    else:
        usage = (await session.execute(select(TenantUsage).where(TenantUsage.tenant_id == tenant_id))).scalar_one_or_none()
    used = int(getattr(usage, RESOURCES[resource].counter)) if usage is not None else 0
    return max(0, limit - used)


def resource_in(text: str) -> str:
    """Which resource a refusal's text is about (a dead-lettered document keeps only the text)."""
    for name, marker in (("chunks", "indexed sections"), ("stored_bytes", "stored files"), ("products", "catalog products"),
                         ("uploads_per_hour", "uploads an hour"), ("questions_per_day", "questions a day"),
                         ("questions_per_month", "questions a month")):
        if marker in text:
            return name
    return "documents"


async def release(session: AsyncSession, *, tenant_id: str, now: dt.datetime | None = None, **changes: int) -> None:
    """Give back stored resources (a deleted document: documents=1, stored_bytes=n, chunks=k)."""
    if any(v < 0 for v in changes.values()):
        raise ValueError("release takes what is given back, as positive numbers")
    if any(changes.values()):
        await consume(session, tenant_id=tenant_id, defaults=PlanDefaults(), now=now,
                      **{k: -v for k, v in changes.items()})


def _deltas(changes: Mapping[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, value in changes.items():
        if not value:
            continue
        if name == "questions":
            out["questions_per_day"] = out.get("questions_per_day", 0) + value
            out["questions_per_month"] = out.get("questions_per_month", 0) + value
        elif name == "uploads":
            out["uploads_per_hour"] = out.get("uploads_per_hour", 0) + value
        elif name in RESOURCES:
            out[name] = out.get(name, 0) + value
        else:
            raise ValueError(f"unknown quota resource {name!r}")
    return out


async def set_stored(session: AsyncSession, *, tenant_id: str, documents: int, stored_bytes: int, chunks: int,
                     products: int) -> dict[str, tuple[int, int]]:
    """Write what is stored into the locked counters (`knowledge.usage.recount`); returns
    resource -> (counted before, stored) for those that had drifted."""
    usage = await lock_usage(session, tenant_id)
    drift: dict[str, tuple[int, int]] = {}
    for name, value in (("documents", documents), ("stored_bytes", stored_bytes), ("chunks", chunks),
                        ("products", products)):
        counter = RESOURCES[name].counter
        before = int(getattr(usage, counter))
        if before != value:
            drift[name] = (before, value)
            setattr(usage, counter, value)
    usage.updated_at = utcnow()
    await session.flush()
    return drift


async def charge_question(session: AsyncSession, *, tenant_id: str, defaults: PlanDefaults, key: str,
                          now: dt.datetime | None = None) -> bool:
    """Count one question (for the day and the month) unless this ``key`` (its message) was counted
    already; False for a repeat. Refuses with `QuotaExceeded` when the plan's questions are used up."""
    inserted = await session.execute(_insert_ignore(session, QuotaCharge, {
        "tenant_id": tenant_id, "kind": "question", "key": key[:128], "at": now or utcnow()},
        ["tenant_id", "kind", "key"]))
    if not inserted.rowcount:
        return False
    await consume(session, tenant_id=tenant_id, defaults=defaults, now=now, questions=1)
    return True


# --- refusals --------------------------------------------------------------------------------

def amount(resource: Resource | str, n: int) -> str:
    resource = RESOURCES[resource] if isinstance(resource, str) else resource
    if resource.bytes:
        return human_bytes(n)
    return f"{n:,}"


def human_bytes(n: int) -> str:
    for unit, size in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= size:
            value = n / size
            return f"{value:.1f} {unit}".replace(".0 ", " ")
    return f"{n:,} bytes"


def refusal(resource: Resource, *, limit: int, used: int, requested: int, what: str = "",
            now: dt.datetime | None = None) -> QuotaExceeded:
    """The refusal a person reads, naming the limit and the use ("This workspace's plan allows 500
    documents; 498 are stored. Remove some or upgrade.")."""
    plan = "This workspace's plan allows"
    name = resource.name
    if name == "documents":
        extra = f", and {what or 'this upload'} would add {requested:,}" if requested > 1 else ""
        text = f"{plan} {limit:,} documents; {used:,} are stored{extra}. Remove some or upgrade."
    elif name == "stored_bytes":
        text = (f"{plan} {human_bytes(limit)} of stored files; {human_bytes(used)} are stored, and "
                f"{what or 'this upload'} would add {human_bytes(requested)}. Remove some documents or upgrade.")
    elif name == "chunks":
        text = (f"{plan} {limit:,} indexed sections; {used:,} are indexed, and {what or 'this document'} would add "
                f"{requested:,}. Remove some documents or upgrade.")
    elif name == "products":
        text = (f"{plan} {limit:,} catalog products; {used:,} are indexed. Remove some products from the catalog "
                "or upgrade.")
    elif name == "questions_per_day":
        text = (f"{plan} {limit:,} questions a day, and today's {used:,} are used up. "
                "Please ask again tomorrow (the count starts again at midnight UTC).")
    elif name == "questions_per_month":
        text = (f"{plan} {limit:,} questions a month, and this month's {used:,} are used up. "
                "Please ask again next month, or ask the team that runs this workspace to upgrade.")
    else:
        text = (f"{plan} {limit:,} uploads an hour; {used:,} were made this hour. "
                "Try again after the hour, or upgrade.")
    return QuotaExceeded(text, resource=name, limit=limit, used=used, requested=requested, rate=resource.rate,
                         retry_after=seconds_to_next(resource.period, now or utcnow()) if resource.period else None)


async def note_refusal_in(session: AsyncSession, *, tenant_id: str, exc: QuotaExceeded | None = None,
                          resource: str | None = None, now: dt.datetime | None = None,
                          data: Mapping[str, Any] | None = None) -> bool:
    """Stage ``quota.exceeded`` in this unit of work, at most once per resource per hour per tenant
    (an insert-or-ignore on the hour's charge). True when this call staged it."""
    now = now or utcnow()
    name = exc.resource if exc is not None else (resource or "")
    hour = periods(now)["hour"]
    inserted = await session.execute(_insert_ignore(session, QuotaCharge, {
        "tenant_id": tenant_id, "kind": f"alert:{name}"[:32], "key": hour, "at": now}, ["tenant_id", "kind", "key"]))
    if not inserted.rowcount:
        return False
    # Yesterday's alert charges are spent: keep the table as small as the hours it needs.
    await session.execute(delete(QuotaCharge).where(
        QuotaCharge.tenant_id == tenant_id, QuotaCharge.kind.like("alert:%"),
        QuotaCharge.at < now - dt.timedelta(days=2)).execution_options(synchronize_session=False))
    payload: dict[str, Any] = {"resource": name, **(exc.body() if exc is not None else {}), **(data or {})}
    stage_event(session, tenant_id=tenant_id, event_type="quota.exceeded", data=payload,
                idempotency_key=f"quota.exceeded:{tenant_id}:{name}:{hour}")
    return True


async def note_refusal(sessions: async_sessionmaker[AsyncSession], *, tenant_id: str, exc: QuotaExceeded,
                       now: dt.datetime | None = None) -> bool:
    """`note_refusal_in` in a unit of work of its own (the refused action's was rolled back). Never
    raises: the refusal itself is what the person must get."""
    try:
        async with unit_of_work(sessions, tenant_id=tenant_id) as session:
            return await note_refusal_in(session, tenant_id=tenant_id, exc=exc, now=now)
    except Exception:
        log.warning("could not record the quota refusal event", exc_info=True)
        return False


# --- reading ---------------------------------------------------------------------------------

async def usage_report(session: AsyncSession, *, tenant_id: str, defaults: PlanDefaults,
                       now: dt.datetime | None = None) -> dict[str, Any]:
    """Usage against limits for people and the API: ``{"plan": name, "resources": [{"resource",
    "label", "used", "limit" (None: unlimited), "default" (the limit is the settings'), "rate",
    "period"}, ...]}``; a rate of a past period shows 0."""
    now = now or utcnow()
    usage = (await session.execute(select(TenantUsage).where(TenantUsage.tenant_id == tenant_id))).scalar_one_or_none()
    plan = await plan_of(session, tenant_id)
    limits = await limits_for(session, tenant_id, defaults)
    current = periods(now)
    rows = []
    for resource in RESOURCES.values():
        used = int(getattr(usage, resource.counter)) if usage is not None else 0
        if usage is not None and resource.period and getattr(usage, resource.period) != current[resource.period]:
            used = 0
        own = getattr(plan, resource.limit_field) if plan is not None else None
        rows.append({"resource": resource.name, "label": resource.label, "used": used, "limit": limits[resource.name],
                     "default": own is None, "rate": resource.rate, "period": resource.period,
                     "bytes": resource.bytes})
    return {"tenant_id": tenant_id, "plan": plan.name if plan is not None else None, "resources": rows}


def bar(used: int, limit: int | None, width: int = 20) -> str:
    """'[########------------]  40%' (unlimited: no bar)."""
    if not limit:
        return "unlimited"
    share = min(1.0, used / limit)
    filled = round(share * width)
    return f"[{'#' * filled}{'-' * (width - filled)}] {used / limit:4.0%}"


def replace_defaults(defaults: PlanDefaults, **changes: int) -> PlanDefaults:
    return dataclasses.replace(defaults, **changes)
