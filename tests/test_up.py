"""`parley up`, started as a person starts it: the preflight summary, every process up and then
stopped cleanly by one Ctrl-C; and `--single-process`, which answers a question about a document
uploaded through the web chat API."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from parley.bus import RabbitBroker, Topology
from tests.support import services
from tests.test_cli import parley

try:
    from parley.embeddings.local import model_installed

    HAVE_MODEL = model_installed("all-MiniLM-L6-v2")
except Exception:  # pragma: no cover - the embeddings package itself is broken
    HAVE_MODEL = False

needs_model = pytest.mark.skipif(not HAVE_MODEL, reason="the local embedding model is not installed (scripts/bootstrap.sh)")
PROCESSES = ("retrieval", "gateway", "documents-worker", "catalog-worker", "webhooks-worker")
RETURNS = b"# Returns policy\n\nYou can return any item within 30 days of delivery for a full refund.\n"


def free_ports(count: int, *, consecutive: bool = False) -> list[int]:
    """Ports nothing listens on now (``consecutive``: N, N+1, ...)."""
    if not consecutive:
        sockets = [socket.socket() for _ in range(count)]
        try:
            for s in sockets:
                s.bind(("127.0.0.1", 0))
            return [s.getsockname()[1] for s in sockets]
        finally:
            for s in sockets:
                s.close()
    for _ in range(100):
        [first] = free_ports(1)
        if first + count <= 65536 and all(_free(first + i) for i in range(count)):
            return [first + i for i in range(count)]
    raise RuntimeError("no free consecutive ports")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


class Up:
    """`parley up ...` in a subprocess, its output in a file (read it with `.log()`)."""

    def __init__(self, tmp_path: Path, env: dict[str, str], *args: str) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
        self.env = {**base, "PARLEY_DATA_DIR": str(tmp_path / "var"), "COLUMNS": "200", "PARLEY_LOG_JSON": "false", **env}
        self.path = tmp_path / "up.log"
        self.out = open(self.path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "cli", "up", *args], env=self.env, cwd=tmp_path,
                                     stdout=self.out, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.path.read_text(errors="replace")

    async def wait_for(self, predicate, what: str, timeout: float = 90.0) -> None:  # type: ignore[no-untyped-def]
        """Poll until ``predicate()`` holds (a bound on start-up, not a measurement)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await asyncio.to_thread(predicate):
            if self.proc.poll() is not None:
                raise AssertionError(f"`parley up` exited with {self.proc.returncode} before {what}:\n{self.log()[-4000:]}")
            if loop.time() > deadline:
                raise AssertionError(f"{what}: not within {timeout}s\n{self.log()[-4000:]}")
            await asyncio.sleep(0.25)

    async def interrupt(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGINT)
        return await asyncio.to_thread(self.proc.wait, timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.out.close()


@pytest.fixture
def ups() -> Iterator[list[Up]]:
    started: list[Up] = []
    yield started
    for up in started:
        up.close()


@pytest.mark.rabbitmq
@needs_model
async def test_up_starts_every_process_and_one_ctrl_c_stops_them_all(tmp_path: Path, ups: list[Up]) -> None:
    # Given a tenant with an API key, free ports and a queue prefix of our own
    for args in (("migrate",), ("tenants", "create", "acme")):
        assert (await asyncio.to_thread(parley, tmp_path, *args)).returncode == 0
    made = await asyncio.to_thread(parley, tmp_path, "--json", "keys", "create", "--tenant", "acme")
    key = {"Authorization": f"Bearer {json.loads(made.stdout)['key']}"}
    gateway, retrieval = free_ports(2)
    documents_metrics, catalog_metrics = free_ports(2, consecutive=True)
    prefix = f"up{uuid.uuid4().hex[:8]}."
    up = Up(tmp_path, {"PARLEY_GATEWAY_PORT": str(gateway), "PARLEY_RETRIEVAL_PORT": str(retrieval),
                       "PARLEY_WORKER_METRICS_PORT": str(documents_metrics), "PARLEY_AMQP_PREFIX": prefix})
    ups.append(up)
    try:
        # When `parley up` starts
        urls = [f"http://127.0.0.1:{port}/healthz" for port in (gateway, retrieval, documents_metrics, catalog_metrics)]
        await up.wait_for(lambda: all(http_ok(u) for u in urls), "every /healthz answering")
        log = up.log()
        # Then it said what it checked, which process runs where, and where the web chat is
        for line in ("database", "SQLite file", "rabbitmq", f"reachable at 127.0.0.1:5672, queue prefix '{prefix}'",
                     "vector index", "embedded", "answerer", "extractive", "embedding model", "installed",
                     f"web chat: http://127.0.0.1:{gateway}/chat", f"http://127.0.0.1:{documents_metrics}"):
            assert line in log, log
        pids = {name: int(pid) for name, pid in re.findall(rf"({'|'.join(PROCESSES)})\s*│\s*(\d+)\s*│", log)}
        assert set(pids) == set(PROCESSES), log
        assert all(alive(pid) for pid in pids.values())
        # And the workers run at the lowest priority, the answer path at normal priority
        assert niceness(pids["documents-worker"]) == niceness(pids["catalog-worker"]) == 19
        assert niceness(pids["gateway"]) == niceness(pids["retrieval"]) == 0
        # And the gateway answers through the retrieval service, which refuses anyone without the service token
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{gateway}/api/chat", json={"message": "Do you ship abroad?"},
                                 headers=key) as response:
                assert response.status == 200, await response.text()
                assert (await response.json())["status"] == "answered"
            async with http.post(f"http://127.0.0.1:{retrieval}/v1/query", json={"tenant_id": "a" * 32, "message": "hi"}) as r:
                assert r.status == 401
        assert oct((tmp_path / "var" / "service.token").stat().st_mode & 0o777) == "0o600"
        # When the operator presses Ctrl-C
        code = await up.interrupt()
        # Then every child stopped cleanly and `parley up` exits 0
        assert code == 0, up.log()[-4000:]
        assert not any(alive(pid) for pid in pids.values())
        assert "stopped." in up.log()
    finally:
        up.close()
        await delete_topology(prefix)


