"""Worker metrics and the worker's /healthz and /metrics endpoint, on real RabbitMQ and real databases."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import numpy as np
import pydantic
import pytest

from parley.bus import Consumer, Envelope, OutboxRelay, RabbitBroker, Received, consuming
from parley.errors import Unavailable, UnsupportedType
from parley.observability import QueueSampler, WorkerEndpoint, WorkerMetrics, start_worker_endpoint
from parley.settings import Settings
from parley.vectors import IndexItem
from tests.parley.bus_support import eventually, stage_committed

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


class Uploaded(pydantic.BaseModel):
    document_id: str


class RecordingIndex:
    """Stands in for the vector index the handler writes to (the counting wrapper is what is tested)."""

    def __init__(self) -> None:
        self.written: list[str] = []

    async def replace_document(self, tenant_id: str, document_id: str, items: list[IndexItem]) -> None:
        self.written += [i.id for i in items]

    async def ensure_tenant(self, tenant_id: str) -> None:
        return None


def _item(n: int) -> IndexItem:
    return IndexItem(id=f"00000000-0000-0000-0000-{n:012d}", document_id="d", text="t", vector=np.ones(4, dtype=np.float32) / 2)


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in a Prometheus text exposition."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        if match and match.group(1) == name and ",".join(sorted((match.group(2) or "").split(","))) == want:
            return float(match.group(3))
    return None


async def test_queue_figures_come_from_the_broker_and_the_backlog_table(sessions, broker: RabbitBroker) -> None:
    # Given three documents published for two tenants and no worker attached yet
    await stage_committed(sessions, [Envelope.new("document.uploaded", tenant_id=t, payload={"document_id": d})
                                     for t, d in (("t1", "a"), ("t1", "b"), ("t2", "c"))], "documents")
    assert await OutboxRelay(sessions, broker).flush() == 3
    metrics = WorkerMetrics("documents-worker")
    sampler = QueueSampler(metrics, broker=broker, sessions=sessions, queue="documents", min_interval=0)
    # When the figures are sampled (as a scrape of /metrics does)
    await sampler.refresh()
    text = metrics.render().decode()
    # Then RabbitMQ's declare-ok and the backlog table agree: 3 ready, no consumer, 3 unfinished
    assert sample(text, "parley_queue_ready_messages", queue="documents") == 3
    assert sample(text, "parley_queue_consumers", queue="documents") == 0
    assert sample(text, "parley_queue_dead_letters", queue="documents") == 0
    assert sample(text, "parley_queue_backlog", queue="documents") == 3
    assert sample(text, "parley_queue_oldest_message_age_seconds", queue="documents") >= 0
    assert sample(text, "parley_outbox_unpublished") == 0
    assert sample(text, "parley_worker_sample_errors_total") == 0


async def test_outcomes_reasons_and_indexed_items_are_counted_and_served(sessions, broker: RabbitBroker) -> None:
    # Given a consumer whose handler indexes two chunks, fails one document for good, and needs a retry for another
    metrics = WorkerMetrics("documents-worker")
    index = metrics.counting(RecordingIndex())
    consumer = Consumer(name="documents-test", queue="documents", broker=broker, sessions=sessions, max_attempts=3,
                        requeue_pause=0.05)
    metrics.watch(consumer)

    @consumer.handler("document.uploaded", Uploaded)
    async def handle(msg: Received[Uploaded]) -> None:
        doc = msg.payload.document_id
        if doc == "exe":
            raise UnsupportedType("cannot read .exe files")
        if doc == "flaky" and msg.envelope.attempt == 1:
            raise Unavailable("embedding service returned 503")
        await index.replace_document(msg.envelope.tenant_id or "", doc, [_item(1), _item(2)])

    endpoint = WorkerEndpoint(metrics, QueueSampler(metrics, broker=broker, sessions=sessions, queue="documents"),
                              broker=broker)
    url = await endpoint.start("127.0.0.1", 0)
    try:
        # When three uploads go through the real broker
        await stage_committed(sessions, [Envelope.new("document.uploaded", tenant_id="t1", payload={"document_id": d})
                                         for d in ("ok", "exe", "flaky")], "documents")
        await OutboxRelay(sessions, broker).flush()
        async with consuming(consumer):
            await eventually(lambda: consumer.outcomes["ok"] == 2 and consumer.outcomes["dead"] == 1)
            async with aiohttp.ClientSession() as http:
                async with http.get(url + "/healthz") as response:
                    health = await response.json()
                    assert response.status == 200 and health["queues"] == ["documents"]
                async with http.get(url + "/metrics") as response:
                    assert response.status == 200 and response.content_type == "text/plain"
                    text = await response.text()
    finally:
        await endpoint.aclose()
    # Then the scrape shows every outcome, the reasons, the retry, the dead letter and the throughput
    assert sample(text, "parley_worker_messages_total", queue="documents", type="document.uploaded", outcome="ok") == 2
    assert sample(text, "parley_worker_messages_total", queue="documents", type="document.uploaded", outcome="dead") == 1
    assert sample(text, "parley_worker_messages_total", queue="documents", type="document.uploaded", outcome="retry") == 1
    assert sample(text, "parley_worker_retries_total", queue="documents") == 1
    assert sample(text, "parley_worker_failures_total", queue="documents", reason="unsupported_type") == 1
    assert sample(text, "parley_worker_failures_total", queue="documents", reason="unavailable") == 1
    assert sample(text, "parley_worker_dead_letters_total", queue="documents", reason="unsupported_type") == 1
    assert sample(text, "parley_worker_items_indexed_total", kind="document") == 4
    assert sample(text, "parley_worker_message_seconds_count", queue="documents") == 4
    assert sample(text, "parley_queue_consumers", queue="documents") == 1
    assert sample(text, "parley_queue_dead_letters", queue="documents") == 1
    assert sample(text, "parley_queue_backlog", queue="documents") == 0
    assert sample(text, "parley_worker_in_flight", queue="documents") == 0


async def test_the_worker_endpoint_closes_idle_connections_and_refuses_past_its_cap(sessions, broker: RabbitBroker) -> None:
    # Given a worker endpoint started from settings: request heads within 5 s, one connection at most
    settings = Settings(http_header_timeout=5.0, http_max_connections=1, worker_metrics_host="127.0.0.1", worker_metrics_port=0)
    metrics = WorkerMetrics("documents-worker")
    endpoint = await start_worker_endpoint(settings, metrics, broker=broker, sessions=sessions, queue="documents")
    assert endpoint is not None and endpoint.url is not None
    port = int(endpoint.url.rsplit(":", 1)[1])
    writers: list[asyncio.StreamWriter] = []
    try:
        # When one client connects and says nothing, and a second one connects
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        second_reader, second_writer = await asyncio.open_connection("127.0.0.1", port)
        writers += [idle_writer, second_writer]
        # Then the second is answered 503 and closed, and the silent one is closed by the endpoint
        refused = await asyncio.wait_for(second_reader.read(), 30)
        assert refused.startswith(b"HTTP/1.1 503"), refused
        assert await asyncio.wait_for(idle_reader.read(), 30) == b""
        # And the refusal is counted in the worker's own metrics
        async with aiohttp.ClientSession() as http, http.get(endpoint.url + "/metrics") as response:
            text = await response.text()
        assert sample(text, "parley_http_connections_refused_total") == 1
    finally:
        for writer in writers:
            writer.close()
        await endpoint.aclose()
