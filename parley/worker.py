"""The one worker bootstrap: what every consumer process does around its handlers.

A worker is a consumer of one queue built by a *factory* from a :class:`WorkerContext` (the
sessions, broker, embedder and vector index every ingestion worker needs). :func:`run_worker`
owns the rest, in this order: OS priority that counts across sessions, stop signals (tolerated
off the main thread, where the caller sets ``stop``), the database pool named after the worker,
the broker and its outbox relay, the embedder (loaded off the event loop), the writer index
counted by the worker's metrics, the /healthz + /metrics endpoint, consuming until ``stop``, and
a teardown in the reverse order that runs however far the start-up got (in-flight messages are
returned to RabbitMQ, which redelivers them).

The single-process mode and the benchmarks build the same consumers from a context of their own
(an in-memory broker, one shared reader index) with the same factories.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley import runtime
from parley.bus import Broker, Consumer, OutboxRelay, run_consumer
from parley.db import create_engine, create_sessionmaker
from parley.embeddings import Embedder
from parley.observability import WorkerMetrics, start_worker_endpoint
from parley.settings import Settings
from parley.vectors import VectorIndex, create_vector_index

log = logging.getLogger(__name__)

Closer = Callable[[], Awaitable[object]]


@dataclass
class WorkerContext:
    """What a consumer factory builds its dependencies from."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    broker: Broker
    embedder: Embedder
    index: VectorIndex
    #: Resources a factory opened (an HTTP session, the parser fork server); closed, last first,
    #: when the worker stops.
    closers: list[Closer] = field(default_factory=list)
    #: The worker's Prometheus registry (its /metrics), for a factory's own counters; None when the
    #: consumer runs outside a worker process of its own (single-process mode, tests).
    registry: Any = None

    def on_close(self, closer: Closer) -> None:
        self.closers.append(closer)

    async def aclose(self) -> None:
        while self.closers:
            closer = self.closers.pop()
            try:
                await closer()
            except Exception:  # noqa: BLE001 - the other resources must still be closed
                log.exception("closing a worker resource failed")


ConsumerFactory = Callable[[WorkerContext], Consumer]


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM set `stop`. Off the main thread (tests, benchmarks) signal handlers cannot
    be installed; the caller sets `stop` itself."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (RuntimeError, ValueError):
            return


async def run_worker(settings: Settings, *, name: str, build: ConsumerFactory,
                     stop: asyncio.Event | None = None, needs_index: bool = True) -> None:
    """Run the consumer `build` makes as the worker process `name` until `stop` is set (or a signal).
    ``needs_index=False``: a worker that neither embeds nor indexes (webhook delivery) loads no
    model and opens no index; its context's ``embedder`` and ``index`` are None."""
    runtime.niceness_across_sessions()  # nice 19 under `parley up` must count against the retrieval service too
    stop = stop or asyncio.Event()
    install_stop_signals(stop)
    async with contextlib.AsyncExitStack() as resources:
        engine = create_engine(settings, name)
        resources.push_async_callback(engine.dispose)
        sessions = create_sessionmaker(engine)
        broker = runtime.rabbit_broker(settings, name)
        resources.push_async_callback(broker.close)
        await broker.start()
        relay = OutboxRelay(sessions, broker)
        await relay.start()
        resources.push_async_callback(relay.stop)
        resources.push_async_callback(relay.flush)  # runs before stop: what the last handlers staged goes out
        metrics = WorkerMetrics(name)
        embedder: Any = None
        index: Any = None
        if needs_index:
            embedder = await asyncio.to_thread(runtime.embedder, settings)
            resources.push_async_callback(embedder.aclose)
            index = create_vector_index(settings, role="writer", sessions=sessions)
            resources.push_async_callback(index.aclose)
            index = metrics.counting(index)
        context = WorkerContext(settings=settings, sessions=sessions, broker=broker, embedder=embedder,
                                index=index, registry=metrics.registry)
        resources.push_async_callback(context.aclose)
        consumer = build(context)
        metrics.watch(consumer)
        endpoint = await start_worker_endpoint(settings, metrics, broker=broker, sessions=sessions, queue=consumer.queue)
        if endpoint is not None:
            resources.push_async_callback(endpoint.aclose)
        log.info(f"{name} consuming", extra={"queue": consumer.queue, "nice": os.nice(0)})
        await run_consumer(consumer, stop)
