"""The dashboard's "Web chat widget" section: the tenant's widgets, the snippet to copy, their sites.

    GET  /admin/api/widgets                   the tenant's widgets, each with its <script> snippet
    POST /admin/api/widgets                   {"origins": [...], "name"?} -> a new widget (201)
    POST /admin/api/widgets/{id}/origins      {"origins": [...]} -> the sites that may show it
    POST /admin/api/widgets/{id}/revoke       switch it off (its frame and sessions stop at once)

What a widget is and how its visitors sign in: `tenants.widgets`, `bot.channels.web.widget`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bot.channels.web.widget import widget_info
from bot.context import GATEWAY
from bot.http import TENANT, read_json
from parley.db import unit_of_work
from parley.errors import InvalidInput
from tenants import widgets


def _origins(data: dict[str, Any]) -> list[str]:
    value = data.get("origins")
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput("'origins' is a list of sites (https://shop.example) that may show the widget")
    return value


async def list_widgets(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        rows = await widgets.list_widgets(session, tenant_id=tenant_id)
    return web.json_response({"widgets": [widget_info(gw.config.public_url, w) for w in rows]})


async def create_widget(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    data = await read_json(request)
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        widget = await widgets.create_widget(session, tenant_id=tenant_id, origins=_origins(data),
                                             name=str(data.get("name") or "")[:255])
    return web.json_response(widget_info(gw.config.public_url, widget), status=201)


async def set_origins(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    data = await read_json(request)
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        widget = await widgets.set_origins(session, tenant_id=tenant_id, widget_id=request.match_info["id"],
                                           origins=_origins(data))
    return web.json_response(widget_info(gw.config.public_url, widget))


async def revoke_widget(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        widget = await widgets.revoke_widget(session, tenant_id=tenant_id, widget_id=request.match_info["id"])
    return web.json_response(widget_info(gw.config.public_url, widget))


API: list[tuple[str, str, Any]] = [
    ("GET", "widgets", list_widgets),
    ("POST", "widgets", create_widget),
    ("POST", "widgets/{id}/origins", set_origins),
    ("POST", "widgets/{id}/revoke", revoke_widget),
]
