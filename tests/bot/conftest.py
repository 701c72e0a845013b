"""The gateway under test: the real app (`create_app`) on a real database (SQLite and PostgreSQL),
real RabbitMQ (a unique topology prefix per test), the real retrieval service (its app, the
embedded index over the same database, the local embedding model), and local servers speaking
Slack's Web API and Meta's Graph API.

The gateway reaches the real retrieval app over HTTP, as in production, through `ScriptedRetrieval`:
it can hold answers at a gate (to prove the ack does not wait for them), fail (an outage) or
replace an answer's text (to get a long one for the Instagram split); everything else is the
real service's output.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import GatewayDeps, create_app
from bot.config import GatewayConfig
from bot.context import GATEWAY, Gateway
from bot.models import InboundMessage
from parley.bus import RabbitBroker, Topology
from parley.crypto import load_secret_box
from parley.db import create_engine, create_sessionmaker, unit_of_work
from parley.settings import Settings
from retrieval.app import RetrievalDeps
from retrieval.app import create_app as create_retrieval_app
from retrieval.config import RetrievalConfig
from retrieval.schemas import QueryRequest, QueryResponse
from tenants import service as tenants
from tenants.models import ChannelKind
from tests.bot.emulators import GraphEmulator, SlackEmulator
from tests.support import services, waiting
from tests.support.processes import stop_process

FIXTURES = services.SHARED_DATA / "fixtures"

SLACK_SECRET = "e2e-signing-secret-0123456789abcdef"
TEAM, BOT_ID, BOT_USER, BOT_TOKEN = "T043DB835ML", "B0439P161B9", "U0442US8QGH", "xoxb-acme-bot-token"
IG_ACCOUNT, IG_TOKEN = "17841400000000001", "IGAAtest-token"
IG_SECRET, META_SECRET = "instagram-app-secret", "meta-app-secret"
IG_UPLOADER = "IGSID-OWNER"

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


def fixture(relative: str) -> Any:
    """A vendor-written payload from ../shared/data/fixtures (skips when the folder is missing)."""
    path = FIXTURES / relative
    if not path.exists():
        pytest.skip(f"../shared/data is missing (looked for {path}); vendor-payload tests skipped")
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def embedder() -> Any:
    from parley.embeddings import create_embedder
    from parley.embeddings.local import model_installed

    if not model_installed("all-MiniLM-L6-v2"):
        pytest.skip("the local embedding model is not installed (scripts/bootstrap.sh installs it)")
    model = create_embedder(provider="local", model=None, threads=1, openai_api_key=None, openai_base_url=None,
                            openai_model="", openai_dimensions=None, batch_size=8)
    yield model
    from tests.conftest import run_sync

    run_sync(model.aclose())


class ScriptedRetrieval:
    """An HTTP front for the real retrieval service (``POST /v1/query``), for the gateway's real
    `HttpRetrievalClient`: it records requests, can hold them at a gate, answer 503 for a scripted
    outage, or replace an answer's text; everything else is the real service's response. The
    gateway's ``Authorization`` header is passed on: the real service refuses a request without
    its service token."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()
        self.requests: list[QueryRequest] = []
        self.authorizations: list[str | None] = []  # each request's Authorization header, passed on upstream
        self.texts: dict[str, str] = {}
        self.failures = 0
        self.http: ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/query", self.query)
        return app

    async def query(self, request: web.Request) -> web.Response:
        body = await request.read()
        req = QueryRequest.model_validate_json(body)
        self.requests.append(req)
        self.authorizations.append(request.headers.get("Authorization"))
        self.started.set()
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            return web.json_response({"error": "unavailable", "detail": "retrieval is down (scripted)"}, status=503)
        if self.http is None:
            self.http = ClientSession()
        headers = {"Content-Type": "application/json"}
        if "Authorization" in request.headers:  # the real service checks the gateway's service token
            headers["Authorization"] = request.headers["Authorization"]
        async with self.http.post(f"{self.upstream}/v1/query", data=body, headers=headers) as r:
            status, data = r.status, await r.read()
        if status == 200 and req.message in self.texts:
            response = QueryResponse.model_validate_json(data).model_copy(update={"answer": self.texts[req.message]})
            data = response.model_dump_json().encode()
        return web.Response(body=data, status=status, content_type="application/json")


def slack_headers(body: str, secret: str = SLACK_SECRET, ts: str | None = None, **extra: str) -> dict[str, str]:
    ts = ts or str(int(time.time()))
    sig = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig, "Content-Type": "application/json", **extra}


