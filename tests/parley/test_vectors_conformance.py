"""One conformance suite for every vector index backend.

The embedded backend runs on real SQLite and real PostgreSQL; Weaviate runs when
PARLEY_WEAVIATE_URL points at a server (http://host:8080; gRPC on port 50051 of the same host unless
PARLEY_WEAVIATE_GRPC_URL says otherwise, PARLEY_WEAVIATE_API_KEY for a server with keys).
Every test uses fresh random tenant ids, so a shared Weaviate server is never confused by another
run; the Weaviate tenants are deleted afterwards.

The last tests cover what a server does differently from the embedded index: batches past the
client's 200 objects per call, deletes past the server's 10,000 objects per call, two processes
starting on a fresh collection at once, a tenant deactivated on the server, and BM25 without
stemming (a known difference: the embedded index stems, Weaviate does not).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from parley.db import create_engine, create_sessionmaker
from parley.errors import InvalidInput, TenantScopeError
from parley.settings import Settings
from parley.vectors import EmbeddedVectorIndex, VectorIndex
from tests.parley.test_vectors_support import make_items, new_tenant, random_unit, settings_for, unit

WEAVIATE_URL = os.environ.get("PARLEY_WEAVIATE_URL")


def test_weaviate_leg_is_configured() -> None:
    """The one visible reminder that the Weaviate leg exists (instead of a skip per test)."""
    if not WEAVIATE_URL:
        pytest.skip("no Weaviate server: set PARLEY_WEAVIATE_URL=http://host:8080 to run this suite against it")


def weaviate_index(collection: str | None = None) -> VectorIndex:
    """The index as a process builds it: PARLEY_WEAVIATE_* from the environment."""
    from parley.vectors import WeaviateVectorIndex

    settings = Settings(vector_backend="weaviate", weaviate_url=WEAVIATE_URL)
    if collection:
        settings = settings.model_copy(update={"weaviate_collection": collection})
    return WeaviateVectorIndex.from_settings(settings)


@pytest.fixture(params=["embedded", "weaviate"] if WEAVIATE_URL else ["embedded"])
def backend(request: pytest.FixtureRequest, db_backend: str) -> tuple[str, str | None]:
    """(backend, database url): decided before any database is made for a leg that would skip."""
    if request.param == "weaviate":
        if db_backend != "sqlite":
            pytest.skip("the Weaviate backend does not use the metadata store; it runs once, in the sqlite leg")
        return "weaviate", None
    return "embedded", request.getfixturevalue("db_url")


@pytest.fixture
async def index(backend: tuple[str, str | None], tmp_path: Path) -> AsyncIterator[VectorIndex]:
    kind, url = backend
    if kind == "weaviate":
        idx: VectorIndex = weaviate_index()
        yield idx
        await idx.aclose()
        return
    assert url is not None
    engine = create_engine(settings_for(url, tmp_path), "test")
    idx = EmbeddedVectorIndex(create_sessionmaker(engine), role="reader", data_dir=tmp_path / "vectors")
    yield idx
    await idx.aclose()
    await engine.dispose()


@pytest.fixture
async def tenant(index: VectorIndex) -> AsyncIterator[Callable[[], str]]:
    """A factory of fresh tenant ids, each deleted from the index afterwards."""
    made: list[str] = []

    def make() -> str:
        made.append(new_tenant())
        return made[-1]

    yield make
    for tenant_id in made:
        await index.delete_tenant(tenant_id)


def ids(hits: list) -> list[str]:
    return [hit.id for hit in hits]


async def test_an_empty_tenant_finds_nothing(index: VectorIndex, tenant: Callable[[], str]) -> None:
    never_written, ensured = tenant(), tenant()
    await index.ensure_tenant(ensured)
    for tenant_id in (never_written, ensured):
        assert await index.vector_search(tenant_id, random_unit(np.random.default_rng(1)), 5) == []
        assert await index.keyword_search(tenant_id, "shipping returns", 5) == []
        assert await index.count(tenant_id) == 0
        assert await index.delete_document(tenant_id, "nothing") == 0


async def test_upsert_is_idempotent(index: VectorIndex, tenant: Callable[[], str]) -> None:
    t = tenant()
    items = make_items(t, "doc-a", 6)
    # Given the same items written twice (a redelivered job)
    await index.upsert(t, items)
    await index.upsert(t, items)
    # Then they are stored once
    assert await index.count(t) == 6
    hits = await index.vector_search(t, items[0].vector, 10)
    assert len(hits) == 6 and len(set(ids(hits))) == 6
    keyword = await index.keyword_search(t, "shipping", 10)
    assert sorted(ids(keyword)) == sorted(item.id for item in items)


async def test_upsert_overwrites_an_id_with_new_content(index: VectorIndex, tenant: Callable[[], str]) -> None:
    t = tenant()
    old = make_items(t, "doc-a", 3, words="aardvark")
    await index.upsert(t, old)
    new = make_items(t, "doc-a", 3, seed=7, words="pangolin")
    await index.upsert(t, new)
    assert await index.count(t) == 3
    assert await index.keyword_search(t, "aardvark", 10) == []
    assert sorted(ids(await index.keyword_search(t, "pangolin", 10))) == sorted(i.id for i in new)
    top = await index.vector_search(t, new[1].vector, 1)
    assert top[0].id == new[1].id and top[0].score == pytest.approx(1.0, abs=1e-3)


async def test_replace_document_swaps_old_chunks_for_new(index: VectorIndex, tenant: Callable[[], str]) -> None:
    t = tenant()
    old = make_items(t, "manual", 5, words="version one")
    other = make_items(t, "faq", 2, seed=3)
    await index.upsert(t, old + other)
    # When the manual is uploaded again, shorter and reworded
    new = make_items(t, "manual", 3, seed=11, words="revised edition")
    await index.replace_document(t, "manual", new)
    # Then exactly the new chunks and the untouched document remain
    assert await index.count(t) == 5
    everything = await index.vector_search(t, new[0].vector, 50)
    assert sorted(ids(everything)) == sorted(i.id for i in new + other)
    assert await index.keyword_search(t, "version", 10) == []
    assert sorted(ids(await index.keyword_search(t, "revised", 10))) == sorted(i.id for i in new)
    # And replacing with nothing empties the document
    await index.replace_document(t, "manual", [])
    assert await index.count(t) == 2


async def test_delete_document(index: VectorIndex, tenant: Callable[[], str]) -> None:
    t = tenant()
    doomed, kept = make_items(t, "doomed", 4, words="walrus"), make_items(t, "kept", 3, seed=5)
    await index.upsert(t, doomed + kept)
    assert await index.delete_document(t, "doomed") == 4
    assert await index.count(t) == 3
    assert await index.keyword_search(t, "walrus", 10) == []
    assert sorted(ids(await index.vector_search(t, doomed[0].vector, 10))) == sorted(i.id for i in kept)
    assert await index.delete_document(t, "doomed") == 0


async def test_tenants_never_see_each_other(index: VectorIndex, tenant: Callable[[], str]) -> None:
    a, b = tenant(), tenant()
    # Given two tenants with near-identical content (same vectors and texts, their own ids)
    items_a = make_items(a, "handbook", 5, seed=1, words="common words")
    items_b = make_items(b, "handbook", 5, seed=1, words="common words")
    items_b += make_items(b, "secret", 1, seed=2, words="zeppelin")
    await index.upsert(a, items_a)
    await index.upsert(b, items_b)
    # Then each one's searches return only its own entries
    for tenant_id, own in ((a, items_a), (b, items_b)):
        own_ids = {i.id for i in own}
        assert set(ids(await index.vector_search(tenant_id, items_a[0].vector, 20))) <= own_ids
        assert set(ids(await index.keyword_search(tenant_id, "common words handbook", 20))) <= own_ids
    assert await index.keyword_search(a, "zeppelin", 10) == []
    nearest_in_a = await index.vector_search(a, items_b[-1].vector, 1)
    assert len(nearest_in_a) == 1 and nearest_in_a[0].id in {i.id for i in items_a}
    # And deleting one tenant's document leaves the other's alone
    assert await index.delete_document(a, "handbook") == 5
    assert await index.count(b) == 6


async def test_bm25_ranks_the_rare_term_first(index: VectorIndex, tenant: Callable[[], str]) -> None:
    t = tenant()
    common = make_items(t, "common", 12, words="delivery delivery times and costs")
    rare = make_items(t, "rare", 1, seed=9, words="delivery by hovercraft")
    await index.upsert(t, common + rare)
    hits = await index.keyword_search(t, "Delivery by HOVERCRAFT?", 5)
    assert hits[0].id == rare[0].id
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


async def test_vector_search_ranks_the_nearest_first(index: VectorIndex, tenant: Callable[[], str]) -> None:
    t = tenant()
    items = make_items(t, "doc", 40, seed=4)
    await index.upsert(t, items)
    rng = np.random.default_rng(99)
    for target in (items[3], items[17], items[39]):
        query = unit(target.vector + 0.05 * rng.standard_normal(target.vector.shape[0]))
        hits = await index.vector_search(t, query, 5)
        assert hits[0].id == target.id
        assert hits[0].score == pytest.approx(float(query @ target.vector), abs=1e-3)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


async def test_hits_carry_the_payload(index: VectorIndex, tenant: Callable[[], str]) -> None:
    t = tenant()
    item = make_items(t, "prod-1", 1, kind="product", words="ceramic teapot")[0]
    await index.upsert(t, [item])
    for hit in (await index.vector_search(t, item.vector, 1))[0], (await index.keyword_search(t, "teapot", 1))[0]:
        assert (hit.id, hit.document_id, hit.kind, hit.title, hit.text) == (
            item.id, item.document_id, "product", item.title, item.text,
        )
        assert hit.heading_path == item.heading_path and hit.metadata == item.metadata


async def test_delete_tenant(index: VectorIndex, tenant: Callable[[], str]) -> None:
    t, other = tenant(), tenant()
    items = make_items(t, "doc", 5, words="narwhal")
    await index.upsert(t, items)
    await index.upsert(other, make_items(other, "doc", 2, words="narwhal"))
    await index.delete_tenant(t)
    assert await index.count(t) == 0
    assert await index.vector_search(t, items[0].vector, 5) == []
    assert await index.keyword_search(t, "narwhal", 5) == []
    assert await index.count(other) == 2
    # And the tenant can start over
    await index.upsert(t, items[:1])
    assert ids(await index.vector_search(t, items[0].vector, 5)) == [items[0].id]


async def test_every_method_needs_a_tenant(index: VectorIndex) -> None:
    vector = random_unit(np.random.default_rng(0))
    calls = [
        index.ensure_tenant(""), index.upsert("", []), index.replace_document("", "d", []),
        index.delete_document("", "d"), index.delete_tenant(""), index.vector_search("", vector, 3),
        index.keyword_search("", "x", 3), index.count(""),
    ]
    for call in calls:
        with pytest.raises(TenantScopeError):
            await call
    with pytest.raises(InvalidInput):
        await index.count("../etc")


# --- what a server does differently -----------------------------------------------------------


def weaviate_only(backend: tuple[str, str | None], why: str) -> None:
    if backend[0] != "weaviate":
        pytest.skip(f"a Weaviate server behaviour: {why}")


@contextlib.asynccontextmanager
async def raw_weaviate() -> AsyncIterator[object]:
    """A plain client on the same server, for what no Parley call does (deactivating a tenant, dropping a collection)."""
    import weaviate
    from weaviate.classes.init import Auth

    from parley.vectors.weaviate_index import endpoints

    settings = Settings(vector_backend="weaviate", weaviate_url=WEAVIATE_URL)
    http, grpc = endpoints(settings.weaviate_url or "", settings.weaviate_grpc_url)
    key = settings.weaviate_api_key.get_secret_value() if settings.weaviate_api_key else None
    client = weaviate.use_async_with_custom(
        http_host=http.host, http_port=http.port, http_secure=http.secure, grpc_host=grpc.host, grpc_port=grpc.port,
        grpc_secure=grpc.secure, auth_credentials=Auth.api_key(key) if key else None)
    await client.connect()
    try:
        yield client
    finally:
        await client.close()


async def test_calls_larger_than_one_batch(index: VectorIndex, tenant: Callable[[], str]) -> None:
    t = tenant()
    # Given one call with more items than the Weaviate backend sends per request (200)
    items = make_items(t, "catalog", 450, seed=12)
    await index.upsert(t, items)
    assert await index.count(t) == 450
    # Then the last batch arrived like the first, and a replace across batches keeps exactly the new set
    assert ids(await index.vector_search(t, items[-1].vector, 1)) == [items[-1].id]
    shorter = make_items(t, "catalog", 230, seed=13, version="v2")
    await index.replace_document(t, "catalog", shorter)
    assert await index.count(t) == 230
    assert ids(await index.vector_search(t, shorter[229].vector, 1)) == [shorter[229].id]


async def test_deletes_past_the_servers_per_call_limit(
    index: VectorIndex, tenant: Callable[[], str], backend: tuple[str, str | None],
) -> None:
    weaviate_only(backend, "one delete_many removes at most QUERY_MAXIMUM_RESULTS (10,000) objects")
    t = tenant()
    items = make_items(t, "huge", 10_250, seed=21, dim=8)
    await index.upsert(t, items)
    await index.upsert(t, make_items(t, "kept", 3, seed=22, dim=8))
    # When the document goes, in more than one server call
    assert await index.delete_document(t, "huge") == 10_250
    # Then nothing of it is left, and the other document is untouched
    assert await index.count(t) == 3


async def test_two_processes_starting_on_a_fresh_collection(backend: tuple[str, str | None]) -> None:
    weaviate_only(backend, "both processes try to create the collection")
    collection = "ParleyConformance" + uuid.uuid4().hex[:8]
    first, second = weaviate_index(collection), weaviate_index(collection)
    t1, t2 = new_tenant(), new_tenant()
    try:
        # When two processes write for the first time at the same moment
        await asyncio.gather(first.upsert(t1, make_items(t1, "a", 3)), second.upsert(t2, make_items(t2, "b", 4)))
        # Then neither failed: the loser of the create found the collection and went on
        assert (await first.count(t1), await second.count(t2)) == (3, 4)
    finally:
        await first.aclose()
        await second.aclose()
        async with raw_weaviate() as client:
            await client.collections.delete(collection)  # type: ignore[attr-defined]


async def test_an_inactive_tenant_is_reactivated(
    index: VectorIndex, tenant: Callable[[], str], backend: tuple[str, str | None],
) -> None:
    weaviate_only(backend, "tenants have an activity status")
    from weaviate.classes.tenants import Tenant, TenantActivityStatus

    t = tenant()
    items = make_items(t, "doc", 5, words="narwhal")
    await index.upsert(t, items)
    # Given the tenant deactivated on the server (an operator freeing memory)
    async with raw_weaviate() as client:
        collection = Settings(vector_backend="weaviate", weaviate_url=WEAVIATE_URL).weaviate_collection
        tenants = client.collections.use(collection).tenants  # type: ignore[attr-defined]
        await tenants.update(Tenant(name=t, activity_status=TenantActivityStatus.INACTIVE))
    # Then searches and writes wake it (auto activation) instead of failing
    assert ids(await index.vector_search(t, items[0].vector, 1)) == [items[0].id]
    assert len(await index.keyword_search(t, "narwhal", 10)) == 5
    await index.upsert(t, make_items(t, "doc2", 1))
    assert await index.count(t) == 6


async def test_an_inflected_keyword_query(
    index: VectorIndex, tenant: Callable[[], str], backend: tuple[str, str | None], request: pytest.FixtureRequest,
) -> None:
    if backend[0] == "weaviate":
        # Known difference (README, "From the embedded defaults ..."): Weaviate's BM25 tokenizes and drops
        # stopwords but does not stem. Strict: the day it stems, this fails and the README is updated.
        request.applymarker(pytest.mark.xfail(strict=True, reason="Weaviate's BM25 does not stem: 'return' misses 'returns'"))
    t = tenant()
    items = make_items(t, "policy", 3)  # every text says "... explains shipping and returns."
    await index.upsert(t, items)
    # The embedded index stems query and text alike: "return" finds "returns", "explained" finds "explains"
    assert sorted(ids(await index.keyword_search(t, "return", 10))) == sorted(i.id for i in items)
    assert sorted(ids(await index.keyword_search(t, "explained", 10))) == sorted(i.id for i in items)
