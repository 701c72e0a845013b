"""The HTTP edge shared by every route: error mapping, JSON helpers, API-key authentication.

Errors: a `ParleyError` becomes ``{"error": code, "detail": message}`` with the status its class
implies; aiohttp's own HTTP errors (413 from ``client_max_size``, 405, 404) become the same JSON
shape; anything else gets an error id that is logged with the traceback and shown to the caller.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.db import unit_of_work
from parley.errors import (
    AlreadyExists,
    ConfigurationError,
    Forbidden,
    InvalidInput,
    NotFound,
    ParleyError,
    TooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedType,
)
from parley.logging import bound
from tenants.repository import authenticate_api_key

log = logging.getLogger("parley.gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_STATUS: list[tuple[type[ParleyError], int]] = [
    (TooLarge, 413),
    (UnsupportedType, 415),
    (InvalidInput, 400),
    (NotFound, 404),
    (AlreadyExists, 409),
    (Unauthorized, 401),
    (Forbidden, 403),
    (Unavailable, 503),
    (ConfigurationError, 500),
]


def status_for(exc: ParleyError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 400


def error_response(status: int, code: str, detail: Any = None, *, error_id: str | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": code, "detail": detail}
    if error_id:
        body["error_id"] = error_id
    return web.json_response(body, status=status, headers=headers)


_HTTP_CODES = {400: "invalid_input", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
               413: "too_large", 415: "unsupported_type"}


_CORRELATION_OK = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Binds a correlation id to the request (the caller's ``X-Correlation-Id`` or a new one) and
    echoes it: every log line, and every message the request stages (an upload's
    ``document.uploaded``, then the worker's lines and notices), carries it."""
    given = request.headers.get("X-Correlation-Id", "")
    correlation = given if _CORRELATION_OK.match(given) else uuid.uuid4().hex
    with bound(correlation_id=correlation):
        response = await _map_errors(request, handler)
    if not response.prepared:
        response.headers["X-Correlation-Id"] = correlation
    return response


async def _map_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ParleyError as exc:
        status = status_for(exc)
        if status >= 500:
            log.warning("request failed: %s", exc, extra={"path": request.path, "code": exc.code})
        return error_response(status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        detail = exc.reason
        if exc.status == 413:
            detail = f"request body is larger than the limit of {request.app.get(MAX_BODY, 0):,} bytes"
        return error_response(exc.status, _HTTP_CODES.get(exc.status, "http_error"), detail)
    except Exception:
        error_id = uuid.uuid4().hex[:12]
        log.exception("unexpected error", extra={"error_id": error_id, "path": request.path})
        return error_response(500, "internal", f"unexpected error (error id {error_id})", error_id=error_id)


MAX_BODY = web.AppKey("parley_max_body", int)


async def read_json(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        data = json.loads(raw or b"null")
    except ValueError as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object")
    return data


# --- API keys ---------------------------------------------------------------------------------

TENANT = web.RequestKey("parley_tenant_id", str)
API_KEY_ID = web.RequestKey("parley_api_key_id", str)


def require_api_key(sessions_of: Callable[[web.Request], async_sessionmaker[AsyncSession]]) -> Callable[[Handler], Handler]:
    """Decorator: ``Authorization: Bearer pk_...`` -> ``request[TENANT]``; 401 otherwise."""

    def decorate(handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            header = request.headers.get("Authorization", "")
            scheme, _, key = header.partition(" ")
            if scheme.lower() != "bearer" or not key.strip():
                raise Unauthorized("send your API key as 'Authorization: Bearer pk_...'")
            async with unit_of_work(sessions_of(request)) as session:
                row = await authenticate_api_key(session, key.strip())
                if row is None:
                    raise Unauthorized("unknown or revoked API key")
                request[TENANT], request[API_KEY_ID] = row.tenant_id, row.id
            with bound(tenant_id=request[TENANT]):
                return await handler(request)

        wrapped.__name__ = getattr(handler, "__name__", "handler")
        return wrapped

    return decorate