def meta_headers(body: bytes, secret: str = IG_SECRET) -> dict[str, str]:
    sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": sig, "Content-Type": "application/json"}


@dataclass
class Stack:
    client: TestClient
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    slack: SlackEmulator
    slack_url: str
    graph: GraphEmulator
    graph_url: str
    retrieval: ScriptedRetrieval
    tenant_id: str
    api_key: str
    other_tenant_id: str
    other_api_key: str
    closed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def gw(self) -> Gateway:
        return self.client.server.app[GATEWAY]

    async def post_slack(self, payload: dict[str, Any] | str, **headers: str) -> Any:
        body = payload if isinstance(payload, str) else json.dumps(payload)
        return await self.client.post("/slack/events", data=body, headers=slack_headers(body, **headers))

    async def post_instagram(self, payload: dict[str, Any], secret: str = IG_SECRET) -> Any:
        """Send a signed webhook, and tell the Graph emulator when each customer wrote (its windows)."""
        for entry in payload.get("entry") or []:
            for event in (entry.get("messaging") or []) if isinstance(entry, dict) else []:
                sender = str(((event or {}).get("sender") or {}).get("id") or "")
                stamp = (event or {}).get("timestamp")
                if isinstance(event.get("message"), dict) and sender and sender != str(entry.get("id")) \
                        and isinstance(stamp, (int, float)):
                    self.graph.customer_wrote(sender, stamp / 1000 if stamp > 1e11 else stamp)
        body = json.dumps(payload).encode()
        return await self.client.post("/instagram/webhook", data=body, headers=meta_headers(body, secret))

    async def messages(self, **where: Any) -> list[InboundMessage]:
        async with unit_of_work(self.sessions, admin=True) as session:
            stmt = select(InboundMessage).order_by(InboundMessage.received_at)
            for column, value in where.items():
                stmt = stmt.where(getattr(InboundMessage, column) == value)
            return list((await session.execute(stmt)).scalars())

    async def settle(self) -> None:
        """Wait until the gateway has finished every answer it started."""
        await self.gw.answers.drain()

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.client.close()


