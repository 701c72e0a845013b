"""The dashboard's Handoff page API (`bot.conversation.handoff`, `tenants.handoff`):

    GET  /admin/api/handoff/settings                   the tenant's settings, its Slack workspaces
    POST /admin/api/handoff/settings                   change them (only the fields given)
    GET  /admin/api/handoff/conversations[?state=]     conversations handed to a person (ever), newest first
    GET  /admin/api/handoff/conversations/{id}         one: transcript, what staff sent, transitions
    POST /admin/api/handoff/conversations/{id}/{take|resolve|hand_back}   what the thread's buttons do

Every read is tenant-scoped: another tenant's conversation is a 404.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bot.context import GATEWAY
from bot.conversation.handoff import ACTIONS, ConversationRepository, Handoffs, conversation_json
from bot.http import API_KEY_ID, TENANT, read_json
from parley.db import unit_of_work
from parley.errors import InvalidInput
from tenants import handoff as settings
from tenants.models import ChannelKind
from tenants.repository import InstallationRepository

FIELDS = ("enabled", "staff_team_id", "staff_channel_id", "hours", "expected_wait", "timeout_minutes", "after_refusals",
          "keywords")
STATES = ("waiting_for_human", "with_human", "closed", "bot", "handed_off")


async def get_settings(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        row = await settings.HandoffSettingsRepository(session, tenant_id).current()
        workspaces = [{"team_id": r.external_id, "name": r.display_name} for r in
                      await InstallationRepository(session, tenant_id).list()
                      if r.kind == ChannelKind.slack and r.status == "active"]
    return web.json_response({**settings.settings_json(row), "slack_workspaces": workspaces})


async def save_settings(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    data = await read_json(request)
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise InvalidInput(f"unknown setting {unknown[0]!r}; the settings are {', '.join(FIELDS)}")
    values: dict[str, Any] = {k: data[k] for k in FIELDS if k in data}
    for key in ("staff_team_id", "staff_channel_id", "hours", "expected_wait"):
        if key in values and values[key] is not None and not isinstance(values[key], str):
            raise InvalidInput(f"'{key}' must be text")
    for key in ("timeout_minutes", "after_refusals"):
        if key in values and isinstance(values[key], str):
            try:
                values[key] = int(values[key])
            except ValueError as exc:
                raise InvalidInput(f"'{key}' must be a whole number") from exc
    if "enabled" in values and not isinstance(values["enabled"], bool):
        raise InvalidInput("'enabled' must be true or false")
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        row = await settings.configure(session, tenant_id=tenant_id, **values)
        body = settings.settings_json(row)
    return web.json_response(body)


async def list_conversations(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    state = request.query.get("state") or None
    if state is not None and state not in STATES:
        raise InvalidInput(f"unknown state {state!r}; use one of {', '.join(STATES)}")
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        rows = await ConversationRepository(session, tenant_id).listing(state=state, limit=200)
        return web.json_response({"conversations": [conversation_json(r) for r in rows]})


async def get_conversation(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        repo = ConversationRepository(session, tenant_id)
        row = await repo.get(request.match_info["id"])
        messages = [{"id": m.id, "at": m.received_at.isoformat(), "text": m.text, "reply": m.reply, "outcome": m.outcome,
                     "status": m.status, "sources": [c.get("title") for c in (m.citations or []) if isinstance(c, dict)]}
                    for m in await repo.messages(row)]
        relayed = [{"id": m.id, "at": m.created_at.isoformat(), "author": m.author, "author_id": m.author_id, "text": m.text,
                    "status": m.status, "error": m.error} for m in await repo.relayed(row.id)]
        events = [{"at": e.at.isoformat(), "from": e.from_state, "to": e.to_state, "trigger": e.trigger, "actor": e.actor}
                  for e in await repo.events(row.id)]
        body = {**conversation_json(row), "messages": messages, "relayed": relayed, "events": events}
    return web.json_response(body)


async def act(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    action = request.match_info["action"]
    if action not in ACTIONS:
        raise InvalidInput(f"unknown action {action!r}; use take, resolve or hand_back")
    handoffs = gw.handoffs or Handoffs(sessions=gw.sessions, channels=gw.channels, metrics=gw.metrics)
    # the row must be the tenant's: `act` reads it through the tenant-scoped repository (a 404 otherwise)
    changed, row = await handoffs.act(tenant_id=tenant_id, row_id=request.match_info["id"], action=action,
                                      actor=f"dashboard:{request[API_KEY_ID]}")
    return web.json_response({**conversation_json(row), "changed": changed})


API: list[tuple[str, str, Any]] = [
    ("GET", "handoff/settings", get_settings),
    ("POST", "handoff/settings", save_settings),
    ("GET", "handoff/conversations", list_conversations),
    ("GET", "handoff/conversations/{id}", get_conversation),
    ("POST", "handoff/conversations/{id}/{action}", act),
]
