"""Slack interactivity: ``POST /slack/interactivity`` (buttons, modals), dispatched by action id prefix.

Slack posts every click on a Block Kit element (``block_actions``) and every submitted modal
(``view_submission``) form-encoded as ``payload=<json>``, signed exactly like the Events API
(v0, 5-minute window, checked constant-time on the raw body with the gateway's clock; the
platform's signing secret, or that of the workspace's own app, `bot.channels.slack.own_apps`): a bad or
stale signature is a 401 and nothing runs; a body that is not such a form, or whose ``payload``
is not a JSON object with a ``type``, is a 400. Never a 5xx for anything a stranger sends.

Then:

- the workspace (``team.id``) is resolved to the tenant's installation; an unknown team is a 200
  with nothing done (logged): Slack would only retry anything else;
- an identical payload (Slack resends it when we were slow) is found by the unique
  ``webhook_event`` row of its digest and acked without doing anything. A double click is two
  payloads (their ``action_ts`` differ): the handlers are idempotent by state;
- each action of a ``block_actions`` payload goes to the handler registered for the prefix of its
  ``action_id`` (the text before the first ":"; ``feedback:up:<message id>`` -> ``feedback``),
  a ``view_submission`` to the handler of its view's ``callback_id`` prefix. A handler is
  ``async handler(ctx: InteractionContext) -> None``, registered with `register_action` when the
  app is created.

Slack wants the answer within 3 s: the handlers run in a task the gateway tracks; the route waits
for them up to `INLINE_SECONDS` and answers 200 either way (what is left finishes in the
background and is awaited at shutdown). A handler's failure is logged with an error id, never
turned into a 5xx (Slack would show the user "something went wrong" and retry).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web
from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot.channels.routing import Route
from bot.channels.slack.own_apps import own_app_signature
from bot.channels.slack.signature import RequestSignature
from bot.channels.slack.store import find_workspace
from bot.context import GATEWAY, Gateway
from bot.http import error_response
from bot.models import WebhookEvent
from parley.db import unit_of_work, utcnow
from parley.errors import ParleyError
from parley.logging import bound

log = logging.getLogger("parley.gateway.slack")

#: How long the route waits for the handlers before answering anyway (Slack's deadline is 3 s).
INLINE_SECONDS = 2.0
#: The ``webhook_event.source`` of the dedupe rows.
DEDUPE_SOURCE = "slack_interactivity"
#: How long a payload's digest is kept for deduplication (Slack resends within minutes).
DEDUPE_KEEP = dt.timedelta(days=1)
#: Payload types we act on; every other one (shortcuts, view_closed, suggestions) is acked and ignored.
HANDLED_TYPES = ("block_actions", "view_submission")
#: Interactivity payloads are small; a signed form bigger than this is not one.
MAX_PAYLOAD_CHARS = 1 << 20


@dataclass(frozen=True)
class InteractionContext:
    """One action of an interaction: who clicked what, where, and how to answer it.

    ``kind`` is ``block_actions`` or ``view_submission``. For a view submission ``action_id`` is the
    view's ``callback_id``, ``value`` its ``private_metadata`` and ``view`` the submitted view (its
    ``state.values`` hold the inputs); ``channel_id``/``message_ts`` are empty unless the view says.
    """

    gateway: Gateway
    route: Route
    tenant_id: str
    team_id: str
    user_id: str
    channel_id: str
    message_ts: str
    thread_ts: str | None
    action_id: str
    value: str
    response_url: str | None
    trigger_id: str | None
    payload: dict[str, Any] = field(repr=False)
    kind: str = "block_actions"
    view: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def prefix(self) -> str:
        return prefix_of(self.action_id)

    @property
    def bot_token(self) -> str:
        return str(self.route.secrets.get("bot_token") or "")

    @property
    def message(self) -> dict[str, Any]:
        """The message the clicked element sits in (as Slack sent it), or {}."""
        message = self.payload.get("message")
        return message if isinstance(message, dict) else {}


ActionHandler = Callable[[InteractionContext], Awaitable[None]]
ACTIONS = web.AppKey("parley_slack_actions", dict[str, ActionHandler])


def prefix_of(action_id: str) -> str:
    return action_id.split(":", 1)[0]


def register_action(app: web.Application, prefix: str, handler: ActionHandler) -> None:
    """Send actions whose ``action_id`` (or view ``callback_id``) starts with ``prefix:`` to ``handler``.
    Called while the app is being created; a prefix has one owner."""
    if not prefix or ":" in prefix:
        raise ValueError(f"an action prefix is a non-empty word without ':' (got {prefix!r})")
    if ACTIONS not in app:
        app[ACTIONS] = {}
    handlers = app[ACTIONS]
    if prefix in handlers and handlers[prefix] is not handler:
        raise ValueError(f"the Slack action prefix {prefix!r} already has a handler")
    handlers[prefix] = handler


class BadPayload(ValueError):
    """The signed body is not an interactivity payload; the message says why."""


def parse_payload(raw: bytes) -> tuple[str, dict[str, Any]]:
    """(the ``payload`` field's text, its JSON object) of a form-encoded body, or `BadPayload`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadPayload("the body is not UTF-8") from exc
    try:
        fields = parse_qs(text, keep_blank_values=True, strict_parsing=False, max_num_fields=50)
    except ValueError as exc:
        raise BadPayload("the body is not form data") from exc
    values = fields.get("payload") or []
    if len(values) != 1:
        raise BadPayload("the form has no single 'payload' field")
    field_text = values[0]
    if len(field_text) > MAX_PAYLOAD_CHARS:
        raise BadPayload("the payload is too large")
    try:
        payload = json.loads(field_text)
    except (ValueError, RecursionError) as exc:
        raise BadPayload("the payload is not JSON") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        raise BadPayload("the payload is not a JSON object with a 'type'")
    return field_text, payload


def is_interaction(raw: bytes) -> bool:
    """Is this body a form with a ``payload`` field (an interaction, not an event or a slash command)?"""
    if not raw.startswith(b"payload=") and b"&payload=" not in raw:
        return False
    try:
        return "payload" in parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        return True  # form-shaped but broken: `handle` says why with a 400


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def team_of(payload: dict[str, Any]) -> str:
    return _text(_dict(payload.get("team")).get("id")) or _text(_dict(payload.get("user")).get("team_id")) \
        or _text(payload.get("team_id"))


def contexts_of(gw: Gateway, route: Route, team_id: str, payload: dict[str, Any]) -> list[InteractionContext]:
    """One context per action (``block_actions``) or one for the view (``view_submission``)."""
    kind = payload["type"]
    user = _text(_dict(payload.get("user")).get("id"))
    container = _dict(payload.get("container"))
    message = _dict(payload.get("message"))
    channel_id = _text(container.get("channel_id")) or _text(_dict(payload.get("channel")).get("id"))
    message_ts = _text(container.get("message_ts")) or _text(message.get("ts"))
    thread_ts = _text(container.get("thread_ts")) or _text(message.get("thread_ts")) or None
    common = dict(gateway=gw, route=route, tenant_id=route.tenant_id, team_id=team_id, user_id=user,
                  response_url=_text(payload.get("response_url")) or None, trigger_id=_text(payload.get("trigger_id")) or None,
                  payload=payload, kind=kind)
    if kind == "view_submission":
        view = _dict(payload.get("view"))
        callback = _text(view.get("callback_id"))
        if not callback:
            return []
        return [InteractionContext(channel_id="", message_ts="", thread_ts=None, action_id=callback,
                                   value=_text(view.get("private_metadata")), view=view, **common)]
    actions = payload.get("actions")
    out = []
    for action in actions if isinstance(actions, list) else []:
        action = _dict(action)
        action_id = _text(action.get("action_id"))
        if not action_id:
            continue
        value = _text(action.get("value")) or _text(_dict(action.get("selected_option")).get("value"))
        out.append(InteractionContext(channel_id=channel_id, message_ts=message_ts, thread_ts=thread_ts,
                                      action_id=action_id, value=value, **common))
    return out


async def first_time(session: AsyncSession, *, digest: str, topic: str, tenant_id: str) -> bool:
    """True when this payload was not seen before (the unique ``(source, external_id)`` decides,
    even against another replica's transaction)."""
    # what Slack could still resend is minutes old: forget the day-old digests as new ones come
    await session.execute(delete(WebhookEvent).where(WebhookEvent.source == DEDUPE_SOURCE,
                                                     WebhookEvent.received_at < utcnow() - DEDUPE_KEEP))
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    result = await session.execute(
        insert(WebhookEvent).values(source=DEDUPE_SOURCE, external_id=digest, topic=topic[:128], tenant_id=tenant_id,
                                    status="received", received_at=utcnow())
        .on_conflict_do_nothing(index_elements=["source", "external_id"]))
    return (result.rowcount or 0) == 1


async def _run(handlers: dict[str, ActionHandler], contexts: list[InteractionContext]) -> None:
    for ctx in contexts:
        handler = handlers.get(ctx.prefix)
        if handler is None:
            log.info("slack action without a handler", extra={"action_prefix": ctx.prefix})
            continue
        with bound(tenant_id=ctx.tenant_id):
            try:
                await handler(ctx)
            except ParleyError as exc:
                log.warning("slack action %s failed: %s", ctx.prefix, exc, extra={"code": exc.code})
            except Exception:
                log.exception("slack action %s failed", ctx.prefix, extra={"error_id": uuid.uuid4().hex[:12]})


async def interactivity(request: web.Request) -> web.StreamResponse:
    raw = await request.read()
    gw = request.app[GATEWAY]
    timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
    signature = request.headers.get("X-Slack-Signature", "")
    # the same check as /slack/events: the platform's signing secret, or the named workspace's own app's
    verifier = RequestSignature(gw.config.slack_signing_secret or "", gw.clock)
    if not (verifier.valid(raw, timestamp, signature)
            or await own_app_signature(gw.directory, gw.box, raw, timestamp, signature, gw.clock)):
        gw.metrics.ack("slack_interactivity", "bad_signature", 0.0)
        log.warning("slack interactivity refused: bad or stale signature")
        return web.json_response({"error": "invalid request"}, status=401)
    return await handle(request, raw)


async def handle(request: web.Request, raw: bytes) -> web.StreamResponse:
    """An interactivity request whose signature was checked (here, or by ``/slack/events`` when the
    app's Interactivity Request URL points there)."""
    gw = request.app[GATEWAY]
    started = time.perf_counter()

    def done(outcome: str) -> None:
        gw.metrics.ack("slack_interactivity", outcome, time.perf_counter() - started)

    try:
        field_text, payload = parse_payload(raw)
    except BadPayload as exc:
        done("malformed")
        log.warning("slack interactivity refused: %s", exc)
        return error_response(400, "invalid_input", f"not a Slack interactivity payload: {exc}")
    kind = payload["type"]
    if kind not in HANDLED_TYPES:
        done(f"ignored_{kind[:32]}")
        return web.Response(status=200)
    team_id = team_of(payload)
    enterprise_id = _text(_dict(payload.get("enterprise")).get("id")) or None
    route = await find_workspace(gw.directory, enterprise_id, team_id or None, payload.get("is_enterprise_install") is True) \
        if team_id or enterprise_id else None
    if route is None:
        done("unknown_workspace")
        log.warning("slack interaction from a workspace that is not installed", extra={"team_id": team_id[:64]})
        return web.Response(status=200)
    digest = hashlib.sha256(field_text.encode()).hexdigest()
    async with unit_of_work(gw.sessions, tenant_id=route.tenant_id) as session:
        new = await first_time(session, digest=digest, topic=kind, tenant_id=route.tenant_id)
    if not new:
        done("duplicate")
        return web.Response(status=200)
    contexts = contexts_of(gw, route, team_id, payload)
    handlers = request.app.get(ACTIONS) or {}
    if contexts:
        task = asyncio.create_task(_run(handlers, contexts), name="slack-interaction")
        gw.background.add(task)
        task.add_done_callback(gw.background.discard)
        await asyncio.wait([task], timeout=INLINE_SECONDS)
    done("accepted" if contexts else "no_action")
    return web.Response(status=200)


def setup_interactivity_routes(app: web.Application) -> None:
    app.router.add_post("/slack/interactivity", interactivity)
    if ACTIONS not in app:
        app[ACTIONS] = {}
