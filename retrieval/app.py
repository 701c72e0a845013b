"""The retrieval process: app factory, resource lifetimes, and `serve`.

`create_app(settings, deps=...)` builds the aiohttp app. Its resources open and close in one
``cleanup_ctx`` generator, in dependency order: database engine -> embedder -> vector index
(reader role) -> answerer and rewriter -> service; closed in reverse. Anything passed in
`RetrievalDeps` is used as given and *not* closed by the app (the caller owns it): tests share one
loaded embedder across apps, the single-process mode shares its engine.

Start-up does not wait for warm-up: a background task embeds one query (loading the model's
caches) and loads every active tenant into the index reader, then ``/readyz`` turns 200. Queries
that arrive earlier are served anyway, just slower (the tenant loads on its first query).

Every request but ``/healthz``, ``/readyz`` and ``/metrics`` must carry the service credential
(``PARLEY_SERVICE_TOKEN``, or the one generated into the data directory: `retrieval.routes`).

`serve(settings)` runs the app on ``retrieval_host:retrieval_port`` (through `parley.http_server`:
header and body timeouts, a connection cap) until SIGTERM or SIGINT, then
stops accepting, lets in-flight requests finish (aiohttp's shutdown timeout) and closes everything.

The heap after warm-up (modules, models, the loaded tenants' indexes: ~110k tracked objects) lives
as long as the process, so `serve` freezes it (``gc.freeze``) out of the cyclic garbage
collector's full collections. Otherwise each full collection stopped the event loop for 40-90 ms,
and the reader's refreshes while workers index allocate enough to trigger one every ~10 s:
bench/isolation.py saw them as the whole p99 tail of queries answered during indexing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from parley.crypto import load_service_token
from parley.db import create_engine, create_sessionmaker
from parley.http_server import HttpServer, ServerLimits
from parley.settings import Settings
from retrieval.answer import Answerer, ExtractiveAnswerer, OpenAIAnswerer, make_openai_client
from retrieval.config import RetrievalConfig
from retrieval.metrics import RetrievalMetrics
from retrieval.rewrite import LLMRewriter, Rewriter, RuleRewriter
from retrieval.routes import (
    DB_CHECK, METRICS, READINESS, SERVICE, SERVICE_TOKEN, Readiness, database_check, error_middleware, service_auth_middleware,
    setup_routes,
)
from retrieval.service import RetrievalService

log = logging.getLogger("parley.retrieval")

MAX_REQUEST_BYTES = 256 * 1024


@dataclass
class RetrievalDeps:
    """Pre-built dependencies; each one left None is built from settings (and closed) by the app."""

    sessions: async_sessionmaker[AsyncSession] | None = None
    embedder: Any | None = None
    index: Any | None = None
    answerer: Answerer | None = None
    rewriter: Rewriter | None = None
    config: RetrievalConfig | None = None
    vector_options: dict[str, Any] | None = None  # passed to create_vector_index (refresh_interval, ...)


def create_app(settings: Settings, *, deps: RetrievalDeps | None = None, freeze_heap: bool = False) -> web.Application:
    """``freeze_heap``: after warm-up, freeze the heap out of the GC's full collections (the service's
    own process only: `serve` sets it; a test process creating many apps would leak what it froze)."""
    # error map outermost (a refusal is JSON too), then the service credential, before any body is read
    app = web.Application(middlewares=[error_middleware, service_auth_middleware], client_max_size=MAX_REQUEST_BYTES)
    app[SERVICE_TOKEN] = load_service_token(settings).encode()
    app[METRICS] = RetrievalMetrics()
    app[READINESS] = Readiness()
    app.cleanup_ctx.append(partial(_resources, settings, deps or RetrievalDeps(), freeze_heap))
    setup_routes(app)
    return app


def build_embedder(settings: Settings) -> Any:
    """The configured embedder with its query-vector cache (loading a model blocks ~1 s)."""
    from parley import runtime

    return runtime.embedder(settings, query_cache_size=1024, answers=True)


async def _resources(settings: Settings, deps: RetrievalDeps, freeze_heap: bool, app: web.Application) -> AsyncIterator[None]:
    config = deps.config or RetrievalConfig.from_settings(settings)
    closers: list[Any] = []  # (async) callables, run in reverse order at shutdown
    warm: asyncio.Task[None] | None = None
    try:
        engine: AsyncEngine | None = None
        sessions = deps.sessions
        if sessions is None:
            engine = create_engine(settings, "retrieval")
            closers.append(engine.dispose)
            sessions = create_sessionmaker(engine)
        embedder = deps.embedder
        if embedder is None:
            embedder = await asyncio.to_thread(build_embedder, settings)  # loading a model blocks ~1 s
            closers.append(embedder.aclose)
        index = deps.index
        if index is None:
            from parley.vectors import create_vector_index

            index = create_vector_index(settings, role="reader", sessions=sessions, **(deps.vector_options or {}))
            closers.append(index.aclose)
        app[METRICS].watch_residency(getattr(index, "residency_stats", None))
        answerer, rewriter = deps.answerer, deps.rewriter
        if config.use_openai and (answerer is None or (rewriter is None and config.rewrite_with_llm)):
            client = make_openai_client(config)
            closers.append(client.close)
            if answerer is None:
                answerer = OpenAIAnswerer(client, config.openai_chat_model, owns_client=False)
            if rewriter is None and config.rewrite_with_llm:
                # a rewrite is worth one quick retry at most: after that the rules answer instantly
                quick = client.with_options(max_retries=min(1, config.openai_max_retries))
                rewriter = LLMRewriter(quick, config.openai_chat_model, timeout=min(5.0, config.openai_timeout))
        service = RetrievalService(
            embedder=embedder, index=index, sessions=sessions, answerer=answerer or ExtractiveAnswerer(),
            config=config, rewriter=rewriter or RuleRewriter(),
        )
        closers.append(service.aclose)
        app[SERVICE] = service
        app[DB_CHECK] = partial(database_check, sessions)
        warm = asyncio.create_task(_warm_up(service, app[READINESS], config, freeze_heap), name="retrieval-warm-up")
        log.info("retrieval service ready to accept queries", extra={"answerer": type(service.answerer).__name__})
        yield
    finally:
        if warm is not None:
            warm.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warm
        for close in reversed(closers):
            try:
                await close()
            except Exception:  # noqa: BLE001 - keep closing the rest
                log.exception("closing %r failed", close)


async def _warm_up(service: RetrievalService, readiness: Readiness, config: RetrievalConfig, freeze_heap: bool = False) -> None:
    try:
        await service.embedder.embed_query("warm-up")
        readiness.embedder = True
    except Exception as exc:  # noqa: BLE001 - reported by /readyz
        log.exception("embedder warm-up failed")
        readiness.problems["embedder"] = f"failed: {exc.__class__.__name__}"
    warm = getattr(service.index, "warm", None)
    if config.warm_tenants and warm is not None:
        try:
            tenant_ids = await service.profiles.ids()
        except Exception as exc:  # noqa: BLE001
            log.exception("listing tenants for the index warm-up failed")
            readiness.problems["index"] = f"failed: {exc.__class__.__name__}"
            return
        for tenant_id in tenant_ids:
            try:
                await warm([tenant_id])
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - that tenant loads on its first query instead
                log.exception("warming tenant %s failed", tenant_id)
    if freeze_heap:  # see the module docstring
        gc.collect()
        gc.freeze()
    readiness.index = True


async def serve(settings: Settings, *, deps: RetrievalDeps | None = None) -> None:
    """Run the retrieval service until SIGTERM/SIGINT (``parley retrieval``; benchmarks pass ``deps``)."""
    from parley.logging import configure_logging

    configure_logging(process_name="retrieval", level=settings.log_level, json_lines=settings.log_json)
    app = create_app(settings, deps=deps, freeze_heap=True)
    # header and body timeouts, the connection cap (parley.http_server); its figures in our /metrics
    server = HttpServer(app, ServerLimits.from_settings(settings), registry=app[METRICS].registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)  # before start-up: a signal while loading is graceful too
    try:
        await server.setup()
        if not stop.is_set():
            await server.listen(settings.retrieval_host, settings.retrieval_port)
            log.info("retrieval listening", extra={"host": settings.retrieval_host, "port": settings.retrieval_port})
            await stop.wait()
        log.info("retrieval stopping")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await server.cleanup()
