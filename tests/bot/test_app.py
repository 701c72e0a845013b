"""The app factory's seams: configuration from settings or the environment, extra route sets; the
service token it presents to the retrieval service; what its logs keep out."""

from __future__ import annotations

import io
import logging
import uuid
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import SecretStr

from bot.config import GatewayConfig
from bot.context import GATEWAY
from parley.crypto import load_service_token
from parley.logging import configure_logging
from parley.settings import Settings
from tests.bot.conftest import Stack, dm

#: The library loggers `configure_logging` sets levels on (restored after a test that calls it).
LIBRARY_LOGGERS = ("aiormq", "aio_pika", "sqlalchemy.engine", "aiosqlite", "alembic")

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


def test_config_reads_settings_fields_then_the_environment(tmp_path: Path) -> None:
    # Given settings without the gateway's vendor fields, and PARLEY_* variables that carry them
    settings = Settings(data_dir=tmp_path, public_url="https://parley.example.com/", max_upload_bytes=1234)
    environ = {"PARLEY_SLACK_SIGNING_SECRET": "sig", "PARLEY_SLACK_CLIENT_ID": "1.2", "PARLEY_SLACK_CLIENT_SECRET": "cs",
               "PARLEY_INSTAGRAM_APP_SECRETS": "ig-1, ig-2", "PARLEY_META_APP_SECRET": "meta",
               "PARLEY_GATEWAY_ANSWER_CONCURRENCY": "7"}
    # When the gateway's configuration is built
    config = GatewayConfig.from_settings(settings, environ=environ)
    # Then every value is found, and what Settings has wins
    assert (config.slack_signing_secret, config.slack_client_id, config.slack_client_secret) == ("sig", "1.2", "cs")
    assert config.instagram_app_secrets == ("ig-1", "ig-2", "meta")
    assert config.public_url == "https://parley.example.com" and config.max_upload_bytes == 1234
    assert config.answer_concurrency_per_tenant == 7 and config.slack_oauth_enabled and config.instagram_enabled
    bare = GatewayConfig.from_settings(settings, environ={})
    assert not (bare.slack_enabled or bare.instagram_enabled)


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_route_installers_mount_more_routes_on_the_same_app(make_stack) -> None:
    # Given an adapter that mounts its own route (as the Shopify adapter's setup_shopify does)
    async def ping(request: web.Request) -> web.Response:
        return web.json_response({"channels": sorted(request.app[GATEWAY].channels)})

    def install(app: web.Application) -> None:
        app.router.add_get("/extra/ping", ping)

    stack: Stack = await make_stack(deps={"route_installers": [install]})
    # When it is called
    response = await stack.client.get("/extra/ping")
    # Then it runs inside the gateway, with the gateway's resources
    assert response.status == 200 and (await response.json())["channels"] == ["instagram", "slack", "web"]



@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_the_gateway_presents_the_service_token_to_retrieval(make_stack) -> None:
    # Given the gateway and the real retrieval service on one data directory (the generated token)
    stack: Stack = await make_stack()
    ask = {"message": "What is your returns policy?", "conversation_id": "token-check"}
    api_key = {"Authorization": f"Bearer {stack.api_key}"}
    # When a question is asked through the gateway
    answered = await stack.client.post("/api/chat", json=ask, headers=api_key)
    # Then the real retrieval service answered it, because the gateway sent it the service token
    assert answered.status == 200, await answered.text()
    assert (await answered.json())["status"] == "answered"
    assert stack.retrieval.authorizations[-1] == f"Bearer {load_service_token(stack.settings)}"
    # Given a gateway configured with another token (a deployment mistake)
    wrong: Stack = await make_stack(settings_update={"service_token": SecretStr("not-the-retrieval-services-token")},
                                    deps={"consume_notifications": False, "recover_on_start": False})
    # When it asks
    refused = await wrong.client.post("/api/chat", json=ask, headers=api_key)
    # Then the retrieval service refuses it, and the failure says what to fix
    body = await refused.json()
    assert refused.status == 503 and "unauthorized" in body["detail"] and "PARLEY_SERVICE_TOKEN" in body["detail"], body
    assert stack.retrieval.authorizations[-1] == "Bearer not-the-retrieval-services-token"


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_debug_logs_of_an_answered_dm_hold_no_message_text(stack: Stack) -> None:
    # Given the gateway's logging as its process configures it, at DEBUG
    root = logging.getLogger()
    saved = root.handlers[:], root.level, {name: logging.getLogger(name).level for name in LIBRARY_LOGGERS}
    captured = io.StringIO()
    configure_logging(process_name="gateway", level="DEBUG", json_lines=True)
    root.handlers[0].setStream(captured)
    secret = f"Is order zq{uuid.uuid4().hex[:10]} for my private medical kit shipped yet?"
    try:
        # When a customer's DM is received, stored, answered through retrieval and replied to
        assert (await stack.post_slack(dm(secret))).status == 200
        await stack.settle()
        await stack.slack.wait_posted(1)
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)
    [message] = await stack.messages(channel="slack")
    logged = captured.getvalue()
    # Then the DEBUG log told the story (SQL ran on SQLite), but no line holds the customer's words
    assert message.status == "answered" and message.text == secret
    assert "message answered" in logged and len(logged.splitlines()) > 10
    assert secret not in logged and secret.split()[2] not in logged
