"""Where the gateway may fetch a file a DM points at: one policy for every channel.

A webhook names the file by URL (Slack's ``url_private_download``, an Instagram attachment's
``payload.url``). A valid signature says who sent the event, not that its links are safe to
follow from inside our network, and a Slack download carries the workspace's bot token. So a link
is fetched only when:

* it is https, to the vendor's own file hosts, on the https port (Slack: ``files.slack.com``;
  Meta: ``*.fbsbx.com`` (``lookaside.fbsbx.com``), ``*.fbcdn.net``, ``*.cdninstagram.com``); or
  it is on the exact origin (scheme, host and port) of the vendor API URL the operator configured
  (PARLEY_SLACK_API_URL, PARLEY_GRAPH_API_URL): the token goes there for every API call anyway, and
  it is where the local emulators of the tests live (plain http on 127.0.0.1);
* its host name resolves only to public addresses: a name that resolves to a private, loopback,
  link-local, multicast, reserved or unspecified address is refused (`PublicResolver`, the
  download session's resolver). aiohttp connects to the addresses the resolver returned, so what
  was checked is what is connected to: a second DNS answer cannot rebind it;
* redirects are followed by hand (at most 3), each hop checked again; the token is sent only to
  the first link's origin, so never over http unless that origin was configured so.

A refused link raises `DownloadRefused` (an `InvalidInput`: the person is told why, nothing is
retried) before any connection is made.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from parley.errors import InvalidInput

SLACK_FILE_HOSTS = ("files.slack.com",)
#: Meta's attachment CDN: lookaside.fbsbx.com links, which may redirect to scontent-*.fbcdn.net or
#: scontent*.cdninstagram.com.
META_FILE_HOSTS = ("*.fbsbx.com", "*.fbcdn.net", "*.cdninstagram.com")
MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

Origin = tuple[str, str, int]  # scheme, host, port


class DownloadRefused(InvalidInput):
    code = "download_refused"


def origin_of(url: URL | str) -> Origin | None:
    url = URL(str(url))
    if not url.scheme or not url.host or url.port is None:
        return None
    return url.scheme.lower(), url.host.lower().rstrip("."), url.port


def is_public(address: str) -> bool:
    """An address anyone on the internet reaches the same way (not ours, not a neighbour's)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None)
        if embedded is not None:
            ip = embedded
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _host_matches(host: str, patterns: Iterable[str]) -> bool:
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


@dataclass(frozen=True)
class FilePolicy:
    """Which links of one vendor may be fetched (see the module's docstring)."""

    vendor: str
    hosts: tuple[str, ...]
    #: Origins the operator configured for this vendor's API: taken as they are (http included).
    trusted: frozenset[Origin] = frozenset()

    @classmethod
    def of(cls, vendor: str, hosts: Sequence[str], *configured_urls: str) -> FilePolicy:
        trusted = {o for o in (origin_of(u) for u in configured_urls if u) if o is not None}
        return cls(vendor, tuple(hosts), frozenset(trusted))

    def check(self, url: str | URL) -> URL:
        """The link, parsed, when it may be fetched; else `DownloadRefused` saying why."""
        try:
            parsed = URL(str(url))
        except (ValueError, TypeError):
            raise DownloadRefused(f"the {self.vendor} file link is not a URL") from None
        origin = origin_of(parsed)
        if origin is None:
            raise DownloadRefused(f"the {self.vendor} file link is not a usable URL")
        if parsed.user is not None or parsed.password is not None:
            raise DownloadRefused(f"the {self.vendor} file link carries credentials; refusing it")
        if origin in self.trusted:
            return parsed
        scheme, host, port = origin
        if scheme != "https":
            raise DownloadRefused(f"the {self.vendor} file link is not https; refusing to fetch it")
        if port != 443 or not _host_matches(host, self.hosts):
            raise DownloadRefused(f"the file link points to {host}:{port}, which is not one of {self.vendor}'s "
                                  "file hosts; refusing to fetch it")
        if _is_ip(host) and not is_public(host):  # a vendor host pattern never names one; kept for safety
            raise DownloadRefused(f"the file link points to a private address ({host}); refusing to fetch it")
        return parsed


class PublicResolver(AbstractResolver):
    """The system resolver, refusing any name that resolves to an address that is not public
    (unless the name and port are a configured vendor origin's)."""

    def __init__(self, trusted: Iterable[tuple[str, int]] = ()) -> None:
        self._inner = DefaultResolver()
        self._trusted = frozenset((host.lower(), port) for host, port in trusted)

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if (host.lower().rstrip("."), port) in self._trusted:
            return found
        private = sorted({r["host"] for r in found if not is_public(r["host"])})
        if private:
            raise DownloadRefused(f"the file link's host {host} resolves to a private address "
                                  f"({', '.join(private)}); refusing to fetch it")
        return found

    async def close(self) -> None:
        await self._inner.close()


class Downloader:
    """The gateway's client for file downloads: a session of its own (its resolver is a
    `PublicResolver`, no proxies from the environment, no cookies), used only through `open`."""

    def __init__(self, *, trusted_urls: Iterable[str] = ()) -> None:
        origins = [o for o in (origin_of(u) for u in trusted_urls if u) if o is not None]
        self._resolver = PublicResolver((host, port) for _, host, port in origins)
        self._http: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:  # made on first use, inside the running loop
            connector = aiohttp.TCPConnector(resolver=self._resolver, limit=32)
            self._http = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()  # closes the connector and with it the resolver
        else:
            await self._resolver.close()

    @contextlib.asynccontextmanager
    async def open(self, url: str, *, policy: FilePolicy, timeout: aiohttp.ClientTimeout,
                   token: str | None = None) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET a file link the policy allows, following checked redirects; ``token`` goes as
        ``Authorization: Bearer`` to the first link's origin only. Raises `DownloadRefused`, or
        aiohttp's errors for the transport."""
        target = policy.check(url)
        first = origin_of(target)
        for _ in range(MAX_REDIRECTS + 1):
            headers: dict[str, Any] = {}
            if token and origin_of(target) == first:
                headers["Authorization"] = f"Bearer {token}"
            resp = await self._session().get(target, headers=headers, allow_redirects=False, timeout=timeout)
            location = resp.headers.get("Location")
            if resp.status in _REDIRECTS and location:
                resp.release()
                try:
                    hop = resp.url.join(URL(location))
                except (ValueError, TypeError):
                    raise DownloadRefused(f"the {policy.vendor} file link redirects to an unusable URL") from None
                target = policy.check(hop)
                continue
            try:
                yield resp
            finally:
                resp.release()
            return
        raise DownloadRefused(f"the {policy.vendor} file link redirects more than {MAX_REDIRECTS} times")
