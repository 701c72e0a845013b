"""How the gateway asks the retrieval service: one interface, over HTTP or in-process.

    client: RetrievalClient = HttpRetrievalClient(settings.effective_retrieval_url, timeout=10,
                                                  token=load_service_token(settings))
    # or, in the single-process dev mode:
    client = InProcessRetrievalClient(service)
    response = await client.query(QueryRequest(tenant_id=..., message=..., turns=[...]))
    await client.aclose()

Both raise the same `ParleyError`s, so the gateway handles one set:

* `NotFound` - unknown tenant (HTTP 404);
* `Unauthorized` - the service refused this process's service token (401: a deployment mistake,
  the gateway and the retrieval service were given different ``PARLEY_SERVICE_TOKEN``s);
* `InvalidInput` - the request was refused as malformed (400; a gateway bug, not the customer's);
* `Forbidden` - the tenant is not active (403);
* `Unavailable` - the service could not be reached, timed out, or failed (connection errors,
  timeouts, 5xx); ``retryable`` is True, so the gateway may retry or tell the customer to;
* `ParleyError` - anything else, with the service's error code.

This module imports only aiohttp, pydantic contracts and `parley.errors` (the gateway may import
it and `retrieval.schemas`, nothing else of `retrieval`). No retries here: the gateway answers
asynchronously and owns its retry policy; the client stays a thin, predictable edge.
The caller's correlation id (from `parley.logging`'s context) travels as ``X-Correlation-Id``,
the service credential as ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any, Protocol, runtime_checkable

import aiohttp

from parley.errors import Forbidden, InvalidInput, NotFound, ParleyError, Unauthorized, Unavailable
from parley.logging import current_context
from retrieval.schemas import QueryRequest, QueryResponse

log = logging.getLogger("parley.retrieval.client")

_BY_STATUS: dict[int, type[ParleyError]] = {400: InvalidInput, 401: Unauthorized, 403: Forbidden, 404: NotFound, 422: InvalidInput}


@runtime_checkable
class RetrievalClient(Protocol):
    async def query(self, req: QueryRequest) -> QueryResponse: ...

    async def aclose(self) -> None: ...


class QueryService(Protocol):
    """What `InProcessRetrievalClient` needs of `retrieval.service.RetrievalService` (not imported here)."""

    async def query(self, req: QueryRequest) -> QueryResponse: ...


class HttpRetrievalClient:
    """Calls ``POST {base_url}/v1/query``, presenting ``token`` (the service credential). Pass
    ``session`` to share an aiohttp session (it is then not closed by `aclose`); otherwise one is
    created on first use and closed by `aclose`."""

    def __init__(self, base_url: str, timeout: float = 30.0, session: aiohttp.ClientSession | None = None,
                 *, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._owns_session = session is None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
            self._owns_session = True
        return self._session

    async def query(self, req: QueryRequest) -> QueryResponse:
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        correlation = current_context().get("correlation_id")
        if correlation:
            headers["X-Correlation-Id"] = str(correlation)
        url = f"{self.base_url}/v1/query"
        try:
            async with self._http().post(url, data=req.model_dump_json(), headers=headers, timeout=self.timeout) as resp:
                body = await resp.read()
                status = resp.status
        except asyncio.TimeoutError as exc:
            raise Unavailable(f"retrieval service timed out after {self.timeout.total} s") from exc
        except aiohttp.ClientError as exc:
            raise Unavailable(f"retrieval service unreachable at {self.base_url}: {exc}") from exc
        if status == 200:
            try:
                return QueryResponse.model_validate_json(body)
            except ValueError as exc:
                raise Unavailable(f"retrieval service sent an unreadable response: {exc}") from exc
        if status == 401:
            raise Unauthorized("the retrieval service refused this process's service token: give the gateway and the "
                               "retrieval service the same PARLEY_SERVICE_TOKEN (or one data directory)")
        raise _error(status, body)

    async def aclose(self) -> None:
        if self._session is not None and self._owns_session and not self._session.closed:
            await self._session.close()


class InProcessRetrievalClient:
    """The same interface over a service object in this process (the single-process dev mode).
    Unexpected exceptions become `Unavailable` with an error id, as the HTTP edge would report them."""

    def __init__(self, service: QueryService) -> None:
        self.service = service

    async def query(self, req: QueryRequest) -> QueryResponse:
        try:
            return await self.service.query(req)
        except ParleyError:
            raise
        except Exception as exc:
            error_id = uuid.uuid4().hex[:12]
            log.exception("retrieval failed in-process", extra={"error_id": error_id})
            raise Unavailable(f"retrieval failed (error id {error_id})") from exc

    async def aclose(self) -> None:
        return None  # the service belongs to whoever built it


def _error(status: int, body: bytes) -> ParleyError:
    code, detail = None, body[:500].decode(errors="replace")
    try:
        payload: Any = json.loads(body)
        if isinstance(payload, dict):
            code = payload.get("error")
            detail = payload.get("detail", detail)
            if payload.get("error_id"):
                detail = f"{detail} (error id {payload['error_id']})"
    except ValueError:
        pass
    message = detail if isinstance(detail, str) else json.dumps(detail)
    if status >= 500 or status == 429:
        return Unavailable(f"retrieval service answered {status}: {message}", code=code or Unavailable.code)
    cls = _BY_STATUS.get(status, ParleyError)
    return cls(message, code=code) if code else cls(message)
