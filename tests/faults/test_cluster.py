"""A three-node RabbitMQ cluster (scripts/rabbit-cluster.sh, from the installed rabbitmq-server) with
quorum queues: the node holding the queue leader, the worker's connection and the producer's is
SIGKILLed in the middle of a 500-document batch and restarted later. The worker and the producer
move to the surviving nodes by themselves (a multi-host PARLEY_AMQP_URL), and every document ends
indexed exactly once: 0 lost, 0 duplicate chunks, exact job counters, nothing dead-lettered.

The cluster starts once for the module (~35 s on the 2-core machine) and skips the test, saying why,
when rabbitmq-server is not installed or the cluster does not come up.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from knowledge.models import Job
from parley.bus.models import DeadLetter, OutboxMessage
from parley.db import unit_of_work
from tests.faults.conftest import FaultStack
from tests.faults.support import REPO, audit, broker_ids, check_job, check_nothing_lost, eventually, text_documents

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

SCRIPT = REPO / "scripts" / "rabbit-cluster.sh"
SBIN = Path("/usr/lib/rabbitmq/bin")
TOTAL = 500


@dataclass
class Cluster:
    dir: Path
    port: int
    url: str

    def port_of(self, n: int) -> int:
        return self.port + n - 1

    def node_of_port(self, port: int) -> int:
        return port - self.port + 1

    def name(self, n: int) -> str:
        return f"parley-{self.port_of(n)}@localhost"

    def script(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run([str(SCRIPT), "--dir", str(self.dir), "--port", str(self.port), *args], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if done.returncode:
            raise AssertionError(f"rabbit-cluster.sh {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done.stdout

    def ctl(self, n: int, *args: str, tool: str = "rabbitmqctl") -> str:
        """A CLI command run against node ``n`` (same cookie: HOME is the cluster directory)."""
        env = {**os.environ, "HOME": str(self.dir)}
        done = subprocess.run([str(SBIN / tool), "-q", "-n", self.name(n), *args], env=env, capture_output=True, text=True,
                              timeout=60, check=True)
        return done.stdout

    def rows(self, n: int, *args: str) -> list[list[str]]:
        return [line.split("\t") for line in self.ctl(n, *args, "--no-table-headers").splitlines() if line.strip()]


def _free_base_port() -> int:
    """A base port P with P..P+2 and P+20000..P+20002 free on loopback."""
    for base in range(5741, 6000, 10):
        if all(_free(p) for n in range(3) for p in (base + n, base + n + 20000)):
            return base
    pytest.skip("no free loopback ports for a three-node cluster between 5741 and 6000")


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not (SBIN / "rabbitmq-server").exists() or shutil.which("erl") is None:
        pytest.skip("rabbitmq-server is not installed (Debian: apt-get install rabbitmq-server): no cluster to test")
    directory, port = tmp_path_factory.mktemp("rabbit-cluster"), _free_base_port()
    cluster = Cluster(directory, port, "")
    started = time.monotonic()
    try:
        cluster.url = cluster.script("start", timeout=180).strip().splitlines()[-1]
    except (AssertionError, subprocess.TimeoutExpired) as exc:
        subprocess.run([str(SCRIPT), "--dir", str(directory), "--port", str(port), "stop"], capture_output=True, timeout=120)
        pytest.skip(f"the three-node RabbitMQ cluster did not start: {exc}")
    print(f"\ncluster of 3 nodes started in {time.monotonic() - started:.1f} s: {cluster.url}")
    try:
        yield cluster
    finally:
        cluster.script("stop")


@pytest.fixture
def amqp_url(cluster: Cluster) -> str:
    return cluster.url


@pytest.fixture
def queue_type() -> str:
    return "quorum"


def _connection_nodes(cluster: Cluster, name: str) -> list[int]:
    """Which node each connection called ``name`` is on (from its server port), asking any live node."""
    for n in (1, 2, 3):
        try:
            rows = cluster.rows(n, "list_connections", "port", "client_properties")
        except subprocess.CalledProcessError:
            continue
        return [cluster.node_of_port(int(port)) for port, props in rows if f'{{"connection_name","{name}"}}' in props]
    raise AssertionError("no node of the cluster answers")


def _leader(cluster: Cluster, queue: str, *, ask: int) -> int:
    [[leader]] = [row[1:] for row in cluster.rows(ask, "list_queues", "name", "leader") if row[0] == queue]
    return next(n for n in (1, 2, 3) if cluster.name(n) == leader)


async def _finished(stack: FaultStack, job_id: str) -> int:
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        job = await session.get(Job, job_id)
        assert job is not None
        return job.done + job.failed


async def test_node_killed_mid_batch_loses_and_doubles_nothing(stack: FaultStack, cluster: Cluster) -> None:
    t = stack.broker.topology
    assert t.queue_type == "quorum"
    worker = stack.worker()
    worker.start()
    await stack.relay.start()  # as in the gateway: nudged by commits, swept every few seconds
    # Given the documents queue's leader is on the producer's node (it declared the queues), and the worker
    # is moved there too (a connection closed by the broker goes to the next host of the URL)
    victim = _leader(cluster, t.queue("documents"), ask=1)
    assert _connection_nodes(cluster, f"{stack.prefix}producer") == [victim]
    await eventually(lambda: _consuming(worker), timeout=60, what="the worker consuming", log=worker.log)
    for _ in range(3):
        [node] = _connection_nodes(cluster, worker.connection_name)
        if node == victim:
            break
        cluster.ctl(node, "close_connection", _connection_pid(cluster, node, worker.connection_name), "test: move to the leader")
        await eventually(lambda: _on_one_node(cluster, worker.connection_name), timeout=30, what="worker reconnected",
                         log=worker.log)
    assert _connection_nodes(cluster, worker.connection_name) == [victim]
    # And a 500-document job under way
    batch = await stack.submit(text_documents(TOTAL), notify={"channel": "web", "conversation_id": "cluster"})
    assert batch.job_id is not None
    began = time.monotonic()
    await eventually(lambda: _reached(stack, batch.job_id, 150), timeout=120, what="150 documents done", log=worker.log)
    # When that node is SIGKILLed with deliveries in flight
    cluster.script("kill", str(victim))
    killed, at_kill = time.monotonic(), await _finished(stack, batch.job_id)
    # Then the worker carries on through the surviving nodes (the failover gap: kill -> the next document done)
    await eventually(lambda: _reached(stack, batch.job_id, at_kill + 1), timeout=60, what="progress after the kill",
                     log=worker.log)
    gap = time.monotonic() - killed
    await eventually(lambda: _reached(stack, batch.job_id, at_kill + 100), timeout=120, what="100 more documents",
                     log=worker.log)
    survivors = {n for n in (1, 2, 3) if n != victim}
    assert set(_connection_nodes(cluster, worker.connection_name)) <= survivors
    # And the killed node, restarted, rejoins while the batch goes on
    restarted = asyncio.create_task(asyncio.to_thread(cluster.script, "start-node", str(victim)))
    await eventually(lambda: _reached(stack, batch.job_id, TOTAL), timeout=180, what="the whole batch", log=worker.log)
    batch_seconds = time.monotonic() - began
    await restarted
    # Then every document is indexed exactly once; chunks and vectors exist once, under their ids
    await eventually(lambda: _settled(stack, cluster, victim), timeout=60, interval=0.5, what="queues drained",
                     log=worker.log)
    result = await audit(stack.sessions, tenant_id=stack.tenant_id, document_ids=list(batch.documents.values()),
                         job_id=batch.job_id)
    problems = check_nothing_lost(result, tenant_id=stack.tenant_id, expected=TOTAL) + check_job(result, total=TOTAL)
    assert not problems, "\n".join(problems)
    assert (len(result.indexed), len(result.failed)) == (TOTAL, 0)
    assert sum(len(chunks) for chunks in result.chunks.values()) == sum(d.chunk_count for d in result.documents.values())
    # And nothing was dead-lettered, by us or by the broker
    async with unit_of_work(stack.sessions, admin=True) as session:
        assert await session.scalar(select(func.count()).select_from(DeadLetter)) == 0
    assert not await broker_ids(stack.broker, t.dlq("documents"))
    # And the same worker process did it all (it reconnected, never restarted); the producer moved too
    assert worker.alive() and worker.starts == 1
    assert len(_connection_nodes(cluster, worker.connection_name)) == 1
    assert set(_connection_nodes(cluster, f"{stack.prefix}producer")) <= survivors
    # And the restarted node is a running member again, holding its replica of the queue
    members = cluster.rows(victim, "list_queues", "name", "online")
    assert cluster.name(victim) in dict((row[0], row[1]) for row in members)[t.queue("documents")]
    print(f"\n{TOTAL} documents in {batch_seconds:.1f} s with node {victim} killed at {at_kill} done; "
          f"failover gap (kill -> next document done) {gap:.2f} s")


def _connection_pid(cluster: Cluster, node: int, name: str) -> str:
    [pid] = [pid for pid, props in cluster.rows(node, "list_connections", "pid", "client_properties")
             if f'{{"connection_name","{name}"}}' in props]
    return pid


async def _on_one_node(cluster: Cluster, name: str) -> bool:
    return len(_connection_nodes(cluster, name)) == 1


async def _consuming(worker) -> bool:  # type: ignore[no-untyped-def]
    return "consuming" in worker.log()


async def _reached(stack: FaultStack, job_id: str, mark: int) -> bool:
    return await _finished(stack, job_id) >= mark


async def _settled(stack: FaultStack, cluster: Cluster, node: int) -> bool:
    """Every staged message published; no document message ready or unacked on any lane."""
    async with unit_of_work(stack.sessions, admin=True) as session:
        unpublished = await session.scalar(select(func.count()).select_from(OutboxMessage)
                                           .where(OutboxMessage.published_at.is_(None)))
    if unpublished:
        return False
    t = stack.broker.topology
    lanes = set(t.work_queues("documents"))
    rows = cluster.rows(node, "list_queues", "name", "messages_ready", "messages_unacknowledged")
    return all(ready == "0" and unacked == "0" for name, ready, unacked in rows if name in lanes)
