"""The composition root: how each process of the platform is built from settings.

`parley gateway`, `parley retrieval`, `parley worker documents|catalog` (each its own process,
started by `parley up` or docker compose) and `parley up --single-process` (all of them in one)
are built here and only here, from the same factories: the gateway's app (`bot.app`), the
retrieval service's app (`retrieval.app`) and the consumers of the ingestion workers
(`build_document_consumer`, `build_catalog_consumer` over a `parley.worker.WorkerContext`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from cli.app import database
from parley.logging import configure_logging
from parley.settings import Settings

# --- the gateway ------------------------------------------------------------------------------


def gateway_deps(settings: Settings, **overrides: Any) -> Any:
    """The gateway's dependencies: the Shopify routes mounted on the gateway's own pools (the app
    builds its main, webhook-ack and background pools itself; nothing here hands it one)."""
    from bot.app import GatewayDeps
    from bot.channels.shopify import setup_shopify

    return GatewayDeps(route_installers=[lambda app: setup_shopify(app, settings=settings)], **overrides)


async def serve_gateway(settings: Settings) -> None:
    """`parley gateway`: refuse to start on an unmigrated database, then serve until a signal."""
    from bot.app import serve

    async with database(settings, "gateway-check"):
        pass  # checked, and disposed of: the gateway opens its own pools
    await serve(settings, deps=gateway_deps(settings))


# --- the retrieval service --------------------------------------------------------------------


async def serve_retrieval(settings: Settings) -> None:
    """`parley retrieval`: the query service until a signal."""
    from retrieval.app import serve

    await serve(settings)


async def ask_in_process(settings: Settings, request: Any) -> Any:
    """One question answered by a retrieval service built in this process (no listening socket)."""
    from aiohttp import web

    from retrieval.app import create_app
    from retrieval.client import InProcessRetrievalClient
    from retrieval.routes import SERVICE

    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()  # opens the service's resources (cleanup_ctx) without listening
    try:
        return await InProcessRetrievalClient(app[SERVICE]).query(request)
    finally:
        await runner.cleanup()


# --- the workers ------------------------------------------------------------------------------


def worker_factories() -> dict[str, tuple[str, Callable[..., Any]]]:
    """Worker kind -> (process name, consumer factory)."""
    from ingestion.catalog.consumer import build_catalog_consumer
    from ingestion.documents.consumer import build_document_consumer
    from webhooks.consumer import build_webhooks_consumer

    return {"documents": ("documents-worker", build_document_consumer),
            "catalog": ("catalog-worker", build_catalog_consumer),
            "webhooks": ("webhooks-worker", build_webhooks_consumer)}


#: Worker kinds that neither embed nor index: their process loads no model and opens no index.
NO_INDEX_WORKERS = frozenset({"webhooks"})


async def run_worker(settings: Settings, kind: str, *, stop: asyncio.Event | None = None) -> None:
    """`parley worker KIND`: the worker's consumer under the one worker bootstrap."""
    from parley.worker import run_worker as bootstrap

    name, build = worker_factories()[kind]
    configure_logging(process_name=name, level=settings.log_level, json_lines=settings.log_json)
    if kind != "documents":
        await bootstrap(settings, name=name, build=build, stop=stop, needs_index=kind not in NO_INDEX_WORKERS)
        return
    from knowledge.stalls import run_sweeper

    # The document worker also names stalled jobs (knowledge/stalls.py), once a minute.
    stop = stop or asyncio.Event()
    sweeper = asyncio.create_task(run_sweeper(settings, stop), name="parley-stall-sweep")
    try:
        await bootstrap(settings, name=name, build=build, stop=stop, needs_index=True)
    finally:
        stop.set()
        await asyncio.gather(sweeper, return_exceptions=True)


# --- everything in one process ----------------------------------------------------------------


async def run_single_process(settings: Settings, *, on_ready: Callable[[list[tuple[str, str, str, str]], int], None],
                             stop: asyncio.Event | None = None) -> int:
    """The gateway, the retrieval service (mounted in-process), the three workers and the outbox relay
    in one event loop, on an in-memory broker, until Ctrl-C or SIGTERM. Returns how many messages
    were still in memory (the next single-process start re-queues them from the outbox)."""
    from aiohttp import web

    from bot.app import create_app as create_gateway
    from bot.context import METRICS as GATEWAY_METRICS
    from parley.http_server import HttpServer, ServerLimits
    from parley import runtime
    from parley.bus import InMemoryBroker, consuming
    from parley.bus.outbox import requeue_unfinished
    from parley.crypto import load_secret_box
    from parley.db import create_engine, create_sessionmaker
    from parley.vectors import create_vector_index
    from parley.worker import WorkerContext, install_stop_signals
    from retrieval.app import RetrievalDeps
    from retrieval.app import create_app as create_retrieval
    from retrieval.client import InProcessRetrievalClient
    from retrieval.routes import SERVICE

    configure_logging(process_name="parley-single", level=settings.log_level, json_lines=settings.log_json)
    stop = stop or asyncio.Event()
    install_stop_signals(stop)
    engine = create_engine(settings, "single-process")
    sessions = create_sessionmaker(engine)
    broker = InMemoryBroker(runtime.topology(settings))
    await broker.start()
    requeued = await requeue_unfinished(sessions)  # what the last single-process run left in memory
    embedder = await asyncio.to_thread(runtime.embedder, settings, query_cache_size=1024, answers=True)
    # One reader index for both sides: the workers' writes are searchable at once (read your writes).
    index = create_vector_index(settings, role="reader", sessions=sessions)
    workers = WorkerContext(settings=settings, sessions=sessions, broker=broker, embedder=embedder, index=index)
    retrieval_runner = web.AppRunner(
        create_retrieval(settings, deps=RetrievalDeps(sessions=sessions, embedder=embedder, index=index)), handle_signals=False)
    gateway_server: HttpServer | None = None
    dropped = 0
    try:
        await retrieval_runner.setup()  # opens the service's resources without listening
        # One process, one pool: the gateway shares the workers' engine here (its own pools are for
        # a gateway process of its own).
        gateway = create_gateway(settings, deps=gateway_deps(
            settings, sessions=sessions, box=load_secret_box(settings), broker=broker,
            retrieval=InProcessRetrievalClient(retrieval_runner.app[SERVICE])))
        # the same header and body timeouts and connection cap as a gateway process of its own
        gateway_server = HttpServer(gateway, ServerLimits.from_settings(settings), registry=gateway[GATEWAY_METRICS].registry)
        await gateway_server.setup()
        await gateway_server.listen(settings.gateway_host, settings.gateway_port)
        consumers = [build(workers) for _, build in worker_factories().values()]
        async with consuming(*consumers, shutdown_timeout=10.0):
            on_ready([("gateway + retrieval + workers", str(os.getpid()), str(os.nice(0)),
                       f"http://{settings.gateway_host}:{settings.gateway_port}")], requeued)
            await stop.wait()
    finally:
        if gateway_server is not None:
            await gateway_server.cleanup()
        await retrieval_runner.cleanup()
        dropped = broker.pending()
        await workers.aclose()
        await index.aclose()
        await embedder.aclose()
        await broker.close()
        await engine.dispose()
    return dropped
