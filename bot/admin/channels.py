"""The dashboard's Channels page: connect, disconnect and rotate, the same path as `parley channels`.

    GET  /admin/api/channels/setup                     how each channel connects: the Slack install link
                                                       (when OAuth is configured) and events URL, the
                                                       Instagram webhook URL and verify token, the
                                                       Shopify install link (when the public app is configured)
    POST /admin/api/channels/slack                     {"bot_token", "signing_secret"?} -> connected (201)
    POST /admin/api/channels/instagram                 {"account_id", "token", "app_secret"?, "uploaders"?} (201)
    POST /admin/api/channels/shopify                   {"shop", "token", "webhook_secret"?} (201; a catalog sync starts)
    POST /admin/api/channels/{kind}/{ref}/disconnect   stops routing at once, erases the secrets (Slack: auth.revoke)
    POST /admin/api/channels/{kind}/{ref}/rotate       {"token", "signing_secret"?, "app_secret"?}: checked, then replaced
    POST /admin/api/channels/instagram/{ref}/uploaders {"uploaders": [IGSID, ...]}

Every check and store is `bot.channels.connect`'s (the CLI's too); the routing cache of this
gateway forgets a change at once. Who did it is the signed-in API key (``api_key:<id>``), in the
audit log line each change writes.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bot.channels import connect
from bot.channels.shopify import SHOPIFY, connect_custom_app, install_link as shopify_install_link
from bot.channels.slack.oauth import install_link as slack_install_link
from bot.context import GATEWAY, Gateway
from bot.http import API_KEY_ID, TENANT, read_json
from integrations.shopify.config import ShopifyConfig
from parley.errors import InvalidInput, ParleyError


def vendors(request: web.Request) -> connect.Vendors:
    gw = request.app[GATEWAY]
    shopify = request.app.get(SHOPIFY)
    return connect.Vendors(slack_api_url=gw.config.slack_api_url, graph_api_url=gw.config.graph_api_url,
                           graph_api_version=gw.config.graph_api_version, public_url=gw.config.public_url,
                           instagram_verify_token=gw.config.instagram_verify_token,
                           shopify=shopify.config if shopify is not None else ShopifyConfig.from_settings(gw.settings))


def _actor(request: web.Request) -> str:
    return f"api_key:{request[API_KEY_ID]}"


def _text(data: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise InvalidInput(f"'{name}' is required")
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"'{name}' must be text")
    return value


async def setup(request: web.Request) -> web.Response:
    gw, tenant_id, v = request.app[GATEWAY], request[TENANT], vendors(request)
    slack: dict[str, Any] = {"enabled": gw.config.slack_enabled, "token_paste": True, **v.slack_setup(),
                             "install_link": None}
    if gw.config.slack_oauth_enabled:
        slack["install_link"] = slack_install_link(gw.signer, gw.config.public_url, tenant_id,
                                                   ttl=gw.config.slack_install_link_ttl)
    shopify: dict[str, Any] = {"install_link": None, "custom_app": True}
    shop_gw = request.app.get(SHOPIFY)
    if shop_gw is not None and shop_gw.config.configured:
        shopify["install_link"] = shopify_install_link(gw.settings, tenant_id=tenant_id, config=shop_gw.config)
    return web.json_response({"slack": slack, "instagram": {"enabled": gw.config.instagram_enabled, **v.instagram_setup()},
                              "shopify": shopify, "handoff_settings": "/admin/handoff"})


def _http(gw: Gateway) -> Any:
    return gw.http


def _counted(kind: str | None, change: str, handler: Any) -> Any:
    """Count each change (and each refusal) in ``parley_gateway_channel_changes_total``."""

    async def wrapped(request: web.Request) -> web.Response:
        gw, channel = request.app[GATEWAY], kind or request.match_info.get("kind", "")
        channel = channel if channel in connect.KINDS else "other"
        try:
            response = await handler(request)
        except ParleyError:
            gw.metrics.channel_changes.labels(channel, "refused").inc()
            raise
        gw.metrics.channel_changes.labels(channel, change).inc()
        return response

    wrapped.__name__ = getattr(handler, "__name__", "handler")
    return wrapped


async def connect_slack(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    data = await read_json(request)
    done = await connect.connect_slack(gw.sessions, gw.box, _http(gw), tenant_id=tenant_id,
                                       bot_token=_text(data, "bot_token", required=True) or "",
                                       signing_secret=_text(data, "signing_secret"), vendors=vendors(request),
                                       actor=_actor(request), directory=gw.directory)
    return web.json_response(done.to_json(), status=201)


async def connect_instagram(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    data = await read_json(request)
    done = await connect.connect_instagram(gw.sessions, gw.box, _http(gw), tenant_id=tenant_id,
                                           account_id=_text(data, "account_id", required=True) or "",
                                           token=_text(data, "token", required=True) or "",
                                           app_secret=_text(data, "app_secret"), uploaders=data.get("uploaders"),
                                           vendors=vendors(request), actor=_actor(request), directory=gw.directory)
    return web.json_response(done.to_json(), status=201)


async def connect_shopify(request: web.Request) -> web.Response:
    """A custom app's Admin API token (the same as `parley shopify connect`): checked, stored, synced."""
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    data = await read_json(request)
    v = vendors(request)
    try:
        done = await connect_custom_app(gw.sessions, gw.box, tenant=tenant_id, shop=_text(data, "shop", required=True) or "",
                                        token=_text(data, "token", required=True) or "", config=v.shopify, http=gw.http,
                                        webhook_secret=_text(data, "webhook_secret"))
    except connect.shopify_refusals() as exc:  # a token Shopify does not take is the owner's to fix: a 400
        raise connect.TokenRefused(f"Shopify refused the token: {getattr(exc, 'message', exc)}") from exc
    connect.audit.info("channel connected: shopify %s by %s", done.shop, _actor(request),
                       extra={"audit": "channel.connected", "actor": _actor(request), "tenant_id": tenant_id,
                              "channel_kind": "shopify", "external_id": done.shop, "via": "custom_app"})
    return web.json_response({"kind": "shopify", "external_id": done.shop, "display_name": done.shop_name,
                              "sync_job": done.job_id, "webhooks": list(done.webhooks)}, status=201)


