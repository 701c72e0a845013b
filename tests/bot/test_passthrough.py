"""Pass-through processing (issue 18.2): `POST /api/v1/process` through the real gateway app and the
real document worker's consumer (sandboxed extraction, chunking, the local embedding model) to a
local receiver that verifies the Standard Webhooks signature; then proof that nothing of the
document was kept: every table, every file under the data directory (blobs, sealed uploads, the
vector index, the SQLite file), the broker's dead letters and every log record.

Fast variant: the in-memory broker on SQLite and on PostgreSQL; one variant on PostgreSQL and
RabbitMQ. Retries run with short pauses and delay tiers (settings and topology of the test).
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import GatewayDeps, create_app
from cli.migrations import load_models
from ingestion.documents.consumer import build_document_consumer
from parley.bus import InMemoryBroker, RabbitBroker, Topology
from parley.bus.models import DeadLetter, OutboxMessage
from parley.crypto import load_secret_box
from parley.db import Base, create_engine, create_sessionmaker, unit_of_work
from parley.logging import JsonFormatter
from parley.settings import Settings
from parley.vectors import create_vector_index
from parley.webhook_signing import verify
from parley.worker import WorkerContext
from passthrough.models import ProcessRequest
from passthrough.store import DIRNAME
from tenants import service as tenants
from tests.ingestion.samples import build_pdf, encrypt_pdf
from tests.support import services
from tests.support.waiting import eventually
from webhooks.service import create_endpoint

pytestmark = [pytest.mark.timeout(180)]


@dataclass
class Receiver:
    """A tenant's webhook endpoint: answers each POST with the next scripted status (then 200)."""

    statuses: list[int] = field(default_factory=list)
    calls: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self.statuses.pop(0) if self.statuses else 200
        self.calls.append((dict(request.headers), body, status))
        return web.Response(status=status, text="ok" if status < 300 else "down")

    @property
    def delivered(self) -> list[tuple[dict[str, str], bytes, int]]:
        return [c for c in self.calls if 200 <= c[2] < 300]


