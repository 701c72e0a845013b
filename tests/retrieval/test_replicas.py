"""Several retrieval replicas behind one client: rendezvous hashing, failover order, down and back.

The replicas here are small local HTTP servers speaking the retrieval service's protocol
(``POST /v1/query``, ``GET /readyz``) and told how to behave: answer, fail with a status, hang,
or be gone. The client under test is the real `ReplicatedRetrievalClient` over real sockets.
(tests/retrieval/test_replica_processes.py runs the real retrieval processes.)
"""

from __future__ import annotations

import asyncio
import collections
import statistics
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry, generate_latest

from parley.errors import Forbidden, NotFound, Unavailable
from parley.settings import Settings
from retrieval.client import HttpRetrievalClient
from retrieval.replicas import ReplicatedRetrievalClient, rendezvous_order, retrieval_client
from retrieval.schemas import QueryRequest, QueryResponse

TENANTS = [f"t{i:04d}" for i in range(2000)]


# --- the hashing ---------------------------------------------------------------------------------


def test_a_tenants_order_is_stable_and_independent_of_the_list_order() -> None:
    replicas = ["http://a:8081", "http://b:8081", "http://c:8081"]
    for tenant in TENANTS[:50]:
        order = rendezvous_order(tenant, replicas)
        assert sorted(order) == sorted(replicas)
        assert rendezvous_order(tenant, list(reversed(replicas))) == order  # every gateway agrees
        assert rendezvous_order(tenant, replicas) == order


def test_tenants_spread_evenly_over_the_replicas() -> None:
    replicas = [f"http://10.0.0.{i}:8081" for i in range(1, 5)]
    firsts = collections.Counter(rendezvous_order(t, replicas)[0] for t in TENANTS)
    assert set(firsts) == set(replicas)
    expected = len(TENANTS) / len(replicas)
    # 2,000 tenants over 4: a binomial spread, sd ~19; within 15% of the mean is > 7 sd
    assert all(abs(n - expected) < 0.15 * expected for n in firsts.values()), firsts
    # and a failed replica's tenants spread over the others, not onto one
    seconds = collections.Counter(rendezvous_order(t, replicas)[1] for t in TENANTS
                                  if rendezvous_order(t, replicas)[0] == replicas[0])
    assert len(seconds) == 3 and statistics.pstdev(seconds.values()) < 0.2 * statistics.mean(seconds.values()), seconds


def test_adding_or_removing_a_replica_moves_only_the_tenants_it_takes_or_held() -> None:
    three = ["http://a:8081", "http://b:8081", "http://c:8081"]
    four = [*three, "http://d:8081"]
    before = {t: rendezvous_order(t, three)[0] for t in TENANTS}
    after = {t: rendezvous_order(t, four)[0] for t in TENANTS}
    moved = [t for t in TENANTS if before[t] != after[t]]
    assert all(after[t] == "http://d:8081" for t in moved)  # only onto the new replica
    assert 0.18 < len(moved) / len(TENANTS) < 0.32  # about 1/4
    # removing one moves only its own tenants
    two = ["http://a:8081", "http://c:8081"]
    for t in TENANTS:
        if before[t] != "http://b:8081":
            assert rendezvous_order(t, two)[0] == before[t]


def test_one_url_is_the_plain_client_and_several_the_replicated_one() -> None:
    assert Settings(retrieval_port=9001).effective_retrieval_urls == ["http://127.0.0.1:9001"]
    assert Settings(retrieval_port=9001, retrieval_replicas=3).effective_retrieval_urls == [
        "http://127.0.0.1:9001", "http://127.0.0.1:9002", "http://127.0.0.1:9003"]
    assert Settings(retrieval_urls=" http://a:1/, http://b:2 ,http://a:1").effective_retrieval_urls == ["http://a:1", "http://b:2"]
    assert isinstance(retrieval_client(["http://a:1"], token="t", timeout=5), HttpRetrievalClient)
    assert isinstance(retrieval_client(["http://a:1", "http://b:2"], token="t", timeout=5), ReplicatedRetrievalClient)
    with pytest.raises(ValueError, match="not an http:// or https:// URL"):
        Settings(retrieval_urls="http://a:1,b:2")


