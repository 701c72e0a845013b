"""Outbound webhooks over HTTP: the dashboard's "Webhooks" page and the tenant API.

The same handlers serve ``/admin/api/webhooks…`` (session cookie + CSRF, `bot.admin.routes`) and
``/api/v1/webhooks…`` (the tenant's API key as ``Authorization: Bearer``, `bot.channels.web.routes`):

    GET    webhooks                        the tenant's endpoints (no secrets), the event types
    POST   webhooks                        {"url", "events": [...] | "a,b" | "all", "description"?}
                                           -> 201 the endpoint and its "secret" (shown this once)
    GET    webhooks/{id}                   one endpoint and its delivery log (?status=&limit=)
    PATCH  webhooks/{id}                   {"events"?, "description"?}
    DELETE webhooks/{id}                   the endpoint and its log
    POST   webhooks/{id}/rotate            {"overlap_hours"?} -> the new "secret" (shown once); the old one
                                           signs beside it until the overlap ends
    POST   webhooks/{id}/enable, /disable  (enable clears a disable for failing and the failure streak)
    POST   webhooks/{id}/test              queue a signed ``webhook.test`` delivery (202)

Ids may be a unique prefix. A URL that is not https or resolves to a private address is a 400
``webhook_url_rejected`` saying why (checked off the event loop: it resolves the host).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from aiohttp import web

from bot.context import GATEWAY
from bot.http import TENANT, read_json
from parley.bus.contracts import EVENT_TYPES
from parley.db import unit_of_work
from parley.errors import InvalidInput
from webhooks import service
from webhooks.urls import check_url


def _when(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def endpoint_json(endpoint: Any) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "description": endpoint.description,
        "events": list(endpoint.event_types or []),
        "enabled": bool(endpoint.enabled),
        "disabled_reason": endpoint.disabled_reason,
        "disabled_at": _when(endpoint.disabled_at),
        "failing_since": _when(endpoint.failing_since),
        "previous_secret_until": _when(endpoint.previous_secret_expires_at),
        "created_at": _when(endpoint.created_at),
    }


def delivery_json(delivery: Any) -> dict[str, Any]:
    return {
        "webhook_id": delivery.id,
        "event_type": delivery.event_type,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "response_excerpt": delivery.response_excerpt,
        "history": list((delivery.details or {}).get("history", [])),
        "created_at": _when(delivery.created_at),
        "last_attempt_at": _when(delivery.last_attempt_at),
        "next_attempt_at": _when(delivery.next_attempt_at),
        "delivered_at": _when(delivery.delivered_at),
    }


def _events(data: dict[str, Any]) -> Any:
    value = data.get("events")
    if value is None:
        return None
    if not isinstance(value, (str, list)) or (isinstance(value, list) and not all(isinstance(v, str) for v in value)):
        raise InvalidInput(f"'events' is a list of event types ({', '.join(EVENT_TYPES)}) or 'all'")
    return value


async def list_endpoints(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        rows = await service.list_endpoints(session, tenant_id=tenant_id)
    return web.json_response({"endpoints": [endpoint_json(e) for e in rows], "event_types": list(EVENT_TYPES)})


async def create_endpoint(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    data = await read_json(request)
    url = data.get("url")
    if not isinstance(url, str):
        raise InvalidInput("send the endpoint's 'url' (https://...) and its 'events'")
    allow_private = gw.settings.webhooks_allow_private
    checked = await asyncio.to_thread(check_url, url, allow_private=allow_private)  # DNS: off the event loop
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        endpoint, secret = await service.create_endpoint(
            session, tenant_id=tenant_id, url=checked, event_types=_events(data), box=gw.box,
            allow_private=True,  # checked just above, with the platform's setting
            description=str(data.get("description") or ""))
    return web.json_response({**endpoint_json(endpoint), "secret": secret}, status=201)


async def get_endpoint(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    status = request.query.get("status") or None
    if status is not None and status not in ("pending", "delivered", "failed", "dead"):
        raise InvalidInput("status is one of pending, delivered, failed, dead")
    try:
        limit = max(1, min(500, int(request.query.get("limit", "50"))))
    except ValueError:
        raise InvalidInput("limit is a whole number (1-500)") from None
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        endpoint, rows = await service.list_deliveries(session, tenant_id=tenant_id, ref=request.match_info["id"],
                                                       limit=limit, status=status)
    return web.json_response({"endpoint": endpoint_json(endpoint), "deliveries": [delivery_json(d) for d in rows]})


async def update_endpoint(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    data = await read_json(request)
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise InvalidInput("'description' is text")
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        endpoint = await service.update_endpoint(session, tenant_id=tenant_id, ref=request.match_info["id"],
                                                 event_types=_events(data), description=description)
    return web.json_response(endpoint_json(endpoint))


async def remove_endpoint(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        endpoint = await service.remove_endpoint(session, tenant_id=tenant_id, ref=request.match_info["id"])
    return web.json_response({"id": endpoint.id, "removed": True})


async def rotate_secret(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    data = await read_json(request) if request.can_read_body else {}
    hours = data.get("overlap_hours", gw.settings.webhooks_secret_overlap_hours)
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not 0 <= hours <= 24 * 30:
        raise InvalidInput("'overlap_hours' is a number of hours between 0 and 720")
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        endpoint, secret = await service.rotate_secret(session, tenant_id=tenant_id, ref=request.match_info["id"],
                                                       box=gw.box, overlap=dt.timedelta(hours=float(hours)))
    return web.json_response({**endpoint_json(endpoint), "secret": secret})


def _toggle(enabled: bool) -> Any:
    async def handler(request: web.Request) -> web.Response:
        gw, tenant_id = request.app[GATEWAY], request[TENANT]
        async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
            endpoint = await service.set_enabled(session, tenant_id=tenant_id, ref=request.match_info["id"],
                                                 enabled=enabled)
        return web.json_response(endpoint_json(endpoint))
    return handler


async def send_test(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        delivery = await service.send_test(session, tenant_id=tenant_id, ref=request.match_info["id"])
    return web.json_response(delivery_json(delivery), status=202)


#: (method, path under the API root, handler): mounted at /admin/api/ and /api/v1/.
API: list[tuple[str, str, Any]] = [
    ("GET", "webhooks", list_endpoints),
    ("POST", "webhooks", create_endpoint),
    ("GET", "webhooks/{id}", get_endpoint),
    ("PATCH", "webhooks/{id}", update_endpoint),
    ("DELETE", "webhooks/{id}", remove_endpoint),
    ("POST", "webhooks/{id}/rotate", rotate_secret),
    ("POST", "webhooks/{id}/enable", _toggle(True)),
    ("POST", "webhooks/{id}/disable", _toggle(False)),
    ("POST", "webhooks/{id}/test", send_test),
]
