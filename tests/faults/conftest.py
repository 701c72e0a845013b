"""The fault suite's stack: a migrated PostgreSQL database with real commits, RabbitMQ under a unique
topology prefix, one tenant, the producer side (blobs, outbox relay) in the test process, and
`parley worker documents` processes started on demand. PostgreSQL only: the faults are about
processes, the broker and the network, and each test costs seconds of real work."""

from __future__ import annotations

import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from parley.blobs import BlobStore
from parley import runtime
from parley.bus import OutboxRelay, RabbitBroker
from parley.db import create_engine, create_sessionmaker, unit_of_work
from parley.settings import Settings
from tenants.service import create_tenant
from tests.faults.support import Batch, Worker, submit, worker_env
from tests.support import services

try:
    from parley.embeddings.local import model_installed

    HAVE_MODEL = model_installed("all-MiniLM-L6-v2")
except Exception:  # pragma: no cover - the embeddings package itself is broken
    HAVE_MODEL = False


@pytest.fixture
def db_backend() -> str:
    """Overrides the sqlite/postgres parametrisation: the fault suite runs on PostgreSQL."""
    return "postgres"


@dataclass
class FaultStack:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    broker: RabbitBroker
    relay: OutboxRelay
    blobs: BlobStore
    tenant_id: str
    tmp: Path
    workers: list[Worker] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return self.settings.amqp_prefix

    def worker(self, name: str = "worker", *, database_url: str | None = None, **env: str) -> Worker:
        """A document worker process (not started). Defaults: 3 attempts, the production delay tiers."""
        env.setdefault("PARLEY_MAX_ATTEMPTS", "3")
        worker = Worker(worker_env(self.settings, database_url=database_url, **env), self.tmp / f"{name}.log")
        self.workers.append(worker)
        return worker

    async def submit(self, files: list[tuple[str, bytes]], **kwargs: Any) -> Batch:
        return await submit(self.sessions, self.blobs, self.relay, tenant_id=self.tenant_id, files=files, **kwargs)


@pytest.fixture
def prefix() -> str:
    return f"tf{uuid.uuid4().hex[:8]}."


@pytest.fixture
def amqp_url() -> str:
    """The broker of the stack: the machine's RabbitMQ (tests/faults/test_cluster.py overrides it with a cluster)."""
    return services.AMQP_URL


@pytest.fixture
def queue_type() -> str:
    return "classic"


@pytest.fixture
async def stack(db_url: str, tmp_path: Path, prefix: str, amqp_url: str, queue_type: str) -> AsyncIterator[FaultStack]:
    if not HAVE_MODEL:
        pytest.skip("the local embedding model package is not installed (scripts/bootstrap.sh installs it)")
    if amqp_url == services.AMQP_URL and not services.reachable("127.0.0.1", 5672):
        pytest.fail("RabbitMQ is not reachable on 127.0.0.1:5672 (scripts/test.sh starts it)")
    settings = Settings(database_url=db_url, data_dir=tmp_path / "var", amqp_url=amqp_url, amqp_prefix=prefix,
                        amqp_queue_type=queue_type, secret_key=Fernet.generate_key().decode(), log_json=False)
    engine = create_engine(settings, "fault-tests")
    sessions = create_sessionmaker(engine)
    broker = RabbitBroker(settings.amqp_url, topology=runtime.topology(settings), connection_name=f"{prefix}producer",
                          reconnect_interval=0.5)
    await broker.start()
    relay = OutboxRelay(sessions, broker)
    async with unit_of_work(sessions) as session:
        tenant = await create_tenant(session, name="acme")
    stack = FaultStack(settings, engine, sessions, broker, relay, BlobStore(settings.effective_blob_dir), tenant.id, tmp_path)
    try:
        yield stack
    finally:
        codes = {w.log_path.name: w.stop() for w in stack.workers}
        await relay.stop()
        await broker.delete_topology()
        await broker.close()
        await engine.dispose()
    # a worker that was still running at the end must have stopped cleanly (SIGTERM -> 0); one stopped
    # before it installed its signal handlers (a test that failed at once) just dies of the signal
    logs = {w.log_path.name: w.log() for w in stack.workers}
    bad = {name: code for name, code in codes.items()
           if code not in (0, None) and not (code == -signal.SIGTERM and "consuming" not in logs[name])}
    assert not bad, {name: logs[name] for name in bad}


@pytest.fixture
def hostile_plugin(tmp_path: Path) -> Iterator[Path]:
    """Hostile parsers for the worker's sandbox (see tests/faults/hostile_parsers.py), in a file the
    worker loads through PARLEY_PARSER_PLUGINS; a flag file next to it "fixes" the flaky one."""
    source = Path(__file__).with_name("hostile_parsers.py").read_text()
    path = tmp_path / "hostile_parsers.py"
    path.write_text(source)
    yield path