# --- stand-in replicas over real sockets ---------------------------------------------------------


class StandIn:
    """A replica that answers ``mode``: "ok", an HTTP status (500, 404, 403), "hang", or "ready-503"
    (answers queries but /readyz says not ready). Counts the questions it got."""

    def __init__(self, name: str) -> None:
        self.name, self.mode, self.ready, self.asked, self.url = name, "ok", True, 0, ""
        app = web.Application()
        app.router.add_post("/v1/query", self._query)
        app.router.add_get("/readyz", self._readyz)
        self.server = TestServer(app)

    async def start(self) -> None:
        await self.server.start_server()
        self.url = str(self.server.make_url("")).rstrip("/")

    async def _query(self, request: web.Request) -> web.Response:
        self.asked += 1
        assert request.headers["Authorization"] == "Bearer secret"
        if self.mode == "hang":
            await asyncio.sleep(30)
        if isinstance(self.mode, int):
            return web.json_response({"error": "oops", "detail": f"{self.name} says {self.mode}"}, status=self.mode)
        body = QueryResponse(answer=f"from {self.name}", standalone_question="q", timings={}, found=True)
        return web.Response(body=body.model_dump_json(), content_type="application/json")

    async def _readyz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ready" if self.ready else "not_ready"}, status=200 if self.ready else 503)


@pytest.fixture
async def stand_ins() -> AsyncIterator[list[StandIn]]:
    replicas = [StandIn(n) for n in ("a", "b", "c")]
    for r in replicas:
        await r.start()
    yield replicas
    for r in replicas:
        await r.server.close()


def _client(replicas: list[StandIn], registry: CollectorRegistry | None = None, **kw: float) -> ReplicatedRetrievalClient:
    options = {"timeout": 10.0, "try_timeout": 0.5, "probe_interval": 0.05, "max_probe_interval": 0.2, **kw}
    return ReplicatedRetrievalClient([r.url for r in replicas], token="secret", registry=registry or CollectorRegistry(),
                                     **options)


def _ask(tenant: str) -> QueryRequest:
    return QueryRequest(tenant_id=tenant, message="Do you ship to Canada?")


async def test_a_tenant_is_answered_by_its_first_replica_then_the_next_in_its_order(stand_ins: list[StandIn]) -> None:
    # Given three replicas and a tenant's preference order
    registry = CollectorRegistry()
    client = _client(stand_ins, registry)
    by_url = {r.url: r for r in stand_ins}
    try:
        first, second, third = (by_url[u] for u in client.order("acme"))
        assert (await client.query(_ask("acme"))).answer == f"from {first.name}"
        # When its first replica fails (500) and its second is gone (connection refused)
        first.mode = 500
        await second.server.close()
        # Then the question is answered by the third, once, and both failed ones are marked down
        assert (await client.query(_ask("acme"))).answer == f"from {third.name}"
        states = {s["url"]: s for s in client.states()}
        assert not states[first.url]["up"] and "500" in states[first.url]["reason"]
        assert not states[second.url]["up"]
        # and the next question goes straight to the third (the down ones are skipped)
        asked = first.asked
        assert (await client.query(_ask("acme"))).answer == f"from {third.name}"
        assert first.asked == asked
        metrics = generate_latest(registry).decode()
        assert f'parley_gateway_retrieval_tries_total{{outcome="failed",replica="{first.url}"}} 1.0' in metrics
        assert "parley_gateway_retrieval_failovers_total 2.0" in metrics
    finally:
        await client.aclose()


async def test_a_slow_replica_fails_over_after_the_try_timeout(stand_ins: list[StandIn]) -> None:
    client = _client(stand_ins, try_timeout=0.3)
    by_url = {r.url: r for r in stand_ins}
    try:
        first, second, _ = (by_url[u] for u in client.order("slowco"))
        first.mode = "hang"
        response = await asyncio.wait_for(client.query(_ask("slowco")), 5)
        assert response.answer == f"from {second.name}"
        assert "no answer within 0.3 s" in {s["url"]: s for s in client.states()}[first.url]["reason"]
    finally:
        await client.aclose()


