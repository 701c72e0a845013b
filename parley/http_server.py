"""How our HTTP servers listen: the gateway, the retrieval service and each worker's metrics
endpoint all go through `HttpServer`, so each gets the same protections against slow and greedy
clients.

What aiohttp (3.14, installed) does on its own, per connection (``web_protocol.RequestHandler``):

* ``keepalive_timeout`` is armed when a connection opens and again after every response; if it
  fires while the connection is still waiting for a complete request head, the connection is
  closed. It bounds an idle keep-alive connection *and* headers that trickle in (slowloris) - the
  ``header_timeout`` here. Its default is 3630 s, which is why such connections stayed open.
* ``max_line_size``, ``max_field_size``, ``max_headers`` bound the size of a head (kept: 8 KB, 128).
* Nothing bounds a body: a handler's ``await request.read()`` waits as long as the client keeps
  trickling. Nothing bounds the number of connections either (``backlog`` only queues accepts).

What is added here:

* A body deadline (`body_deadline`, the outermost middleware): a body must arrive within
  ``body_timeout`` seconds, plus one second per ``min_body_rate`` bytes received, so an upload on a
  working link goes on while a trickle is cut. When the deadline passes, the request's payload
  fails with `RequestTimeout` (the error map answers 408 ``request_timeout``) and the connection
  is closed once the answer is written (no lingering over the rest of the trickle).
* A connection cap (``max_connections`` per server): the listening socket's protocol factory
  counts open connections; one past the cap gets a 503 JSON answer and is closed at once.

Counted in the server's registry: ``parley_http_connections`` (open now),
``parley_http_connections_refused_total``, ``parley_http_slow_bodies_total``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from parley.errors import RequestTimeout
from parley.http_errors import Handler, error_response
from parley.settings import Settings

log = logging.getLogger("parley.http")

#: The answer a connection past the cap gets before it is closed.
_REFUSAL_BODY = json.dumps({"error": "unavailable", "detail": "the server holds as many connections as it takes; retry"}).encode()
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n"
           b"Content-Length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n" + _REFUSAL_BODY)


@dataclass(frozen=True)
class ServerLimits:
    header_timeout: float = 20.0
    body_timeout: float = 15.0
    min_body_rate: float = 1024.0
    max_connections: int = 512

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerLimits:
        return cls(header_timeout=settings.http_header_timeout, body_timeout=settings.http_body_timeout,
                   min_body_rate=float(settings.http_min_body_rate), max_connections=settings.http_max_connections)


class ServerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.connections = Gauge("parley_http_connections", "Connections this server holds open now.", registry=registry)
        self.refused = Counter("parley_http_connections_refused",
                               "Connections answered 503 and closed because the server held its maximum.", registry=registry)
        self.slow_bodies = Counter("parley_http_slow_bodies", "Requests cut with 408 because their body arrived too slowly.",
                                   registry=registry)


_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, ServerMetrics] = weakref.WeakKeyDictionary()


def server_metrics(registry: CollectorRegistry | None) -> ServerMetrics:
    """The server metrics of a registry (made once per registry: a metric name registers once)."""
    if registry is None:
        return ServerMetrics(CollectorRegistry())
    if registry not in _METRICS:
        _METRICS[registry] = ServerMetrics(registry)
    return _METRICS[registry]


# --- bodies -------------------------------------------------------------------------------------


class _BodyWatch:
    """Fails the request's payload when its body falls behind its deadline."""

    def __init__(self, request: web.BaseRequest, limits: ServerLimits) -> None:
        self._content = request.content
        self._limits = limits
        self._loop = asyncio.get_running_loop()
        self._start = self._loop.time()
        self.fired = False
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(self._start + limits.body_timeout, self._check)

    def _check(self) -> None:
        self._handle = None
        content = self._content
        if content.is_eof() or content.exception() is not None:
            return
        due = self._start + self._limits.body_timeout + content.total_bytes / self._limits.min_body_rate
        if due - self._loop.time() > 0.05:  # bytes came in since: the deadline moved
            self._handle = self._loop.call_at(due, self._check)
            return
        self.fired = True
        content.set_exception(RequestTimeout(
            f"the request body arrived too slowly (under {self._limits.min_body_rate:g} bytes/s after "
            f"{self._limits.body_timeout:g}s)"))

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def body_deadline(limits: ServerLimits, metrics: ServerMetrics) -> Any:
    """The middleware that bounds how long a request body may take (see the module docstring)."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.content.is_eof():  # no body, or all of it already here
            return await handler(request)
        watch = _BodyWatch(request, limits)
        try:
            response = await handler(request)
        except RequestTimeout as exc:  # an app without the error map
            response = error_response(408, exc.code, exc.message)
        finally:
            watch.cancel()
        if watch.fired:
            metrics.slow_bodies.inc()
            log.warning("request body too slow; answered 408 and closed", extra={"path": request.path, "remote": request.remote})
            if not response.prepared:
                response.force_close()
                await response.prepare(request)
            await response.write_eof()
            request.protocol.force_close()  # the answer is written; drop the rest of the trickle
        return response

    return guard


PROTECTED = web.AppKey("parley_http_protected", bool)


def protect(app: web.Application, limits: ServerLimits, metrics: ServerMetrics) -> None:
    """Put the body deadline in front of the app's middlewares (before the app is frozen; once)."""
    if app.get(PROTECTED):
        return
    app.middlewares.insert(0, body_deadline(limits, metrics))
    app[PROTECTED] = True


