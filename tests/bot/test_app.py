"""The app factory's seams: configuration from settings or the environment, extra route sets."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web

from bot.config import GatewayConfig
from bot.context import GATEWAY
from parley.settings import Settings
from tests.bot.conftest import Stack, dm

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

