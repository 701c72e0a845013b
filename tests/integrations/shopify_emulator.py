"""A local Shopify, built from Shopify's documented shapes, for tests and benchmarks.

It speaks what our adapter calls: the OAuth authorize redirect (approving at once, with a signed
callback) and the token endpoint (code exchange, ``expiring=1``, rotating refresh tokens, one
active expiring token per shop); the Admin GraphQL endpoint with ``extensions.cost`` and a leaky
bucket that answers THROTTLED (HTTP 200, or 429 when asked); ``products`` pages with cursors and
Shopify's requested-cost formula (MAX_COST_EXCEEDED above 1,000 points); ``productsCount``;
``shop`` + ``currentAppInstallation``; the bulk operation lifecycle (CREATED -> RUNNING ->
COMPLETED, or FAILED with a ``partialDataUrl``) and its JSONL file, whose variant rows carry
``__parentId`` and come after all products; ``webhookSubscriptionCreate``. GraphQL documents are
recognised by their root fields, not parsed: the selection sets are Shopify's full node shapes.

Shopify's own test vectors and payloads are in ../shared/data/fixtures/shopify; this module only
produces data in the same shapes.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime as dt
import itertools
import json
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.test_utils import TestServer

from integrations.shopify.hmac import oauth_hmac, webhook_hmac

MAX_QUERY_COST = 1000


def gid(kind: str, value: int) -> str:
    return f"gid://shopify/{kind}/{value}"


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Token:
    shop: str
    scopes: str
    expires_at: float | None = None


@dataclass
class ShopState:
    domain: str
    name: str = "Emulated Store"
    currency: str = "USD"
    products: dict[int, dict[str, Any]] = field(default_factory=dict)
    # the leaky bucket (Shopify Standard: 100 points/s restore; the bucket size is read live)
    bucket_max: float = 2000.0
    restore_rate: float = 1_000_000.0
    available: float = 2000.0
    bucket_at: float = field(default_factory=time.monotonic)
    force_throttle: int = 0  # answer THROTTLED this many times regardless of the bucket
    throttle_status: int = 200  # HTTP status of a THROTTLED answer (Shopify reports 200; some see 429)
    bulk_polls: int = 2  # status polls before a bulk operation completes
    bulk_partial_after: int | None = None  # fail with TIMEOUT and a partialDataUrl of this many products
    fail_5xx: int = 0  # answer HTTP 503 this many times
    max_cost: int = MAX_QUERY_COST  # single-query cost limit
    webhooks: list[dict[str, str]] = field(default_factory=list)


class ShopifyEmulator:
    def __init__(self, *, client_id: str = "emulated-client-id", client_secret: str = "emulated-client-secret",
                 token_ttl: int = 3600) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = token_ttl
        self.shops: dict[str, ShopState] = {}
        self.tokens: dict[str, Token] = {}
        self.refresh_tokens: dict[str, str] = {}  # refresh token -> shop
        self.codes: dict[str, tuple[str, str]] = {}  # code -> (shop, scopes)
        self.bulk: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []  # every GraphQL call: shop, operation, variables, status
        self.token_requests: list[dict[str, Any]] = []
        self.base_url = ""
        self.granted_scopes: str | None = None  # what the merchant approves (default: what was asked)
        self._ids = itertools.count(1)
        self._clock = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)

    # --- test-side controls -----------------------------------------------------------------
    def shop(self, domain: str, **options: Any) -> ShopState:
        state = self.shops.get(domain)
        if state is None:
            state = self.shops[domain] = ShopState(domain)
        for key, value in options.items():
            setattr(state, key, value)
        return state

    def tick(self) -> dt.datetime:
        """A strictly later updatedAt for each change (Shopify timestamps have 1 s resolution)."""
        self._clock += dt.timedelta(seconds=1)
        return self._clock

    def add_products(self, domain: str, products: list[dict[str, Any]]) -> None:
        state = self.shop(domain)
        for product in products:
            node = copy.deepcopy(product)
            node.setdefault("updatedAt", iso(self.tick()))
            state.products[int(node["id"].rsplit("/", 1)[1])] = node

    def update_product(self, domain: str, product_id: int, **changes: Any) -> dict[str, Any]:
        node = self.shops[domain].products[product_id]
        node.update(changes)
        node["updatedAt"] = iso(self.tick())
        return node

    def delete_product(self, domain: str, product_id: int) -> None:
        del self.shops[domain].products[product_id]

    def issue_token(self, domain: str, *, scopes: str = "read_products", expiring: bool = False) -> str:
        token = "shpat_" + secrets.token_hex(16)
        self.tokens[token] = Token(domain, scopes, time.time() + self.token_ttl if expiring else None)
        self.shop(domain)
        return token

    def revoke_tokens(self, domain: str) -> None:
        """The merchant uninstalled the app: every token of the shop stops working."""
        for token in [t for t, v in self.tokens.items() if v.shop == domain]:
            del self.tokens[token]
        for refresh in [r for r, s in self.refresh_tokens.items() if s == domain]:
            del self.refresh_tokens[refresh]

    def operations(self, domain: str | None = None) -> list[str]:
        return [r["operation"] for r in self.requests if domain is None or r["shop"] == domain]

    # --- REST webhook payloads (products/create|update|delete) ------------------------------
    def rest_payload(self, domain: str, product_id: int) -> dict[str, Any]:
        node = self.shops[domain].products[product_id]
        names = [o["name"] for o in node.get("options") or []]
        variants = []
        for position, v in enumerate(node["variants"], start=1):
            values = {o["name"]: o["value"] for o in v.get("selectedOptions") or []}
            row = {"id": int(v["id"].rsplit("/", 1)[1]), "admin_graphql_api_id": v["id"], "product_id": product_id,
                   "title": v.get("title"), "sku": v.get("sku"), "price": v.get("price"), "position": position,
                   "inventory_policy": "deny", "inventory_quantity": v.get("inventoryQuantity"),
                   "updated_at": node["updatedAt"]}
            for i in range(3):
                row[f"option{i + 1}"] = values.get(names[i]) if i < len(names) else None
            variants.append(row)
        return {"id": product_id, "admin_graphql_api_id": node["id"], "title": node["title"], "handle": node["handle"],
                "vendor": node.get("vendor"), "product_type": node.get("productType"), "tags": ", ".join(node.get("tags") or []),
                "body_html": f"<p>{node.get('description', '')}</p>", "status": node.get("status", "ACTIVE").lower(),
                "updated_at": node["updatedAt"], "variants": variants,
                "options": [{"name": o["name"], "values": o["values"], "position": i + 1} for i, o in enumerate(node.get("options") or [])]}

    def signed_webhook(self, topic: str, domain: str, payload: dict[str, Any] | bytes, *, event_id: str | None = None,
                       secret: str | None = None, triggered_at: dt.datetime | None = None) -> tuple[bytes, dict[str, str]]:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Shopify-Topic": topic,
            "X-Shopify-Shop-Domain": domain,
            "X-Shopify-API-Version": "2026-10",
            "X-Shopify-Webhook-Id": secrets.token_hex(8),
            "X-Shopify-Event-Id": event_id or secrets.token_hex(8),
            # the real time of the trigger (the gateway refuses one older than Shopify's retries), and
            # never before the emulated updatedAt of what changed
            "X-Shopify-Triggered-At": iso(triggered_at or max(self.tick(), dt.datetime.now(dt.UTC))),
            "X-Shopify-Hmac-Sha256": webhook_hmac(body, secret or self.client_secret),
        }
        return body, headers

    # --- the HTTP app -----------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{shop}/admin/oauth/authorize", self._authorize)
        app.router.add_post("/{shop}/admin/oauth/access_token", self._access_token)
        app.router.add_post("/{shop}/admin/api/{version}/graphql.json", self._graphql)
        app.router.add_get("/bulk/{id}.jsonl", self._bulk_file)
        return app

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        shop, q = request.match_info["shop"], request.query
        if q.get("client_id") != self.client_id:
            return web.Response(status=400, text="unknown client_id")
        code = secrets.token_hex(16)
        self.codes[code] = (shop, self.granted_scopes if self.granted_scopes is not None else q.get("scope", ""))
        params = {"code": code, "host": base64.b64encode(f"{shop}/admin".encode()).decode(), "shop": shop,
                  "state": q.get("state", ""), "timestamp": str(int(time.time()))}
        params["hmac"] = oauth_hmac(params, self.client_secret)
        raise web.HTTPFound(f"{q['redirect_uri']}?{urlencode(params)}")

    async def _access_token(self, request: web.Request) -> web.StreamResponse:
        shop = request.match_info["shop"]
        form = dict(await request.json()) if request.content_type == "application/json" else dict(await request.post())
        self.token_requests.append({"shop": shop, **{k: v for k, v in form.items() if k != "client_secret"}})
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return web.json_response({"error": "invalid_client"}, status=401)
        if form.get("grant_type") == "refresh_token":
            if self.refresh_tokens.get(str(form.get("refresh_token"))) != shop:
                return web.json_response({"error": "invalid_grant", "error_description": "refresh token revoked"}, status=400)
            del self.refresh_tokens[str(form["refresh_token"])]  # rotation: the old one is spent
            scopes = next((t.scopes for t in self.tokens.values() if t.shop == shop), "read_products")
            return web.json_response(self._grant(shop, scopes, expiring=True))
        granted = self.codes.pop(str(form.get("code")), None)
        if granted is None or granted[0] != shop:
            return web.json_response({"error": "invalid_request", "error_description": "invalid code"}, status=400)
        return web.json_response(self._grant(shop, granted[1], expiring=form.get("expiring") == "1"))

    def _grant(self, shop: str, scopes: str, *, expiring: bool) -> dict[str, Any]:
        if expiring:  # only one expiring token may be active per app and shop
            for token in [t for t, v in self.tokens.items() if v.shop == shop and v.expires_at is not None]:
                del self.tokens[token]
        token = self.issue_token(shop, scopes=scopes, expiring=expiring)
        body: dict[str, Any] = {"access_token": token, "scope": scopes}
        if expiring:
            refresh = "shprt_" + secrets.token_hex(16)
            self.refresh_tokens[refresh] = shop
            body.update(expires_in=self.token_ttl, refresh_token=refresh, refresh_token_expires_in=90 * 86400)
        return body

    async def _graphql(self, request: web.Request) -> web.StreamResponse:
        shop = request.match_info["shop"]
        payload = await request.json()
        query, variables = payload.get("query", ""), payload.get("variables") or {}
        operation = _operation(query)
        record = {"shop": shop, "operation": operation, "variables": variables, "version": request.match_info["version"]}
        self.requests.append(record)
        token = self.tokens.get(request.headers.get("X-Shopify-Access-Token", ""))
        if token is None or token.shop != shop or (token.expires_at is not None and token.expires_at < time.time()):
            record["status"] = 401
            return web.json_response({"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}, status=401)
        state = self.shop(shop)
        if state.fail_5xx > 0:
            state.fail_5xx -= 1
            record["status"] = 503
            return web.Response(status=503, text="Service Unavailable")
        cost = _requested_cost(operation, variables)
        now = time.monotonic()
        state.available = min(state.bucket_max, state.available + (now - state.bucket_at) * state.restore_rate)
        state.bucket_at = now
        if cost > state.max_cost:
            record["status"] = "MAX_COST_EXCEEDED"
            return web.json_response({"errors": [{"message": f"Query cost is {cost}, which exceeds the single query max cost "
                                                  f"limit ({state.max_cost}).", "extensions": {"code": "MAX_COST_EXCEEDED",
                                                  "cost": cost, "maxCost": state.max_cost}}]})
        if state.force_throttle > 0 or state.available < cost:
            state.force_throttle = max(0, state.force_throttle - 1)
            record["status"] = "THROTTLED"
            return web.json_response({"errors": [{"message": "Throttled", "extensions": {
                "code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
                "extensions": self._cost(state, cost, None)}, status=state.throttle_status)
        data, actual = self._resolve(state, operation, query, variables, token)
        state.available -= actual
        record["status"] = 200
        return web.json_response({"data": data, "extensions": self._cost(state, cost, actual)})

    @staticmethod
    def _cost(state: ShopState, requested: int, actual: int | None) -> dict[str, Any]:
        return {"cost": {"requestedQueryCost": requested, "actualQueryCost": actual, "throttleStatus": {
            "maximumAvailable": state.bucket_max, "currentlyAvailable": int(state.available), "restoreRate": state.restore_rate}}}

    def _resolve(self, state: ShopState, operation: str, query: str, v: dict[str, Any], token: Token) -> tuple[dict[str, Any], int]:
        active = [p for _, p in sorted(state.products.items()) if p.get("status", "ACTIVE") == "ACTIVE"]
        if operation == "shop":
            token_scopes = token.scopes or "read_products"
            return {"shop": {"name": state.name, "myshopifyDomain": state.domain, "currencyCode": state.currency},
                    "currentAppInstallation": {"accessScopes": [{"handle": s} for s in token_scopes.split(",")]}}, 2
        if operation == "productsCount":
            return {"productsCount": {"count": len(active), "precision": "EXACT"}}, 1
        if operation == "products":
            return self._products_page(active, v)
        if operation == "product":
            return self._variants_page(state, v)
        if operation == "bulkOperationRunQuery":
            return self._bulk_run(state, active), 10
        if operation == "bulkOperation":
            return {"bulkOperation": self._bulk_poll(v["id"])}, 1
        if operation == "webhookSubscriptionCreate":
            return self._subscribe(state, v), 10
        raise web.HTTPBadRequest(text=f"emulator does not know this operation: {query[:80]}")

    def _products_page(self, active: list[dict[str, Any]], v: dict[str, Any]) -> tuple[dict[str, Any], int]:
        first, after, vfirst = int(v["first"]), v.get("after"), int(v.get("variantsFirst") or 250)
        start = 0
        if after:
            last = json.loads(base64.b64decode(after))["last_id"]
            start = next((i for i, p in enumerate(active) if _num(p["id"]) > last), len(active))
        page = active[start:start + first]
        nodes = []
        for product in page:
            node = {k: val for k, val in product.items() if k != "variants"}
            variants = product["variants"]
            node["variants"] = {"nodes": variants[:vfirst], "pageInfo": {
                "hasNextPage": len(variants) > vfirst, "endCursor": _cursor(vfirst - 1) if variants else None}}
            nodes.append(node)
        has_next = start + first < len(active)
        end = _cursor(_num(page[-1]["id"])) if page else None
        actual = 2 + sum(3 + min(len(p["variants"]), vfirst) for p in page)
        return {"products": {"nodes": nodes, "pageInfo": {"hasNextPage": has_next, "endCursor": end}}}, actual

    def _variants_page(self, state: ShopState, v: dict[str, Any]) -> tuple[dict[str, Any], int]:
        product = state.products.get(_num(v["id"]))
        if product is None:
            return {"product": None}, 1
        start = json.loads(base64.b64decode(v["after"]))["last_id"] + 1 if v.get("after") else 0
        first = int(v["first"])
        chunk = product["variants"][start:start + first]
        more = start + first < len(product["variants"])
        return {"product": {"variants": {"nodes": chunk, "pageInfo": {
            "hasNextPage": more, "endCursor": _cursor(start + len(chunk) - 1)}}}}, 2 + len(chunk)

    def _bulk_run(self, state: ShopState, active: list[dict[str, Any]]) -> dict[str, Any]:
        op_id = gid("BulkOperation", next(self._ids))
        rows: list[dict[str, Any]] = []
        children: list[dict[str, Any]] = []
        for product in active:
            rows.append({k: v for k, v in product.items() if k != "variants"})
            children += [{**variant, "__parentId": product["id"]} for variant in product["variants"]]
        children.reverse()  # child rows are not guaranteed to follow their parent: read them anywhere
        partial = state.bulk_partial_after
        if partial is not None:
            kept = {r["id"] for r in rows[:partial]}
            rows = rows[:partial]
            children = [c for c in children if c["__parentId"] in kept]
        self.bulk[op_id] = {"shop": state.domain, "polls": 0, "needed": state.bulk_polls, "lines": rows + children,
                            "partial": partial is not None}
        return {"bulkOperationRunQuery": {"bulkOperation": {"id": op_id, "status": "CREATED"}, "userErrors": []}}

    def _bulk_poll(self, op_id: str) -> dict[str, Any] | None:
        op = self.bulk.get(op_id)
        if op is None:
            return None
        op["polls"] += 1
        base = {"id": op_id, "objectCount": str(len(op["lines"])), "rootObjectCount": str(sum(1 for r in op["lines"] if "__parentId" not in r)),
                "errorCode": None, "url": None, "partialDataUrl": None}
        if op["polls"] < op["needed"]:
            return {**base, "status": "RUNNING" if op["polls"] > 1 else "CREATED"}
        url = f"{self.base_url}/bulk/{op_id.rsplit('/', 1)[1]}.jsonl"
        if op["partial"]:
            return {**base, "status": "FAILED", "errorCode": "TIMEOUT", "partialDataUrl": url}
        return {**base, "status": "COMPLETED", "url": url if op["lines"] else None}

    async def _bulk_file(self, request: web.Request) -> web.StreamResponse:
        op = self.bulk.get(gid("BulkOperation", int(request.match_info["id"])))
        if op is None:
            return web.Response(status=404)
        return web.Response(body="".join(json.dumps(line) + "\n" for line in op["lines"]).encode(), content_type="application/jsonl")

    def _subscribe(self, state: ShopState, v: dict[str, Any]) -> dict[str, Any]:
        topic, uri = v["topic"], v["webhookSubscription"]["uri"]
        if any(w["topic"] == topic and w["uri"] == uri for w in state.webhooks):
            return {"webhookSubscriptionCreate": {"webhookSubscription": None, "userErrors": [
                {"field": ["webhookSubscription", "callbackUrl"], "message": "Address for this topic has already been taken"}]}}
        state.webhooks.append({"topic": topic, "uri": uri})
        return {"webhookSubscriptionCreate": {"webhookSubscription": {"id": gid("WebhookSubscription", next(self._ids)),
                                                                      "topic": topic, "uri": uri}, "userErrors": []}}


@contextlib.asynccontextmanager
async def running(emulator: ShopifyEmulator) -> AsyncIterator[str]:
    """Serve the emulator on 127.0.0.1 (a free port); yields its base URL."""
    server = TestServer(emulator.app(), host="127.0.0.1")
    await server.start_server()
    emulator.base_url = str(server.make_url("")).rstrip("/")
    try:
        yield emulator.base_url
    finally:
        await server.close()


_ROOTS = ("bulkOperationRunQuery", "webhookSubscriptionCreate", "productsCount", "bulkOperation", "currentAppInstallation",
          "products", "product")


def _operation(query: str) -> str:
    body = re.sub(r"^\s*(query|mutation)\s*\w*\s*(\([^)]*\))?\s*\{", "", query, count=1)
    for root in _ROOTS:
        if re.match(rf"\s*{root}\b", body):
            return "shop" if root == "currentAppInstallation" else root
    if re.match(r"\s*shop\b", body):
        return "shop"
    return "unknown"


def _requested_cost(operation: str, v: dict[str, Any]) -> int:
    """Shopify's formula for a connection: 2 + first x (cost of one node); objects cost 1."""
    if operation == "products":
        return 2 + int(v["first"]) * (1 + 2 + int(v.get("variantsFirst") or 0))
    if operation == "product":
        return 2 + int(v["first"])
    return {"bulkOperationRunQuery": 10, "webhookSubscriptionCreate": 10}.get(operation, 2)


def _num(value: str) -> int:
    return int(str(value).rsplit("/", 1)[1])


def _cursor(last_id: int) -> str:
    return base64.b64encode(json.dumps({"last_id": last_id, "last_value": str(last_id)}).encode()).decode()