# --- connections ----------------------------------------------------------------------------------


class _Gate:
    def __init__(self, cap: int, metrics: ServerMetrics) -> None:
        self.cap, self.metrics, self.open = cap, metrics, 0


class _Counted(asyncio.Protocol):
    """aiohttp's protocol for one connection, counted against the cap (made only when admitted)."""

    def __init__(self, server: web.Server, gate: _Gate) -> None:
        self._server, self._gate = server, gate
        self._inner: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        gate = self._gate
        if gate.open >= gate.cap:
            gate.metrics.refused.inc()
            transport.write(REFUSAL)  # type: ignore[attr-defined]
            transport.close()
            return
        gate.open += 1
        self._inner = self._server()
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        inner, self._inner = self._inner, None
        if inner is not None:
            self._gate.open -= 1
            inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


class CappedSite(web.BaseSite):
    """A TCP site whose connections are counted against a cap."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, gate: _Gate, backlog: int = 128) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self._gate = host, port, gate
        self.port = port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Counted(server, self._gate), self._host, self._port,
                                                backlog=self._backlog)
        self.port = self._server.sockets[0].getsockname()[1]


class HttpServer:
    """One app, served with the limits: ``await setup()``, ``await listen(host, port)``, ``await cleanup()``.

    ``registry``: where the server's metrics go (the app's own, so its ``/metrics`` shows them)."""

    def __init__(self, app: web.Application, limits: ServerLimits, *, registry: CollectorRegistry | None = None,
                 shutdown_timeout: float = 10.0) -> None:
        self.app, self.limits = app, limits
        self.metrics = server_metrics(registry)
        self._gate = _Gate(limits.max_connections, self.metrics)
        self.metrics.connections.set_function(lambda: self._gate.open)
        protect(app, limits, self.metrics)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout,
                                    keepalive_timeout=limits.header_timeout)

    @property
    def open_connections(self) -> int:
        return self._gate.open

    async def setup(self) -> None:
        """Open the app's resources (its ``cleanup_ctx``) without listening yet."""
        await self.runner.setup()

    async def listen(self, host: str, port: int) -> int:
        """Start accepting on host:port (0: a free port); returns the port."""
        site = CappedSite(self.runner, host, port, gate=self._gate)
        await site.start()
        return site.port

    async def cleanup(self) -> None:
        await self.runner.cleanup()


async def serve(app: web.Application, host: str, port: int, limits: ServerLimits, *,
                registry: CollectorRegistry | None = None, shutdown_timeout: float = 10.0) -> tuple[HttpServer, int]:
    """Set up and listen in one step: the server and the port it listens on."""
    server = HttpServer(app, limits, registry=registry, shutdown_timeout=shutdown_timeout)
    await server.setup()
    try:
        return server, await server.listen(host, port)
    except BaseException:
        await server.cleanup()
        raise
