"""The app built entirely by its factory from settings: health, readiness, metrics, shutdown."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from parley.crypto import load_service_token
from retrieval.app import create_app
from retrieval.client import HttpRetrievalClient
from retrieval.schemas import QueryRequest
from tests.retrieval.support import seed_acme


async def _eventually_ready(http: aiohttp.ClientSession, url: str) -> dict:
    body: dict = {}
    for _ in range(1200):
        try:
            resp = await http.get(url)
        except aiohttp.ClientConnectionError:  # not listening yet
            await asyncio.sleep(0.05)
            continue
        body = await resp.json()
        if resp.status == 200:
            return body
        assert resp.status == 503 and body["status"] == "not_ready"
        await asyncio.sleep(0.05)
    raise AssertionError(f"never ready: {body}")


async def test_factory_built_app_reports_health_readiness_and_metrics(rsettings, sessions, writer, emb, local_embedder) -> None:
    # Given a tenant, and the app built from settings alone (its own engine, embedder and index)
    acme = await seed_acme(sessions, writer, emb)
    server = TestServer(create_app(rsettings))
    await server.start_server()
    client = HttpRetrievalClient(str(server.make_url("")), timeout=60, token=load_service_token(rsettings))
    try:
        async with aiohttp.ClientSession() as http:
            # Then it is alive at once, and ready once its warm-up is done
            assert (await http.get(server.make_url("/healthz"))).status == 200
            ready = await _eventually_ready(http, str(server.make_url("/readyz")))
            assert ready["checks"] == {"database": "ok", "embedder": "ok", "index": "ok"}
            # When it answers a question
            r = await client.query(QueryRequest(tenant_id=acme.tenant_id, message="Do you ship to Canada?"))
            assert r.found
            # Then its metrics show the query
            text = await (await http.get(server.make_url("/metrics"))).text()
        assert 'parley_retrieval_queries_total{outcome="found"} 1.0' in text
        assert 'parley_retrieval_stage_seconds_bucket{le="+Inf",stage="total"} 1.0' in text
    finally:
        await client.aclose()
        await server.close()


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_two_apps_in_one_process_keep_separate_metrics(rsettings, local_embedder) -> None:
    from retrieval.app import RetrievalDeps
    from tests.retrieval.support import make_config

    servers = [TestServer(create_app(rsettings, deps=RetrievalDeps(embedder=local_embedder, config=make_config()))) for _ in range(2)]
    try:
        for s in servers:
            await s.start_server()
        async with aiohttp.ClientSession() as http:
            for s in servers:
                resp = await http.get(s.make_url("/metrics"))
                assert resp.status == 200 and "parley_retrieval_cache_total" in await resp.text()
    finally:
        for s in servers:
            await s.close()


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_serve_runs_until_sigterm_and_exits_cleanly(db_url, tmp_path, local_embedder) -> None:
    # Given `serve` started the way `parley retrieval` will start it, in its own process
    import os
    import signal
    import socket
    import sys
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PARLEY_DATABASE_URL": db_url, "PARLEY_DATA_DIR": str(tmp_path / "var"), "PARLEY_RETRIEVAL_PORT": str(port)}
    code = "import asyncio; from parley.settings import Settings; from retrieval.app import serve; asyncio.run(serve(Settings()))"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env=env, cwd=Path(__file__).resolve().parents[2],
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with aiohttp.ClientSession() as http:
            # When it is ready
            await _eventually_ready(http, f"http://127.0.0.1:{port}/readyz")
        # and receives SIGTERM
        proc.send_signal(signal.SIGTERM)
        _, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    # Then it stops on its own, cleanly
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"retrieval stopping" in err


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_serve_closes_idle_connections_and_refuses_past_its_cap(db_url, tmp_path, local_embedder) -> None:
    # Given `serve` in its own process, allowed one connection, whose request heads must come within 5 s
    import os
    import signal
    import socket
    import sys
    from pathlib import Path

    from tests.support.slow_clients import holds_one_connection_and_closes_it_when_idle

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PARLEY_DATABASE_URL": db_url, "PARLEY_DATA_DIR": str(tmp_path / "var"), "PARLEY_RETRIEVAL_PORT": str(port),
           "PARLEY_HTTP_MAX_CONNECTIONS": "1", "PARLEY_HTTP_HEADER_TIMEOUT": "5"}
    code = "import asyncio; from parley.settings import Settings; from retrieval.app import serve; asyncio.run(serve(Settings()))"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env=env, cwd=Path(__file__).resolve().parents[2],
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with aiohttp.ClientSession() as http:
            await _eventually_ready(http, f"http://127.0.0.1:{port}/readyz")
        # When one client holds a connection and a second connects
        refusal = await holds_one_connection_and_closes_it_when_idle("127.0.0.1", port)
        # Then (checked there) the second got 503 and the idle first was closed by the service; the refusal is counted
        text = ""
        async with aiohttp.ClientSession() as http:
            for _ in range(600):  # the slot frees as soon as the service sees the idle connection go
                try:
                    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                        if response.status == 200:
                            text = await response.text()
                            break
                except aiohttp.ClientConnectionError:  # refused while the slot was still taken
                    pass
                await asyncio.sleep(0.05)
        assert b"Retry-After" in refusal
        refused = re.search(r"^parley_http_connections_refused_total (\S+)$", text, re.M)
        assert refused is not None and float(refused.group(1)) >= 1, text[-2000:]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await proc.communicate()
