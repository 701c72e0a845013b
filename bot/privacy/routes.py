"""The HTTP edge of privacy: the erasure API call and the dashboard's Privacy page API.

    POST /api/v1/erasure                 (a tenant admin API key) {"customer": "slack:U123", "dry_run": false}
                                         -> the erasure report (`bot.privacy.erasure.ErasureReport.to_json`)
    GET  /admin/api/retention            the tenant's retention settings, each with where it comes from
    POST /admin/api/retention            {"raw_files": "keep"|"delete"|null, "transcript_days": n|null,
                                          "dead_letter_days": n|null}: change the ones sent (null: the default)
    POST /admin/api/erasure              as the API call, from the dashboard (a dry run first shows what goes)

The gateway has no vector index of its own: on the embedded index the documents' vectors are
removed in the erasure's own transaction; with Weaviate the document worker removes them once the
erasure commits (``document.deleted``). Everything else is gone when the response is sent.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bot.context import GATEWAY, METRICS
from bot.http import TENANT, read_json, require_api_key
from bot.privacy.erasure import Customer, drop_vector_snapshot, erase_customer, vectors_for
from parley.db import unit_of_work
from parley.errors import InvalidInput
from tenants.retention import get_retention, set_retention


def _flag(data: dict[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"'{name}' is true or false")
    return value


async def erasure(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    data = await read_json(request)
    who = Customer.parse(str(data.get("customer") or ""))
    dry_run = _flag(data, "dry_run")
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        report = await erase_customer(session, tenant_id=tenant_id, customer=who, index=vectors_for(gw.settings),
                                      blobs=gw.blobs, dry_run=dry_run)
    drop_vector_snapshot(gw.settings, tenant_id, report)
    if not dry_run:
        request.app[METRICS].erasures.labels("dashboard" if request.path.startswith("/admin/") else "api").inc()
    return web.json_response(report.to_json())


async def retention_show(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        value = await get_retention(session, tenant_id=tenant_id, settings=gw.settings)
    return web.json_response({**value.to_json(), "meaning": value.describe()})


async def retention_change(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    data = await read_json(request)
    known = {"raw_files", "transcript_days", "dead_letter_days"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidInput(f"unknown setting {unknown[0]!r}: send raw_files, transcript_days or dead_letter_days")
    if not data:
        raise InvalidInput("send at least one of raw_files, transcript_days, dead_letter_days")
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        value = await set_retention(session, tenant_id=tenant_id, settings=gw.settings,
                                    **{k: data[k] for k in known if k in data})
    return web.json_response({**value.to_json(), "meaning": value.describe()})


#: The dashboard's routes under /admin/api/ (registered by `bot.admin.routes` behind the session guard).
API: list[tuple[str, str, Any]] = [
    ("GET", "retention", retention_show),
    ("POST", "retention", retention_change),
    ("POST", "erasure", erasure),
]


def setup_privacy_routes(app: web.Application) -> None:
    auth = require_api_key(lambda request: request.app[GATEWAY].sessions, lambda request: request.app[GATEWAY].limits)
    app.router.add_post("/api/v1/erasure", auth(erasure))
