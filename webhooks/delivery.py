"""One HTTP attempt of one webhook delivery: POST the signed JSON, read at most a few KB back.

Limits, so a receiver cannot hold the worker or fill its memory: the whole attempt (connect, send,
the status and the first :data:`MAX_RESPONSE_BYTES` of the answer) within the timeout; the rest
of a large answer is never read (the connection is closed). Redirects are not followed (a 3xx is a
failed attempt: a redirect could lead to an address the URL check refused). Without
``allow_private`` the connector's resolver refuses private addresses at connect time too, so a
DNS answer that changed after the URL check (rebinding) cannot reach the internal network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver

from webhooks.urls import WebhookUrlRejected, refused_kind

#: Bytes of a receiver's answer read at most (the delivery log keeps them, clipped to 2 KB of text).
MAX_RESPONSE_BYTES = 4096
USER_AGENT = "Parley-Webhooks/1"


@dataclass(frozen=True)
class AttemptResult:
    status_code: int | None
    error: str | None
    excerpt: str | None
    #: How many bytes of the answer were read (never more than MAX_RESPONSE_BYTES).
    bytes_read: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


class PublicOnlyResolver(AbstractResolver):
    """Resolves like the default resolver, then refuses any non-public address."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0,  # type: ignore[override]
                      family: int = socket.AF_INET) -> list[dict[str, Any]]:
        found = await self._inner.resolve(host, port, family)
        for entry in found:
            kind = refused_kind(ipaddress.ip_address(str(entry["host"]).split("%", 1)[0]))
            if kind is not None:
                raise WebhookUrlRejected(f"{host} resolved to {entry['host']}, {kind}; webhooks go only to public addresses")
        return found

    async def close(self) -> None:
        await self._inner.close()


def client_session(*, allow_private: bool) -> aiohttp.ClientSession:
    """The worker's HTTP client for deliveries (one per worker; closed with it)."""
    connector = aiohttp.TCPConnector(limit=64, resolver=None if allow_private else PublicOnlyResolver(),
                                     force_close=True)
    return aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT}, trust_env=False,
                                 auto_decompress=False)


async def _read_some(response: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await response.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


async def post(http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], *, timeout: float,
               max_read: int = MAX_RESPONSE_BYTES) -> AttemptResult:
    """POST ``body`` to ``url``; never raises for what the receiver does (refused, slow, huge, 5xx)."""
    response: aiohttp.ClientResponse | None = None
    try:
        async with asyncio.timeout(timeout):
            response = await http.post(url, data=body, headers={**headers, "Content-Type": "application/json"},
                                       allow_redirects=False, timeout=aiohttp.ClientTimeout(total=None))
            raw = await _read_some(response, max_read)
    except TimeoutError:
        status = response.status if response is not None else None
        return AttemptResult(status, f"timeout: no complete answer within {timeout:g} s", None)
    except WebhookUrlRejected as exc:
        return AttemptResult(None, f"{exc.code}: {exc.message}", None)
    except aiohttp.ClientConnectorError as exc:
        cause = exc.os_error if getattr(exc, "os_error", None) else exc
        if isinstance(cause, WebhookUrlRejected):
            return AttemptResult(None, f"{cause.code}: {cause.message}", None)
        return AttemptResult(None, f"connection failed: {cause}", None)
    except (aiohttp.ClientError, OSError) as exc:
        return AttemptResult(response.status if response is not None else None,
                             f"request failed: {type(exc).__name__}: {exc}"[:500], None)
    finally:
        if response is not None:
            response.close()  # the rest of a large answer is never read
    text = raw.decode("utf-8", errors="replace")
    status = response.status
    if 200 <= status < 300:
        return AttemptResult(status, None, text, len(raw))
    reason = f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
    return AttemptResult(status, reason, text, len(raw))
