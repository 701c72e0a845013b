"""Instagram's HTTP edge: ``GET /instagram/webhook`` (subscription check), ``POST`` (signed events).

The POST is verified on the raw bytes (``X-Hub-Signature-256``, every configured app secret,
constant-time) before it is parsed: a bad or missing signature is a 401 and nothing is read.
Then every entry and every messaging event is handled on its own: events of an account that is
not connected are logged and skipped (still a 200, or Meta would retry them forever), echoes and
receipts are dropped, a redelivered ``mid`` is found by the unique constraint. If storing one
event fails (the database is down), the others are still stored and the response is a 500, so
Meta retries the batch and the stored events deduplicate.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

from aiohttp import web

from bot.channels.instagram.events import ignore_reason, messaging_events, signature_valid, to_incoming
from bot.channels.instagram.own_apps import own_app_accounts
from bot.context import GATEWAY
from bot.http import error_response
from parley.crypto import constant_time_equals
from parley.logging import bound
from tenants.models import ChannelKind

log = logging.getLogger("parley.gateway.instagram")


async def verify(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    q = request.query
    expected = gw.config.instagram_verify_token
    if q.get("hub.mode") == "subscribe" and expected and constant_time_equals(expected, q.get("hub.verify_token")) \
            and "hub.challenge" in q:
        return web.Response(text=q["hub.challenge"], content_type="text/plain")
    log.warning("instagram webhook verification refused")
    return web.Response(status=403, text="verification failed", content_type="text/plain")


async def receive(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    started = time.perf_counter()
    raw = await request.read()
    header = request.headers.get("X-Hub-Signature-256")
    # None: a platform secret signed it (every account); else only the accounts whose own app secret did
    only: set[str] | None = None
    if not signature_valid(raw, header, gw.config.instagram_app_secrets):
        only = await own_app_accounts(gw.directory, raw, header)
    if only is not None and not only:
        gw.metrics.ack("instagram", "bad_signature", time.perf_counter() - started)
        log.warning("instagram webhook refused: bad or missing signature")
        return error_response(401, "invalid_signature", "X-Hub-Signature-256 does not match the body")
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the parser's stack
        gw.metrics.ack("instagram", "malformed", time.perf_counter() - started)
        log.warning("instagram webhook refused: the signed body is not JSON")
        return error_response(400, "invalid_input", "the body is not valid JSON")
    if not isinstance(payload, dict):
        return error_response(400, "invalid_input", "the body must be a JSON object")
    accepted: list[tuple[str, str]] = []
    failed = 0
    outcomes: dict[str, int] = {}
    for item in messaging_events(payload):
        reason = ignore_reason(item.account_id, item.event)
        if reason is None and only is not None and item.account_id not in only:
            reason = "unsigned_account"  # another account's entry in a body its own secret did not sign
        if reason is not None:
            outcomes[f"ignored_{reason}"] = outcomes.get(f"ignored_{reason}", 0) + 1
            continue
        try:
            route = await gw.directory.find(ChannelKind.instagram, item.account_id)
            if route is None:
                outcomes["unknown_account"] = outcomes.get("unknown_account", 0) + 1
                log.warning("instagram event for an account that is not connected", extra={"account_id": item.account_id})
                continue
            # Who may add documents is decided when the message is processed (the tenant's policy).
            incoming = to_incoming(route.tenant_id, item.account_id, item.event)
            verdict = gw.limits.admit(incoming, gw.answers)  # the sender's and tenant's rate, the answer backlog
            if not verdict.allowed:  # dropped, and still a 200 (Meta retries anything else)
                gw.limits.refused(incoming, verdict, gw.answers)
                outcomes[f"limited_{verdict.scope}"] = outcomes.get(f"limited_{verdict.scope}", 0) + 1
                continue
            with bound(tenant_id=route.tenant_id):
                result = await gw.writer.accept(incoming)
            if result.created:
                accepted.append((route.tenant_id, result.message_id))
                gw.answers.submit(route.tenant_id, result.message_id)
                outcomes["accepted"] = outcomes.get("accepted", 0) + 1
            else:
                outcomes["duplicate"] = outcomes.get("duplicate", 0) + 1
        except Exception:
            failed += 1
            log.exception("storing an instagram event failed", extra={"error_id": uuid.uuid4().hex[:12]})
    elapsed = time.perf_counter() - started
    outcome = "error" if failed else (max(outcomes, key=outcomes.__getitem__) if outcomes else "empty")
    gw.metrics.ack("instagram", outcome, elapsed)
    for tenant_id, message_id in accepted:
        gw.answers.record_ack(tenant_id, message_id, round(elapsed * 1000, 2))
    if failed:
        return error_response(500, "unavailable", f"{failed} event(s) could not be stored; please retry")
    return web.Response(text="EVENT_RECEIVED", content_type="text/plain")


def setup_instagram_routes(app: web.Application) -> None:
    app.router.add_get("/instagram/webhook", verify)
    app.router.add_post("/instagram/webhook", receive)
