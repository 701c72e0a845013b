"""Pass-through processing over the API (the tenant's key: ``Authorization: Bearer pk_...``).

    POST /api/v1/process        multipart: one "file" part and a "webhook_url" field (or ?webhook_url=)
                                -> 202 {"id", "status": "queued", "webhook_id", "status_url"}
    GET  /api/v1/process        the tenant's recent requests (metadata only)
    GET  /api/v1/process/{id}   one request's status: queued / processing / delivered / failed

The file is extracted, chunked and embedded by the document worker exactly as for indexing, the
result is delivered to the webhook URL (which must be one of the tenant's endpoints subscribed to
``process.completed``: the receiver holds its signing secret) and nothing is kept: see `passthrough`.

Everything is checked before anything is kept: the size (413 from the declared length before the
body is read, and while it streams: at most PARLEY_PROCESS_MAX_BYTES is ever held), the type (415:
what uploads accept, one document, not an archive), the file and the URL (400). Only then is the
file sealed to disk for the worker and the request recorded, in that order; if recording fails the
sealed file is deleted.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from bot.channels.web.routes import auth
from bot.context import GATEWAY
from bot.http import TENANT
from parley.db import new_id, unit_of_work
from parley.errors import InvalidInput, ParleyError, TooLarge, UnsupportedType
from parley.formats import ZIP
from passthrough import service
from passthrough.repository import ProcessRequestRepository
from passthrough.schemas import status_json, webhook_id
from passthrough.store import Sealed, SealedStore

#: Room for the multipart framing and the webhook_url field around the file.
_FRAMING = 64 * 1024
_MAX_URL = 2048


def _too_large(limit: int, why: str) -> TooLarge:
    return TooLarge(f"the file is larger than the pass-through limit of {limit:,} bytes ({why}); nothing was kept")


async def _read_file(part: BodyPartReader, limit: int, why: str) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(1 << 16):
        data += chunk
        if len(data) > limit:
            raise _too_large(limit, why)
    return bytes(data)


async def _read_field(part: BodyPartReader, name: str, limit: int) -> str:
    data = bytearray()
    while chunk := await part.read_chunk(4096):
        data += chunk
        if len(data) > limit:
            raise InvalidInput(f"'{name}' is longer than {limit:,} bytes")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InvalidInput(f"'{name}' is not valid UTF-8 text") from None


async def process(request: web.Request) -> web.Response:
    """Counted in ``parley_gateway_uploads_total{channel="process"}``: ``queued``, or the error code."""
    gw = request.app[GATEWAY]
    try:
        response = await _process(request)
    except ParleyError as exc:
        gw.metrics.uploads.labels("process", exc.code).inc()
        raise
    gw.metrics.uploads.labels("process", "queued").inc()
    return response


async def _process(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    # PARLEY_PROCESS_MAX_BYTES, or the tenant's own upload limit when that is lower
    limit, why = gw.settings.process_max_bytes, "PARLEY_PROCESS_MAX_BYTES"
    own = await gw.intake.limit_for(tenant_id)
    if own < limit:
        limit, why = own, "this tenant's upload limit"
    if request.content_length is not None and request.content_length > limit + _FRAMING:
        raise _too_large(limit, why)
    if not request.content_type.startswith("multipart/"):
        raise InvalidInput("send the file as multipart/form-data: a 'file' part and a 'webhook_url' field")
    url: str | None = request.query.get("webhook_url")
    endpoint: Any = None
    name = mime = ""
    data: bytes | None = None
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "webhook_url" and not part.filename:
            url = await _read_field(part, "webhook_url", _MAX_URL)
            continue
        if not part.filename:
            await part.release()
            continue
        if data is not None:
            raise InvalidInput("send one file per request; nothing was kept")
        if url:  # the URL came first: refuse an unregistered one before reading the file
            endpoint = await _endpoint(gw, tenant_id, url)
        name = Path(part.filename).name[:255] or "upload"
        mime = gw.intake.check_supported(name, part.headers.get("Content-Type"))  # 415 with what is read
        if mime == ZIP:
            raise UnsupportedType(f"{name} is an archive; pass-through processes one document per request, "
                                  "send its files one by one")
        data = await _read_file(part, limit, why)
    if data is None:
        raise InvalidInput("no file in the request (use the multipart field 'file')")
    if not data:
        raise InvalidInput(f"{name} is empty")
    if endpoint is None:
        endpoint = await _endpoint(gw, tenant_id, url or "")
    request_id = new_id()
    store = SealedStore(gw.settings.effective_blob_dir, gw.box)
    await store.put(tenant_id, request_id, Sealed(filename=name, content_type=mime, data=data))
    try:
        async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
            service.accept(session, tenant_id=tenant_id, request_id=request_id, endpoint_id=endpoint.id,
                           content_type=mime, size_bytes=len(data))
    except BaseException:
        await asyncio.shield(store.delete(tenant_id, request_id))
        raise
    return web.json_response({"id": request_id, "status": "queued", "webhook_id": webhook_id(request_id),
                              "endpoint_id": endpoint.id, "status_url": f"/api/v1/process/{request_id}"}, status=202)


async def _endpoint(gw: Any, tenant_id: str, url: str) -> Any:
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        return await service.endpoint_for(session, tenant_id=tenant_id, url=url)


async def get_process(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        row = await service.get_request(session, tenant_id=tenant_id, request_id=request.match_info["id"])
        return web.json_response(status_json(row))


async def list_process(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    try:
        limit = max(1, min(500, int(request.query.get("limit", "100"))))
    except ValueError:
        raise InvalidInput("'limit' must be a number") from None
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        rows = await ProcessRequestRepository(session, tenant_id).recent(limit=limit)
        return web.json_response({"requests": [status_json(r) for r in rows]})


def setup_process_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/process", auth(process))
    app.router.add_get("/api/v1/process", auth(list_process))
    app.router.add_get("/api/v1/process/{id}", auth(get_process))
