"""Connections to whichever node of a RabbitMQ cluster is alive (PARLEY_AMQP_URL with several hosts).

aio-pika's robust connection re-declares everything declared through it (exchanges, queues,
bindings, QoS, consumers) after a reconnect, but only ever reconnects to its one URL: with the node
it was on dead, it would retry that dead node for ever. `FailoverConnection` keeps all of that
machinery and changes one thing: every connection attempt goes to the next host of the list, so
after a drop it tries the other nodes first and comes back round to the dead one last.

The hook is aio-pika's per-attempt method (``RobustConnection.__connect_transport``, reached by
its mangled name). pyproject pins aio-pika below 11; the import-time check below fails loudly if
a release renames it, instead of silently losing failover.

`connect_any` is the short-lived counterpart (doctor, status): the first host that answers.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import aio_pika
from aio_pika import RobustConnection
from yarl import URL

from parley.amqp_hosts import host_label, split_amqp_url

log = logging.getLogger(__name__)

_ATTEMPT = "_RobustConnection__connect_transport"
if not hasattr(RobustConnection, _ATTEMPT):  # pragma: no cover - only with an unsupported aio-pika
    raise ImportError(f"aio-pika {aio_pika.__version__} has no RobustConnection.__connect_transport: multi-host "
                      "failover (parley/bus/failover.py) needs aio-pika 10.x, as pyproject.toml pins")


class FailoverConnection(RobustConnection):
    """A robust connection over several single-host URLs, one attempt per host in turn."""

    def __init__(self, url: Any, *args: Any, hosts: list[str], first: int = 0, **kwargs: Any) -> None:
        super().__init__(url, *args, **kwargs)
        self.hosts = [URL(h) for h in hosts]
        self._next = first % len(self.hosts)
        self.attempts = 0

    @property
    def host(self) -> str:
        """``host:port`` of the node this connection is (or was last) on."""
        return host_label(str(self.url))

    async def _RobustConnection__connect_transport(self) -> None:  # noqa: N802 - aio-pika's mangled name
        self.url = self.hosts[self._next]
        self._next = (self._next + 1) % len(self.hosts)
        self.attempts += 1
        if self.attempts > 1:
            log.info("RabbitMQ: connecting to %s (%d hosts in PARLEY_AMQP_URL)", self.host, len(self.hosts))
        await getattr(super(), _ATTEMPT)()


async def connect_failover(url: str, *, timeout: float | None = None, spread: bool = True, **kwargs: Any) -> FailoverConnection:
    """A `FailoverConnection` to the first host of ``url`` that accepts it, trying each once.

    ``spread``: start at a random host, so the processes of a deployment spread over the nodes
    (then round the list from there). Raises the last host's error, naming every host tried.
    """
    hosts = split_amqp_url(url)
    start = random.randrange(len(hosts)) if spread else 0
    errors = []
    for i in range(len(hosts)):
        first = (start + i) % len(hosts)
        connection = FailoverConnection(hosts[first], hosts=hosts, first=first, **kwargs)
        try:
            await connection.connect(timeout=timeout)
            return connection
        except Exception as exc:
            await connection.close()
            errors.append((host_label(hosts[first]), exc))
    raise _none_answered(errors)


async def connect_any(url: str, *, timeout: float | None = None, **kwargs: Any) -> aio_pika.abc.AbstractConnection:
    """A plain (not robust) connection to the first host of ``url`` that accepts it, in the order given."""
    hosts = split_amqp_url(url)
    errors = []
    for host in hosts:
        try:
            return await aio_pika.connect(host, timeout=timeout, **kwargs)
        except Exception as exc:
            errors.append((host_label(host), exc))
    raise _none_answered(errors)


def _none_answered(errors: list[tuple[str, Exception]]) -> Exception:
    """With one host its own error (as before multi-host URLs); with several, one naming each host."""
    if len(errors) == 1:
        return errors[0][1]
    tried = "; ".join(f"{host}: {exc!r}" for host, exc in errors)
    error = ConnectionError(f"no RabbitMQ host of PARLEY_AMQP_URL accepted a connection ({tried})")
    error.__cause__ = errors[-1][1]
    return error
