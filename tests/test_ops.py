"""`parley status` and `parley doctor`, run as an operator runs them, on real databases and real RabbitMQ."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from pathlib import Path

import aio_pika
import pytest
from cryptography.fernet import Fernet

from parley.bus import RabbitBroker, Topology
from parley.crypto import load_secret_box
from parley.db import create_engine, create_sessionmaker, unit_of_work
from parley.settings import Settings
from tenants import service as tenants
from tenants.models import ChannelKind
from tests.support import services
from tests.test_cli import parley

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


def closed_amqp_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"amqp://guest:guest@127.0.0.1:{s.getsockname()[1]}/"


async def delete_topology(prefix: str) -> None:
    cleaner = RabbitBroker(services.AMQP_URL, topology=Topology(prefix=prefix), connection_name=f"{prefix}cleanup")
    await cleaner.start()
    await cleaner.delete_topology()
    await cleaner.close()


async def hold(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    """A consumer that takes nothing off an empty queue: it only counts as a worker."""


def checks(result) -> dict[str, dict[str, str]]:  # type: ignore[no-untyped-def]
    return {c["name"]: c for c in json.loads(result.stdout)}


def test_doctor_on_a_fresh_install_says_to_migrate(tmp_path: Path) -> None:
    result = parley(tmp_path, "--json", "doctor")
    assert result.returncode == 1, result.stderr
    found = checks(result)
    assert found["database"]["status"] == "fail" and "parley migrate" in found["database"]["fix"]
    assert found["secret key"]["status"] == "warn" and "PARLEY_SECRET_KEY" in found["secret key"]["fix"]
    assert found["embedding model"]["status"] in ("ok", "fail")
    assert not (tmp_path / "var" / "secret.key").exists()  # the doctor changes nothing
    table = parley(tmp_path, "doctor")
    assert table.returncode == 1 and "run `parley migrate`" in table.stdout and "failed" in table.stdout


async def test_doctor_checks_the_key_against_stored_secrets_and_the_broker(db_url: str, tmp_path: Path) -> None:
    # Given a migrated database holding an encrypted Slack bot token
    settings = Settings(database_url=db_url, data_dir=tmp_path / "var")
    engine = create_engine(settings, "tests")
    try:
        async with unit_of_work(create_sessionmaker(engine), admin=True) as session:
            tenant = await tenants.create_tenant(session, name="acme")
            await tenants.install_channel(session, box=load_secret_box(settings), tenant_id=tenant.id, kind=ChannelKind.slack,
                                          external_id="T1", secrets={"bot_token": "xoxb-1"}, details={"team_id": "T1"})
    finally:
        await engine.dispose()
    env = {"PARLEY_DATABASE_URL": db_url}
    # When the doctor runs
    healthy = await asyncio.to_thread(parley, tmp_path, "--json", "doctor", env=env)
    # Then nothing fails: the database is at head, RabbitMQ answers, the key decrypts the stored token
    found = checks(healthy)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert found["database"]["status"] == "ok" and "migrated to head" in found["database"]["detail"]
    assert found["rabbitmq"]["status"] == "ok"
    assert "decrypts the stored channel secrets" in found["secret key"]["detail"]
    assert found["secret key"]["status"] == ("ok" if db_url.startswith("sqlite") else "warn")  # a key file per machine
    # When the key file is replaced and RabbitMQ is not where the settings say
    (tmp_path / "var" / "secret.key").write_bytes(Fernet.generate_key())
    broken = await asyncio.to_thread(parley, tmp_path, "--json", "doctor", env={**env, "PARLEY_AMQP_URL": closed_amqp_url()})
    # Then both fail, each with what to do, and the exit code says so
    found = checks(broken)
    assert broken.returncode == 1
    assert found["secret key"]["status"] == "fail" and "restore the key" in found["secret key"]["fix"]
    assert found["rabbitmq"]["status"] == "fail" and "rabbitmq-server" in found["rabbitmq"]["fix"]


async def test_status_shows_queues_workers_backlog_documents_and_jobs(db_url: str, tmp_path: Path) -> None:
    prefix = f"ops{uuid.uuid4().hex[:8]}."
    env = {"PARLEY_DATABASE_URL": db_url, "PARLEY_AMQP_PREFIX": prefix}
    (tmp_path / "docs").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp_path / "docs" / name).write_text(f"{name}: orders ship within two days.\n")
    connection = await aio_pika.connect(services.AMQP_URL)
    try:
        # Given a tenant whose two uploads are queued while no document worker runs
        assert (await asyncio.to_thread(parley, tmp_path, "tenants", "create", "acme", env=env)).returncode == 0
        queued = await asyncio.to_thread(parley, tmp_path, "ingest", str(tmp_path / "docs"), "--tenant", "acme",
                                         "--no-wait", env=env)
        assert queued.returncode == 0, queued.stderr
        # And one catalog worker attached to its queue
        channel = await connection.channel()
        catalog = await channel.declare_queue(f"{prefix}catalog", passive=True)
        await catalog.consume(hold)
        # When the operator asks for the status
        result = await asyncio.to_thread(parley, tmp_path, "--json", "status", env=env)
        assert result.returncode == 0, result.stderr
        status = json.loads(result.stdout)
        # Then the queues show the two ready uploads, no document worker, one catalog worker, the backlog's age
        queues = {q["queue"]: q for q in status["queues"]}
        assert status["broker"] == "ok"
        assert (queues["documents"]["ready"], queues["documents"]["consumers"], queues["documents"]["backlog"]) == (2, 0, 2)
        assert queues["documents"]["oldest_age_s"] >= 0 and queues["documents"]["dead_letters"] == 0
        assert queues["catalog"]["consumers"] == 1 and queues["catalog"]["ready"] == 0
        assert status["outbox"]["unpublished"] == 0
        # And the documents by status and the job in progress, by tenant name
        assert status["documents"] == [{"tenant": "acme", "queued": 2, "processing": 0, "indexed": 0, "failed": 0, "deleted": 0}]
        [job] = status["jobs"]
        assert (job["tenant"], job["kind"], job["total"], job["done"]) == ("acme", "documents", 2, 0)
        table = await asyncio.to_thread(parley, tmp_path, "status", env=env)
        assert table.returncode == 0 and "documents" in table.stdout and "0/2" in table.stdout and "acme" in table.stdout
        # When RabbitMQ cannot be reached, what the database knows is still shown, and the exit code is 1
        blind = await asyncio.to_thread(parley, tmp_path, "status", env={**env, "PARLEY_AMQP_URL": closed_amqp_url()})
        assert blind.returncode == 1 and "RabbitMQ not reachable" in blind.stderr and "acme" in blind.stdout
    finally:
        await connection.close()
        await delete_topology(prefix)
