"""The dashboard's "Plan & usage" page API: what the tenant uses against its plan's limits.

    GET  /admin/api/usage    {"plan", "resources": [{"resource", "label", "used", "limit" (null:
                             unlimited), "share" (0-1, null when unlimited), "default", "rate",
                             "period", "bytes"}, ...], "change": how the limits are changed}

The limits are the platform's to set (`parley plans set`): a tenant's own key does not lift its
own plan, so the page shows them and says who changes them.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bot.context import GATEWAY
from bot.http import TENANT
from parley.db import unit_of_work
from tenants.quotas import usage_report

CHANGE = ("Limits are set by the team that runs this Parley (`parley plans set --tenant NAME ...`); "
          "\"default\" ones follow the platform's settings (PARLEY_PLAN_MAX_*).")


async def show(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        report = await usage_report(session, tenant_id=tenant_id, defaults=gw.intake.plan)
    for row in report["resources"]:
        row["share"] = None if not row["limit"] else min(1.0, row["used"] / row["limit"])
    return web.json_response({**report, "change": CHANGE})


API: list[tuple[str, str, Any]] = [
    ("GET", "usage", show),
]
