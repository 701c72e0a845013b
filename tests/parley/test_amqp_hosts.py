"""PARLEY_AMQP_URL with several hosts (a RabbitMQ cluster): how it is split and refused, and how a
connection moves to the next host when its node goes away. The moving part runs against the
machine's RabbitMQ through two local TCP relays standing in for two nodes; the three-node proof is
tests/faults/test_cluster.py."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from contextlib import suppress

import aio_pika
import pytest
from pydantic import ValidationError

from parley.amqp_hosts import AmqpUrlError, host_label, split_amqp_url
from parley.settings import Settings, mask_url
from tests.support import services

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_one_host_comes_back_unchanged_and_several_share_credentials_vhost_and_options() -> None:
    assert split_amqp_url("amqp://guest:guest@127.0.0.1:5672/") == ["amqp://guest:guest@127.0.0.1:5672/"]
    assert split_amqp_url("amqps://u:p@h1:5671,h2,[::1]:5673/shop?heartbeat=30") == [
        "amqps://u:p@h1:5671/shop?heartbeat=30", "amqps://u:p@h2/shop?heartbeat=30", "amqps://u:p@[::1]:5673/shop?heartbeat=30"]
    # a password holding "@" or "," stays the password (the host list starts after the last "@")
    assert split_amqp_url("amqp://u:a,b@c@h1,h2/") == ["amqp://u:a,b@c@h1/", "amqp://u:a,b@c@h2/"]
    assert [host_label(u) for u in split_amqp_url("amqp://u:p@h1,h2:5700,[::1]/")] == ["h1:5672", "h2:5700", "[::1]:5672"]
    assert [host_label(u) for u in split_amqp_url("amqps://u:p@h1/")] == ["h1:5671"]


@pytest.mark.parametrize(("url", "says"), [
    ("127.0.0.1:5672", "must look like amqp://"),
    ("http://u:hunter2@h1:5672/", "must start with amqp:// or amqps://"),
    ("amqp://u:hunter2@/", "names no host"),
    ("amqp://u:hunter2@h1:5672,,h2:5672/", "an empty entry"),
    ("amqp://u:hunter2@h1:5672,h2:99999/", "from 1 to 65535"),
    ("amqp://u:hunter2@h1:5672,h2:x/", "from 1 to 65535"),
    ("amqp://u:hunter2@h1:5672,H1:5672/", "names H1:5672 twice"),
    ("amqp://u:hunter2@h1 h2/", "is not a host name or address"),
    ("amqp://u:hunter2@[::1/", "not a valid [IPv6]:port host"),
])
def test_a_bad_host_list_is_refused_saying_what_is_wrong_and_never_the_password(url: str, says: str) -> None:
    with pytest.raises(AmqpUrlError) as refused:
        split_amqp_url(url)
    assert says in str(refused.value) and "hunter2" not in str(refused.value)
    with pytest.raises(ValidationError):
        Settings(amqp_url=url)


def test_the_cli_reports_a_bad_amqp_url_in_one_line_with_the_password_masked() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(PARLEY_AMQP_URL="amqp://parley:hunter2@h1:5672,,h2:5672/", COLUMNS="200")
    done = subprocess.run([sys.executable, "-m", "cli", "config"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "PARLEY_AMQP_URL" in done.stderr and "an empty entry" in done.stderr and "Traceback" not in done.stderr
    assert "hunter2" not in done.stdout + done.stderr and "parley:***@h1" in done.stderr
    assert mask_url("amqp://u:hunter2@h1:5672,h2:5672/v") == "amqp://u:***@h1:5672,h2:5672/v"


class Relay:
    """A TCP relay standing in for one broker node: it forwards to the machine's RabbitMQ, and `kill`
    drops every connection through it and stops listening (a node gone, as far as a client sees)."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.pipes: set[asyncio.StreamWriter] = set()
        self.accepted = 0

    async def start(self, port: int = 0) -> Relay:
        self.server = await asyncio.start_server(self._pipe, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 5672)
        self.pipes |= {writer, up_writer}

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))

    async def kill(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.pipes:
            w.transport.abort()
        self.pipes.clear()
        await self.server.wait_closed()


@pytest.fixture
def rabbit() -> None:
    if not services.reachable("127.0.0.1", 5672):
        pytest.skip("RabbitMQ is not reachable on 127.0.0.1:5672 (scripts/test.sh starts it)")




@pytest.mark.rabbitmq
async def test_a_connection_skips_a_dead_first_host_and_moves_to_the_next_when_its_node_goes(rabbit: None) -> None:
    from parley.bus.failover import connect_any, connect_failover

    a, b = await Relay().start(), await Relay().start()
    dead = services.free_port()
    url = f"amqp://guest:guest@127.0.0.1:{dead},127.0.0.1:{a.port},127.0.0.1:{b.port}/"
    # Given a robust connection over three hosts whose first is down: it lands on the second
    connection = await connect_failover(url, spread=False, reconnect_interval=0.2)
    try:
        assert connection.host == f"127.0.0.1:{a.port}" and (a.accepted, b.accepted) == (1, 0)
        channel = await connection.channel()
        queue = await channel.declare_queue("", exclusive=True)
        consumed: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            await consumed.put(message.body)

        await queue.consume(on_message)
        await channel.default_exchange.publish(aio_pika.Message(b"before"), routing_key=queue.name)
        assert await asyncio.wait_for(consumed.get(), 10) == b"before"
        # When that node goes away
        await a.kill()
        # Then the connection comes back on the third host (the dead first one is tried and refused),
        # with its queue and consumer declared again, and carries messages as before
        for _ in range(200):
            if connection.host == f"127.0.0.1:{b.port}" and not connection.is_closed and b.accepted:
                break
            await asyncio.sleep(0.05)
        assert connection.host == f"127.0.0.1:{b.port}", connection.host
        for _ in range(100):
            with suppress(Exception):
                await channel.default_exchange.publish(aio_pika.Message(b"after"), routing_key=queue.name)
                break
            await asyncio.sleep(0.1)
        assert await asyncio.wait_for(consumed.get(), 10) == b"after"
    finally:
        await connection.close()
        await b.kill()
    # And a short-lived connection (doctor, status) takes the first host that answers, in order
    c = await Relay().start()
    try:
        plain = await connect_any(f"amqp://guest:guest@127.0.0.1:{dead},127.0.0.1:{c.port}/")
        assert not plain.is_closed and c.accepted == 1
        await plain.close()
    finally:
        await c.kill()


@pytest.mark.rabbitmq
async def test_no_host_answering_is_one_error_naming_every_host_and_no_password() -> None:
    from parley.bus.failover import connect_any, connect_failover

    p1, p2 = services.free_port(), services.free_port()
    url = f"amqp://guest:hunter2@127.0.0.1:{p1},127.0.0.1:{p2}/"
    for connect in (connect_any, connect_failover):
        with pytest.raises(ConnectionError) as refused:
            await connect(url, timeout=5)
        text = str(refused.value)
        assert f"127.0.0.1:{p1}" in text and f"127.0.0.1:{p2}" in text and "hunter2" not in text
