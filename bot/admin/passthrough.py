"""The dashboard's Pass-through page API (`bot.channels.web.process` is the API it describes).

    GET  /admin/api/passthrough              the tenant's API upload mode, its endpoints subscribed to
                                             process.completed, and its recent requests (metadata only)
    POST /admin/api/passthrough/api-uploads  {"mode": "index" | "pass-through"}
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bot.context import GATEWAY
from bot.http import TENANT, read_json
from parley.db import unit_of_work
from passthrough import service
from passthrough.repository import ProcessRequestRepository
from passthrough.schemas import EVENT_TYPE, status_json

MEANING = {
    service.INDEX: "Files sent to POST /api/documents are added to the knowledge base (the default).",
    service.PASS_THROUGH: "POST /api/documents is refused (403 pass_through_only); files go through POST /api/v1/process, "
                          "which delivers their chunks and vectors to your webhook and keeps nothing.",
}


async def _state(gw: Any, tenant_id: str) -> dict[str, Any]:
    from webhooks.service import list_endpoints

    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        mode = await service.api_upload_mode(session, tenant_id=tenant_id)
        rows = await ProcessRequestRepository(session, tenant_id).recent(limit=50)
        endpoints = [{"id": e.id, "url": e.url, "enabled": e.enabled}
                     for e in await list_endpoints(session, tenant_id=tenant_id) if EVENT_TYPE in (e.event_types or [])]
    return {"api_uploads": mode, "meaning": MEANING[mode], "modes": [{"mode": m, "meaning": MEANING[m]} for m in MEANING],
            "endpoints": endpoints, "requests": [status_json(r) for r in rows],
            "max_bytes": gw.settings.process_max_bytes}


async def show(request: web.Request) -> web.Response:
    return web.json_response(await _state(request.app[GATEWAY], request[TENANT]))


async def set_mode(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    data = await read_json(request)
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        await service.set_api_upload_mode(session, tenant_id=tenant_id, mode=str(data.get("mode") or ""))
    return web.json_response(await _state(gw, tenant_id))


API: list[tuple[str, str, Any]] = [
    ("GET", "passthrough", show),
    ("POST", "passthrough/api-uploads", set_mode),
]
