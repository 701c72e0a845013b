"""Checks that a running server process holds `parley.http_server`'s limits, on real sockets: start it
with ``PARLEY_HTTP_MAX_CONNECTIONS=1`` and a header timeout of a few seconds, then
`holds_one_connection_and_closes_it_when_idle`."""

from __future__ import annotations

import asyncio

#: How long to wait for the server to act before failing (a bound, not a measurement).
BOUND = 30.0


async def _healthz(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """A connection on which GET /healthz was answered 200 and kept alive, or None if it was refused."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
    except (ConnectionError, asyncio.IncompleteReadError):  # refused while our request was on its way
        writer.close()
        return None
    if head.startswith(b"HTTP/1.1 200"):
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
        await asyncio.wait_for(reader.readexactly(length), BOUND)  # the rest of the answer
        return reader, writer
    writer.close()
    return None


async def holds_one_connection_and_closes_it_when_idle(host: str, port: int) -> bytes:
    """With one connection held (served once, then idle), the next is refused; the held one is then
    closed by the server. Returns the refusal."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOUND
    held = None
    while held is None:  # a connection the caller just closed may still hold the one slot for a moment
        held = await _healthz(host, port)
        if held is None:
            assert loop.time() < deadline, "the server refused every connection"
            await asyncio.sleep(0.05)
    reader, writer = held
    extra_reader, extra_writer = await asyncio.open_connection(host, port)
    try:
        refusal = await asyncio.wait_for(extra_reader.read(), BOUND)
        closed = await asyncio.wait_for(reader.read(), BOUND)
    finally:
        writer.close()
        extra_writer.close()
    assert refusal.startswith(b"HTTP/1.1 503") and b'"error": "unavailable"' in refusal, refusal
    assert closed == b"", "the idle connection got data instead of being closed"
    return refusal
