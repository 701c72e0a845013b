"""HTTP edge of the retrieval service: handlers, error mapping, typed app keys.

* ``POST /v1/query`` - a `QueryRequest` in, a `QueryResponse` out. Malformed input is a 400 with
  ``{"error": "invalid_json" | "invalid_input", "detail": ...}``; an unknown tenant a 404.
* ``GET /healthz`` - the process is alive and its loop turns (no dependency is checked).
* ``GET /readyz`` - 200 only when the database answers, the embedder has embedded its warm-up
  query and the index finished warming; 503 with the failing checks otherwise.
* ``GET /metrics`` - Prometheus text from the app's own registry.

Errors: domain errors (`ParleyError`) map to a status by class, with their stable code; any other
exception is a 500 whose body carries an error id that is logged with the traceback. aiohttp's
own HTTP errors (404 route, 405, 413) are rendered in the same JSON shape.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import ValidationError
from sqlalchemy import text

from parley.errors import (
    AlreadyExists, ConfigurationError, Forbidden, InvalidInput, NotFound, ParleyError, TenantScopeError, Unauthorized,
    Unavailable,
)
from parley.logging import bound
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
METRICS = web.AppKey("retrieval_metrics", RetrievalMetrics)
READINESS = web.AppKey("retrieval_readiness", Readiness)
DB_CHECK = web.AppKey("retrieval_db_check", Callable[[], Awaitable[None]])

_STATUS: tuple[tuple[type[ParleyError], int], ...] = (
    (NotFound, 404),
    (InvalidInput, 400),
    (Unauthorized, 401),
    (Forbidden, 403),
    (AlreadyExists, 409),
    (Unavailable, 503),
    (TenantScopeError, 500),
    (ConfigurationError, 500),
)


def status_for(exc: ParleyError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 503 if exc.retryable else 500


def error_response(status: int, code: str, detail: Any = None, *, error_id: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": code, "detail": detail}
    if error_id:
        body["error_id"] = error_id
    return web.json_response(body, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    correlation = request.headers.get("X-Correlation-Id") or uuid.uuid4().hex
    with bound(correlation_id=correlation):
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)
        except ParleyError as exc:
            status = status_for(exc)
            if status >= 500:
                log.error("request failed: %s", exc, extra={"code": exc.code})
                _count_error(request)
            return error_response(status, exc.code, exc.message)
        except Exception:  # noqa: BLE001 - the one place unknown errors become a response
            error_id = uuid.uuid4().hex[:12]
            log.exception("unexpected error", extra={"error_id": error_id, "path": request.path})
            _count_error(request)
            return error_response(500, "internal", "unexpected error; quote the error id when reporting it", error_id=error_id)


def _count_error(request: web.Request) -> None:
    metrics = request.app.get(METRICS)
    if metrics is not None and request.path == "/v1/query":
        metrics.error()


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
