"""The HTTP edge shared by every route: error mapping, JSON helpers, API-key authentication.

Errors: the kernel's one map (`parley.http_errors`): a `ParleyError` becomes ``{"error": code,
"detail": message}`` with the status its class implies; aiohttp's own HTTP errors (413 from
``client_max_size``, 405, 404) become the same JSON shape; anything else gets an error id that is
logged with the traceback and shown to the caller. `error_response` is re-exported for the routes.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.db import unit_of_work
from parley.errors import InvalidInput, Unauthorized
from parley.http_errors import error_response, make_error_middleware
from parley.logging import bound
from tenants.repository import authenticate_api_key

if TYPE_CHECKING:
    from bot.limits import GatewayLimits

log = logging.getLogger("parley.gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

__all__ = ["API_KEY_ID", "MAX_BODY", "SECURITY_HEADERS", "TENANT", "error_middleware", "error_response", "read_json", "require_api_key"]

error_middleware = make_error_middleware(logger=log)

#: The app's ``client_max_size`` (set by `bot.app.create_app`); the 413 answer reads it from the request itself.
MAX_BODY = web.AppKey("parley_max_body", int)

#: Every browser page (the dashboard, the web chat) and its assets: no framing, no inline script, no
#: referrer sent to other sites, no content sniffing.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # not no-referrer: browsers then send "Origin: null" on form posts
}


async def read_json(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        data = json.loads(raw or b"null")
    except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nested past the parser's stack
        raise InvalidInput("the body is not valid JSON" + (f": {exc}" if isinstance(exc, ValueError) else "")) from exc
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object")
    return data


# --- API keys ---------------------------------------------------------------------------------

TENANT = web.RequestKey("parley_tenant_id", str)
API_KEY_ID = web.RequestKey("parley_api_key_id", str)
#: Longer than any key we issue (``pk_`` + 43 characters).
MAX_API_KEY_CHARS = 256


def well_formed_key(key: str) -> bool:
    """Could this be one of our API keys? Printable ASCII of a sane length; anything else (non-ASCII,
    aiohttp's stand-ins for invalid UTF-8, control characters) is refused before it is hashed."""
    return 0 < len(key) <= MAX_API_KEY_CHARS and key.isascii() and key.isprintable()


def require_api_key(sessions_of: Callable[[web.Request], async_sessionmaker[AsyncSession]],
                    limits_of: Callable[[web.Request], GatewayLimits] | None = None) -> Callable[[Handler], Handler]:
    """Decorator: ``Authorization: Bearer pk_...`` -> ``request[TENANT]``; 401 otherwise. With
    ``limits_of``, wrong keys count against the caller's address, and a locked-out address gets
    429 before its key is looked at (`bot.limits`)."""

    def decorate(handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            header = request.headers.get("Authorization", "")
            scheme, _, key = header.partition(" ")
            if scheme.lower() != "bearer" or not key.strip():
                raise Unauthorized("send your API key as 'Authorization: Bearer pk_...'")
            counted = limits_of(request).sign_in(request, "api") if limits_of is not None else contextlib.nullcontext(_Uncounted())
            with counted as attempt:  # a locked-out address: 429 here, before the key is looked at
                if not well_formed_key(key.strip()):
                    log.warning("API key refused: not a well-formed key")
                    attempt.failed()
                    raise Unauthorized("unknown or revoked API key")
                async with unit_of_work(sessions_of(request)) as session:
                    row = await authenticate_api_key(session, key.strip())
                    if row is None:
                        attempt.failed()
                        raise Unauthorized("unknown or revoked API key")
                    request[TENANT], request[API_KEY_ID] = row.tenant_id, row.id
            with bound(tenant_id=request[TENANT]):
                return await handler(request)

        wrapped.__name__ = getattr(handler, "__name__", "handler")
        return wrapped

    return decorate


class _Uncounted:
    """A sign-in attempt nobody counts (`require_api_key` without limits)."""

    def failed(self) -> None:
        return None
