"""Slow and greedy clients against `parley.http_server`, on real sockets: an idle connection, a head
that trickles in and a body that trickles in are closed by the server; the connection past the cap
is answered 503 and closed; a body that keeps arriving fast enough is served however long it takes.

The limits are set small (1 s) so the server acts within the test; what is asserted is what the
server did (closed, answered 408 or 503), never how long it took. Every read has a generous bound
so a server that never acts fails the test instead of hanging it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from parley.http_errors import make_error_middleware
from parley.http_server import HttpServer, ServerLimits

log = logging.getLogger("tests.http_server")

#: How long a test waits for the server to act before failing (a bound, not a measurement).
BOUND = 30.0

Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def echo(request: web.Request) -> web.Response:
    return web.json_response({"bytes": len(await request.read())})


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


@pytest.fixture
async def served() -> AsyncIterator[Callable[..., Awaitable[tuple[HttpServer, Connect, CollectorRegistry]]]]:
    servers: list[HttpServer] = []
    writers: list[asyncio.StreamWriter] = []

    async def make(**limits: float) -> tuple[HttpServer, Connect, CollectorRegistry]:
        app = web.Application(middlewares=[make_error_middleware(logger=log)])
        app.router.add_post("/echo", echo)
        app.router.add_get("/", hello)
        registry = CollectorRegistry()
        server = HttpServer(app, ServerLimits(**limits), registry=registry)
        await server.setup()
        servers.append(server)
        port = await server.listen("127.0.0.1", 0)

        async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writers.append(writer)
            return reader, writer

        return server, connect, registry

    yield make
    for writer in writers:
        writer.close()
    for server in servers:
        await server.cleanup()


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (fails if it never does)."""
    try:
        return await asyncio.wait_for(reader.read(), BOUND)
    except ConnectionResetError:
        return b""


async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, byte: bytes) -> bytes:
    """Send one byte every 50 ms until the server closes the connection; what it answered."""
    answer = b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOUND
    while loop.time() < deadline:
        try:
            writer.write(byte)
            await writer.drain()
        except ConnectionError:
            break
        try:
            data = await asyncio.wait_for(reader.read(4096), 0.05)
        except TimeoutError:
            continue
        except ConnectionError:
            break
        if not data:
            return answer
        answer += data
    else:
        raise AssertionError(f"the server kept a trickling connection open for {BOUND:g}s")
    return answer


async def get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
    await writer.drain()
    return await asyncio.wait_for(reader.readuntil(b"hello"), BOUND)


async def test_an_idle_connection_is_closed_by_the_server(served) -> None:
    # Given a server whose connections must send a request head within 1 s
    _, connect, _ = await served(header_timeout=1.0)
    # When a client connects and sends nothing, and another is left idle after one request
    silent = await connect()
    kept = await connect()
    assert (await get(*kept)).startswith(b"HTTP/1.1 200")
    # Then the server closes both
    assert await closed_by_server(silent[0]) == b""
    assert await closed_by_server(kept[0]) == b""


async def test_a_request_head_that_trickles_in_is_cut(served) -> None:
    # Given a server whose request heads must be complete within 1 s
    _, connect, _ = await served(header_timeout=1.0)
    reader, writer = await connect()
    writer.write(b"GET / HTTP/1.1\r\nX-Slow: ")
    # When the client sends the rest of its header one byte at a time, for ever
    answer = await trickle(reader, writer, b"a")
    # Then the server closed the connection without answering the request
    assert b"hello" not in answer


async def test_a_body_that_trickles_in_gets_408_and_the_connection_is_closed(served) -> None:
    # Given a server whose bodies must arrive within 1 s plus one second per 1,000 bytes
    _, connect, registry = await served(body_timeout=1.0, min_body_rate=1000.0)
    reader, writer = await connect()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n")
    # When the body comes one byte at a time (20 bytes a second)
    answer = await trickle(reader, writer, b"x")
    # Then the server answered 408 in the JSON error shape and closed the connection
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b'"error": "request_timeout"' in body, answer
    assert b"Connection: close" in head
    assert b"parley_http_slow_bodies_total 1.0" in generate_latest(registry)


async def test_a_long_body_that_keeps_arriving_is_served(served) -> None:
    # Given the same 1 s body deadline, extended by one second per 100 bytes received
    _, connect, _ = await served(body_timeout=1.0, min_body_rate=100.0)
    reader, writer = await connect()
    size = 3000
    writer.write(f"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: {size}\r\n\r\n".encode())
    # When the body takes longer than 1 s but arrives far above 100 bytes a second
    for _ in range(size // 100):
        writer.write(b"y" * 100)
        await writer.drain()
        await asyncio.sleep(0.05)
    answer = await asyncio.wait_for(reader.readuntil(b"}"), BOUND)
    # Then it is read to the end and answered
    assert answer.startswith(b"HTTP/1.1 200") and b'{"bytes": 3000}' in answer


async def test_the_connection_past_the_cap_gets_503_and_a_freed_slot_is_used_again(served) -> None:
    # Given a server that holds at most 3 connections, and 3 clients connected (each served once)
    server, connect, registry = await served(max_connections=3)
    held = [await connect() for _ in range(3)]
    for conn in held:
        assert (await get(*conn)).startswith(b"HTTP/1.1 200")
    assert server.open_connections == 3
    # When a fourth connects
    reader, _ = await connect()
    # Then it is answered 503 in the JSON error shape and closed
    answer = await closed_by_server(reader)
    assert answer.startswith(b"HTTP/1.1 503") and b'"error": "unavailable"' in answer and b"Retry-After: 1" in answer
    assert b"parley_http_connections_refused_total 1.0" in generate_latest(registry)
    # And when one of the three leaves, a new client is served again
    held[0][1].close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOUND
    while server.open_connections > 2 and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert (await get(*await connect())).startswith(b"HTTP/1.1 200")
    assert b"parley_http_connections 3.0" in generate_latest(registry)
