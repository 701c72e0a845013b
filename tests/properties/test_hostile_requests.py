"""What a stranger sends never makes the gateway answer 5xx or log a traceback.

The real gateway app (`create_app`, through tests/bot/conftest.py's `make_stack`) with Slack,
Instagram, Shopify, the web API and the admin dashboard mounted. First the cases an attack review
found, each by name: every one was a 500 with a traceback (log flooding) and must be a clean 4xx
with one short log line. Then hypothesis sends generated headers (any bytes but CR and LF: non-ASCII,
invalid UTF-8, control characters) and bodies to every route of the app's router, over a raw socket
(aiohttp's client refuses to send invalid bytes), some of them validly signed so that what runs
after a signature check is reached too, and the property is: status < 500, no traceback logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.channels.shopify import setup_shopify
from integrations.shopify.config import ShopifyConfig
from integrations.shopify.hmac import webhook_hmac
from parley.logging import quiet_protocol_errors
from parley.settings import Settings
from tests.bot.conftest import (  # noqa: F401  (fixtures)
    IG_SECRET, SLACK_SECRET, Stack, app_of, embedder, eventually, make_stack, meta_headers, slack_headers,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

SHOPIFY_SECRET = "shopify-app-client-secret"
SHOP = "acme-outfitters.myshopify.com"
#: Loggers of our packages, and aiohttp's server logger (its access log is left out).
OURS = ("parley", "bot", "tenants", "knowledge", "integrations", "retrieval")
SERVER_LOGGER = "aiohttp.server"


@pytest.fixture
async def gateway(make_stack: Any, tmp_path: Path) -> Stack:
    """The stack's gateway with the Shopify routes mounted as `cli.compose` mounts them, its logging
    set up as `parley gateway` sets it up (`configure_logging` installs the protocol-error filter),
    and ready (broker connected: /readyz answers 200)."""
    quiet_protocol_errors()
    config = ShopifyConfig(client_id="shopify-app", client_secret=SHOPIFY_SECRET, public_url="http://gateway.test",
                           base_url="http://127.0.0.1:9/{shop}")
    mount = partial(setup_shopify, settings=Settings(data_dir=tmp_path / "var", log_json=False), config=config)
    stack = await make_stack(deps={"route_installers": [mount]})

    async def ready() -> bool:
        return (await stack.client.get("/readyz")).status == 200

    await eventually(ready)
    return stack


async def send_raw(stack: Stack, method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> int:
    """One HTTP/1.1 request written byte for byte; the response's status code."""
    server = stack.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        head = [f"{method} ".encode() + target + b" HTTP/1.1", b"Host: gateway.test", b"Connection: close",
                b"Content-Length: " + str(len(body)).encode(), *(name + b": " + value for name, value in headers)]
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 30)
        await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", status_line)
    assert match, f"no HTTP answer: {status_line!r}"
    return int(match.group(1))


def ours(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.split(".")[0] in OURS or r.name == SERVER_LOGGER]


def refused_with_one_short_line(caplog: pytest.LogCaptureFixture) -> None:
    lines = [r for r in ours(caplog) if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in lines if r.exc_info or r.levelno >= logging.ERROR] == [], "a traceback was logged"
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert len(lines[0].getMessage()) < 120


@pytest.fixture
def watch(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO)
    caplog.clear()
    return caplog


# --- the review's cases, one by one -------------------------------------------------------------


async def test_a_slack_timestamp_of_superscript_digits_is_a_401(gateway: Stack, watch: pytest.LogCaptureFixture) -> None:
    # Given a Slack request whose timestamp is "²" (str.isdigit() says yes, int() says no)
    body = json.dumps({"type": "event_callback", "event": {}})
    headers = {**slack_headers(body), "X-Slack-Request-Timestamp": "²"}
    # When it is posted, Then it is refused as unsigned, with one short line and no traceback
    assert (await gateway.client.post("/slack/events", data=body, headers=headers)).status == 401
    refused_with_one_short_line(watch)


