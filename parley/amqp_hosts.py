"""RabbitMQ URLs that name the nodes of a cluster: ``amqp://user:pass@h1:5672,h2:5672,h3:5672/vhost``.

One URL, several ``host[:port]`` between the ``@`` and the path, comma-separated (IPv6 hosts in
brackets). Credentials, virtual host and query options are shared by every host. `split_amqp_url`
turns it into one ordinary single-host URL per node, which is what aio-pika connects to; a URL
with one host comes back unchanged. Pure string work: `parley.settings` validates with it.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

SCHEMES = ("amqp", "amqps")
DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}
_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%-]+)$")


class AmqpUrlError(ValueError):
    """A RabbitMQ URL that cannot be used; the message says what is wrong, never the password."""


def split_amqp_url(url: str) -> list[str]:
    """One single-host URL per host of ``url``, in the order given. Raises `AmqpUrlError`."""
    if not isinstance(url, str) or "://" not in url:
        raise AmqpUrlError("PARLEY_AMQP_URL must look like amqp://user:password@host:5672/ (several hosts: "
                           "amqp://user:password@h1:5672,h2:5672,h3:5672/)")
    scheme, rest = url.split("://", 1)
    if scheme.lower() not in SCHEMES:
        raise AmqpUrlError(f"PARLEY_AMQP_URL must start with amqp:// or amqps://, not {scheme[:20]!r}://")
    # the authority ends at the first "/", "?" or "#"; the password may hold none of those unescaped
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    userinfo, at, hostlist = authority.rpartition("@")
    hosts = [h.strip() for h in hostlist.split(",")]
    if not hostlist.strip():
        raise AmqpUrlError("PARLEY_AMQP_URL names no host (amqp://user:password@host:5672/)")
    if any(not h for h in hosts):
        raise AmqpUrlError(f"PARLEY_AMQP_URL has an empty entry in its host list {hostlist!r} "
                           "(comma-separated host:port, e.g. h1:5672,h2:5672)")
    out, seen = [], set()
    for host in hosts:
        name, port = _host_port(host, scheme.lower())
        if (name.lower(), port) in seen:
            raise AmqpUrlError(f"PARLEY_AMQP_URL names {name}:{port} twice")
        seen.add((name.lower(), port))
        out.append(f"{scheme}://{userinfo}{at}{host}{tail}")
    return out


def _host_port(host: str, scheme: str) -> tuple[str, int]:
    if host.startswith("["):
        name, close, port_text = host.partition("]")
        name, port_text = name + close, port_text[1:] if port_text.startswith(":") else port_text
        if not close or (port_text == "" and host.endswith(":")):
            raise AmqpUrlError(f"PARLEY_AMQP_URL: {host!r} is not a valid [IPv6]:port host")
    else:
        name, _, port_text = host.partition(":")
    if not _HOST.match(name):
        raise AmqpUrlError(f"PARLEY_AMQP_URL: {host!r} is not a host name or address "
                           "(hosts are comma-separated host:port, e.g. h1:5672,h2:5672)")
    if port_text == "" and ":" not in host.removeprefix(name):
        return name, DEFAULT_PORTS[scheme]
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise AmqpUrlError(f"PARLEY_AMQP_URL: the port of {host!r} must be a number from 1 to 65535")
    return name, int(port_text)


def host_label(url: str) -> str:
    """``host:port`` of a single-host URL from `split_amqp_url` (for logs and messages; no credentials)."""
    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return f"{host}:{parts.port or DEFAULT_PORTS.get(parts.scheme.lower(), 5672)}"
