"""HTTP edge of the retrieval service: handlers, typed app keys, the error middleware.

* ``POST /v1/query`` - a `QueryRequest` in, a `QueryResponse` out. Malformed input is a 400 with
  ``{"error": "invalid_json" | "invalid_input", "detail": ...}``; an unknown tenant a 404.
  ``"sources": n`` (1-100) adds the ranking behind the answer (`RankedSource`: the first n
  documents with their fused, vector and keyword scores) - for evaluation and for a tenant asking
  "why did it answer that?".
* ``GET /healthz`` - the process is alive and its loop turns (no dependency is checked).
* ``GET /readyz`` - 200 only when the database answers, the embedder has embedded its warm-up
  query and the index finished warming; 503 with the failing checks otherwise.
* ``GET /metrics`` - Prometheus text from the app's own registry.

Authentication: every path but ``/healthz``, ``/readyz`` and ``/metrics`` needs the service
credential, ``Authorization: Bearer <PARLEY_SERVICE_TOKEN>`` (`parley.crypto.load_service_token`),
compared in constant time; without it the answer is a 401 ``{"error": "unauthorized"}`` and the
body is never read. The three open paths carry no tenant data: health, readiness (check names and
exception class names) and aggregate counters and latencies (no tenant label), which a Prometheus
scrapes without credentials, as it scrapes the gateway and the workers.

Errors: the kernel's one map (`parley.http_errors`, the gateway's too): domain errors
(`ParleyError`) map to a status by class, with their stable code; any other exception is a 500
whose body carries an error id that is logged with the traceback. aiohttp's own HTTP errors (404
route, 405, 413) are rendered in the same JSON shape. A failed ``/v1/query`` answered with a 5xx
is counted in the metrics (``outcome="error"``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import ValidationError
from sqlalchemy import text

from parley.crypto import constant_time_equals
from parley.http_errors import Handler, error_response, make_error_middleware
from retrieval.metrics import RetrievalMetrics
from retrieval.schemas import QueryRequest
from retrieval.service import RetrievalService

log = logging.getLogger("parley.retrieval")


@dataclass
class Readiness:
    """Set by the app's start-up (`retrieval.app`); read by ``/readyz``."""

    embedder: bool = False
    index: bool = False
    problems: dict[str, str] = field(default_factory=dict)


SERVICE = web.AppKey("retrieval_service", RetrievalService)
#: The service credential every protected request must present (`service_auth_middleware`).
SERVICE_TOKEN = web.AppKey("retrieval_service_token", bytes)
METRICS = web.AppKey("retrieval_metrics", RetrievalMetrics)
READINESS = web.AppKey("retrieval_readiness", Readiness)
DB_CHECK = web.AppKey("retrieval_db_check", Callable[[], Awaitable[None]])


def _count_error(request: web.Request, status: int, exc: BaseException) -> None:
    metrics = request.app.get(METRICS)
    if status >= 500 and metrics is not None and request.path == "/v1/query":
        metrics.error()


error_middleware = make_error_middleware(logger=log, on_error=_count_error)

#: Paths that answer without the service credential (they carry no tenant data; see the module docstring).
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


@web.middleware
async def service_auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse every request but those to `OPEN_PATHS` that lacks the service token (default deny:
    a route added later is protected too)."""
    if request.path in OPEN_PATHS:
        return await handler(request)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not constant_time_equals(request.app[SERVICE_TOKEN], given.strip()):
        log.warning("refused a request without a valid service token", extra={"path": request.path, "remote": request.remote})
        return error_response(401, "unauthorized", "this service answers only the gateway: send "
                              "'Authorization: Bearer <PARLEY_SERVICE_TOKEN>'", headers={"WWW-Authenticate": "Bearer"})
    return await handler(request)


async def query(request: web.Request) -> web.Response:
    body = await request.read()
    try:
        req = QueryRequest.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        code = "invalid_json" if any(e["type"] == "json_invalid" for e in errors) else "invalid_input"
        return error_response(400, code, errors)
    response = await request.app[SERVICE].query(req)
    request.app[METRICS].observe(response)
    return web.Response(body=response.model_dump_json(), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    readiness = request.app[READINESS]
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2.0):
            await request.app[DB_CHECK]()
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        checks["database"] = f"failed: {exc.__class__.__name__}"
    checks["embedder"] = "ok" if readiness.embedder else readiness.problems.get("embedder", "loading")
    checks["index"] = "ok" if readiness.index else readiness.problems.get("index", "warming")
    ready = all(v == "ok" for v in checks.values())
    return web.json_response({"status": "ready" if ready else "not_ready", "checks": checks}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    m = request.app[METRICS]
    return web.Response(body=m.render(), headers={"Content-Type": m.content_type})


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/v1/query", query)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


async def database_check(sessions: Any) -> None:
    async with sessions() as session:
        await session.execute(text("SELECT 1"))
