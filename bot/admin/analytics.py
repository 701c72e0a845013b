"""The dashboard's "Analytics" page: the tenant's figures over a window, and its to-do list as CSV.

    GET /admin/api/analytics[?since=7d]       the report (`bot.analytics.schemas.AnalyticsReport` as JSON,
                                              with the definition of every figure)
    GET /admin/api/analytics.csv[?since=7d]   the to-do list, one row per question (`bot.analytics.service.CSV_COLUMNS`)

``since`` is what `parley analytics --since` takes (7d, 24h, 2026-11-01; default 30 days); a value
that is neither is a 400 saying what is accepted.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bot.analytics.service import build_report, parse_since, report_csv, report_json
from bot.context import GATEWAY
from bot.http import TENANT
from parley.db import unit_of_work


async def _report(request: web.Request) -> Any:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    window = parse_since(request.query.get("since"))
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        return await build_report(session, tenant_id=tenant_id, window=window)


async def analytics(request: web.Request) -> web.Response:
    return web.json_response(report_json(await _report(request)))


async def analytics_csv(request: web.Request) -> web.Response:
    report = await _report(request)
    name = f"parley-todo-{report.window.since.date().isoformat()}-to-{report.window.until.date().isoformat()}.csv"
    return web.Response(text=report_csv(report), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


API: list[tuple[str, str, Any]] = [
    ("GET", "analytics", analytics),
    ("GET", "analytics.csv", analytics_csv),
]