async def delete_topology(prefix: str) -> None:
    """Remove the queues and exchanges a test's `parley up` declared under its prefix."""
    cleaner = RabbitBroker(services.AMQP_URL, topology=Topology(prefix=prefix), connection_name=f"{prefix}cleanup")
    await cleaner.start()
    await cleaner.delete_topology()
    await cleaner.close()


def test_up_refuses_to_start_without_rabbitmq_and_says_how_to_get_one(tmp_path: Path) -> None:
    [port] = free_ports(1)
    result = parley(tmp_path, "up", env={"PARLEY_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{port}/"})
    assert result.returncode == 1
    assert "rabbitmq" in result.stdout and f"not reachable at 127.0.0.1:{port}" in result.stdout
    assert "rabbitmq-server -detached" in result.stdout and "--single-process" in result.stdout
    assert "Parley is running" not in result.stdout
    assert not (tmp_path / "var" / "parley.db").exists()  # nothing was migrated


@needs_model
async def test_single_process_answers_about_an_uploaded_document(tmp_path: Path, ups: list[Up]) -> None:
    # Given a tenant with an API key, and everything in one process (no RabbitMQ: the broker is in memory)
    for args in (("migrate",), ("tenants", "create", "acme")):
        assert (await asyncio.to_thread(parley, tmp_path, *args)).returncode == 0
    made = await asyncio.to_thread(parley, tmp_path, "--json", "keys", "create", "--tenant", "acme")
    key = {"Authorization": f"Bearer {json.loads(made.stdout)['key']}"}
    [port] = free_ports(1)
    up = Up(tmp_path, {"PARLEY_GATEWAY_PORT": str(port), "PARLEY_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"},
            "--single-process")
    ups.append(up)
    base = f"http://127.0.0.1:{port}"
    await up.wait_for(lambda: http_ok(base + "/healthz"), "the gateway answering")
    log = up.log()
    assert "SINGLE-PROCESS MODE" in log and "indexing shares" in log and "lost on exit" in log
    assert "not used: in-memory broker" in log and f"web chat: {base}/chat" in log
    async with aiohttp.ClientSession() as http:
        # When the admin uploads returns.md through the web chat API
        form = aiohttp.FormData()
        form.add_field("file", RETURNS, filename="returns.md", content_type="text/markdown")
        async with http.post(base + "/api/documents", data=form, headers=key) as response:
            assert response.status == 202, await response.text()
            [document] = (await response.json())["documents"]

        # Then it is indexed in the same process
        async def indexed() -> bool:
            async with http.get(f"{base}/api/documents/{document['id']}", headers=key) as r:
                status = (await r.json())["status"]
                assert status != "failed"
                return status == "indexed"

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90
        while not await indexed():
            assert loop.time() < deadline, up.log()[-4000:]
            await asyncio.sleep(0.25)
        # And a question is answered from it, with the citation
        async with http.post(base + "/api/chat", json={"message": "How many days do I have to return an item?"},
                             headers=key) as response:
            assert response.status == 200, await response.text()
            answer = await response.json()
    assert answer["status"] == "answered" and "30 days" in answer["answer"]
    assert answer["citations"][0]["title"] == "returns.md"
    # When the operator presses Ctrl-C, it stops cleanly
    assert await up.interrupt() == 0, up.log()[-4000:]
    assert "stopped." in up.log()