async def test_a_non_ascii_slack_signature_is_a_401(gateway: Stack, watch: pytest.LogCaptureFixture) -> None:
    # Given a Slack request with a current timestamp and a signature "v0=é…" (compare_digest raises on it)
    body = json.dumps({"type": "event_callback", "event": {}})
    headers = {**slack_headers(body), "X-Slack-Signature": "v0=é" + "0" * 63}
    # When it is posted, Then it is a 401 with one short line
    assert (await gateway.client.post("/slack/events", data=body, headers=headers)).status == 401
    refused_with_one_short_line(watch)


async def test_a_non_ascii_instagram_signature_is_a_401(gateway: Stack, watch: pytest.LogCaptureFixture) -> None:
    # Given an Instagram webhook whose X-Hub-Signature-256 is not ASCII
    headers = {"X-Hub-Signature-256": "sha256=é" + "0" * 63, "Content-Type": "application/json"}
    # When it is posted, Then it is a 401 with one short line
    assert (await gateway.client.post("/instagram/webhook", data=b'{"entry": []}', headers=headers)).status == 401
    refused_with_one_short_line(watch)


async def test_a_non_ascii_admin_cookie_is_refused(gateway: Stack, watch: pytest.LogCaptureFixture) -> None:
    # Given a dashboard session cookie of non-ASCII text shaped like a token
    cookie = {"Cookie": "parley_admin=é.é"}
    # When the dashboard's API is asked with it, Then it is a 401 (not signed in) with one short line
    assert (await gateway.client.get("/admin/api/session", headers=cookie)).status == 401
    refused_with_one_short_line(watch)
    # And a dashboard page sends the browser to the sign-in form
    page = await gateway.client.get("/admin/documents", headers=cookie, allow_redirects=False)
    assert page.status == 303 and page.headers["Location"].startswith("/admin/login")


async def test_a_non_ascii_install_token_is_a_403(gateway: Stack, watch: pytest.LogCaptureFixture) -> None:
    # Given Slack and Shopify install links whose signed parts are non-ASCII
    slack = await gateway.client.get("/slack/install?tenant=%C3%A9.%C3%A9", allow_redirects=False)
    # Then each is refused as an invalid link, with one short line each
    assert slack.status == 403
    refused_with_one_short_line(watch)
    watch.clear()
    shopify = await gateway.client.get("/shopify/install?tenant=%C3%A9&expires=%C2%B2&link=%C3%A9&sig=%C3%A9"
                                       f"&shop={SHOP}", allow_redirects=False)
    assert shopify.status == 403
    refused_with_one_short_line(watch)
    watch.clear()
    # And a non-ASCII OAuth state coming back to Slack's redirect is refused too
    state = "%C3%A9.%C3%A9"
    back = await gateway.client.get(f"/slack/oauth_redirect?code=x&state={state}",
                                    headers={"Cookie": "slack-app-oauth-state=é.é"})
    assert 400 <= back.status < 500


async def test_a_bearer_key_of_invalid_utf8_is_a_401(gateway: Stack, watch: pytest.LogCaptureFixture) -> None:
    # Given an Authorization header carrying bytes that are not UTF-8 (aiohttp's client will not send them)
    headers = [(b"Authorization", b"Bearer pk_\xff\xfe\x80")]
    # When the API is asked with it, Then it is a 401 with one short line
    assert await send_raw(gateway, "GET", b"/api/documents", headers) == 401
    refused_with_one_short_line(watch)


async def test_a_validly_signed_slack_body_that_is_a_json_array_is_a_400(gateway: Stack,
                                                                          watch: pytest.LogCaptureFixture) -> None:
    # Given a body Slack's signature verifies that is a JSON array, not an object
    body = "[1, 2, 3]"
    # When it is posted, Then it is a 400 with one short line
    assert (await gateway.client.post("/slack/events", data=body, headers=slack_headers(body))).status == 400
    refused_with_one_short_line(watch)