async def test_refusals_every_replica_would_repeat_are_not_retried_elsewhere(stand_ins: list[StandIn]) -> None:
    client = _client(stand_ins)
    by_url = {r.url: r for r in stand_ins}
    try:
        first, second, _ = (by_url[u] for u in client.order("gone"))
        for status, error in ((404, NotFound), (403, Forbidden)):
            first.mode = status
            with pytest.raises(error):
                await client.query(_ask("gone"))
        assert second.asked == 0 and all(s["up"] for s in client.states())
    finally:
        await client.aclose()


async def test_a_replica_that_comes_back_is_noticed_and_gets_its_tenants_again(stand_ins: list[StandIn]) -> None:
    client = _client(stand_ins)
    by_url = {r.url: r for r in stand_ins}
    try:
        first, second, _ = (by_url[u] for u in client.order("acme"))
        # Given its first replica failing and not ready
        first.mode, first.ready = 500, False
        assert (await client.query(_ask("acme"))).answer == f"from {second.name}"
        await asyncio.sleep(0.5)  # several probes: each answered 503, the back-off grows
        assert not {s["url"]: s for s in client.states()}[first.url]["up"]
        assert "/readyz answered 503" in {s["url"]: s for s in client.states()}[first.url]["reason"]
        # When it recovers
        first.mode, first.ready = "ok", True
        for _ in range(100):
            if {s["url"]: s for s in client.states()}[first.url]["up"]:
                break
            await asyncio.sleep(0.05)
        # Then it is marked up by the probe and answers its tenant again
        assert {s["url"]: s for s in client.states()}[first.url]["up"]
        assert (await client.query(_ask("acme"))).answer == f"from {first.name}"
    finally:
        await client.aclose()


async def test_every_replica_down_is_unavailable_at_once_and_says_why(stand_ins: list[StandIn]) -> None:
    client = _client(stand_ins, probe_interval=60.0, max_probe_interval=60.0)
    try:
        for r in stand_ins:
            r.mode = 503
        with pytest.raises(Unavailable, match="no retrieval replica answered") as first:
            await client.query(_ask("acme"))
        assert first.value.retryable
        asked = sum(r.asked for r in stand_ins)
        assert asked == 3
        with pytest.raises(Unavailable, match="every retrieval replica is down"):
            await client.query(_ask("acme"))
        assert sum(r.asked for r in stand_ins) == asked  # nothing was asked: all were down
    finally:
        await client.aclose()


# --- `parley up --retrieval-replicas N` -------------------------------------------------------------


def test_up_with_two_replicas_starts_two_retrieval_processes_and_points_the_gateway_at_both() -> None:
    from cli.supervisor import platform_processes

    specs = {s.name: s for s in platform_processes(Settings(retrieval_port=8081, retrieval_replicas=2, log_json=False))}
    assert [n for n in specs if n.startswith("retrieval")] == ["retrieval-1", "retrieval-2"]
    assert specs["retrieval-1"].env["PARLEY_RETRIEVAL_PORT"] == "8081" and specs["retrieval-2"].env["PARLEY_RETRIEVAL_PORT"] == "8082"
    assert specs["gateway"].env["PARLEY_RETRIEVAL_URLS"] == "http://127.0.0.1:8081,http://127.0.0.1:8082"
    # the workers' metrics ports move past the replicas' (8082 is taken by retrieval-2)
    assert specs["documents-worker"].env["PARLEY_WORKER_METRICS_PORT"] == "8083"
    # and one replica is the platform of old: one "retrieval", no list for the gateway
    single = {s.name: s for s in platform_processes(Settings(log_json=False))}
    assert "retrieval" in single and "PARLEY_RETRIEVAL_URLS" not in single["gateway"].env
    assert single["documents-worker"].env["PARLEY_WORKER_METRICS_PORT"] == "8082"
