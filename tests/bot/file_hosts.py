"""A local HTTP server standing for a host inside our network (or a link an attacker chose): it
serves files, can redirect, and records every request it gets with its headers, so a test can
tell that the gateway never asked it for anything (or never showed it a token)."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class Seen:
    path: str
    authorization: str | None


@dataclass
class FileHost:
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)  # path -> Location
    seen: list[Seen] = field(default_factory=list)
    server: TestServer | None = None

    async def start(self, host: str = "127.0.0.1") -> FileHost:
        app = web.Application()
        app.router.add_get("/{path:.*}", self._serve)
        self.server = TestServer(app, host=host)
        await self.server.start_server()
        return self

    @property
    def port(self) -> int:
        assert self.server is not None and self.server.port is not None
        return self.server.port

    def url(self, path: str, *, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}/{path.lstrip('/')}"

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        self.seen.append(Seen(path, request.headers.get("Authorization")))
        if path in self.redirects:
            raise web.HTTPFound(self.redirects[path])
        if path not in self.files:
            return web.Response(status=404)
        body, content_type = self.files[path]
        return web.Response(body=body, content_type=content_type)
