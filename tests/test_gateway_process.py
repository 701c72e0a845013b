"""`parley gateway` as `parley up`, the supervisor and docker compose start it: on PostgreSQL its
webhook acks have a connection pool of their own, apart from its background work (the outbox relay,
the notifications consumer) and from its main pool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import asyncpg
import pytest

from tests.support import services
from tests.support.waiting import eventually
from tests.test_cli import parley
from tests.test_up import free_ports

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


async def _pools(database: str) -> dict[str, int]:
    """application_name -> connections open to `database` (pg_stat_activity)."""
    connection = await asyncpg.connect(services.pg_url(database).replace("postgresql+asyncpg", "postgresql"))
    try:
        rows = await connection.fetch(
            "SELECT application_name, count(*) AS n FROM pg_stat_activity WHERE datname = $1 GROUP BY 1", database)
    finally:
        await connection.close()
    return {r["application_name"]: r["n"] for r in rows}


def _post(url: str, body: dict[str, object], key: str) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


async def test_a_gateway_started_by_the_cli_acks_on_its_own_pool(tmp_path: Path, pg_database: str) -> None:
    # Given a migrated PostgreSQL database with a tenant and an API key, made with the CLI
    database = await services.create_pg_database("parley_gwpool")
    try:
        port, retrieval_port = free_ports(2)
        env = {"PARLEY_DATABASE_URL": services.pg_url(database), "PARLEY_GATEWAY_PORT": str(port),
               "PARLEY_AMQP_PREFIX": f"gwpool-{uuid.uuid4().hex[:8]}.",
               "PARLEY_RETRIEVAL_URL": f"http://127.0.0.1:{retrieval_port}",  # nothing listens: answers fail fast
               "PARLEY_LOG_JSON": "false"}
        assert parley(tmp_path, "migrate", env=env).returncode == 0
        assert parley(tmp_path, "tenants", "create", "acme", env=env).returncode == 0
        created = parley(tmp_path, "--json", "keys", "create", "--tenant", "acme", env=env)
        assert created.returncode == 0, created.stderr
        key = json.loads(created.stdout)["key"]
        # When `parley gateway` runs and a web chat message arrives (stored through the ack path)
        full = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
        full.update(PARLEY_DATA_DIR=str(tmp_path / "var"), **env)
        log = (tmp_path / "gateway.log").open("w")
        process = subprocess.Popen([sys.executable, "-m", "cli", "gateway"], env=full, cwd=tmp_path, stdout=log, stderr=log)
        try:
            def healthy() -> bool:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                        return response.status == 200
                except OSError:
                    assert process.poll() is None, (tmp_path / "gateway.log").read_text()
                    return False

            await eventually(healthy, timeout=60)
            status, body = _post(f"http://127.0.0.1:{port}/api/chat", {"message": "where is my order?"}, key)
            # (stored and acknowledged; the answer fails for want of a retrieval service, and says so)
            assert status == 503 and body["error"] == "unavailable", body
            # Then the message was stored on the ack pool, and the relay works on the background pool:
            # three pools, each named after its role
            async def separate() -> bool:
                pools = await _pools(database)
                return all(pools.get(f"parley-{name}", 0) >= 1 for name in ("gateway-ack", "gateway-background"))

            await eventually(separate, timeout=30)
            pools = await _pools(database)
            assert pools.get("parley-gateway", 0) >= 1, pools  # the main pool answered the API key check
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
        assert process.returncode == 0, (tmp_path / "gateway.log").read_text()[-3000:]
    finally:
        time.sleep(0.2)
        await services.drop_pg_database(database)