async def test_a_request_the_http_parser_refuses_is_a_400_with_one_short_line(gateway: Stack,
                                                                             watch: pytest.LogCaptureFixture) -> None:
    # Given a request whose header carries a control character (aiohttp's parser refuses it before
    # any handler runs, and logs the refusal with a traceback at ERROR)
    headers = [(b"Authorization", b"Bearer pk_\x01\x02"), (b"X-Correlation-Id", b"\x7f")]
    # When it is sent, Then it is a 400 and one short WARNING line, with none of the bytes sent
    assert await send_raw(gateway, "GET", b"/api/documents", headers) == 400
    refused_with_one_short_line(watch)
    [line] = [r for r in ours(watch) if r.levelno >= logging.WARNING]
    assert line.name == SERVER_LOGGER and "Bearer" not in line.getMessage()


@pytest.mark.parametrize("path", ["/slack/events", "/instagram/webhook", "/shopify/webhooks"])
async def test_a_signed_body_nested_past_the_json_parsers_stack_is_a_400(gateway: Stack, watch: pytest.LogCaptureFixture,
                                                                         path: str) -> None:
    # Given a validly signed webhook whose body is 100,000 nested arrays (json.loads raises RecursionError)
    body = b"[" * 100_000
    # When it is posted, Then it is a 400 with one short line
    headers = _signed(path, body, [(b"Content-Type", b"application/json")])
    assert await send_raw(gateway, "POST", path.encode(), headers, body) == 400
    refused_with_one_short_line(watch)


async def test_an_api_body_nested_past_the_json_parsers_stack_is_a_400(gateway: Stack) -> None:
    # Given a tenant's own key and a chat body of 100,000 nested arrays
    headers = {"Authorization": f"Bearer {gateway.api_key}", "Content-Type": "application/json"}
    # When it is posted, Then it is a clear 400, not a RecursionError's 500
    response = await gateway.client.post("/api/chat", data=b"[" * 100_000, headers=headers)
    assert response.status == 400 and (await response.json())["error"] == "invalid_input"


@pytest.mark.parametrize("path, name, value", [
    ("/slack/events", b"X-Slack-Signature", b"v0=\xff\xfe"), ("/instagram/webhook", b"X-Hub-Signature-256", b"sha256=\xff\xfe"),
    ("/shopify/webhooks", b"X-Shopify-Hmac-Sha256", b"\xff\xfe"),
])
async def test_a_signature_header_of_invalid_utf8_is_a_401(gateway: Stack, watch: pytest.LogCaptureFixture,
                                                           path: str, name: bytes, value: bytes) -> None:
    # Given a webhook whose signature header (and body) are bytes that are not UTF-8
    headers = [(name, value), (b"X-Slack-Request-Timestamp", str(int(time.time())).encode()),
               (b"X-Shopify-Shop-Domain", SHOP.encode()), (b"Content-Type", b"application/json")]
    # When it is posted, Then it is a 401 with one short line
    assert await send_raw(gateway, "POST", path.encode(), headers, b"\xff\xfe{") == 401
    refused_with_one_short_line(watch)


async def test_a_signed_shopify_webhook_with_hostile_unsigned_headers_is_a_400(gateway: Stack,
                                                                                watch: pytest.LogCaptureFixture) -> None:
    # Given a Shopify delivery signed with the app's secret whose (unsigned) event id is not UTF-8
    body = json.dumps({"id": 1, "updated_at": "2026-12-01T00:00:00Z"}).encode()
    headers = [(b"X-Shopify-Hmac-Sha256", webhook_hmac(body, SHOPIFY_SECRET).encode()), (b"X-Shopify-Shop-Domain", SHOP.encode()),
               (b"X-Shopify-Topic", b"products/update"), (b"X-Shopify-Event-Id", b"\xff\xfe"),
               (b"Content-Type", b"application/json")]
    # When it is posted, Then it is a 400 before any query sees the header, with one short line
    assert await send_raw(gateway, "POST", b"/shopify/webhooks", headers, body) == 400
    refused_with_one_short_line(watch)