@dataclass
class Harness:
    client: TestClient
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    broker: Any
    receiver: Receiver
    receiver_url: str
    secret: str
    tenant_id: str
    api_key: str
    log_lines: io.StringIO
    consumer: Any = None

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    async def submit(self, name: str, data: bytes, content_type: str = "text/markdown", *,
                     url: str | None = None, status: int = 202) -> dict[str, Any]:
        form = FormData()
        form.add_field("webhook_url", url or self.receiver_url)
        form.add_field("file", data, filename=name, content_type=content_type)
        response = await self.client.post("/api/v1/process", data=form, headers=self.auth())
        body = await response.json()
        assert response.status == status, body
        return body

    async def status(self, request_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/api/v1/process/{request_id}", headers=self.auth())
        assert response.status == 200
        return await response.json()

    async def ended(self, request_id: str) -> dict[str, Any]:
        async def done() -> dict[str, Any] | None:
            state = await self.status(request_id)
            return state if state["status"] in ("delivered", "failed") else None
        return await eventually(done, timeout=120, interval=0.05, what=f"process request {request_id} to end")

    async def find_anywhere(self, *needles: str) -> list[str]:
        """Where any of ``needles`` occurs: table rows, files under the data dir, dead letters, logs."""
        load_models()
        found = []
        async with unit_of_work(self.sessions, admin=True) as session:
            for table in Base.metadata.sorted_tables:
                for row in (await session.execute(select(table))).all():
                    text = repr(tuple(row))
                    found += [f"table {table.name}: {n}" for n in needles if n in text]
        files = list(Path(self.settings.data_dir).rglob("*"))
        if self.settings.is_sqlite:  # the database file and its write-ahead log (the test's lives beside the data dir)
            database = Path(self.settings.effective_database_url.split(":///", 1)[1])
            files += [p for p in database.parent.glob(database.name + "*")]
        for path in files:
            if path.is_file():
                data = path.read_bytes()
                found += [f"file {path}: {n}" for n in needles if n.encode() in data]
        for queue, messages in getattr(self.broker, "dead", {}).items():
            for message in messages:
                blob = message.body + json.dumps(message.headers, default=str).encode()
                found += [f"dead letter on {queue}: {n}" for n in needles if n.encode() in blob]
        logged = self.log_lines.getvalue()
        found += [f"log: {n}" for n in needles if n in logged]
        return found

    async def requests(self) -> list[ProcessRequest]:
        async with unit_of_work(self.sessions, admin=True) as session:
            return list((await session.execute(select(ProcessRequest))).scalars())

    def sealed_files(self) -> list[Path]:
        root = Path(self.settings.effective_blob_dir) / DIRNAME
        return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


class _Everything(logging.Handler):
    """Every log record at every level, formatted twice: as the JSON lines a worker writes, and
    with its message arguments (what caplog would show)."""

    def __init__(self, sink: io.StringIO) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink
        self.json = JsonFormatter("test")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.write(self.json.format(record) + "\n" + record.getMessage() + "\n" + repr(record.__dict__) + "\n")
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is still searched raw
            self.sink.write(repr(record.__dict__) + "\n")


@pytest.fixture
def broker_kind() -> str:
    return "memory"


#: A parser plugin whose parser fails with an error quoting the document (its traceback goes to the
#: parser's stderr, which the sandbox logs when a parse fails).
LEAKY_PLUGIN = """
from ingestion.documents.extract import register_format


def _leaky(data):
    raise ValueError(f"cannot parse line {data[:80]!r}")


register_format("text/x-parley-leaky", extensions=[".leaky"], label="leaky (.leaky)", extract=_leaky)
"""


@pytest.fixture
def parser_plugins(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """PARLEY_PARSER_PLUGINS for the harness: none, or (``indirect`` "leaky") `LEAKY_PLUGIN`."""
    if getattr(request, "param", None) != "leaky":
        return ""
    path = tmp_path / "plugins" / "leaky_format.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(LEAKY_PLUGIN)
    return str(path)


@pytest.fixture
def log_level() -> int:
    """Every record the proof searches; DEBUG (every library's chatter) where the proof is the point."""
    return logging.INFO


@pytest.fixture
async def harness(db_url: str, tmp_path: Path, embedder: Any, broker_kind: str, log_level: int, parser_plugins: str,
                  caplog: pytest.LogCaptureFixture) -> AsyncIterator[Harness]:
    caplog.set_level(log_level)
    lines = io.StringIO()
    handler = _Everything(lines)
    logging.getLogger().addHandler(handler)
    settings = Settings(data_dir=tmp_path / "var", database_url=db_url, log_json=False, webhooks_allow_private=True,
                        max_attempts=2, process_delivery_attempts=2, process_retry_pause_seconds=0.01,
                        process_max_bytes=64 * 1024, parse_time_limit_seconds=30, parser_plugins=parser_plugins)
    engine = create_engine(settings, "test-passthrough")
    sessions = create_sessionmaker(engine)
    topology = Topology(prefix=f"t{uuid.uuid4().hex[:8]}.", delays=(0.05, 0.2))
    broker: Any = InMemoryBroker(topology) if broker_kind == "memory" else RabbitBroker(services.AMQP_URL, topology=topology)
    await broker.start()
    box = load_secret_box(settings)

    receiver = Receiver()
    receiver_app = web.Application()
    receiver_app.router.add_post("/hooks/parley", receiver.handle)
    receiver_server = TestServer(receiver_app)
    await receiver_server.start_server()
    receiver_url = str(receiver_server.make_url("/hooks/parley"))

    async with unit_of_work(sessions, admin=True) as session:
        tenant = await tenants.create_tenant(session, name="acme")
    async with unit_of_work(sessions, admin=True) as session:
        _, key = await tenants.create_api_key(session, tenant_id=tenant.id, name="admin")
    async with unit_of_work(sessions, tenant_id=tenant.id) as session:
        _, secret = await create_endpoint(session, tenant_id=tenant.id, url=receiver_url, event_types="process.completed",
                                          box=box, allow_private=True)

    app = create_app(settings, deps=GatewayDeps(sessions=sessions, broker=broker, box=box, consume_notifications=False,
                                                recover_on_start=False))
    client = TestClient(TestServer(app))
    await client.start_server()
    index = create_vector_index(settings, role="writer", sessions=sessions)
    context = WorkerContext(settings=settings, sessions=sessions, broker=broker, embedder=embedder, index=index)
    consumer = build_document_consumer(context)
    await consumer.start()
    try:
        yield Harness(client, settings, sessions, broker, receiver, receiver_url, secret, tenant.id, key, lines, consumer)
    finally:
        await consumer.stop(10)
        await context.aclose()
        await client.close()
        await receiver_server.close()
        await index.aclose()
        if broker_kind == "rabbit":
            await broker.delete_topology()
        await broker.close()
        await engine.dispose()
        logging.getLogger().removeHandler(handler)


def _marked_document(marker: str) -> bytes:
    return (f"# Warranty terms\n\nEvery kettle carries a three-year warranty. Reference {marker} identifies "
            f"this contract.\n\n## Claims\n\nSend the receipt and the serial number; claims for {marker} are "
            "answered within five working days.\n").encode()


def _check_delivery(h: Harness, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    verify(h.secret, headers, body)  # the receiver's check: the signature matches the endpoint's secret
    payload = json.loads(body)
    assert payload["type"] == "process.completed"
    return payload


def _readme_verifier() -> Any:
    """The verification function of the README's "Pass-through processing" section, as written there."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Pass-through processing", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README, checked to stay true
    return namespace["verified"]


# --- the proof -----------------------------------------------------------------------------------


@pytest.mark.parametrize("log_level", [logging.DEBUG], ids=["debug-logs"])
@pytest.mark.parametrize(("db_backend", "broker_kind"), [("sqlite", "memory"),
                                                         pytest.param("postgres", "rabbit", marks=pytest.mark.rabbitmq)])
async def test_a_processed_document_reaches_the_webhook_and_nothing_of_it_is_kept(harness: Harness) -> None:
    h = harness
    marker = f"PARLEY-MARKER-{uuid.uuid4().hex}"
    name_marker = f"NAME-MARKER-{uuid.uuid4().hex[:12]}"
    # Given a document holding a unique marker, under a file name holding another
    # When the tenant sends it for pass-through processing to its registered endpoint
    accepted = await h.submit(f"{name_marker}-warranty.md", _marked_document(marker))
    assert accepted["status"] == "queued" and accepted["status_url"] == f"/api/v1/process/{accepted['id']}"

    # Then the request ends delivered, with its chunks counted and one delivery attempt
    state = await h.ended(accepted["id"])
    assert (state["status"], state["result"], state["attempts"], state["last_status_code"]) == ("delivered", "chunks", 1, 200)
    # And the endpoint got it once, signed with its secret, webhook-id msg_<request id>
    [(headers, body, _)] = h.receiver.calls
    assert headers["webhook-id"] == f"msg_{accepted['id']}" == state["webhook_id"]
    payload = _check_delivery(h, headers, body)
    data = payload["data"]
    assert (data["request_id"], data["status"], data["filename"]) == (accepted["id"], "completed", f"{name_marker}-warranty.md")
    assert data["title"] == data["filename"]  # as indexing titles it: the document's own title, else its name
    assert ["Warranty terms"] in data["sections"] and ["Warranty terms", "Claims"] in data["sections"]
    assert data["embedding"]["dimension"] == len(data["chunks"][0]["vector"]) > 0 and data["embedding"]["model"]
    assert state["chunks"] == len(data["chunks"]) > 0
    assert any(marker in c["text"] for c in data["chunks"])
    assert all(c["token_count"] > 0 and all(isinstance(x, float) for x in c["vector"]) for c in data["chunks"])
    # And the vectors are the ones indexing would have made for the same chunks (same model, same text)
    assert abs(sum(x * x for x in data["chunks"][0]["vector"]) - 1.0) < 1e-3

    # And nothing holds the marker or the file name: no table row, no file under the data dir
    # (blobs, sealed uploads, vector index, the database file), no dead letter, no log record
    assert await h.find_anywhere(marker, name_marker) == []
    assert h.sealed_files() == []
    # ... while the search itself can find what is there (the request's id is in its row and logs)
    assert any("table process_request" in f for f in await h.find_anywhere(accepted["id"]))
    assert any(f.startswith("log") for f in await h.find_anywhere(accepted["id"]))
    if h.settings.is_sqlite:  # ... and in the files: the database file holds the request's row
        assert any(f.startswith("file ") for f in await h.find_anywhere(accepted["id"]))


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_a_failed_delivery_is_retried_and_delivered_once(harness: Harness) -> None:
    h = harness
    h.receiver.statuses = [500]  # the endpoint blinks once
    marker = f"PARLEY-MARKER-{uuid.uuid4().hex}"
    # When a document is processed while the endpoint answers 500 to the first attempt
    accepted = await h.submit("warranty.md", _marked_document(marker))
    state = await h.ended(accepted["id"])
    # Then it is retried and delivered once, with the same webhook-id, each attempt signed
    assert (state["status"], state["attempts"], state["last_status_code"]) == ("delivered", 2, 200)
    assert [c[2] for c in h.receiver.calls] == [500, 200]
    assert {c[0]["webhook-id"] for c in h.receiver.calls} == {f"msg_{accepted['id']}"}
    readme_check = _readme_verifier()
    for headers, body, _ in h.receiver.calls:
        _check_delivery(h, headers, body)
        # And the README's receiver code, run as written, accepts them and refuses a changed body
        assert readme_check(h.secret, headers, body) and not readme_check(h.secret, headers, body + b" ")
    assert len(h.receiver.delivered) == 1
    assert await h.find_anywhere(marker) == [] and h.sealed_files() == []


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_when_every_attempt_fails_only_the_metadata_of_the_failure_is_kept(harness: Harness) -> None:
    h = harness
    h.receiver.statuses = [503] * 50  # the endpoint stays down
    marker = f"PARLEY-MARKER-{uuid.uuid4().hex}"
    # When a document is processed and every delivery fails
    accepted = await h.submit("warranty.md", _marked_document(marker))
    state = await h.ended(accepted["id"])
    # Then after every run's attempts (2 runs x 2 attempts) the request failed, saying why
    assert state["status"] == "failed" and state["error_code"] == "webhook_failed"
    assert state["attempts"] == 4 == len(h.receiver.calls) and state["last_status_code"] == 503
    assert "HTTP 503" in state["error"]
    # And the dead letter is of the message only: ids, no content
    async with unit_of_work(h.sessions, admin=True) as session:
        [dead] = (await session.execute(select(DeadLetter))).scalars().all()
    assert dead.message_type == "document.process_requested" and accepted["id"] in dead.body
    assert set(json.loads(dead.body)["payload"]) == {"request_id", "endpoint_id"}
    # And nothing holds the marker: the sealed upload is gone too
    assert await h.find_anywhere(marker) == [] and h.sealed_files() == []


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_an_unreadable_file_is_delivered_as_failed_with_its_reason_and_nothing_kept(harness: Harness) -> None:
    h = harness
    marker = f"PARLEY-MARKER-{uuid.uuid4().hex}"
    # Given a password-protected PDF holding the marker, and a "PDF" that is not one
    locked = encrypt_pdf(build_pdf([[f"Price list {marker}"]]), user_password="s3cret-pw")
    first = await h.submit("prices.pdf", locked, "application/pdf")
    second = await h.submit("broken.pdf", b"%PDF-1.7 this is not really a pdf " + marker.encode(), "application/pdf")
    # Then both are delivered as failed, with a reason a person reads, and end delivered/unreadable
    for accepted, code in ((first, "pdf_encrypted"), (second, None)):
        state = await h.ended(accepted["id"])
        assert (state["status"], state["result"], state["chunks"]) == ("delivered", "unreadable", 0)
        body = next(b for hd, b, _ in h.receiver.calls if hd["webhook-id"] == f"msg_{accepted['id']}")
        data = _check_delivery(h, dict(next(hd for hd, b, _ in h.receiver.calls if b == body)), body)["data"]
        assert data["status"] == "failed" and data["chunks"] == [] and data["error"]["message"]
        assert state["error_code"] == data["error"]["code"]
        if code:
            assert data["error"]["code"] == code
    assert await h.find_anywhere(marker) == [] and h.sealed_files() == []


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_a_request_whose_endpoint_was_removed_meanwhile_fails_and_keeps_nothing(harness: Harness) -> None:
    from webhooks.service import list_endpoints, remove_endpoint

    h = harness
    marker = f"PARLEY-MARKER-{uuid.uuid4().hex}"
    # Given a request accepted while the worker is away
    await h.consumer.stop(10)
    accepted = await h.submit("warranty.md", _marked_document(marker))
    assert len(h.sealed_files()) == 1  # sealed, waiting for the worker
    assert await h.find_anywhere(marker) == []  # ... and unreadable while it waits
    # When the endpoint is removed before the worker takes it
    async with unit_of_work(h.sessions, tenant_id=h.tenant_id) as session:
        [endpoint] = await list_endpoints(session, tenant_id=h.tenant_id)
        await remove_endpoint(session, tenant_id=h.tenant_id, ref=endpoint.id)
    await h.consumer.start()
    # Then the request fails, saying why, nothing was delivered and the sealed upload is gone
    state = await h.ended(accepted["id"])
    assert (state["status"], state["error_code"], state["attempts"]) == ("failed", "endpoint_gone", 0)
    assert "deleted" in state["error"] and h.receiver.calls == []
    assert h.sealed_files() == [] and await h.find_anywhere(marker) == []


@pytest.mark.parametrize("db_backend", ["sqlite"])
@pytest.mark.parametrize("parser_plugins", ["leaky"], indirect=True)
async def test_a_parser_failure_quoting_the_document_is_not_logged(harness: Harness) -> None:
    h = harness
    marker = f"PARLEY-MARKER-{uuid.uuid4().hex}"
    # Given a format whose parser fails with an error that quotes the document
    accepted = await h.submit("notes.leaky", f"{marker} first line\n".encode(), "text/plain")
    # Then the endpoint is told the file could not be read, in words that quote nothing
    state = await h.ended(accepted["id"])
    assert (state["status"], state["result"], state["error_code"]) == ("delivered", "unreadable", "parser_error")
    [(headers, body, _)] = h.receiver.calls
    assert _check_delivery(h, headers, body)["data"]["error"]["code"] == "parser_error"
    # And the parser's traceback (which quotes it) reached no log record: the failure is logged without it
    assert await h.find_anywhere(marker) == [] and h.sealed_files() == []
    assert "its stderr is not logged (a pass-through document)" in h.log_lines.getvalue()


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_bad_requests_get_clear_errors_and_leave_nothing(harness: Harness) -> None:
    h = harness
    marker = f"PARLEY-MARKER-{uuid.uuid4().hex}"
    doc = _marked_document(marker)
    # An unsupported type, an archive, an oversized file, an unregistered URL: the right 4xx
    png = await h.submit("photo.png", b"\x89PNG\r\n\x1a\n" + marker.encode(), "image/png", status=415)
    assert png["error"] == "unsupported_type" and "photo.png" in png["detail"]
    archive = await h.submit("docs.zip", b"PK\x03\x04" + marker.encode(), "application/zip", status=415)
    assert "one by one" in archive["detail"]
    big = await h.submit("big.md", doc * 2000, status=413)
    assert big["error"] == "too_large" and f"{64 * 1024:,} bytes" in big["detail"]
    # (also when the declared length is within the framing's slack: refused as it streams past the limit)
    just_over = await h.submit("big.md", (doc * 400)[: 64 * 1024 + 100], status=413)
    assert just_over["error"] == "too_large" and "PARLEY_PROCESS_MAX_BYTES" in just_over["detail"]
    elsewhere = await h.submit("warranty.md", doc, url="https://example.com/not-registered", status=400)
    assert elsewhere["error"] == "webhook_not_registered" and "register it first" in elsewhere["detail"]
    # A missing file, a missing URL, no key or a wrong one
    form = FormData()
    form.add_field("webhook_url", h.receiver_url)
    no_file = await h.client.post("/api/v1/process", data=form, headers=h.auth())
    assert no_file.status == 400 and "'file'" in (await no_file.json())["detail"]
    form = FormData()
    form.add_field("file", doc, filename="warranty.md", content_type="text/markdown")
    no_url = await h.client.post("/api/v1/process", data=form, headers=h.auth())
    assert no_url.status == 400 and "webhook_url" in (await no_url.json())["detail"]
    not_multipart = await h.client.post("/api/v1/process", json={"webhook_url": h.receiver_url}, headers=h.auth())
    assert not_multipart.status == 400 and "multipart" in (await not_multipart.json())["detail"]
    for headers in ({}, {"Authorization": "Bearer pk_wrong"}):
        form = FormData()
        form.add_field("webhook_url", h.receiver_url)
        form.add_field("file", doc, filename="warranty.md", content_type="text/markdown")
        refused = await h.client.post("/api/v1/process", data=form, headers=headers)
        assert refused.status == 401
    # And an unknown request id is a 404
    unknown = await h.client.get("/api/v1/process/0123456789abcdef0123456789abcdef", headers=h.auth())
    assert unknown.status == 404
    # And nothing was kept: no request, no message, no sealed file, no delivery, no marker
    assert await h.requests() == [] and h.sealed_files() == [] and h.receiver.calls == []
    async with unit_of_work(h.sessions, admin=True) as session:
        assert [o.message_type for o in (await session.execute(select(OutboxMessage))).scalars()] == []
    assert await h.find_anywhere(marker) == []
    # And the refusals are counted for the operator, by reason
    metrics = await (await h.client.get("/metrics")).text()
    for code in ("unsupported_type", "too_large", "webhook_not_registered", "invalid_input"):
        assert f'parley_gateway_uploads_total{{channel="process",outcome="{code}"}}' in metrics, code


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_a_pass_through_only_tenant_refuses_api_uploads_to_the_knowledge_base(harness: Harness) -> None:
    from tests.bot.test_admin import Browser

    h = harness
    admin = await Browser(h).signed_in(h.api_key)  # type: ignore[arg-type]  # it needs only the client
    try:
        # Given the dashboard's Pass-through page: indexing by default, the endpoint listed
        page = await admin.request("GET", "/admin/passthrough")
        assert page.status == 200 and 'data-view="passthrough"' in await page.text()
        state = await admin.json("GET", "/admin/api/passthrough")
        assert state["api_uploads"] == "index" and [e["url"] for e in state["endpoints"]] == [h.receiver_url]
        # When the admin makes API uploads pass-through only there
        state = await admin.json("POST", "/admin/api/passthrough/api-uploads", json={"mode": "pass-through"})
        assert state["api_uploads"] == "pass-through" and "/api/v1/process" in state["meaning"]
        bad = await admin.request("POST", "/admin/api/passthrough/api-uploads", json={"mode": "sometimes"})
        assert bad.status == 400 and "index, pass-through" in (await bad.json())["detail"]
    finally:
        await admin.close()
    # Then a script's upload to the knowledge base is refused, pointing to pass-through processing
    data = FormData()
    data.add_field("file", b"# Notes\n\nHello.\n", filename="notes.md", content_type="text/markdown")
    refused = await h.client.post("/api/documents", data=data, headers=h.auth())
    body = await refused.json()
    assert refused.status == 403 and body["error"] == "pass_through_only" and "/api/v1/process" in body["detail"]
    async with unit_of_work(h.sessions, admin=True) as session:
        from knowledge.models import Document
        assert (await session.execute(select(Document))).first() is None
    # And pass-through still works for it, and shows on the page (metadata only)
    accepted = await h.submit("notes.md", b"# Notes\n\nHello there, this is a short note.\n")
    assert (await h.ended(accepted["id"]))["status"] == "delivered"
    listed = await h.client.get("/api/v1/process", headers=h.auth())
    assert [r["id"] for r in (await listed.json())["requests"]] == [accepted["id"]]

    # When an operator switches it back with the CLI
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(PARLEY_DATABASE_URL=h.settings.effective_database_url, PARLEY_DATA_DIR=str(h.settings.data_dir))
    done = subprocess.run([sys.executable, "-m", "cli", "--json", "tenants", "api-uploads", "--tenant", "acme", "index"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["api_uploads"] == "index"
    # Then the upload is taken again
    data = FormData()
    data.add_field("file", b"# Notes\n\nHello.\n", filename="notes.md", content_type="text/markdown")
    taken = await h.client.post("/api/documents", data=data, headers=h.auth())
    assert taken.status == 202, await taken.text()
