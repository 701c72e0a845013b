"""The reader holds tenants within a budget: least recently used out, reloaded on demand, nothing lost.

Readers here are real `EmbeddedVectorIndex` instances on real databases (SQLite and PostgreSQL,
``db_url``) with snapshots on disk; items are synthetic (seeded random unit vectors, short texts).
The budget is tiny (a tenant cap of one or two, or a byte budget of about one tenant) so a handful of
tenants exercise it. The last test goes through the real retrieval service and its ``/metrics``.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.db import create_engine, create_sessionmaker
from parley.keyed_locks import KeyedLocks
from parley.vectors import EmbeddedVectorIndex, create_vector_index
from retrieval.schemas import QueryRequest
from tests.parley.test_vectors_support import make_items, new_tenant, settings_for
from tests.retrieval.support import add_document, create_tenant, make_config, running_app, service_headers


@pytest.fixture
async def vsessions(db_url: str, tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings_for(db_url, tmp_path), "test")
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def vwriter(vsessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[EmbeddedVectorIndex]:
    index = EmbeddedVectorIndex(vsessions, role="writer")
    yield index
    await index.aclose()


@pytest.fixture
async def reader(vsessions: async_sessionmaker[AsyncSession], tmp_path: Path) -> AsyncIterator[Callable[..., EmbeddedVectorIndex]]:
    made: list[EmbeddedVectorIndex] = []

    def make(**options: Any) -> EmbeddedVectorIndex:
        options.setdefault("data_dir", tmp_path / "var" / "vectors")
        options.setdefault("refresh_interval", 0)
        made.append(EmbeddedVectorIndex(vsessions, role="reader", **options))
        return made[-1]

    yield make
    for index in made:
        await index.aclose()


async def seeded_tenants(writer: EmbeddedVectorIndex, names: list[str], n: int = 20) -> dict[str, tuple[str, list]]:
    """name -> (tenant id, its items): one document per tenant, its own rare word."""
    out = {}
    for seed, name in enumerate(names):
        tenant = new_tenant()
        items = make_items(tenant, f"guide-{name}", n, seed=seed + 1, words=f"word{name}")
        await writer.upsert(tenant, items)
        out[name] = (tenant, items)
    return out


async def nearest(index: EmbeddedVectorIndex, tenant: str, items: list) -> str:
    return (await index.vector_search(tenant, items[3].vector, 1))[0].id


async def test_querying_a_b_c_in_turn_releases_the_least_recently_used(vwriter, reader) -> None:
    # Given three tenants and a reader that may hold two
    t = await seeded_tenants(vwriter, ["a", "b", "c"])
    index = reader(max_tenants=2)
    # When A, B, then A again and C are queried
    for name in ["a", "b", "a", "c"]:
        tenant, items = t[name]
        assert await nearest(index, tenant, items) == items[3].id
    # Then B (least recently used: A was asked after it) was released, A and C are held
    assert index.resident() == [t["a"][0], t["c"][0]]
    assert index.stats(t["b"][0]) is None
    stats = index.residency_stats()
    assert (stats["loads"], stats["evictions"], stats["resident_tenants"]) == (3, 1, 2)


async def test_a_byte_budget_releases_tenants_and_frees_their_objects(vwriter, reader) -> None:
    # Given two tenants and a budget of about one tenant's estimated size
    t = await seeded_tenants(vwriter, ["a", "b"], n=40)
    probe = reader(data_dir=None)
    await probe.warm([t["a"][0]])
    one = probe.residency_stats()["estimated_bytes"]
    await probe.aclose()
    index = reader(memory_budget_bytes=int(one * 1.5))
    await nearest(index, *t["a"])
    held = weakref.ref(index._tenants[t["a"][0]])
    # When B is queried
    await nearest(index, *t["b"])
    # Then A is released and its objects are gone (nothing keeps them alive), and the total fits
    gc.collect()
    assert held() is None
    assert index.resident() == [t["b"][0]]
    assert index.residency_stats()["estimated_bytes"] <= int(one * 1.5)
    assert len(index._locks) == 0  # no lock left behind per tenant


async def test_a_released_tenant_answers_the_same_after_its_reload_from_the_snapshot(vwriter, reader) -> None:
    # Given a tenant's answers while resident
    t = await seeded_tenants(vwriter, ["a", "b"])
    index = reader(max_tenants=1)
    tenant, items = t["a"]
    before_vec = [h.id for h in await index.vector_search(tenant, items[5].vector, 5)]
    before_kw = sorted(h.id for h in await index.keyword_search(tenant, "worda", 50))
    # When it is released (another tenant is queried) and asked again
    await nearest(index, *t["b"])
    assert index.stats(tenant) is None
    after_vec = [h.id for h in await index.vector_search(tenant, items[5].vector, 5)]
    after_kw = sorted(h.id for h in await index.keyword_search(tenant, "worda", 50))
    # Then it answers exactly as before, loaded from its snapshot
    assert after_vec == before_vec and after_vec[0] == items[5].id
    assert after_kw == before_kw and len(after_kw) == len(items)
    assert index.stats(tenant)["origin"] == "snapshot"


async def test_a_write_for_a_released_tenant_is_found_after_its_reload(vwriter, reader) -> None:
    # Given a tenant that was loaded and then released
    t = await seeded_tenants(vwriter, ["a", "b"])
    index = reader(max_tenants=1)
    tenant, items = t["a"]
    await nearest(index, tenant, items)
    await nearest(index, *t["b"])
    assert index.stats(tenant) is None
    # When a worker indexes a new document for it while it is out of memory
    fresh = make_items(tenant, "late", 3, seed=99, words="zeppelin")
    await vwriter.upsert(tenant, fresh)
    # Then its next query reloads it (snapshot + change feed) and finds the new chunks, and the old ones
    found = {h.id for h in await index.keyword_search(tenant, "zeppelin", 10)}
    assert found == {i.id for i in fresh}
    assert (await index.vector_search(tenant, fresh[1].vector, 1))[0].id == fresh[1].id
    assert index.stats(tenant)["count"] == len(items) + len(fresh)


async def test_concurrent_first_queries_of_a_cold_tenant_load_it_once(vwriter, reader) -> None:
    # Given a cold tenant
    t = await seeded_tenants(vwriter, ["a"])
    index = reader(max_tenants=2)
    tenant, items = t["a"]
    # When ten queries for it arrive at once
    results = await asyncio.gather(*(index.vector_search(tenant, items[i].vector, 1) for i in range(10)))
    # Then every one is answered and the tenant was loaded once
    assert [r[0].id for r in results] == [items[i].id for i in range(10)]
    assert index.residency_stats()["loads"] == 1


async def test_a_tenant_with_a_query_in_flight_is_not_released(vwriter, reader) -> None:
    # Given a reader that may hold one tenant, whose one search thread is busy
    t = await seeded_tenants(vwriter, ["a", "b", "c"])
    index = reader(max_tenants=1, search_threads=1)
    tenant_a, items_a = t["a"]
    await nearest(index, tenant_a, items_a)  # A resident (and the pools started)
    gate = threading.Event()
    blocker = asyncio.get_running_loop().run_in_executor(index._search_pool, gate.wait, 30)
    # When a query for A is in flight (waiting for the search thread) and B is then loaded
    query_a = asyncio.create_task(index.vector_search(tenant_a, items_a[7].vector, 1))
    query_b = asyncio.create_task(index.vector_search(t["b"][0], t["b"][1][2].vector, 1))
    deadline = asyncio.get_running_loop().time() + 30
    while t["b"][0] not in index.resident():
        assert asyncio.get_running_loop().time() < deadline, "B was never loaded"
        await asyncio.sleep(0.01)
    # Then A is still held (over the cap) while its query runs
    assert tenant_a in index.resident()
    gate.set()
    await blocker
    assert (await query_a)[0].id == items_a[7].id
    assert (await query_b)[0].id == t["b"][1][2].id
    # and once idle, the next load makes room again: the least recently used go
    await nearest(index, *t["c"])
    assert index.resident() == [t["c"][0]]


async def test_keyed_locks_exclude_per_key_and_keep_only_keys_in_use() -> None:
    # Given keyed locks and many keys used over time
    locks: KeyedLocks[str] = KeyedLocks()
    inside: dict[str, int] = {}
    most: dict[str, int] = {}

    async def work(key: str) -> None:
        async with locks.hold(key):
            inside[key] = inside.get(key, 0) + 1
            most[key] = max(most.get(key, 0), inside[key])
            await asyncio.sleep(0)
            inside[key] -= 1

    # When 3 tasks each use 200 keys concurrently
    await asyncio.gather(*(work(f"tenant-{i}") for i in range(200) for _ in range(3)))
    # Then no key ever had two holders, and no lock is left behind
    assert set(most.values()) == {1}
    assert len(locks) == 0 and not locks.in_use("tenant-1")


async def test_the_service_reports_residency_on_metrics_and_answers_after_a_reload(rsettings, sessions, writer, emb, local_embedder) -> None:
    # Given two tenants with a document each and a service that holds one tenant at a time
    a = await create_tenant(sessions, "residency-a", "A")
    b = await create_tenant(sessions, "residency-b", "B")
    await add_document(sessions, writer, emb, a, "returns.md", "# Returns\nYou can return any item within 30 days for a refund.")
    await add_document(sessions, writer, emb, b, "shipping.md", "# Shipping\nOrders ship within two business days.")
    options = {"refresh_interval": 0, "max_tenants": 1}
    config = make_config(answer_cache_size=0)  # every answer is searched for, none replayed
    async with running_app(rsettings, embedder=local_embedder, config=config, vector_options=options) as (server, client):
        # When A, B and A again are asked
        question = QueryRequest(tenant_id=a.tenant_id, message="How long do I have to return an item?")
        first = await client.query(question)
        await client.query(QueryRequest(tenant_id=b.tenant_id, message="When do orders ship?"))
        again = await client.query(question)
        async with aiohttp.ClientSession() as http:
            async with http.get(server.make_url("/metrics"), headers=service_headers(rsettings)) as response:
                metrics = await response.text()
    # Then A answers from its document after its reload, and the figures say what happened
    assert first.found and again.found and not again.cached and again.citations[0].title == "returns.md"
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in metrics.splitlines() if line and not line.startswith("#")}
    assert values["parley_retrieval_tenant_loads_total"] == 3
    assert values["parley_retrieval_tenant_evictions_total"] == 2
    assert values["parley_retrieval_resident_tenants"] == 1
    assert values["parley_retrieval_resident_bytes"] > 0
    assert values["parley_retrieval_tenant_load_seconds_count"] == 3


def test_the_reader_gets_its_budget_from_settings(tmp_path: Path) -> None:
    # Given settings with a budget and a cap, When the reader is built by the factory
    from parley.settings import Settings

    settings = Settings(data_dir=tmp_path, retrieval_memory_budget_mb=64, retrieval_max_tenants=300)
    index = create_vector_index(settings, role="reader", sessions=object())  # type: ignore[arg-type]
    # Then it holds tenants within them, and the default is the documented 8 GiB
    assert (index.residency.budget_bytes, index.residency.max_tenants) == (64 * 1024 * 1024, 300)
    assert Settings(data_dir=tmp_path).retrieval_memory_budget_mb == 8192