async def _seed(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> dict[str, str]:
    box = load_secret_box(settings)
    async with unit_of_work(sessions, admin=True) as session:
        acme = await tenants.create_tenant(session, name="acme")
        other = await tenants.create_tenant(session, name="other")
    async with unit_of_work(sessions, admin=True) as session:
        _, key = await tenants.create_api_key(session, tenant_id=acme.id, name="admin")
    async with unit_of_work(sessions, admin=True) as session:
        _, other_key = await tenants.create_api_key(session, tenant_id=other.id, name="admin")
    async with unit_of_work(sessions, admin=True) as session:
        await tenants.install_channel(session, box=box, tenant_id=acme.id, kind=ChannelKind.slack, external_id=TEAM,
                                      display_name="Acme workspace", secrets={"bot_token": BOT_TOKEN},
                                      details={"team_id": TEAM, "bot_id": BOT_ID, "bot_user_id": BOT_USER,
                                               "installer_user_id": "U043H11ES4V"})
        await tenants.install_channel(session, box=box, tenant_id=acme.id, kind=ChannelKind.instagram,
                                      external_id=IG_ACCOUNT, secrets={"access_token": IG_TOKEN},
                                      details={"uploaders": [IG_UPLOADER]})
    return {"tenant_id": acme.id, "api_key": key, "other_tenant_id": other.id, "other_api_key": other_key}


@pytest.fixture
async def make_stack(db_url: str, tmp_path: Path, embedder: Any) -> AsyncIterator[Callable[..., Awaitable[Stack]]]:
    """Build gateways (one, or several on the same database and broker: a restart)."""
    if not services.reachable("127.0.0.1", 5672):
        pytest.fail("RabbitMQ is not reachable on 127.0.0.1:5672 (scripts/test.sh starts it)")

    prefix = f"tb{uuid.uuid4().hex[:8]}."
    base = Settings(database_url=db_url, data_dir=tmp_path / "var", amqp_url=services.AMQP_URL, amqp_prefix=prefix,
                    log_json=False, max_upload_bytes=64 * 1024)
    engine = create_engine(base, "tests")
    sessions = create_sessionmaker(engine)
    seeded = await _seed(sessions, base)
    slack, graph = SlackEmulator(), GraphEmulator()
    slack.add_bot(BOT_TOKEN, team_id=TEAM, bot_id=BOT_ID, bot_user_id=BOT_USER)
    graph.tokens.add(IG_TOKEN)
    # The real retrieval service (its own app, index and answerer) behind the scripted front
    real = TestServer(create_retrieval_app(base, deps=RetrievalDeps(
        sessions=sessions, embedder=embedder, config=RetrievalConfig(warm_tenants=False),
        vector_options={"refresh_interval": 0.2})))
    await real.start_server()
    retrieval = ScriptedRetrieval(str(real.make_url("")))
    servers = [TestServer(slack.app()), TestServer(graph.app()), TestServer(retrieval.app())]
    for server in servers:
        await server.start_server()
    settings = base.model_copy(update={"retrieval_url": str(servers[2].make_url("")).rstrip("/")})
    stacks: list[Stack] = []

    async def make(*, clock: Callable[[], float] = time.time, deps: dict[str, Any] | None = None,
                   settings_update: dict[str, Any] | None = None, **overrides: Any) -> Stack:
        """A gateway; ``overrides`` change its `GatewayConfig`, ``settings_update`` its `Settings`."""
        app_settings = settings.model_copy(update=settings_update or {})
        config = GatewayConfig(**{
            "public_url": "http://gateway.test", "max_upload_bytes": settings.max_upload_bytes,
            "slack_signing_secret": SLACK_SECRET, "slack_client_id": "111.222", "slack_client_secret": "client-secret",
            "slack_api_url": str(servers[0].make_url("/api/")), "instagram_app_secrets": (IG_SECRET, META_SECRET),
            "instagram_verify_token": "verify-me", "graph_api_url": str(servers[1].make_url("")).rstrip("/"),
            "retry_base": 0.01, "retry_cap": 0.05, "recovery_sweep_seconds": 3600.0, "shutdown_grace": 0.2, **overrides,
        })
        app = create_app(app_settings, deps=GatewayDeps(config=config, clock=clock, **(deps or {})))
        client = TestClient(TestServer(app))
        await client.start_server()
        stack = Stack(client=client, settings=app_settings, sessions=sessions, slack=slack, slack_url=str(servers[0].make_url("")),
                      graph=graph, graph_url=str(servers[1].make_url("")), retrieval=retrieval, **seeded)
        stacks.append(stack)
        return stack

    yield make
    retrieval.gate.set()
    for stack in stacks:
        await stack.close()
    if retrieval.http is not None:
        await retrieval.http.close()
    for server in [*servers, real]:
        await server.close()
    await engine.dispose()
    cleaner = RabbitBroker(services.AMQP_URL, topology=Topology(prefix=prefix), connection_name=f"{prefix}cleanup")
    await cleaner.start()
    await cleaner.delete_topology()
    await cleaner.close()


@pytest.fixture
async def stack(make_stack: Callable[..., Awaitable[Stack]]) -> Stack:
    return await make_stack()


#: Polls until a condition holds (tests/support/waiting.py), with this suite's bounds.
eventually = partial(waiting.eventually, timeout=30.0, interval=0.02)


@pytest.fixture
def worker_processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Document worker processes a test starts (``start_worker``), stopped with SIGTERM at its end."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        stop_process(proc, timeout=60)


def start_worker(stack: Stack, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """A real `parley worker documents` on the stack's database, data folder and broker prefix, logging
    JSON lines to ``log``; ``env`` adds PARLEY_* variables."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    full.update(PARLEY_DATABASE_URL=stack.settings.effective_database_url, PARLEY_DATA_DIR=str(stack.settings.data_dir),
                PARLEY_AMQP_URL=services.AMQP_URL, PARLEY_AMQP_PREFIX=stack.settings.amqp_prefix, PARLEY_MAX_ATTEMPTS="1",
                PARLEY_LOG_JSON="true", **env)
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "cli", "worker", "documents"], env=full, stdout=out, stderr=out)


def dm(text: str = "What is your returns policy?", *, ts: str | None = None, event_id: str | None = None) -> dict[str, Any]:
    """A DM built on Slack's captured ``message.im`` delivery, with a fresh ts and event id."""
    payload = fixture("slack/slack-web__messageIm.json")
    ts = ts or f"{time.time():.6f}"
    payload["event"].update(text=text, ts=ts, event_ts=ts)
    payload["event_id"] = event_id or f"Ev{uuid.uuid4().hex[:10].upper()}"
    payload["event_time"] = int(float(ts))
    return payload


def app_of(stack: Stack) -> web.Application:
    return stack.client.server.app
