"""The gateway process: app factory, resource lifetimes, health, and `serve`.

`create_app(settings, deps=...)` builds the aiohttp app. Its resources open in one
``cleanup_ctx`` generator, in dependency order, and close in reverse:

    database engines (the work's - one connection on SQLite, which has one writer anyway; on
    PostgreSQL a small one reserved for storing inbound messages, so an ack never queues for a
    connection; one for the notifications consumer and the outbox relay, which hold their
    transactions during vendor and broker calls) -> secret box, signer -> HTTP client session -> broker
    (connecting in the background: webhooks are acked and stored even while RabbitMQ is down;
    the outbox keeps what they produce) + outbox relay -> retrieval client (with the service token) -> channels ->
    conversation service + answer dispatcher (`bot.answering`; it first recovers what a previous
    process left unanswered) + the limits (`bot.limits`) -> Slack's Bolt app -> notifications consumer (once the broker is up)

The parser plugins (``settings.parser_plugin_paths``) are loaded when the app is created, into the
gateway's own format registry (`parley.formats`): its upload doors then accept their formats, as
the document worker reads them. A plugin that cannot be loaded stops the gateway from starting.

Anything passed in `GatewayDeps` is used as given and not closed by the app (its owner closes
it). Other route sets mount through ``deps.route_installers``: each is called with the app at
creation (e.g. the Shopify adapter's ``setup_shopify``) and reads ``app[GATEWAY]`` at request time.

`serve(settings)` runs the app on ``gateway_host:gateway_port`` (through `parley.http_server`: header
and body timeouts, a connection cap) until SIGTERM or SIGINT, then stops accepting, lets in-flight
requests and answers finish (bounded) and closes everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp
from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.privacy.retention import RetentionSweeper
from bot.privacy.routes import setup_privacy_routes
from bot.channels.downloads import Downloader
from bot.channels.instagram.channel import InstagramChannel
from bot.channels.instagram.routes import setup_instagram_routes
from bot.channels.routing import InstallationDirectory
from bot.channels.slack.channel import SlackChannel
from bot.channels.slack.desk import SlackDesk, handoff_action
from bot.channels.slack.interactivity import register_action
from bot.channels.slack.routes import SLACK, build_slack, setup_slack_routes
from bot.channels.web.routes import WebChannel, setup_web_routes
from bot.config import GatewayConfig
from bot.context import GATEWAY, METRICS, Gateway
from bot.admin.routes import setup_admin_routes
from bot.answering import AnswerLoop
from bot.conversation.dispatcher import AnswerDispatcher
from bot.conversation.handoff import Handoffs
from bot.conversation.notices import notifications_consumer
from bot.conversation.retry import RetryPolicy
from bot.conversation.service import AnswerPolicy, ConversationService
from bot.conversation.repository import InboundWriter
from bot.conversation.uploads import UploadIntake
from bot.http import MAX_BODY, error_middleware
from bot.limits import GatewayLimits
from bot.metrics import GatewayMetrics
from bot.signing import Signer, signing_key
from parley import runtime
from parley.blobs import BlobStore
from parley.bus import Broker, OutboxRelay
from parley.crypto import SecretBox, load_secret_box, load_service_token
from parley.db import create_engine, create_sessionmaker
from parley.formats import FormatRegistry, load_format_plugins
from parley.http_server import HttpServer, ServerLimits
from parley.settings import Settings
from tenants.quotas import PlanDefaults
from retrieval.client import RetrievalClient
from retrieval.replicas import retrieval_client

log = logging.getLogger("parley.gateway")

RouteInstaller = Callable[[web.Application], None]


@dataclass
class GatewayDeps:
    """Pre-built dependencies; each one left None is built from settings (and closed) by the app."""

    config: GatewayConfig | None = None
    sessions: async_sessionmaker[AsyncSession] | None = None
    broker: Broker | None = None
    retrieval: RetrievalClient | None = None
    http: aiohttp.ClientSession | None = None
    slack_client: AsyncWebClient | None = None
    box: SecretBox | None = None
    signing_key: bytes | None = None
    clock: Callable[[], float] = time.time
    #: Extra route sets (the Shopify adapter's ``setup_shopify``), called with the app at creation.
    route_installers: list[RouteInstaller] = field(default_factory=list)
    #: False: no notifications consumer (a second gateway in one test, a benchmark).
    consume_notifications: bool = True
    recover_on_start: bool = True
    answer_policy: AnswerPolicy | None = None


def create_app(settings: Settings, *, deps: GatewayDeps | None = None) -> web.Application:
    deps = deps or GatewayDeps()
    config = deps.config or GatewayConfig.from_settings(settings)
    app = web.Application(middlewares=[webhook_priority, error_middleware], client_max_size=config.max_webhook_bytes)
    app[MAX_BODY] = config.max_webhook_bytes
    app[METRICS] = GatewayMetrics()
    formats = load_format_plugins(settings.parser_plugin_paths)
    app.cleanup_ctx.append(partial(_resources, settings, config, deps, formats))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    if config.slack_enabled:
        setup_slack_routes(app)
        register_action(app, "handoff", handoff_action)  # Take / Resolve / Hand back in a staff thread
    if config.instagram_enabled:
        setup_instagram_routes(app)
    setup_web_routes(app)
    setup_admin_routes(app)  # the admin dashboard under /admin (bot/admin)
    setup_privacy_routes(app)  # POST /api/v1/erasure (bot/privacy)
    for install in deps.route_installers:  # mount point for other adapters (bot/channels/shopify)
        install(app)
    return app


def _channels(config: GatewayConfig, *, http: aiohttp.ClientSession, downloads: Downloader,
              directory: InstallationDirectory, slack_client: AsyncWebClient,
              metrics: GatewayMetrics | None = None) -> dict[str, Any]:
    channels: dict[str, Any] = {"web": WebChannel()}
    if config.slack_enabled:
        channels["slack"] = SlackChannel(client=slack_client, directory=directory, downloads=downloads,
                                         download_timeout=config.download_timeout)
    if config.instagram_enabled:
        channels["instagram"] = InstagramChannel(http=http, downloads=downloads, directory=directory,
                                                 graph_url=config.graph_api_url,
                                                 version=config.graph_api_version, download_timeout=config.download_timeout,
                                                 metrics=metrics)
    return channels


def _policy(config: GatewayConfig) -> AnswerPolicy:
    return AnswerPolicy(
        retry=RetryPolicy(attempts=config.attempts, base=config.retry_base, cap=config.retry_cap),
        deadline=config.answer_deadline, history_turns=config.history_turns, recovery_window=_minutes(config.recovery_minutes),
    )


async def _closing(closers: list[Callable[[], Any]]) -> None:
    for close in reversed(closers):
        try:
            result = close()
            if asyncio.iscoroutine(result):
                await result
        except Exception:  # keep closing the rest
            log.exception("closing %r failed", close)


async def _resources(settings: Settings, config: GatewayConfig, deps: GatewayDeps, formats: FormatRegistry,
                     app: web.Application) -> AsyncIterator[None]:
    closers: list[Callable[[], Any]] = []  # run in reverse at shutdown
    background: list[asyncio.Task[Any]] = []
    connecting: asyncio.Task[None] | None = None
    stopping = asyncio.Event()
    gw: Gateway | None = None
    try:
        sessions, ack_sessions, background_sessions = deps.sessions, deps.sessions, deps.sessions
        if sessions is None:
            # SQLite has one writer: connections of a pool would queue for its lock in the busy
            # handler's sleeps (1, 2, 5 ... 100 ms); one connection queues them in order instead.
            engine = create_engine(settings, "gateway", **({"pool_size": 1, "max_overflow": 0, "pool_timeout": 60}
                                                           if settings.is_sqlite else {}))
            closers.append(engine.dispose)
            sessions = create_sessionmaker(engine)
            if not settings.is_sqlite:
                # Connections of their own for storing inbound messages: an ack never queues for a
                # connection behind other work of the process. (SQLite has one writer whatever
                # the connection: a second engine only adds lock hand-offs - measured worse.)
                ack_engine = create_engine(settings, "gateway-ack", pool_size=2, max_overflow=2)
                closers.append(ack_engine.dispose)
                ack_sessions = create_sessionmaker(ack_engine)
            # The notifications consumer and the outbox relay hold their transactions while they call
            # Slack, Meta or RabbitMQ: connections of their own, so a slow vendor or a broker outage
            # never holds one the webhooks need.
            background_engine = create_engine(settings, "gateway-background", **({} if settings.is_sqlite else
                                                                           {"pool_size": 2, "max_overflow": 4}))
            closers.append(background_engine.dispose)
            background_sessions = create_sessionmaker(background_engine)
        box = deps.box or load_secret_box(settings)
        signer = Signer(deps.signing_key or signing_key(settings), clock=deps.clock)
        http = deps.http
        if http is None:
            http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
            closers.append(http.close)
        broker = deps.broker
        if broker is None:
            broker = runtime.rabbit_broker(settings, "gateway")
            closers.append(broker.close)
        relay = OutboxRelay(background_sessions or sessions, broker)
        metrics = app[METRICS]
        directory = InstallationDirectory(sessions, box)
        blobs = BlobStore(settings.effective_blob_dir)
        slack_client = deps.slack_client or AsyncWebClient(base_url=config.slack_api_url, session=http, timeout=30)
        # File downloads get a client of their own: links checked, private addresses refused (bot.channels.downloads)
        downloads = Downloader(trusted_urls=(str(slack_client.base_url), config.graph_api_url))
        closers.append(downloads.close)
        channels = _channels(config, http=http, downloads=downloads, directory=directory, slack_client=slack_client,
                             metrics=metrics)
        intake = UploadIntake(sessions, blobs, default_max_bytes=config.max_upload_bytes, formats=formats,
                              plan=PlanDefaults.from_settings(settings))
        retrieval = deps.retrieval
        if retrieval is None:
            # one URL: HttpRetrievalClient; several replicas: tenant affinity and failover (retrieval.replicas)
            retrieval = retrieval_client(settings.effective_retrieval_urls, timeout=config.retrieval_timeout,
                                         token=load_service_token(settings),  # the retrieval service's credential
                                         try_timeout=settings.retrieval_try_timeout,
                                         probe_interval=settings.retrieval_probe_interval, registry=metrics.registry)
            closers.append(retrieval.aclose)
        answer_policy = deps.answer_policy or _policy(config)
        # handoff to a person: its staff threads in the tenant's Slack channel (bot.channels.slack.desk)
        desk = SlackDesk(client=slack_client, directory=directory, sessions=sessions) if config.slack_enabled else None
        handoffs = Handoffs(sessions=sessions, channels=channels, desk=desk, metrics=metrics, retry=answer_policy.retry)
        service = ConversationService(sessions=sessions, retrieval=retrieval, channels=channels, intake=intake,
                                      policy=answer_policy, metrics=metrics, handoffs=handoffs)
        dispatcher = AnswerDispatcher(service, per_tenant=config.answer_concurrency_per_tenant,
                                      total=config.answer_concurrency_total, sweep_interval=config.recovery_sweep_seconds,
                                      max_backlog=config.answer_backlog_per_tenant, max_total=config.answer_backlog_total)
        metrics.backlog.set_function(lambda: dispatcher.queued)
        gw = Gateway(settings=settings, config=config, sessions=sessions, box=box, signer=signer, metrics=metrics,
                     directory=directory, blobs=blobs, intake=intake, writer=InboundWriter(ack_sessions or sessions),
                     answers=AnswerLoop(service, dispatcher), limits=GatewayLimits(config, clock=deps.clock, metrics=metrics),
                     http=http, channels=channels, broker=broker, clock=deps.clock, handoffs=handoffs)
        gw.checks["database"] = partial(_database_check, sessions)
        gw.checks["broker"] = partial(_broker_check, gw)
        app[GATEWAY] = gw
        if config.slack_enabled:
            app[SLACK] = build_slack(gw, slack_client)
        if deps.consume_notifications:
            gw.consumers.append(notifications_consumer(broker=broker, sessions=background_sessions or sessions, channels=channels,
                                                       metrics=metrics, max_attempts=config.notify_max_attempts,
                                                       on_settled=dispatcher.release_ready))
        connected = asyncio.Event()
        if deps.broker is None:
            connecting = asyncio.create_task(_connect(broker, connected, stopping), name="gateway-broker-connect")
        else:
            connected.set()
        await relay.start()
        closers.append(relay.stop)
        sweeper = RetentionSweeper(background_sessions or sessions, settings=settings, blobs=blobs,
                                   interval=settings.retention_sweep_interval_seconds, broker=lambda: gw.broker,
                                   metrics=metrics)
        sweeper.start()  # the retention sweeps (bot/privacy/retention.py): harmless when two gateways run them
        closers.append(sweeper.stop)
        await gw.answers.start(recover=deps.recover_on_start)
        background.append(asyncio.create_task(_consume_when_connected(gw, connected), name="gateway-notifier"))
        log.info("gateway ready", extra={"slack": config.slack_enabled, "instagram": config.instagram_enabled})
        yield
    finally:
        stopping.set()
        if connecting is not None:
            try:
                await asyncio.wait_for(connecting, timeout=10.0)
            except Exception:  # noqa: BLE001 - a hung connect is cancelled by wait_for
                log.warning("broker connect did not finish in time", exc_info=True)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if gw is not None:
            await gw.answers.stop(grace=gw.config.shutdown_grace)
            if gw.background:
                await asyncio.gather(*set(gw.background), return_exceptions=True)
        await _closing(closers)


def _minutes(value: float) -> dt.timedelta:
    return dt.timedelta(minutes=value)


async def _connect(broker: Any, connected: asyncio.Event, stopping: asyncio.Event) -> None:
    """Connect to RabbitMQ, retrying with backoff; webhooks keep being stored meanwhile. Stopping
    lets an attempt in progress finish (so its connection can be closed) instead of cancelling it."""
    delay = 0.5
    while not stopping.is_set():
        try:
            await broker.start()
            connected.set()
            return
        except Exception as exc:
            log.warning("broker not reachable (%s); retrying in %.0fs", exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)
            delay = min(delay * 2, 30.0)


async def _consume_when_connected(gw: Gateway, connected: asyncio.Event) -> None:
    await connected.wait()
    started = []
    try:
        for consumer in gw.consumers:
            await consumer.start()
            started.append(consumer)
        gw.bus_ready.set()
        await asyncio.Event().wait()
    finally:
        await asyncio.shield(asyncio.gather(*(c.stop(10.0) for c in started), return_exceptions=True))


async def _database_check(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        await session.execute(text("SELECT 1"))


async def _broker_check(gw: Gateway) -> None:
    if not gw.broker.is_connected or not gw.bus_ready.is_set():
        raise RuntimeError("not connected")


WEBHOOK_PATHS = ("/slack/events", "/slack/interactivity", "/instagram/webhook", "/shopify/webhooks")


@web.middleware
async def webhook_priority(request: web.Request, handler: Any) -> web.StreamResponse:
    """Webhook requests run ahead of background answering (see `bot.conversation.priority`)."""
    gw = request.app.get(GATEWAY)
    if gw is None or request.method != "POST" or not request.path.startswith(WEBHOOK_PATHS):
        return await handler(request)
    with gw.answers.priority.webhook():
        return await handler(request)


# --- health -------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    gw = request.app.get(GATEWAY)
    if gw is None:
        return web.json_response({"status": "starting"}, status=503)
    problems = {}
    for name, check in gw.checks.items():
        try:
            async with asyncio.timeout(2.0):
                await check()
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            problems[name] = f"{type(exc).__name__}: {exc}"[:200]
    body = {"status": "ready" if not problems else "not ready", "problems": problems,
            "answering": gw.answers.in_flight}
    states = getattr(gw.answers.service.retrieval, "states", None)
    if states is not None:  # several retrieval replicas: each one's state (a replica down is not the gateway's problem)
        body["retrieval"] = states()
    return web.json_response(body, status=200 if not problems else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


# --- serve --------------------------------------------------------------------------------


async def serve(settings: Settings, *, deps: GatewayDeps | None = None) -> None:
    """Run the gateway until SIGTERM/SIGINT (``parley gateway``)."""
    from parley.logging import configure_logging

    configure_logging(process_name="gateway", level=settings.log_level, json_lines=settings.log_json)
    app = create_app(settings, deps=deps)
    # header and body timeouts, the connection cap (parley.http_server); its figures in our /metrics
    server = HttpServer(app, ServerLimits.from_settings(settings), registry=app[METRICS].registry)
    await server.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.listen(settings.gateway_host, settings.gateway_port)
        # Everything built at start-up lives as long as the process: keep it out of the garbage
        # collector's full passes, whose pauses would otherwise land on webhook acks.
        gc.collect()
        gc.freeze()
        log.info("gateway listening", extra={"host": settings.gateway_host, "port": settings.gateway_port})
        await stop.wait()
        log.info("gateway stopping")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await server.cleanup()
