"""The HTTP edge shared by every route: error mapping, JSON helpers, API-key authentication.

Errors: the kernel's one map (`parley.http_errors`): a `ParleyError` becomes ``{"error": code,
"detail": message}`` with the status its class implies; aiohttp's own HTTP errors (413 from
``client_max_size``, 405, 404) become the same JSON shape; anything else gets an error id that is
logged with the traceback and shown to the caller. `error_response` is re-exported for the routes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.db import unit_of_work
from parley.errors import InvalidInput, Unauthorized
from parley.http_errors import error_response, make_error_middleware
from parley.logging import bound
from tenants.repository import authenticate_api_key

log = logging.getLogger("parley.gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

__all__ = ["API_KEY_ID", "MAX_BODY", "TENANT", "error_middleware", "error_response", "read_json", "require_api_key"]

error_middleware = make_error_middleware(logger=log)

#: The app's ``client_max_size`` (set by `bot.app.create_app`); the 413 answer reads it from the request itself.
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