@pytest.mark.rabbitmq
@needs_model
async def test_ingest_reaches_the_single_process_platform_even_with_rabbitmq_up(tmp_path: Path, ups: list[Up]) -> None:
    # Given a tenant, and `parley up --single-process` running while RabbitMQ is reachable (which it never reads)
    for args in (("migrate",), ("tenants", "create", "acme")):
        assert (await asyncio.to_thread(parley, tmp_path, *args)).returncode == 0
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "returns.md").write_bytes(RETURNS)
    [port] = free_ports(1)
    prefix = {"PARLEY_AMQP_PREFIX": f"sp{uuid.uuid4().hex[:8]}."}  # if anything did publish, to a topology of our own
    up = Up(tmp_path, {"PARLEY_GATEWAY_PORT": str(port), **prefix}, "--single-process")
    ups.append(up)
    marker = tmp_path / "var" / "run" / "platform.json"
    await up.wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/healthz") and marker.exists(), "the platform's marker")
    # Then the marker says which platform runs here
    recorded = json.loads(marker.read_text())
    assert (recorded["mode"], recorded["pid"], recorded["gateway_url"]) == ("single-process", up.proc.pid, f"http://127.0.0.1:{port}")
    # And a second `parley up` on the same data directory is refused, saying which one runs
    second = await asyncio.to_thread(parley, tmp_path, "up", "--single-process", env={"PARLEY_GATEWAY_PORT": str(port)})
    assert second.returncode == 1 and "already running" in second.stderr and str(up.proc.pid) in second.stderr
    # When the admin ingests a file from another terminal
    done = await asyncio.to_thread(parley, tmp_path, "ingest", str(tmp_path / "docs"), "--tenant", "acme",
                                   "--timeout", "90", env=prefix)
    # Then the work went where it is done (the platform's outbox), and the job ends done, not stuck at 0/1
    assert done.returncode == 0, done.stdout + done.stderr + up.log()[-3000:]
    assert "takes it from the outbox" in done.stdout and "1 of 1" in done.stdout, done.stdout
    # And `parley ask` answers from it without looking for a retrieval service that mode does not run
    asked = await asyncio.to_thread(parley, tmp_path, "ask", "How many days do I have to return an item?",
                                    "--tenant", "acme", env=prefix)
    assert asked.returncode == 0 and "30 days" in asked.stdout, asked.stdout + asked.stderr
    assert "not reachable" not in asked.stderr
    # When the operator presses Ctrl-C, the marker goes with the platform; then, with no RabbitMQ
    # either, an ingest that would wait for nothing says what to do instead
    assert await up.interrupt() == 0, up.log()[-4000:]
    assert not marker.exists()
    refused = await asyncio.to_thread(parley, tmp_path, "ingest", str(tmp_path / "docs"), "--tenant", "acme",
                                      env={**prefix, "PARLEY_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"})
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "parley up" in refused.stderr and "--no-wait" in refused.stderr
