"""Which URLs a tenant may point a webhook endpoint at.

A webhook makes the platform send a request wherever a tenant says: pointed at ``127.0.0.1``, a
cloud metadata address (169.254.169.254) or the office network, that is a way into places no
tenant should reach (server-side request forgery). So an endpoint must be ``https`` and its host
must resolve only to public addresses, unless ``PARLEY_WEBHOOKS_ALLOW_PRIVATE`` is set for
development. The check runs at registration and again before every delivery (DNS may change).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit, urlunsplit

from parley.errors import InvalidInput

MAX_URL_LENGTH = 2048


class WebhookUrlRejected(InvalidInput):
    code = "webhook_url_rejected"


def refused_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return refused_kind(address.ipv4_mapped)
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_private or address.is_reserved or not address.is_global:
        return "a private address"
    return None


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (an IP literal resolves to itself)."""
    try:
        return [ipaddress.ip_address(host).compressed]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise WebhookUrlRejected(f"the host {host} does not resolve ({exc})") from exc
    return sorted({str(info[4][0]).split("%", 1)[0] for info in infos})


def check_url(url: str, *, allow_private: bool) -> str:
    """The URL, normalised (scheme and host in lower case, no fragment), when a webhook may be sent
    there; otherwise :class:`WebhookUrlRejected` (code ``webhook_url_rejected``) saying why."""
    text = (url or "").strip()
    if not text:
        raise WebhookUrlRejected("give the endpoint's URL, e.g. https://example.com/parley-webhooks")
    if len(text) > MAX_URL_LENGTH:
        raise WebhookUrlRejected(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 for ch in text):
        raise WebhookUrlRejected("the URL contains spaces or control characters")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise WebhookUrlRejected(f"not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise WebhookUrlRejected(f"the URL must start with https:// (got {scheme + '://' if scheme else 'no scheme'})")
    if scheme == "http" and not allow_private:
        raise WebhookUrlRejected("the URL must use https:// (plain http is allowed only with "
                                 "PARLEY_WEBHOOKS_ALLOW_PRIVATE, for development)")
    host = (parts.hostname or "").lower()
    if not host:
        raise WebhookUrlRejected("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise WebhookUrlRejected("the URL must not carry a user name or password; authenticate with the signature instead")
    if not allow_private:
        for address in resolve_host(host, port or (443 if scheme == "https" else 80)):
            kind = refused_kind(ipaddress.ip_address(address))
            if kind is not None:
                shown = host if host == address else f"{host} ({address})"
                raise WebhookUrlRejected(
                    f"the URL's host {shown} is {kind}; webhooks go only to public addresses "
                    "(PARLEY_WEBHOOKS_ALLOW_PRIVATE allows others, for development)")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
