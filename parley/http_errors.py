"""The one map from errors to HTTP answers, shared by every aiohttp edge (gateway, retrieval).

Every error answer has the same JSON shape: ``{"error": code, "detail": ...}``, plus ``error_id``
when the error was unexpected.

* A `ParleyError` gets the status of the first class in `STATUS` it is an instance of (most
  specific first: `TooLarge` is an `InvalidInput` but answers 413), with its own stable code and
  message. A `ParleyError` of no listed class is a 503 when it is ``retryable`` and a 500
  otherwise: such errors (an embedding or vendor failure, a bus error) are ours, not the caller's,
  and answering 400 would blame the caller for them. Input a stranger can get wrong must raise
  `InvalidInput` (or a subclass), which is always a 4xx.
* aiohttp's own HTTP errors of status 400 and up (404 route, 405, 413 from ``client_max_size``)
  are rendered in the same JSON shape, with the codes of `HTTP_CODES`; those already carrying a
  JSON body, and redirects, pass through untouched.
* Any other exception is a 500 ``{"error": "internal", "detail": "unexpected error (error id
  <id>)", "error_id": <id>}``, and the traceback is logged with that id (the gateway's behaviour;
  the id is in ``detail`` too, because the web pages show only ``detail``).
* A bare pydantic ``ValidationError`` or ``json.JSONDecodeError`` is *not* mapped to 400 here:
  neither app did so in its middleware, and one escaping a handler may come from our own data
  (a stored row, a vendor's answer), not from the request. Handlers parse their input
  explicitly and raise `InvalidInput` (``bot.http.read_json``) or answer 400 themselves
  (``retrieval.routes.query``).

The middleware also binds a correlation id to the request's log context (the caller's
``X-Correlation-Id`` when it is a short token, a new one otherwise) and echoes it in the response.
Per-app extras (the retrieval service counts its failed queries) go in the ``on_error`` hook.
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from parley.errors import (
    AlreadyExists,
    ConfigurationError,
    Forbidden,
    InvalidInput,
    NotFound,
    ParleyError,
    QuotaExceeded,
    RateLimited,
    RequestTimeout,
    TenantScopeError,
    TooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedType,
)
from parley.logging import bound

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]
#: Called with the request, the status answered and the exception, for every error the middleware answers.
ErrorHook = Callable[[web.Request, int, BaseException], None]

#: Domain error class -> HTTP status; the first match wins, so subclasses come before their bases.
STATUS: tuple[tuple[type[ParleyError], int], ...] = (
    (TooLarge, 413),
    (UnsupportedType, 415),
    (InvalidInput, 400),
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (AlreadyExists, 409),
    (RequestTimeout, 408),
    (RateLimited, 429),
    (Unavailable, 503),
    (TenantScopeError, 500),
    (ConfigurationError, 500),
)

#: aiohttp HTTP error status -> the code of the JSON body; other statuses get ``http_error``.
HTTP_CODES: dict[int, str] = {
    400: "invalid_input", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    408: "request_timeout", 413: "too_large", 415: "unsupported_type", 429: "rate_limited",
}

_CORRELATION_OK = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def status_for(exc: ParleyError) -> int:
    if isinstance(exc, QuotaExceeded):  # a rate passes with time (429); a size-like limit needs room (413)
        return 429 if exc.rate else 413
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 503 if exc.retryable else 500


def error_response(status: int, code: str, detail: Any = None, *, error_id: str | None = None,
                   headers: dict[str, str] | None = None, retry_after: float | None = None,
                   extra: dict[str, Any] | None = None) -> web.Response:
    """The JSON error answer. ``retry_after`` (seconds, rounded up to a whole one) goes into the body
    and the ``Retry-After`` header (a 429); ``extra`` fields (a quota's limit and use) go into the body."""
    body: dict[str, Any] = {"error": code, "detail": detail, **(extra or {})}
    if error_id:
        body["error_id"] = error_id
    if retry_after is not None:
        seconds = max(1, math.ceil(retry_after))
        body["retry_after"] = seconds
        headers = {**(headers or {}), "Retry-After": str(seconds)}
    return web.json_response(body, status=status, headers=headers)


def make_error_middleware(*, logger: logging.Logger, on_error: ErrorHook | None = None) -> Middleware:
    """The error middleware of one app: ``logger`` gets its failures, ``on_error`` (if given) is
    called for every error answered (not for the HTTP errors passed through)."""

    @web.middleware
    async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get("X-Correlation-Id", "")
        correlation = given if _CORRELATION_OK.match(given) else uuid.uuid4().hex
        with bound(correlation_id=correlation):
            response = await _answer(request, handler, logger, on_error)
        if not response.prepared:
            response.headers["X-Correlation-Id"] = correlation
        return response

    return error_middleware


async def _answer(request: web.Request, handler: Handler, logger: logging.Logger,
                  on_error: ErrorHook | None) -> web.StreamResponse:
    try:
        return await handler(request)
    except ParleyError as exc:
        status = status_for(exc)
        if status >= 500:
            level = logging.WARNING if exc.retryable else logging.ERROR
            logger.log(level, "request failed: %s", exc, extra={"path": request.path, "code": exc.code})
        failure: BaseException = exc
        response = error_response(status, exc.code, exc.message,
                                  retry_after=exc.retry_after if isinstance(exc, (RateLimited, QuotaExceeded)) else None,
                                  extra=exc.body() if isinstance(exc, QuotaExceeded) else None)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        detail: Any = exc.reason
        if exc.status == 413:
            detail = f"request body is larger than the limit of {request.client_max_size:,} bytes"
        status, failure = exc.status, exc
        response = error_response(status, HTTP_CODES.get(status, "http_error"), detail)
    except Exception as exc:  # noqa: BLE001 - the one place unknown errors become a response
        error_id = uuid.uuid4().hex[:12]
        logger.exception("unexpected error", extra={"error_id": error_id, "path": request.path})
        status, failure = 500, exc
        response = error_response(status, "internal", f"unexpected error (error id {error_id})", error_id=error_id)
    if on_error is not None:
        on_error(request, status, failure)
    return response
