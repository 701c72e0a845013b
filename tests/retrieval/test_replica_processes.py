"""Two real retrieval processes (`parley retrieval`, one data directory, one database) behind the
gateway's replica client: one is SIGKILLed during a stream of questions and no question is lost;
restarted, it is noticed and gets its tenant back.

Both processes share the data directory, as `parley up --retrieval-replicas 2` runs them: the first
to open the embedded index owns its snapshots (an flock); the other reads the same store without
snapshots (`parley.vectors.embedded`), and both answer.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from parley.crypto import load_service_token
from retrieval.replicas import ReplicatedRetrievalClient
from retrieval.schemas import QueryRequest
from tests.retrieval.support import seed_acme
from tests.support.processes import stop_process
from tests.support.waiting import eventually
from tests.test_up import free_ports

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = ["Do you ship to Canada?", "How long do I have to return boots?", "Do gift cards expire?",
             "How do I clean leather boots?", "How much is international shipping?"]


class Replica:
    def __init__(self, name: str, port: int, env: dict[str, str], logs: Path) -> None:
        self.name, self.port, self.env, self.log = name, port, env, logs / f"{name}.log"
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "cli", "retrieval"], cwd=ROOT, stdout=log, stderr=log,
                                         env={**self.env, "PARLEY_RETRIEVAL_PORT": str(self.port)}, start_new_session=True)

    async def ready(self, http: aiohttp.ClientSession) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            async with http.get(f"{self.url}/readyz") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_a_replica_killed_during_a_stream_of_questions_costs_no_question(
        rsettings, sessions, writer, emb, db_url, tmp_path) -> None:
    # Given a tenant, and two retrieval processes on its database and data directory
    acme = await seed_acme(sessions, writer, emb)
    token = load_service_token(rsettings)  # generated once into the data directory both processes read
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PARLEY_", "OPENAI_"))}
    env = {**base, "PARLEY_DATABASE_URL": db_url, "PARLEY_DATA_DIR": str(rsettings.data_dir), "PARLEY_LOG_JSON": "true",
           "PARLEY_RETRIEVAL_ANSWERER": "extractive", "OMP_NUM_THREADS": "1"}
    replicas = [Replica(f"r{i}", port, env, tmp_path) for i, port in enumerate(free_ports(2))]
    client = ReplicatedRetrievalClient([r.url for r in replicas], token=token, timeout=30, try_timeout=5,
                                       probe_interval=0.2, max_probe_interval=0.5)
    by_url = {r.url: r for r in replicas}
    first, second = (by_url[u] for u in client.order(acme.tenant_id))
    try:
        for r in replicas:
            r.start()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            for r in replicas:
                await eventually(lambda r=r: r.ready(http), timeout=60, interval=0.1, what=f"{r.name} ready")
        # When a stream of questions runs (3 at a time) and the tenant's replica is SIGKILLed in the middle
        answers: list[bool] = []
        killed = asyncio.Event()

        async def asker(n: int) -> None:
            for i in range(12):
                response = await client.query(QueryRequest(tenant_id=acme.tenant_id, message=QUESTIONS[(n + i) % 5],
                                                           conversation_id=f"c{n}-{i}"))
                answers.append(response.found)
                if len(answers) == 9 and not killed.is_set():
                    assert first.proc is not None
                    first.proc.send_signal(signal.SIGKILL)
                    killed.set()

        await asyncio.wait_for(asyncio.gather(*(asker(n) for n in range(3))), 60)
        # Then every question was answered, found, the ones after the kill by the other replica
        assert killed.is_set() and len(answers) == 36 and all(answers), answers
        states = {s["url"]: s for s in client.states()}
        assert not states[first.url]["up"] and states[second.url]["up"]
        assert states[first.url]["answered"] >= 9 and states[second.url]["answered"] >= 36 - states[first.url]["answered"] - 3
        # When the killed replica is started again
        assert first.proc is not None and first.proc.wait(10) == -signal.SIGKILL
        first.start()
        # Then the client notices it is back (its /readyz), and the tenant's questions go to it again
        await eventually(lambda: {s["url"]: s for s in client.states()}[first.url]["up"], timeout=60, interval=0.1,
                         what="the restarted replica noticed", log=lambda: first.log.read_text()[-3000:])
        before = {s["url"]: s["answered"] for s in client.states()}
        assert (await client.query(QueryRequest(tenant_id=acme.tenant_id, message=QUESTIONS[0]))).found
        after = {s["url"]: s["answered"] for s in client.states()}
        assert after[first.url] == before[first.url] + 1 and after[second.url] == before[second.url]
    finally:
        await client.aclose()
        for r in replicas:
            stop_process(r.proc, timeout=20)
    # (both stopped cleanly: a SIGTERM is a graceful stop)
    assert all(r.proc is not None and r.proc.returncode == 0 for r in replicas), [r.log.read_text()[-2000:] for r in replicas]
