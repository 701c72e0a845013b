"""The gateway's view: both clients, one interface, one set of errors.

The HTTP client's failure modes are produced by real local servers standing where the retrieval
service would be (a closed port, a failing server, a server too slow to answer)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from parley.errors import Forbidden, NotFound, ParleyError, Unavailable
from retrieval.client import HttpRetrievalClient, InProcessRetrievalClient, RetrievalClient
from retrieval.schemas import QueryRequest, QueryResponse

REQ = QueryRequest(tenant_id="t1", message="Do you ship to Canada?")


async def _server(handler) -> TestServer:  # type: ignore[no-untyped-def]
    app = web.Application()
    app.router.add_post("/v1/query", handler)
    server = TestServer(app)
    await server.start_server()
    return server


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_an_unreachable_service_is_unavailable() -> None:
    client = HttpRetrievalClient(f"http://127.0.0.1:{_closed_port()}", timeout=5)
    try:
        with pytest.raises(Unavailable) as info:
            await client.query(REQ)
        assert info.value.retryable
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("status", "body", "error", "code"),
    [
        (500, {"error": "internal", "detail": "boom", "error_id": "abc123"}, Unavailable, "internal"),
        (503, {"error": "unavailable", "detail": "search failed"}, Unavailable, "unavailable"),
        (502, None, Unavailable, "unavailable"),
        (404, {"error": "not_found", "detail": "no such tenant: t1"}, NotFound, "not_found"),
        (403, {"error": "tenant_inactive", "detail": "tenant t1 is suspended"}, Forbidden, "tenant_inactive"),
        (409, {"error": "conflict", "detail": "?"}, ParleyError, "conflict"),
    ],
)
async def test_error_statuses_map_to_parley_errors(status, body, error, code) -> None:  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.Response:
        if body is None:
            return web.Response(status=status, text="<html>bad gateway</html>")
        return web.json_response(body, status=status)

    server = await _server(handler)
    client = HttpRetrievalClient(str(server.make_url("")), timeout=5)
    try:
        with pytest.raises(error) as info:
            await client.query(REQ)
        assert info.value.code == code
        if body and body.get("error_id"):
            assert "abc123" in info.value.message
    finally:
        await client.aclose()
        await server.close()


async def test_a_timeout_is_unavailable() -> None:
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({})

    server = await _server(handler)
    client = HttpRetrievalClient(str(server.make_url("")), timeout=0.3)
    try:
        with pytest.raises(Unavailable, match="timed out"):
            await client.query(REQ)
    finally:
        release.set()
        await client.aclose()
        await server.close()


async def test_a_shared_session_is_not_closed_by_the_client() -> None:
    import aiohttp

    async def handler(request: web.Request) -> web.Response:
        req = QueryRequest.model_validate_json(await request.read())
        assert request.headers["X-Correlation-Id"] == "corr-1"
        return web.Response(body=QueryResponse(answer=f"echo {req.message}", standalone_question=req.message).model_dump_json(), content_type="application/json")

    from parley.logging import bound

    server = await _server(handler)
    async with aiohttp.ClientSession() as session:
        client = HttpRetrievalClient(str(server.make_url("")), timeout=5, session=session)
        with bound(correlation_id="corr-1"):
            r = await client.query(REQ)
        await client.aclose()
        assert r.answer == "echo Do you ship to Canada?" and not session.closed
    await server.close()


async def test_the_in_process_client_has_the_same_interface_and_errors() -> None:
    class Service:
        async def query(self, req: QueryRequest) -> QueryResponse:
            if req.tenant_id == "missing":
                raise NotFound("no such tenant: missing")
            if req.tenant_id == "broken":
                raise RuntimeError("a bug")
            return QueryResponse(answer="ok", standalone_question=req.message)

    client = InProcessRetrievalClient(Service())
    assert isinstance(client, RetrievalClient) and isinstance(HttpRetrievalClient("http://x"), RetrievalClient)
    assert (await client.query(REQ)).answer == "ok"
    with pytest.raises(NotFound):
        await client.query(REQ.model_copy(update={"tenant_id": "missing"}))
    with pytest.raises(Unavailable, match="error id"):
        await client.query(REQ.model_copy(update={"tenant_id": "broken"}))
    await client.aclose()


def test_the_gateway_facing_modules_import_nothing_heavy() -> None:
    import subprocess
    import sys

    code = (
        "import sys, retrieval.client, retrieval.schemas; "
        "bad = sorted(m for m in sys.modules if m.startswith(('retrieval.', 'openai', 'onnxruntime', 'sqlalchemy', 'parley.vectors')) "
        "and m not in ('retrieval.client', 'retrieval.schemas')); print(bad)"
    )
    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root).stdout.strip()
    assert out == "[]"