async def test_an_oauth_step_with_an_undecodable_body_is_not_a_500(gateway: Stack, watch: pytest.LogCaptureFixture) -> None:
    # Given GETs of the Slack OAuth steps carrying a body that is not UTF-8, or in a charset that does not exist
    for content_type in (b"text/plain; charset=utf-8", b"text/plain; charset=no-such-charset"):
        for target in (b"/slack/oauth_redirect?code=x&state=a.b", b"/slack/install?tenant=a.b"):
            # When they are sent, Then they are refused as the OAuth flow refuses them, without a traceback
            status = await send_raw(gateway, "GET", target, [(b"Content-Type", content_type)], b"\xff\xfe")
            assert 400 <= status < 500, (target, content_type, status)
    assert [r.getMessage() for r in ours(watch) if r.exc_info or r.levelno >= logging.ERROR] == []


# --- the property: every route, generated headers and bodies ------------------------------------


def routes_of(app: web.Application) -> list[tuple[str, str]]:
    """(method, path template) of every route the app serves; HEAD comes with each GET."""
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or (info.get("prefix", "") + "/{filename}")
        found.add((route.method, path))
    return sorted(found)


HEADER_NAMES = [b"Authorization", b"Cookie", b"Content-Type", b"X-Slack-Request-Timestamp", b"X-Slack-Signature",
                b"X-Slack-Retry-Num", b"X-Hub-Signature-256", b"X-Shopify-Hmac-Sha256", b"X-Shopify-Shop-Domain",
                b"X-Shopify-Topic", b"X-Shopify-Event-Id", b"X-Shopify-Webhook-Id", b"X-Shopify-Triggered-At",
                b"X-Correlation-Id", b"X-CSRF-Token", b"Origin", b"Sec-Fetch-Site", b"X-Forwarded-For", b"Accept"]
WEBHOOKS = [("POST", "/slack/events"), ("POST", "/instagram/webhook"), ("POST", "/shopify/webhooks")]
#: Drawn more often than the rest: they read the most input.
DOORS = ("/slack/install", "/slack/oauth_redirect", "/instagram/webhook", "/shopify/install", "/shopify/callback",
         "/admin/login", "/admin/api/session", "/api/documents", "/api/slack/install-link")
QUERY_NAMES = ["tenant", "expires", "link", "sig", "shop", "hmac", "state", "code", "timestamp", "host", "hub.mode",
               "hub.verify_token", "hub.challenge", "next", "limit", "status", "channel", "error"]


def _parsable(value: bytes) -> bytes:
    """Bytes aiohttp's parser lets through to a handler (tab, printable ASCII, and 0x80-0xFF: not
    UTF-8 on their own); other control characters are refused with a 400 before any of our code."""
    return bytes(c for c in value if c == 9 or 0x20 <= c != 0x7F)


# --- headers: bytes, text, pieces of what the routes look for, shaped like our tokens and the vendors' headers

