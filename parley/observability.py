"""Worker observability: Prometheus metrics and a small HTTP endpoint, ``/healthz`` and ``/metrics``.

Each worker process (``parley worker documents|catalog``) serves them on
PARLEY_WORKER_METRICS_HOST:PARLEY_WORKER_METRICS_PORT (0: a free port, logged at start; -1: none;
a port already taken, e.g. by a second worker started with the same environment, falls back to
a free one, logged), through `parley.http_server` like every server of ours (header and body
timeouts, a connection cap). The gateway and the retrieval service expose ``/metrics`` on their own ports.
Every registry is the process's own (never prometheus_client's global one), so tests and the
single-process mode can build several in one process.

Counted as messages are handled (`parley.bus.Consumer.listeners`):

* ``parley_worker_messages_total{queue,type,outcome}``: ok, duplicate, retry, dead, requeued
* ``parley_worker_failures_total{queue,reason}``: failed attempts by error code (retried or not)
* ``parley_worker_retries_total{queue}``, ``parley_worker_dead_letters_total{queue,reason}``
* ``parley_worker_message_seconds{queue}``: time from delivery to ack
* ``parley_worker_items_indexed_total{kind}``: chunks (``document``) and products written to the
  vector index: ingestion throughput
* ``parley_worker_in_flight{queue}``: messages being handled now

Sampled when ``/metrics`` is scraped (at most once a second; see :mod:`parley.status`):

* ``parley_queue_ready_messages{queue}``, ``parley_queue_consumers{queue}``,
  ``parley_queue_dead_letters{queue}``: RabbitMQ's declare-ok for the work queue and its DLQ
* ``parley_queue_backlog{queue}``, ``parley_queue_oldest_message_age_seconds{queue}``: published
  and not finished (``pending_message``), in flight included
* ``parley_outbox_unpublished``, ``parley_outbox_oldest_age_seconds``
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.bus import Broker, Consumer, Envelope, Failure
from parley.db import unit_of_work
from parley.http_server import HttpServer, ServerLimits
from parley.settings import Settings
from parley.bus.stats import outbox_backlog, pending_backlog, work_stats

log = logging.getLogger("parley.observability")

MESSAGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class WorkerMetrics:
    def __init__(self, process: str) -> None:
        self.process = process
        self.registry = r = CollectorRegistry()
        self.messages = Counter("parley_worker_messages", "Deliveries handled, by message type and outcome.",
                                ["queue", "type", "outcome"], registry=r)
        self.failures = Counter("parley_worker_failures", "Failed attempts, by error code.", ["queue", "reason"], registry=r)
        self.retries = Counter("parley_worker_retries", "Messages sent to a delay tier for another attempt.", ["queue"],
                               registry=r)
        self.dead_letters = Counter("parley_worker_dead_letters", "Messages dead-lettered, by error code.",
                                    ["queue", "reason"], registry=r)
        self.seconds = Histogram("parley_worker_message_seconds", "Time from delivery to ack.", ["queue"],
                                 buckets=MESSAGE_BUCKETS, registry=r)
        self.indexed = Counter("parley_worker_items_indexed", "Items written to the vector index (document chunks, products).",
                               ["kind"], registry=r)
        self.in_flight = Gauge("parley_worker_in_flight", "Messages being handled now.", ["queue"], registry=r)
        self.ready = Gauge("parley_queue_ready_messages", "Messages ready in the work queue (RabbitMQ).", ["queue"], registry=r)
        self.consumers = Gauge("parley_queue_consumers", "Consumers attached to the work queue (RabbitMQ).", ["queue"],
                               registry=r)
        self.dlq = Gauge("parley_queue_dead_letters", "Messages in the queue's dead-letter queue (RabbitMQ).", ["queue"],
                         registry=r)
        self.backlog = Gauge("parley_queue_backlog", "Messages published and not yet finished (in flight included).",
                             ["queue"], registry=r)
        self.oldest = Gauge("parley_queue_oldest_message_age_seconds", "Age of the oldest unfinished message.", ["queue"],
                            registry=r)
        self.outbox = Gauge("parley_outbox_unpublished", "Outbox rows not yet published to the broker.", registry=r)
        self.outbox_oldest = Gauge("parley_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row.", registry=r)
        self.sample_errors = Counter("parley_worker_sample_errors", "Failed samplings of queue and outbox figures.", registry=r)
        self.consumers_watched: list[Consumer] = []

    def watch(self, consumer: Consumer) -> None:
        """Count every delivery of the consumer and expose how many it holds."""
        queue = consumer.queue
        self.retries.labels(queue)  # present (at 0) before the first message
        self.in_flight.labels(queue).set_function(lambda: consumer.in_flight)

        def on_outcome(outcome: str, envelope: Envelope | None, failure: Failure | None, seconds: float) -> None:
            self.messages.labels(queue, envelope.type if envelope else "unreadable", outcome).inc()
            self.seconds.labels(queue).observe(seconds)
            if failure is not None:
                self.failures.labels(queue, failure.code).inc()
            if outcome == "retry":
                self.retries.labels(queue).inc()
            elif outcome == "dead":
                self.dead_letters.labels(queue, failure.code if failure else "unknown").inc()

        consumer.listeners.append(on_outcome)
        self.consumers_watched.append(consumer)

    def counting(self, index: Any) -> CountingIndex:
        return CountingIndex(index, self.indexed)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class CountingIndex:
    """The vector index, counting the items written through it (everything else passes through)."""

    def __init__(self, inner: Any, counter: Counter) -> None:
        self._inner = inner
        self._counter = counter

    def _count(self, items: Sequence[Any]) -> None:
        kinds: dict[str, int] = {}
        for item in items:
            kind = getattr(item, "kind", "document")
            kinds[kind] = kinds.get(kind, 0) + 1
        for kind, n in kinds.items():
            self._counter.labels(kind).inc(n)

    async def replace_document(self, tenant_id: str, document_id: str, items: Sequence[Any]) -> Any:
        result = await self._inner.replace_document(tenant_id, document_id, items)
        self._count(items)
        return result

    async def upsert(self, tenant_id: str, items: Sequence[Any]) -> Any:
        result = await self._inner.upsert(tenant_id, items)
        self._count(items)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class QueueSampler:
    """Queue, backlog and outbox figures for one work queue, refreshed when metrics are scraped."""

    def __init__(self, metrics: WorkerMetrics, *, broker: Broker, sessions: async_sessionmaker[AsyncSession], queue: str,
                 min_interval: float = 1.0, timeout: float = 3.0) -> None:
        self.metrics, self.broker, self.sessions, self.queue = metrics, broker, sessions, queue
        self.min_interval, self.timeout = min_interval, timeout
        self._last = float("-inf")
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._last < self.min_interval:
                return
            self._last = time.monotonic()
            try:
                async with asyncio.timeout(self.timeout):
                    await self._sample()
            except Exception as exc:  # noqa: BLE001 - a scrape still gets the counters
                self.metrics.sample_errors.inc()
                log.warning("sampling queue figures failed: %r", exc)

    async def _sample(self) -> None:
        m, t = self.metrics, self.broker.topology
        async with unit_of_work(self.sessions, admin=True) as session:
            backlog = (await pending_backlog(session, [self.queue])).get(self.queue)
            outbox = await outbox_backlog(session)
        m.backlog.labels(self.queue).set(backlog.count if backlog else 0)
        m.oldest.labels(self.queue).set((backlog.age_seconds() or 0.0) if backlog else 0.0)
        m.outbox.set(outbox.count)
        m.outbox_oldest.set(outbox.age_seconds() or 0.0)
        if self.broker.is_connected:
            stats = await self.broker.queue_stats([*t.work_queues(self.queue), t.dlq(self.queue)])
            work, dead = work_stats(t, stats, self.queue), stats.get(t.dlq(self.queue))
            if work is not None:
                m.ready.labels(self.queue).set(work.messages)
                m.consumers.labels(self.queue).set(work.consumers)
            if dead is not None:
                m.dlq.labels(self.queue).set(dead.messages)


class WorkerEndpoint:
    """``GET /healthz`` (200 while the broker connection is up, else 503) and ``GET /metrics``."""

    def __init__(self, metrics: WorkerMetrics, sampler: QueueSampler | None, *, broker: Broker,
                 limits: ServerLimits | None = None) -> None:
        self.metrics, self.sampler, self.broker = metrics, sampler, broker
        self.limits = limits or ServerLimits()
        self.url: str | None = None
        self._server: HttpServer | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _healthz(self, request: web.Request) -> web.Response:
        connected = self.broker.is_connected
        body = {"status": "ok" if connected else "broker disconnected", "process": self.metrics.process, "pid": os.getpid(),
                "in_flight": sum(c.in_flight for c in self.metrics.consumers_watched),
                "queues": [c.queue for c in self.metrics.consumers_watched]}
        return web.json_response(body, status=200 if connected else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        if self.sampler is not None:
            await self.sampler.refresh()
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self, host: str, port: int) -> str:
        # header and body timeouts, the connection cap (parley.http_server), counted in the worker's registry
        self._server = HttpServer(self.app(), self.limits, registry=self.metrics.registry)
        await self._server.setup()
        try:
            bound = await self._server.listen(host, port)
        except OSError as exc:
            if port == 0 or exc.errno != errno.EADDRINUSE:
                raise
            log.warning("port %s is taken (another worker?); serving /metrics on a free port instead", port)
            bound = await self._server.listen(host, 0)
        self.url = f"http://{host}:{bound}"
        return self.url

    async def aclose(self) -> None:
        if self._server is not None:
            await self._server.cleanup()
            self._server = None


async def start_worker_endpoint(settings: Settings, metrics: WorkerMetrics, *, broker: Broker,
                                sessions: async_sessionmaker[AsyncSession], queue: str) -> WorkerEndpoint | None:
    """Serve the worker's /healthz and /metrics as configured (None when PARLEY_WORKER_METRICS_PORT=-1)."""
    if settings.worker_metrics_port < 0:
        return None
    endpoint = WorkerEndpoint(metrics, QueueSampler(metrics, broker=broker, sessions=sessions, queue=queue), broker=broker,
                              limits=ServerLimits.from_settings(settings))
    url = await endpoint.start(settings.worker_metrics_host, settings.worker_metrics_port)
    log.info("%s metrics at %s/metrics", metrics.process, url, extra={"metrics_url": url + "/metrics"})
    return endpoint
