"""The checks behind `parley doctor` and `parley up`, against local servers speaking the APIs they probe."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.fernet import Fernet

from cli import doctor
from parley.crypto import SecretBox
from parley.db import create_engine, create_sessionmaker, unit_of_work
from parley.settings import Settings
from tenants import service as tenant_service
from tenants.models import ChannelKind
from tests.support.services import free_port as closed_port


SEEN = web.AppKey("seen", list)




async def serve(routes: dict[str, tuple[int, dict]]) -> TestServer:
    """A local server answering GET path -> (status, json), recording the Authorization header."""
    app = web.Application()
    app[SEEN] = []

    def handler(status: int, body: dict):  # type: ignore[no-untyped-def]
        async def handle(request: web.Request) -> web.Response:
            request.app[SEEN].append(request.headers.get("Authorization"))
            return web.json_response(body, status=status)
        return handle

    for path, (status, body) in routes.items():
        app.router.add_get(path, handler(status, body))
    server = TestServer(app)
    await server.start_server()
    return server


async def test_an_openai_compatible_server_is_probed_with_the_key(tmp_path: Path) -> None:
    server = await serve({"/v1/models": (200, {"data": [{"id": "llama"}]})})
    try:
        settings = Settings(data_dir=tmp_path, openai_base_url=str(server.make_url("/v1")), openai_api_key="sk-local")
        check = await doctor.check_answerer(settings)
        assert check.status == "ok" and "reachable" in check.detail
        assert server.app[SEEN] == ["Bearer sk-local"]
    finally:
        await server.close()


async def test_a_refused_key_warns_and_an_unreachable_server_fails(tmp_path: Path) -> None:
    server = await serve({"/v1/models": (401, {"error": {"message": "bad key"}})})
    try:
        refused = await doctor.check_answerer(Settings(data_dir=tmp_path, openai_base_url=str(server.make_url("/v1"))))
        assert refused.status == "warn" and "refused the key" in refused.detail
    finally:
        await server.close()
    down = await doctor.check_answerer(Settings(data_dir=tmp_path, openai_base_url=f"http://127.0.0.1:{closed_port()}/v1"))
    assert down.status == "fail" and "not reachable" in down.detail and down.fix
    offline = await doctor.check_answerer(Settings(data_dir=tmp_path))
    assert offline.status == "ok" and "extractive" in offline.detail


async def test_weaviate_must_be_ready_when_it_is_the_backend(tmp_path: Path) -> None:
    # A ready endpoint alone is not enough: data calls need /v1/meta and gRPC (tests/parley/test_weaviate_edges.py)
    server = await serve({"/v1/.well-known/ready": (200, {})})
    try:
        ready_only = await doctor.check_vector_index(Settings(data_dir=tmp_path, vector_backend="weaviate",
                                                              weaviate_url=str(server.make_url(""))))
        assert ready_only.status == "fail"
    finally:
        await server.close()
    down = await doctor.check_vector_index(Settings(data_dir=tmp_path, vector_backend="weaviate",
                                                    weaviate_url=f"http://127.0.0.1:{closed_port()}"))
    assert down.status == "fail" and "docker compose up -d weaviate" in down.fix
    missing = await doctor.check_vector_index(Settings(data_dir=tmp_path, vector_backend="weaviate"))
    assert missing.status == "fail" and "PARLEY_WEAVIATE_URL" in missing.fix
    embedded = await doctor.check_vector_index(Settings(data_dir=tmp_path))
    assert embedded.status == "ok" and "embedded" in embedded.detail


async def test_an_unreachable_broker_fails_with_how_to_start_one(tmp_path: Path) -> None:
    check = await doctor.check_broker(Settings(data_dir=tmp_path, amqp_url=f"amqp://guest:guest@127.0.0.1:{closed_port()}/"))
    assert check.status == "fail" and "rabbitmq-server" in check.fix and "--single-process" in check.fix


@pytest.mark.rabbitmq
async def test_a_cluster_url_with_a_node_down_is_a_warning_naming_that_node(tmp_path: Path) -> None:
    dead, other_dead = closed_port(), closed_port()
    # Given PARLEY_AMQP_URL naming the machine's RabbitMQ and a node that is down
    check = await doctor.check_broker(Settings(
        data_dir=tmp_path, amqp_url=f"amqp://guest:guest@127.0.0.1:{dead},127.0.0.1:5672/"))
    # Then it is not "ok": the down node is named, and the reachable one counted
    assert check.status == "warn" and check.detail.startswith("1 of 2 nodes reachable")
    assert f"down: 127.0.0.1:{dead}" in check.detail and "127.0.0.1:5672:" not in check.detail
    assert "start the node" in check.fix
    # And with every node down it fails naming each, with how to start RabbitMQ
    gone = await doctor.check_broker(Settings(
        data_dir=tmp_path, amqp_url=f"amqp://guest:hunter2@127.0.0.1:{dead},127.0.0.1:{other_dead}/"))
    assert gone.status == "fail" and f"127.0.0.1:{dead}:" in gone.detail and f"127.0.0.1:{other_dead}:" in gone.detail
    assert "rabbitmq-server" in gone.fix and "hunter2" not in gone.detail
    # And all nodes up is ok, saying how many
    up = await doctor.check_broker(Settings(data_dir=tmp_path, amqp_url="amqp://guest:guest@127.0.0.1:5672,localhost:5672/"))
    assert up.status == "ok" and up.detail.startswith("all 2 nodes reachable")


async def test_the_secret_key_must_decrypt_what_is_stored(tmp_path: Path, sqlite_template: Path) -> None:
    key = Fernet.generate_key()
    # Given a database holding a channel secret encrypted with `key` (a real Slack installation row)
    shutil.copy(sqlite_template, tmp_path / "parley.db")
    engine = create_engine(Settings(data_dir=tmp_path), "test")
    sessions = create_sessionmaker(engine)
    try:
        async with unit_of_work(sessions, admin=True) as session:
            tenant = await tenant_service.create_tenant(session, name="acme")
            tenant_id = tenant.id
        async with unit_of_work(sessions, tenant_id=tenant_id) as session:
            await tenant_service.install_channel(session, box=SecretBox(key), tenant_id=tenant_id, kind=ChannelKind.slack,
                                                 external_id="T1", secrets={"bot_token": "xoxb-1"})

        # and the key the secrets were encrypted with, in the key file
        (tmp_path / "secret.key").write_bytes(key)
        (tmp_path / "secret.key").chmod(0o600)
        good = await doctor.check_secret_key(Settings(data_dir=tmp_path), sessions)
        assert good.status == "ok" and "decrypts the stored channel secrets" in good.detail
        # When the key file is replaced, or the environment names another key
        (tmp_path / "secret.key").write_bytes(Fernet.generate_key())
        swapped = await doctor.check_secret_key(Settings(data_dir=tmp_path), sessions)
        assert swapped.status == "fail" and "cannot decrypt" in swapped.detail
        other = await doctor.check_secret_key(Settings(data_dir=tmp_path, secret_key=Fernet.generate_key().decode()),
                                              sessions)
        assert other.status == "fail" and other.detail.startswith("PARLEY_SECRET_KEY")
        # And without any key while secrets are stored, the fix is to restore it
        (tmp_path / "secret.key").unlink()
        lost = await doctor.check_secret_key(Settings(data_dir=tmp_path), sessions)
        assert lost.status == "fail" and "restore" in lost.fix
        invalid = await doctor.check_secret_key(Settings(data_dir=tmp_path, secret_key="not-a-key"), None)
        assert invalid.status == "fail"
    finally:
        await engine.dispose()


def test_channels_and_the_public_url_say_what_is_missing(tmp_path: Path) -> None:
    bare = {c.name: c for c in doctor.check_channels(Settings(data_dir=tmp_path))}
    assert {c.status for c in bare.values()} == {"warn"}
    half = {c.name: c for c in doctor.check_channels(Settings(data_dir=tmp_path, slack_client_id="1.2",
                                                              shopify_client_secret="s", instagram_verify_token="v"))}
    assert half["slack"].status == half["shopify"].status == half["instagram"].status == "fail"
    full = {c.name: c for c in doctor.check_channels(Settings(
        data_dir=tmp_path, slack_signing_secret="s", slack_client_id="1.2", slack_client_secret="c",
        instagram_app_secrets="a", instagram_verify_token="v", shopify_client_id="id", shopify_client_secret="s"))}
    assert {c.status for c in full.values()} == {"ok"}
    local = doctor.check_public_url(Settings(data_dir=tmp_path, slack_signing_secret="s"))
    assert local.status == "warn" and "https" in local.fix
    public = doctor.check_public_url(Settings(data_dir=tmp_path, slack_signing_secret="s", public_url="https://bot.example.com"))
    assert public.status == "ok" and "https://bot.example.com/chat" in public.detail
    broken = doctor.check_public_url(Settings(data_dir=tmp_path, public_url="bot.example.com"))
    assert broken.status == "fail"


def test_storage_that_cannot_be_written_fails(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    check = doctor.check_data_dir(Settings(data_dir=tmp_path / "file" / "var"))
    assert check.status == "fail" and "not a directory" in check.detail
    assert doctor.check_data_dir(Settings(data_dir=tmp_path / "new")).status == "ok"


def test_the_service_token_must_exist_be_readable_and_private(tmp_path: Path) -> None:
    from parley.crypto import load_service_token

    settings = Settings(data_dir=tmp_path)
    token_file = tmp_path / "service.token"
    # Given no token yet: fine, one is generated at the first start (and the check writes nothing)
    fresh = doctor.check_service_token(settings)
    assert fresh.status == "ok" and "generated" in fresh.detail and not token_file.exists()
    # When a process generated it
    load_service_token(settings)
    made = doctor.check_service_token(settings)
    assert made.status == "ok" and str(token_file) in made.detail
    # When other users can read it, it is empty, or this user cannot read it
    token_file.chmod(0o644)
    shared = doctor.check_service_token(settings)
    assert shared.status == "warn" and shared.fix == f"chmod 600 {token_file}"
    token_file.chmod(0o600)
    token_file.write_text("")
    empty = doctor.check_service_token(settings)
    assert empty.status == "fail" and "empty" in empty.detail
    token_file.unlink()
    token_file.mkdir()  # unreadable as a file, even for root (who reads a 0000 file)
    unreadable = doctor.check_service_token(settings)
    assert unreadable.status == "fail" and "not readable" in unreadable.detail
    token_file.rmdir()
    load_service_token(settings)
    # And a token set in the environment: fine when long, a warning when short, a failure when blank
    assert doctor.check_service_token(Settings(data_dir=tmp_path, service_token="s" * 43)).status == "ok"
    assert doctor.check_service_token(Settings(data_dir=tmp_path, service_token="short")).status == "warn"
    assert doctor.check_service_token(Settings(data_dir=tmp_path, service_token="  ")).status == "fail"
    # And a per-machine token file with a shared database says to set the token instead
    pg = doctor.check_service_token(Settings(data_dir=tmp_path, database_url="postgresql+asyncpg://u@db/parley"))
    assert pg.status == "warn" and "PARLEY_SERVICE_TOKEN" in pg.fix


async def test_doctor_and_up_check_the_service_token(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, amqp_url=f"amqp://guest:guest@127.0.0.1:{closed_port()}/")
    names = [c.name for c in await doctor.doctor(settings)]
    assert "service token" in names
    assert "service token" in [c.name for c in await doctor.preflight(settings)]
    assert "service token" not in [c.name for c in await doctor.preflight(settings, single_process=True)]


@pytest.mark.rabbitmq
async def test_queues_of_another_type_fail_the_check_with_what_to_do_and_are_left_as_they_are(tmp_path: Path) -> None:
    import uuid

    from parley import runtime
    from parley.bus import RabbitBroker

    prefix = f"doctor-{uuid.uuid4().hex[:8]}."
    classic = Settings(data_dir=tmp_path, amqp_prefix=prefix)
    # Given nothing declared yet under this prefix: nothing to compare, ok (and the doctor declares nothing)
    assert (await doctor.check_broker(Settings(data_dir=tmp_path, amqp_prefix=prefix, amqp_queue_type="quorum"))).status == "ok"
    # Given an install whose processes declared classic queues
    broker = RabbitBroker(classic.amqp_url, topology=runtime.topology(classic), connection_name="doctor-test")
    await broker.start()
    try:
        assert (await doctor.check_broker(classic)).status == "ok"
        # When the admin switches it to quorum queues and runs the doctor
        check = await doctor.check_broker(Settings(data_dir=tmp_path, amqp_prefix=prefix, amqp_queue_type="quorum"))
        # Then it fails before anything starts, naming the queue and what to do
        assert check.status == "fail" and "another type" in check.detail
        assert f"'{prefix}documents'" in check.fix and "PARLEY_AMQP_QUEUE_TYPE back" in check.fix
        # And the classic queues are still there, unchanged (the doctor only looked)
        assert (await doctor.check_broker(classic)).status == "ok"
    finally:
        await broker.delete_topology()
        await broker.close()