#: Mostly what reaches the handlers, sometimes anything but CR and LF (which end a header line).
raw_bytes = st.one_of(st.binary(max_size=80).map(_parsable), st.binary(max_size=80).map(_parsable),
                      st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")))
texts = st.text(max_size=40).map(lambda t: _parsable(t.encode("utf-8")))
pieces = st.sampled_from([b"\xc2\xb2", b"v0=", b"sha256=", b"Bearer ", b"Bearer pk_", b"parley_admin=", b"a.b", b".",
                          b"\xff", b"\x00", SHOP.encode(), str(int(time.time())).encode(), b"2026-12-03T00:00:00Z",
                          b"application/json", b"multipart/form-data; boundary=x", b"application/x-www-form-urlencoded",
                          b"text/plain; charset=no-such-charset", b"application/json; charset=utf-16"])
header_values = st.one_of(raw_bytes, texts, st.lists(st.one_of(pieces, texts), max_size=4).map(b"".join))
#: Shaped like our signed tokens (``payload.mac``: the admin cookie, install links, OAuth states).
token_like = st.tuples(texts | raw_bytes, texts | raw_bytes).map(b".".join)
cookies = st.tuples(st.sampled_from([b"parley_admin=", b"slack-app-oauth-state=", b"parley_shopify_state="]),
                    token_like | header_values).map(b"".join)
headers = st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_values) | st.tuples(st.just(b"Cookie"), cookies),
                   max_size=6)


def _prefixed(prefix: bytes) -> st.SearchStrategy[bytes]:
    return (texts | raw_bytes).map(lambda value: prefix + value)


#: Every Unicode digit (int() refuses some, like "²", that str.isdigit() accepts), and the current time.
digits = st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=12).map(lambda t: t.encode())
timestamps = st.one_of(st.just(str(int(time.time())).encode()), digits, header_values)
#: The headers a vendor's webhook carries, with hostile values (drawn for the route, unless it is signed).
VENDOR_HEADERS = {
    "/slack/events": st.tuples(st.tuples(st.just(b"X-Slack-Request-Timestamp"), timestamps),
                               st.tuples(st.just(b"X-Slack-Signature"), _prefixed(b"v0=") | header_values)).map(list),
    "/instagram/webhook": st.tuples(st.just(b"X-Hub-Signature-256"), _prefixed(b"sha256=") | header_values).map(lambda h: [h]),
    "/shopify/webhooks": st.tuples(st.tuples(st.just(b"X-Shopify-Hmac-Sha256"), header_values),
                                   st.tuples(st.just(b"X-Shopify-Shop-Domain"), st.just(SHOP.encode()) | header_values),
                                   st.tuples(st.just(b"X-Shopify-Triggered-At"), timestamps)).map(list),
}

# --- bodies: bytes, JSON of any shape, nesting past the parser's stack, and each vendor's shape

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                           max_leaves=12)
slack_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["event_callback", "url_verification", "app_rate_limited"]) | json_values},
    optional={"event": st.fixed_dictionaries({"type": st.just("message") | json_values},
                                             optional={k: json_values for k in ("channel_type", "user", "text", "files")}),
              **{k: json_values for k in ("team_id", "event_id", "challenge", "authorizations", "enterprise", "api_app_id")}})
instagram_like = st.fixed_dictionaries({"object": st.just("instagram"), "entry": json_values | st.lists(
    st.fixed_dictionaries({"id": json_values}, optional={"messaging": st.lists(
        json_values | st.fixed_dictionaries({"sender": json_values, "message": json_values}), max_size=3)}), max_size=3)})
shopify_like = st.fixed_dictionaries({"id": st.integers() | json_values}, optional={
    k: json_values for k in ("updated_at", "shop_domain", "domain", "myshopify_domain", "variants", "title")})
bodies = st.one_of(
    st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()), st.integers(1, 3000).map(lambda n: b"[" * n),
    st.dictionaries(st.sampled_from(["type", "event", "entry", "id", "challenge", "api_key", "payload", "command", "team_id",
                                     "shop_domain", "updated_at"]), json_values, max_size=5).map(lambda d: json.dumps(d).encode()),
    *(shaped.map(lambda v: json.dumps(v).encode()) for shaped in (slack_like, instagram_like, shopify_like)))

# --- where to: a query of the names the routes read, path parameters of any bytes

queries = st.lists(st.tuples(st.sampled_from(QUERY_NAMES), st.binary(max_size=30) | token_like | texts), max_size=4).map(
    lambda pairs: "&".join(f"{k}={quote_from_bytes(v)}" for k, v in pairs).encode())
