"""An async Admin GraphQL client: cost-based throttling, pagination, bulk exports, webhooks.

Throttling (Shopify's leaky bucket, per app and store): every answer carries
``extensions.cost.throttleStatus {maximumAvailable, currentlyAvailable, restoreRate}`` and the
query's ``requestedQueryCost``. The client remembers the bucket and, before the next request,
waits until it has refilled enough for the last query's cost. If Shopify answers THROTTLED anyway
(``errors[].extensions.code``, with HTTP 200 or 429) it waits ``(cost - available) / restoreRate``
(or ``Retry-After``) and asks again, for as long as it takes: throttling never fails a job.

Errors: 401 is :class:`TokenRevoked` (the merchant must reconnect); 5xx and connection errors are
retried a few times and then raised as :class:`ShopifyUnavailable` (retryable); anything else is a
permanent :class:`ShopifyError` with Shopify's message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from integrations.shopify import queries
from integrations.shopify.config import ShopifyConfig
from integrations.shopify.errors import BulkOperationFailed, ShopifyError, ShopifyUnavailable, TokenRevoked
from integrations.shopify.oauth import parse_scopes

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class CostExceeded(ShopifyError):
    code = "shopify_max_cost_exceeded"


@dataclass
class ClientStats:
    requests: int = 0
    throttled: int = 0
    throttle_wait_s: float = 0.0
    transient_errors: int = 0
    cost: float = 0.0


@dataclass(frozen=True)
class ShopInfo:
    name: str
    domain: str
    currency: str | None
    scopes: frozenset[str]


@dataclass
class BulkResult:
    rows: list[dict[str, Any]]
    partial: bool = False
    error_code: str | None = None
    object_count: int | None = None
    operation_id: str | None = None


@dataclass
class _Bucket:
    maximum: float = 0.0
    available: float = 0.0
    rate: float = 0.0
    at: float = 0.0
    last_cost: float = 0.0
    known: bool = field(default=False)


#: Shopify's limit on one query's requested cost (points).
MAX_QUERY_COST = 1000
_TERMINAL = {"COMPLETED", "FAILED", "CANCELED", "EXPIRED"}
_RETRYABLE_BULK_ERRORS = {"INTERNAL_SERVER_ERROR", "TIMEOUT"}


class ShopifyClient:
    def __init__(self, http: aiohttp.ClientSession, config: ShopifyConfig, *, shop: str, access_token: str,
                 sleep: Sleep = asyncio.sleep) -> None:
        self.http = http
        self.config = config
        self.shop = shop
        self._token = access_token
        self._sleep = sleep
        self._bucket = _Bucket()
        self.stats = ClientStats()

    # --- one request ----------------------------------------------------------------------
    async def execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run one GraphQL document and return its ``data``; waits out throttling, retries 5xx."""
        transient = 0
        throttled = 0
        while True:
            await self._wait_for_budget()
            try:
                status, body, retry_after = await self._post(query, variables)
            except (aiohttp.ClientError, TimeoutError) as exc:
                transient = await self._transient(transient, f"{type(exc).__name__}: {exc}")
                continue
            self.stats.requests += 1
            if status == 401:
                raise TokenRevoked(self.shop, "HTTP 401 from the Admin API")
            if status in (402, 423):
                raise ShopifyError(f"{self.shop} is frozen or locked (HTTP {status}); it must be reactivated in Shopify "
                                   "before Parley can read its catalog", code="shopify_shop_unavailable")
            if status == 403:
                raise ShopifyError(f"Shopify denied access to {self.shop} (HTTP 403): the app lacks a permission; "
                                   "reconnect the store and approve every requested permission", code="shopify_forbidden")
            if status == 404:
                raise ShopifyError(f"no Shopify store answers at {self.shop} (HTTP 404)", code="shopify_not_found")
            cost = (body or {}).get("extensions", {}).get("cost") if isinstance(body, dict) else None
            self._note_cost(cost)
            if status == 429 or _is_throttled(body):
                requested = _float((cost or {}).get("requestedQueryCost")) or 0.0
                if self._bucket.known and requested > self._bucket.maximum:
                    # it would never fit, however long we wait: the caller must ask for less
                    raise CostExceeded(f"a query of {requested:g} points cannot fit {self.shop}'s bucket of "
                                       f"{self._bucket.maximum:g} points")
                throttled += 1
                wait = self._throttle_wait(cost, retry_after, throttled)
                self.stats.throttled += 1
                self.stats.throttle_wait_s += wait
                log.info("shopify throttled; waiting", extra={"shop": self.shop, "wait_s": round(wait, 3)})
                await self._sleep(wait)
                continue
            if status >= 500 or body is None:
                transient = await self._transient(transient, f"HTTP {status}")
                continue
            if status != 200:
                raise ShopifyError(f"Shopify answered HTTP {status} for {self.shop}: {_messages(body)}")
            errors = body.get("errors")
            if errors:
                codes = {str((e.get("extensions") or {}).get("code")) for e in errors if isinstance(e, dict)}
                if "MAX_COST_EXCEEDED" in codes:
                    raise CostExceeded(f"query too expensive for {self.shop}: {_messages(body)}")
                if "ACCESS_DENIED" in codes:
                    raise ShopifyError(f"Shopify denied access on {self.shop}: {_messages(body)}", code="shopify_forbidden")
                if "INTERNAL_SERVER_ERROR" in codes:
                    transient = await self._transient(transient, _messages(body))
                    continue
                raise ShopifyError(f"Shopify GraphQL error on {self.shop}: {_messages(body)}")
            return body.get("data") or {}

    async def _post(self, query: str, variables: dict[str, Any] | None) -> tuple[int, Any, float | None]:
        headers = {"X-Shopify-Access-Token": self._token, "Content-Type": "application/json", "Accept": "application/json"}
        payload = {"query": query, "variables": variables or {}}
        async with self.http.post(self.config.graphql_url(self.shop), json=payload, headers=headers,
                                  timeout=aiohttp.ClientTimeout(total=self.config.http_timeout)) as response:
            text = await response.text()
            retry_after = _float(response.headers.get("Retry-After"))
            try:
                body = json.loads(text) if text else None
            except ValueError:
                body = None
            return response.status, body, retry_after

    async def _transient(self, attempts: int, reason: str) -> int:
        attempts += 1
        self.stats.transient_errors += 1
        if attempts >= self.config.transient_attempts:
            raise ShopifyUnavailable(f"Shopify did not answer properly for {self.shop} ({reason}); will retry later")
        await self._sleep(min(8.0, 0.25 * 2 ** attempts))
        return attempts

    # --- the bucket -----------------------------------------------------------------------
    def _note_cost(self, cost: dict[str, Any] | None) -> None:
        if not isinstance(cost, dict):
            return
        status = cost.get("throttleStatus") or {}
        requested = _float(cost.get("requestedQueryCost"))
        actual = _float(cost.get("actualQueryCost"))
        if actual is not None:
            self.stats.cost += actual
        if requested is not None:
            self._bucket.last_cost = requested
        available, rate, maximum = (_float(status.get(k)) for k in ("currentlyAvailable", "restoreRate", "maximumAvailable"))
        if available is not None and rate:
            self._bucket = _Bucket(maximum or available, available, rate, time.monotonic(), self._bucket.last_cost, True)

    def _estimated(self) -> float:
        b = self._bucket
        return min(b.maximum, b.available + b.rate * (time.monotonic() - b.at))

    async def _wait_for_budget(self) -> None:
        b = self._bucket
        if not b.known or b.last_cost <= 0:
            return
        need = min(b.last_cost, b.maximum) - self._estimated()
        if need > 0:
            wait = min(need / b.rate, self.config.max_throttle_wait)
            self.stats.throttle_wait_s += wait
            await self._sleep(wait)

    def _throttle_wait(self, cost: dict[str, Any] | None, retry_after: float | None, times: int) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.config.max_throttle_wait)
        b = self._bucket
        requested = _float((cost or {}).get("requestedQueryCost")) or b.last_cost
        if b.known and requested:
            need = min(requested, b.maximum) - self._estimated()
            return min(max(need / b.rate, 0.0) + 0.01, self.config.max_throttle_wait)
        return min(0.5 * 2 ** (times - 1), self.config.max_throttle_wait)

    # --- the shop -------------------------------------------------------------------------
    async def shop_info(self) -> ShopInfo:
        data = await self.execute(queries.SHOP)
        shop = data.get("shop") or {}
        scopes = [s.get("handle", "") for s in ((data.get("currentAppInstallation") or {}).get("accessScopes") or [])]
        return ShopInfo(name=str(shop.get("name") or self.shop), domain=str(shop.get("myshopifyDomain") or self.shop),
                        currency=shop.get("currencyCode"), scopes=parse_scopes(scopes))

    async def products_count(self, query: str = "status:active") -> int:
        data = await self.execute(queries.PRODUCTS_COUNT, {"query": query})
        return int(((data.get("productsCount") or {}).get("count")) or 0)

    # --- paginated listing ----------------------------------------------------------------
    async def iter_product_pages(self, *, query: str = "status:active") -> AsyncIterator[list[dict[str, Any]]]:
        """Pages of ``Product`` nodes with all their variants (extra variant pages fetched as needed)."""
        affordable = (MAX_QUERY_COST - 2) // (3 + self.config.variants_per_product)
        first = max(1, min(250, self.config.page_size, affordable))
        after: str | None = None
        while True:
            variables = {"first": first, "after": after, "variantsFirst": self.config.variants_per_product, "query": query}
            try:
                data = await self.execute(queries.PRODUCTS_PAGE, variables)
            except CostExceeded:
                if first == 1:
                    raise
                first = max(1, first // 2)
                continue
            connection = data.get("products") or {}
            nodes = connection.get("nodes") or [e["node"] for e in connection.get("edges") or []]
            for node in nodes:
                await self._complete_variants(node)
            yield nodes
            page = connection.get("pageInfo") or {}
            if not page.get("hasNextPage"):
                return
            after = page.get("endCursor")

    async def _complete_variants(self, node: dict[str, Any]) -> None:
        connection = node.get("variants") or {}
        page = connection.get("pageInfo") or {}
        collected = list(connection.get("nodes") or [])
        while page.get("hasNextPage"):
            data = await self.execute(queries.PRODUCT_VARIANTS, {"id": node["id"], "first": 250, "after": page.get("endCursor")})
            more = ((data.get("product") or {}).get("variants")) or {}
            collected += more.get("nodes") or []
            page = more.get("pageInfo") or {}
        node["variants"] = {"nodes": collected, "pageInfo": {"hasNextPage": False}}

    # --- bulk export ----------------------------------------------------------------------
    async def bulk_export(self, query: str = queries.BULK_PRODUCTS_QUERY) -> BulkResult:
        """Run a bulk query, poll until it ends, download the JSONL (``url``, or ``partialDataUrl``
        when it failed part way: the result is then marked partial)."""
        data = await self.execute(queries.BULK_RUN, {"query": query})
        run = data.get("bulkOperationRunQuery") or {}
        errors = run.get("userErrors") or []
        if errors:
            text = "; ".join(str(e.get("message")) for e in errors)
            if "in progress" in text.lower() or "already" in text.lower():
                raise ShopifyUnavailable(f"another bulk export is running on {self.shop}: {text}")
            raise BulkOperationFailed(f"Shopify refused the bulk export of {self.shop}: {text}")
        operation_id = str((run.get("bulkOperation") or {}).get("id") or "")
        if not operation_id:
            raise BulkOperationFailed(f"Shopify started no bulk operation for {self.shop}")
        deadline = time.monotonic() + self.config.bulk_timeout
        while True:
            status = await self.bulk_status(operation_id)
            state = str(status.get("status") or "")
            if state in _TERMINAL:
                break
            if time.monotonic() > deadline:
                raise ShopifyUnavailable(f"the bulk export of {self.shop} is still {state} after {self.config.bulk_timeout:.0f}s")
            await self._sleep(self.config.poll_interval)
        count = _int(status.get("objectCount"))
        if state == "COMPLETED":
            url = status.get("url")
            rows = await self.download_jsonl(url) if url else []  # no url: the query matched nothing
            return BulkResult(rows, object_count=count, operation_id=operation_id)
        code = status.get("errorCode")
        if state == "FAILED" and status.get("partialDataUrl"):
            rows = await self.download_jsonl(status["partialDataUrl"])
            return BulkResult(rows, partial=True, error_code=code, object_count=count, operation_id=operation_id)
        if state == "FAILED" and code not in _RETRYABLE_BULK_ERRORS:
            raise BulkOperationFailed(f"the bulk export of {self.shop} failed: {code or 'no reason given'}")
        raise ShopifyUnavailable(f"the bulk export of {self.shop} ended {state} ({code or 'no reason given'})")

    async def bulk_status(self, operation_id: str) -> dict[str, Any]:
        data = await self.execute(queries.BULK_STATUS, {"id": operation_id})
        return data.get("bulkOperation") or {}

    async def download_jsonl(self, url: str) -> list[dict[str, Any]]:
        """The result file is on Shopify's storage, not the Admin API: no token is sent."""
        rows: list[dict[str, Any]] = []
        for attempt in range(1, self.config.transient_attempts + 1):
            rows = []
            try:
                async with self.http.get(url, timeout=aiohttp.ClientTimeout(total=None, sock_read=self.config.http_timeout)) as response:
                    if response.status >= 500:
                        raise aiohttp.ClientResponseError(response.request_info, (), status=response.status)
                    if response.status != 200:
                        raise BulkOperationFailed(f"the bulk export file of {self.shop} could not be read (HTTP {response.status})")
                    async for line in response.content:
                        if line.strip():
                            rows.append(json.loads(line))
                return rows
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt >= self.config.transient_attempts:
                    raise ShopifyUnavailable(f"could not download the bulk export of {self.shop}: {exc}") from exc
                await self._sleep(min(8.0, 0.25 * 2 ** attempt))
        return rows

    # --- webhooks -------------------------------------------------------------------------
    async def subscribe_webhook(self, topic: str, uri: str) -> str | None:
        """``products/update`` -> PRODUCTS_UPDATE at ``uri``. An existing subscription is fine."""
        enum = topic.upper().replace("/", "_")
        data = await self.execute(queries.WEBHOOK_CREATE, {"topic": enum, "webhookSubscription": {"uri": uri, "format": "JSON"}})
        result = data.get("webhookSubscriptionCreate") or {}
        errors = result.get("userErrors") or []
        if errors:
            text = "; ".join(str(e.get("message")) for e in errors)
            if "taken" in text.lower() or "already" in text.lower():
                return None
            raise ShopifyError(f"could not subscribe {self.shop} to {topic}: {text}")
        return (result.get("webhookSubscription") or {}).get("id")


def _is_throttled(body: Any) -> bool:
    if not isinstance(body, dict):
        return False
    for error in body.get("errors") or []:
        if isinstance(error, dict) and ((error.get("extensions") or {}).get("code") == "THROTTLED"
                                        or str(error.get("message", "")).lower() == "throttled"):
            return True
    return False


def _messages(body: Any) -> str:
    if not isinstance(body, dict):
        return "unreadable answer"
    errors = body.get("errors")
    if isinstance(errors, str):
        return errors
    return "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors or []) or "no details"


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
