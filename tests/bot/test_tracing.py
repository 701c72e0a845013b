"""One correlation id follows an upload: the Slack DM's message (or the web request) -> the stored
document and its `document.uploaded` -> the real document worker's log lines -> the `notice.requested`
it stages -> the gateway's notifications consumer posting "indexed" back into the DM. The same run
scrapes the worker's /metrics."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import FormData
from sqlalchemy import select

from parley.bus import Envelope
from parley.db import unit_of_work
from parley.logging import JsonFormatter
from knowledge.models import Document
from parley.bus.models import OutboxMessage
from tests.bot.conftest import Stack, eventually, start_worker
from tests.bot.test_slack_files import file_share, serve
from tests.support.services import free_port

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

RETURNS = b"# Returns policy\n\nYou can return any item within 30 days of delivery for a full refund.\n"


class Lines(logging.Handler):
    """The gateway's log lines as the JSON formatter writes them (with the bound context)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter("gateway"))
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def gateway_lines(caplog: pytest.LogCaptureFixture) -> Iterator[Lines]:
    caplog.set_level(logging.INFO)
    handler = Lines()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)





def worker_lines(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def sample(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert match, f"{series} not in the scrape"
    return float(match.group(1))


async def test_one_correlation_id_from_the_dm_through_the_worker_to_the_notice(
        make_stack, worker_processes, gateway_lines: Lines, tmp_path: Path) -> None:
    # Given the gateway and a real document worker (JSON logs, /metrics on a port of ours)
    stack: Stack = await make_stack()
    port = free_port()
    log = tmp_path / "worker.log"
    worker_processes.append(start_worker(stack, log, PARLEY_WORKER_METRICS_PORT=str(port)))
    # When a file arrives in a Slack DM
    payload = file_share(stack, [{"id": "F0RETURNS", "name": "returns.md", "mimetype": "text/markdown",
                                  "filetype": "markdown", "size": len(RETURNS)}])
    serve(stack, payload, {"returns.md": RETURNS})
    assert (await stack.post_slack(payload)).status == 200
    # And the admin uploads another file in the web chat, naming its own correlation id
    form = FormData()
    form.add_field("file", b"Orders ship within 2 business days from Leipzig.\n", filename="shipping.txt",
                   content_type="text/plain")
    response = await stack.client.post("/api/documents", data=form, headers={
        "Authorization": f"Bearer {stack.api_key}", "X-Correlation-Id": "web-upload-1"})
    assert response.status == 202 and response.headers["X-Correlation-Id"] == "web-upload-1"
    posted = await stack.slack.wait_posted(2, timeout=120)
    assert posted[1]["text"].startswith("indexed returns.md")

    # Then the DM's message id is the correlation id of the document, its message, and the worker's notice
    [inbound] = [m for m in await stack.messages(channel="slack")]
    corr = inbound.id
    async with unit_of_work(stack.sessions, admin=True) as session:
        documents = {d.filename: d for d in (await session.execute(select(Document))).scalars()}
        outbox = [Envelope.model_validate_json(body) for body in (await session.execute(select(OutboxMessage.body))).scalars()]
    assert documents["returns.md"].correlation_id == corr
    assert documents["shipping.txt"].correlation_id == "web-upload-1"
    uploaded = {e.payload["document_id"]: e.correlation_id for e in outbox if e.type == "document.uploaded"}
    assert uploaded == {documents["returns.md"].id: corr, documents["shipping.txt"].id: "web-upload-1"}
    [indexed_notice] = [e for e in outbox if e.type == "notice.requested" and e.payload.get("kind") == "indexed"]
    assert indexed_notice.correlation_id == corr

    # And the worker's lines about each document carry its correlation id and tenant
    await eventually(lambda: sum(line.get("msg") == "indexed document" for line in worker_lines(log)) == 2,
                     timeout=60, interval=0.2)
    by_document = {line["document_id"]: line for line in worker_lines(log) if line.get("msg") == "indexed document"}
    assert by_document[documents["returns.md"].id]["correlation_id"] == corr
    assert by_document[documents["shipping.txt"].id]["correlation_id"] == "web-upload-1"
    assert {line["tenant_id"] for line in by_document.values()} == {stack.tenant_id}

    # And the gateway's notifications consumer posted the notice under the same id
    await eventually(lambda: any(line.get("correlation_id") == corr and line.get("queue") == "notifications"
                                 and line.get("outcome") == "ok" for line in gateway_lines.lines))

    # And the worker's /metrics counted both documents and their chunks
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/healthz") as health:
            assert health.status == 200
        async with http.get(f"http://127.0.0.1:{port}/metrics") as scrape:
            text = await scrape.text()
    labels = 'outcome="ok",queue="documents",type="document.uploaded"'
    assert sample(text, f"parley_worker_messages_total{{{labels}}}") == 2
    assert sample(text, 'parley_worker_items_indexed_total{kind="document"}') >= 2
    assert sample(text, 'parley_queue_consumers{queue="documents"}') == 1
    assert worker_processes[0].poll() is None, log.read_text()[-2000:]