segments = st.binary(min_size=1, max_size=20).map(lambda b: quote_from_bytes(b, safe="").encode())


def _signed(path: str, body: bytes, sent: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The same request validly signed for the route (so what runs after the signature is reached)."""
    replaced = {b"X-Slack-Request-Timestamp", b"X-Slack-Signature", b"X-Hub-Signature-256", b"X-Shopify-Hmac-Sha256",
                b"X-Shopify-Shop-Domain"}
    given = [(name, value) for name, value in sent if name not in replaced]
    if path == "/slack/events":
        ts = str(int(time.time()))
        mac = hmac.new(SLACK_SECRET.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
        return [*given, (b"X-Slack-Request-Timestamp", ts.encode()), (b"X-Slack-Signature", f"v0={mac}".encode())]
    if path == "/instagram/webhook":
        return [*given, (b"X-Hub-Signature-256", meta_headers(body, IG_SECRET)["X-Hub-Signature-256"].encode())]
    if path == "/shopify/webhooks":
        return [*given, (b"X-Shopify-Hmac-Sha256", webhook_hmac(body, SHOPIFY_SECRET).encode()),
                (b"X-Shopify-Shop-Domain", SHOP.encode())]
    return sent


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
async def test_no_request_a_stranger_sends_is_a_5xx(gateway: Stack, caplog: pytest.LogCaptureFixture, data: st.DataObject) -> None:
    caplog.set_level(logging.INFO)
    caplog.clear()
    # Given any route of the gateway, with generated path parameters, query, headers and body
    every = routes_of(app_of(gateway))
    doors = [r for r in every if r[0] == "POST" or r[1] in DOORS]
    method, template = data.draw(st.sampled_from(every) | st.sampled_from(doors) | st.sampled_from(WEBHOOKS), label="route")
    path = re.sub(rb"\{[^}]+\}", lambda _: data.draw(segments), template.encode())
    target = path + (b"?" + query if (query := data.draw(queries, label="query")) else b"")
    sent = data.draw(headers, label="headers")
    body = data.draw(st.just(b"") | st.binary(min_size=1, max_size=300) | bodies, label="body")  # a GET may carry one too
    if template in VENDOR_HEADERS:
        signed = data.draw(st.booleans(), label="signed")
        sent = _signed(template, body, sent) if signed else data.draw(VENDOR_HEADERS[template], label="vendor headers") + sent
    # When it is sent
    status = await send_raw(gateway, method, target, sent, body)
    # Then the answer is not a server error, and nothing was logged with a traceback
    assert status < 500, (method, target, sent, body[:200], status)
    failures = [r.getMessage() for r in ours(caplog) if r.exc_info or r.levelno >= logging.ERROR]
    assert failures == [], (method, target, sent, body[:200], failures)
    assert all(len(r.getMessage()) < 300 for r in ours(caplog))


async def test_the_property_covers_every_public_route(gateway: Stack) -> None:
    # Given the routes the fuzz draws from, Then every public door of the gateway is among them
    paths = {path for _, path in routes_of(app_of(gateway))}
    for expected in ("/slack/events", "/slack/install", "/slack/oauth_redirect", "/instagram/webhook", "/shopify/install",
                     "/shopify/callback", "/shopify/webhooks", "/api/chat", "/api/documents", "/api/documents/{id}",
                     "/api/slack/install-link", "/admin/login", "/admin/api/session", "/chat", "/healthz", "/readyz",
                     "/chat/w/{widget}", "/chat/w/{widget}/session", "/chat/w/{widget}/chat", "/admin/api/widgets"):
        assert expected in paths, expected
    assert ("GET", "/instagram/webhook") in routes_of(app_of(gateway))
    assert ("POST", "/instagram/webhook") in routes_of(app_of(gateway))
