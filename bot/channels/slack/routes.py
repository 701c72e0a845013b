"""Slack's HTTP edge: Events API through Bolt, and the OAuth install.

``POST /slack/events``: the signature (v0, 5-minute window, constant-time, with the gateway's
clock) is checked on the raw body before anything else runs - a bad one is a 401 and nothing is
processed. The request then goes through ``AsyncApp.async_dispatch``: url_verification, the
workspace's installation (our store; ``auth.test`` once per token, cached), Bolt's self-event
filter, then `_persist_dm`, a global middleware that stores a customer's DM *before* Bolt acks
(``process_before_response=False`` acks as soon as a listener matches) and hands it to the
dispatcher. A redelivery (``X-Slack-Retry-Num``, a duplicate event id) is found by the unique
constraint and acked without doing anything else. A DM over its sender's or tenant's rate, or
past the tenant's answer backlog (`bot.limits`), is acked 200 too (never a 429: Slack would retry
it) and dropped before it is stored, the sender told once to slow down. Every event type we subscribe to
has a listener, so Slack never sees a 404 and never retries for want of one.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.authorization.async_authorize import AsyncInstallationStoreAuthorize
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot.channels.slack import interactivity
from bot.channels.slack.desk import is_thread_reply, take_staff_reply
from bot.channels.slack.events import ignore_reason, to_incoming
from bot.channels.slack.feedback import setup_slack_feedback
from bot.channels.slack.oauth import TenantOAuthFlow, link_of
from bot.channels.slack.own_apps import own_app_signature
from bot.channels.slack.signature import RequestSignature
from bot.channels.slack.store import ParleyInstallationStore, SignedStateStore, find_workspace
from bot.context import GATEWAY, Gateway
from bot.http import error_response
from parley.errors import Forbidden, Unavailable
from parley.logging import bound

log = logging.getLogger("parley.gateway.slack")

EVENTS_API_TYPES = {"event_callback", "url_verification", "app_rate_limited", "ssl_check"}
OUTCOME = "parley_outcome"
INBOUND = "parley_inbound"


@dataclass
class SlackRuntime:
    bolt: AsyncApp
    verifier: RequestSignature
    store: ParleyInstallationStore
    flow: TenantOAuthFlow | None
    states: SignedStateStore | None = None


SLACK = web.AppKey("parley_slack", SlackRuntime)


def build_slack(gw: Gateway, client: AsyncWebClient) -> SlackRuntime:
    config = gw.config
    store = ParleyInstallationStore(gw.sessions, gw.box, gw.directory)
    flow = None
    if config.slack_oauth_enabled:
        states = SignedStateStore(gw.sessions, gw.signer, ttl=config.slack_state_ttl)
        settings = AsyncOAuthSettings(
            client_id=config.slack_client_id, client_secret=config.slack_client_secret, scopes=list(config.slack_scopes),
            user_scopes=[], redirect_uri=f"{config.public_url}/slack/oauth_redirect", install_page_rendering_enabled=False,
            authorization_url=config.slack_authorize_url, installation_store=store, state_store=states,
            state_expiration_seconds=int(config.slack_state_ttl), logger=log,
        )
        flow = TenantOAuthFlow(link_signer=gw.signer, states=states, client=client, settings=settings, logger=log)
    authorize = AsyncInstallationStoreAuthorize(
        logger=log, installation_store=store, cache_enabled=True, client=client,
        client_id=config.slack_client_id, client_secret=config.slack_client_secret,
    )
    bolt = AsyncApp(
        name="parley", signing_secret=config.slack_signing_secret, client=client, installation_store=store,
        authorize=authorize, oauth_flow=flow, process_before_response=False,
        request_verification_enabled=False,  # checked in `events` on the raw body, with the gateway's clock
        raise_error_for_unhandled_request=False, logger=log,
    )
    bolt.use(_persist_dm(gw))

    @bolt.event("message")
    async def message_events(context: AsyncBoltContext) -> None:
        """Every message event: a DM was stored and dispatched by `_persist_dm`; the rest are ignored."""

    bolt.enable_token_revocation_listeners()

    @bolt.event(re.compile(r".*"))
    async def other_events(body: dict[str, Any]) -> None:
        """Any other subscribed event is acknowledged (a 404 would make Slack retry it)."""
        log.debug("slack event ignored", extra={"event_type": (body.get("event") or {}).get("type")})

    verifier = RequestSignature(config.slack_signing_secret or "", gw.clock)
    return SlackRuntime(bolt=bolt, verifier=verifier, store=store, flow=flow, states=flow.states if flow else None)


def _persist_dm(gw: Gateway) -> Callable[..., Awaitable[Any]]:
    async def persist_dm(body: dict[str, Any], context: AsyncBoltContext, next: Callable[[], Awaitable[Any]]) -> Any:
        event = body.get("event") if body.get("type") == "event_callback" else None
        if not isinstance(event, dict) or event.get("type") != "message":
            return await next()
        if is_thread_reply(event):  # a staff member's reply in a handoff thread (bot.channels.slack.desk)
            context[OUTCOME] = await take_staff_reply(gw, team_id=context.team_id or body.get("team_id") or "",
                                                      enterprise_id=context.enterprise_id,
                                                      is_enterprise_install=context.is_enterprise_install, event=event)
            return await next()
        reason = ignore_reason(event)
        if reason is not None:
            context[OUTCOME] = f"ignored_{reason}"
            return await next()
        team_id = context.team_id or body.get("team_id") or ""
        # an org-wide (Enterprise Grid) install is stored as enterprise:E…, its events name a workspace T…
        route = await find_workspace(gw.directory, context.enterprise_id, team_id, context.is_enterprise_install)
        if route is None:  # uninstalled between authorize and here
            context[OUTCOME] = "unknown_workspace"
            return BoltResponse(status=200, body="")
        incoming = to_incoming(route.tenant_id, team_id or route.external_id, event, install=route.external_id)
        verdict = gw.limits.admit(incoming, gw.answers)  # the sender's and tenant's rate, the answer backlog
        if not verdict.allowed:  # acked 200 and dropped: anything but a 200 and Slack retries it
            context[OUTCOME] = f"limited_{verdict.scope}"
            gw.limits.refused(incoming, verdict, gw.answers)
            return BoltResponse(status=200, body="")
        with bound(tenant_id=route.tenant_id):
            accepted = await gw.writer.accept(incoming)
        if not accepted.created:
            context[OUTCOME] = "duplicate"
            return BoltResponse(status=200, body="")  # acked; nothing else runs
        context[OUTCOME] = "accepted"
        context[INBOUND] = (route.tenant_id, accepted.message_id)
        gw.answers.submit(route.tenant_id, accepted.message_id)
        return await next()

    return persist_dm


async def events(request: web.Request) -> web.StreamResponse:
    gw, slack = request.app[GATEWAY], request.app[SLACK]
    started = time.perf_counter()
    raw = await request.read()
    timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
    signature = request.headers.get("X-Slack-Signature", "")
    if not (slack.verifier.valid(raw, timestamp, signature)  # total: any header text is a yes or a no
            or await own_app_signature(gw.directory, gw.box, raw, timestamp, signature, gw.clock)):
        gw.metrics.ack("slack", "bad_signature", time.perf_counter() - started)
        log.warning("slack request refused: bad or stale signature")
        return web.json_response({"error": "invalid request"}, status=401)
    if interactivity.is_interaction(raw):
        # the app's Interactivity Request URL points here: the same handling as /slack/interactivity
        return await interactivity.handle(request, raw)
    try:
        # Bolt parses the body and walks it in the request's constructor; a body it does not expect
        # (a JSON array, a number where a list belongs) raises whatever it hits there.
        bolt_request = await to_bolt_request(request)
        if not isinstance(bolt_request.body, dict):
            raise ValueError("not an object")
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, LookupError, RecursionError):
        # LookupError: an unknown charset; RecursionError: JSON nested past the parser's stack
        gw.metrics.ack("slack", "malformed", time.perf_counter() - started)
        log.warning("slack request refused: the signed body is not a Slack request")
        return error_response(400, "invalid_input", "the body is not a JSON object or form data")
    kind = bolt_request.body.get("type")
    if bolt_request.body.get("command") or not isinstance(kind, str) or kind not in EVENTS_API_TYPES:
        # Slash commands are not configured for this app: say so instead of a 404.
        gw.metrics.ack("slack", "unsupported", time.perf_counter() - started)
        text = "I don't have slash commands: send me a direct message instead." if bolt_request.body.get("command") else ""
        return web.Response(text=text, content_type="text/plain")
    response = await slack.bolt.async_dispatch(bolt_request)
    context = bolt_request.context
    outcome = context.get(OUTCOME)
    if outcome is None:
        is_event = bolt_request.body.get("type") == "event_callback"
        if is_event and context.authorize_result is None and response.status == 200:
            outcome = "unknown_workspace"
            log.warning("slack event from a workspace that is not installed", extra={"team_id": context.team_id})
        else:
            outcome = "ok" if response.status < 400 else f"http_{response.status}"
    elapsed = time.perf_counter() - started
    gw.metrics.ack("slack", outcome, elapsed)
    inbound = context.get(INBOUND)
    if inbound is not None:
        gw.answers.record_ack(inbound[0], inbound[1], round(elapsed * 1000, 2))
    return await to_aiohttp_response(response)


async def install(request: web.Request) -> web.StreamResponse:
    slack = request.app[SLACK]
    if slack.flow is None:
        raise Unavailable("Slack install is not configured (PARLEY_SLACK_CLIENT_ID and PARLEY_SLACK_CLIENT_SECRET)")
    try:
        link = link_of(request.app[GATEWAY].signer, request.query.get("tenant"))  # forged or expired: 403
        if slack.states is not None and await slack.states.link_used(link.id):
            raise Forbidden("this install link was already used; ask for a new one")
    except Forbidden as exc:
        log.warning("slack install link refused: %s", exc)
        raise
    response = await slack.flow.handle_installation(_oauth_request(request))
    return await to_aiohttp_response(response)


async def oauth_redirect(request: web.Request) -> web.StreamResponse:
    slack = request.app[SLACK]
    if slack.flow is None:
        raise Unavailable("Slack install is not configured")
    response = await slack.flow.handle_callback(_oauth_request(request))
    return await to_aiohttp_response(response)


def _oauth_request(request: web.Request) -> AsyncBoltRequest:
    """Bolt's view of an OAuth step: its query and headers. These are GETs: a body is never read
    (``to_bolt_request`` decodes one, and an undecodable body or an unknown charset was a 500)."""
    return AsyncBoltRequest(body="", query=request.query_string, headers=dict(request.headers))


def setup_slack_routes(app: web.Application) -> None:
    app.router.add_post("/slack/events", events)
    interactivity.setup_interactivity_routes(app)  # POST /slack/interactivity: buttons and modals
    setup_slack_feedback(app)  # its "feedback" actions: 👍/👎 under answers
    app.router.add_get("/slack/install", install)
    app.router.add_get("/slack/oauth_redirect", oauth_redirect)