async def disconnect(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    out = await connect.disconnect(gw.sessions, gw.box, _http(gw), tenant_id=tenant_id, kind=request.match_info["kind"],
                                   ref=request.match_info["ref"], vendors=vendors(request), actor=_actor(request),
                                   directory=gw.directory)
    return web.json_response(out)


async def rotate(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    data = await read_json(request)
    out = await connect.rotate(gw.sessions, gw.box, _http(gw), tenant_id=tenant_id, kind=request.match_info["kind"],
                               ref=request.match_info["ref"], token=_text(data, "token", required=True) or "",
                               signing_secret=_text(data, "signing_secret"), app_secret=_text(data, "app_secret"),
                               vendors=vendors(request), actor=_actor(request), directory=gw.directory)
    return web.json_response(out)


async def uploaders(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    data = await read_json(request)
    out = await connect.set_instagram_uploaders(gw.sessions, tenant_id=tenant_id, ref=request.match_info["ref"],
                                                uploaders=data.get("uploaders"), actor=_actor(request),
                                                directory=gw.directory)
    return web.json_response(out)


API: list[tuple[str, str, Any]] = [
    ("GET", "channels/setup", setup),
    ("POST", "channels/slack", _counted("slack", "connected", connect_slack)),
    ("POST", "channels/instagram", _counted("instagram", "connected", connect_instagram)),
    ("POST", "channels/shopify", _counted("shopify", "connected", connect_shopify)),
    ("POST", "channels/instagram/{ref}/uploaders", _counted("instagram", "uploaders_set", uploaders)),
    ("POST", "channels/{kind}/{ref}/disconnect", _counted(None, "disconnected", disconnect)),
    ("POST", "channels/{kind}/{ref}/rotate", _counted(None, "token_rotated", rotate)),
]
