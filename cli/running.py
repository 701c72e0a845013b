"""Which platform runs on this data directory, and where a command's work must go to be done.

`parley up` writes ``<data_dir>/run/platform.json`` once its processes are started (mode, its pid,
the children's pids, the gateway's URL, the queue prefix) and removes it on exit; a marker whose
pid is gone (a `parley up` that was killed) is stale and removed by the next reader.

A command that stages messages (`parley ingest`, `reindex`, `documents restore`, `shopify sync`)
asks :func:`route` where to send them, before it changes anything:

- a running ``parley up --single-process`` reads no RabbitMQ: the work stays in the outbox, which
  that process's relay sweeps (every few seconds) into its in-memory broker;
- a running ``parley up``: published to RabbitMQ at once;
- no marker, RabbitMQ reachable: published (workers started by hand or by docker compose read it),
  with a warning saying what to start when no worker consumes the queue yet;
- no marker, RabbitMQ unreachable: left in the outbox for the next platform when the command does
  not wait; refused with what to do when it would wait for nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from cli.app import err, publish_outbox, rabbit, where
from parley.errors import ParleyError
from parley.files import private_dir
from parley.settings import Settings, mask_url

Mode = Literal["processes", "single-process"]


@dataclass
class Platform:
    mode: Mode
    pid: int
    gateway_url: str
    amqp_prefix: str = ""
    database: str = ""
    started_at: str = ""
    children: dict[str, int] = field(default_factory=dict)
    retrieval_urls: list[str] = field(default_factory=list)  # the retrieval processes it started (`parley status`)


def marker_path(settings: Settings) -> Path:
    return settings.data_dir / "run" / "platform.json"


def write_marker(settings: Settings, mode: Mode, *, children: dict[str, int] | None = None,
                 retrieval_urls: list[str] | None = None) -> Platform:
    """Record that this process runs the platform (atomically: a reader sees the old file or the new)."""
    platform = Platform(mode=mode, pid=os.getpid(), gateway_url=f"http://{settings.gateway_host}:{settings.gateway_port}",
                        amqp_prefix=settings.amqp_prefix, database=mask_url(settings.effective_database_url),
                        started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), children=dict(children or {}),
                        retrieval_urls=list(retrieval_urls or []))
    path = marker_path(settings)
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(asdict(platform), indent=2))
    os.replace(tmp, path)
    return platform


def remove_marker(settings: Settings) -> None:
    """Remove the marker if this process wrote it (never another live platform's)."""
    current = _read(marker_path(settings))
    if current is not None and current.pid == os.getpid():
        marker_path(settings).unlink(missing_ok=True)


def _read(path: Path) -> Platform | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return Platform(**data)
    except (OSError, ValueError, TypeError):
        return None


def _alive(pid: int) -> bool:
    """Is `pid` a live `parley up` (not a pid the system gave to something else since)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: cannot tell, assume it is the platform
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (not Linux): the pid check is all there is
    return b"up" in cmdline


def running_platform(settings: Settings) -> Platform | None:
    """The platform running on this data directory, or None (a stale marker is removed)."""
    path = marker_path(settings)
    platform = _read(path)
    if platform is None:
        return None
    if not _alive(platform.pid):
        path.unlink(missing_ok=True)
        return None
    return platform


# --- where staged work goes -------------------------------------------------------------------


@dataclass
class Route:
    how: Literal["rabbitmq", "outbox"]
    note: str  # one line for the person: where the work went
    platform: Platform | None = None
    warn: bool = False  # the note is a warning: nothing does the work yet

    def show(self, out: Any, err: Any, *, quiet: bool = False) -> None:
        """Print the note: a warning in yellow on ``err`` always, else dimmed on ``out`` unless ``quiet`` (--json)."""
        if self.warn:
            err.print(f"[yellow]warning: {self.note}[/yellow]", highlight=False)
        elif not quiet:
            out.print(f"[dim]{self.note}[/dim]", highlight=False)


async def route(settings: Settings, queue: str, *, waiting: bool) -> Route:
    """Where the messages a command stages for `queue` must go to be done (see the module's doc).
    Raises a ParleyError saying what to do when nothing would do the work the command waits for."""
    platform = running_platform(settings)
    if platform is not None and platform.mode == "single-process":
        return Route("outbox", f"the single-process platform (pid {platform.pid}) takes it from the outbox", platform)
    if platform is not None:
        return Route("rabbitmq", f"published to RabbitMQ for the platform (pid {platform.pid})", platform)
    consumers = await _consumers(settings, queue)
    if consumers:
        return Route("rabbitmq", f"published to RabbitMQ ({consumers} worker(s) on the {queue} queue)")
    start = "start `parley up` (or `bash scripts/run.sh`) in another terminal"
    if consumers is None:
        if waiting:
            raise ParleyError(f"nothing would do this work: no platform is running on this {where(settings)}, and "
                              f"RabbitMQ is not reachable; {start}, then run this again (or pass --no-wait to queue "
                              "it for the next start)", code="not_running")
        return Route("outbox", f"queued in the outbox (RabbitMQ is not reachable): the next platform started on "
                               f"this data directory does it; {start}")
    # RabbitMQ keeps it for the workers, which may be starting (by hand, docker compose): say so, do not refuse
    return Route("rabbitmq", f"published to RabbitMQ, but no worker reads the {queue} queue yet and no platform runs "
                             f"on this data directory: {start}" + ("; waiting for it" if waiting else ""), warn=True)


async def _consumers(settings: Settings, queue: str) -> int | None:
    """Consumers on the work queue; None when RabbitMQ cannot be reached."""
    import aio_pika

    from parley import runtime
    from parley.bus.failover import connect_any
    from parley.logging import silenced

    name = runtime.topology(settings).queue(queue)
    try:
        with silenced("aiormq"), silenced("aio_pika"):
            connection = await connect_any(settings.amqp_url, timeout=5)
    except (OSError, aio_pika.exceptions.AMQPError, TimeoutError):
        return None
    try:
        from parley.bus.rabbit import inspect_queues

        stats = (await inspect_queues(connection, [name])).get(name)
        return stats.consumers if stats is not None else 0
    finally:
        await connection.close()


async def send(settings: Settings, db: Any, chosen: Route, name: str) -> None:
    """After the command committed: hand the outbox to RabbitMQ when that is the route (the outbox
    route needs nothing: the platform's relay, or the next one, publishes the rows)."""
    if chosen.how != "rabbitmq":
        return
    async with rabbit(settings, name) as broker:
        await publish_outbox(db, broker)


async def deliver(settings: Settings, db: Any, queue: str, name: str) -> Route:
    """`route` (never refusing: nothing waits) and `send`, for a command that already committed; a
    warning (nothing reads the queue yet) is printed on stderr."""
    chosen = await route(settings, queue, waiting=False)
    await send(settings, db, chosen, name)
    chosen.show(None, err, quiet=True)
    return chosen


@contextlib.asynccontextmanager
async def running_retrieval(settings: Settings, probe: Any) -> AsyncIterator[tuple[Any, Any] | None]:
    """The running retrieval service that answers ``probe`` (a `QueryRequest`): each URL the gateway
    would use (`Settings.effective_retrieval_urls`: every replica), in order, until one accepts the
    connection. Yields ``(client, response)``, the client open until the block ends, or None (said on
    stderr) when none is running, for the caller to answer in-process. A service that answered with
    an error raises it: that is the answer."""
    import aiohttp

    from parley.crypto import load_service_token
    from retrieval.client import HttpRetrievalClient

    urls = settings.effective_retrieval_urls
    for url in urls:
        client = HttpRetrievalClient(url, timeout=60.0, token=load_service_token(settings))
        try:
            try:
                response = await client.query(probe)
            except ParleyError as exc:
                if not isinstance(exc.__cause__, aiohttp.ClientConnectorError):
                    raise
                continue
            yield client, response
            return
        finally:
            await client.aclose()
    err.print(f"retrieval service not reachable at {', '.join(urls)}; answering in-process", highlight=False)
    yield None
