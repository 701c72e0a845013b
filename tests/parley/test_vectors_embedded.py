"""The embedded backend's own promises: cross-process writers, restarts, snapshots, ordering.

Writers here are real separate OS processes (a Python subprocess running the writer-role index),
readers are instances in the test process; both databases are real (SQLite in WAL mode and
PostgreSQL).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.db import bind_tenant, create_engine, create_sessionmaker, unit_of_work
from parley.errors import ConfigurationError, InvalidInput, TenantScopeError
from parley.vectors import EmbeddedVectorIndex, WeaviateVectorIndex, create_vector_index
from parley.vectors.store import VectorStore
from tests.parley.test_vectors_support import make_items, new_tenant, random_unit, settings_for

ROOT = Path(__file__).resolve().parents[2]

WRITER_SCRIPT = """
import asyncio, json, sys
from parley.db import create_engine, create_sessionmaker
from parley.settings import Settings
from parley.vectors import create_vector_index
from tests.parley.test_vectors_support import make_items

async def main(url, data_dir, tenant, ops):
    settings = Settings(database_url=url, data_dir=data_dir)
    engine = create_engine(settings, "worker")
    index = create_vector_index(settings, role="writer", sessions=create_sessionmaker(engine))
    for op, document, n, seed, words in ops:
        if op == "upsert":
            await index.upsert(tenant, make_items(tenant, document, n, seed=seed, words=words))
        elif op == "replace":
            await index.replace_document(tenant, document, make_items(tenant, document, n, seed=seed, words=words))
        elif op == "delete":
            await index.delete_document(tenant, document)
    await index.aclose()
    await engine.dispose()

asyncio.run(main(*json.loads(sys.argv[1])))
"""


async def write_in_another_process(url: str, data_dir: Path, tenant: str, ops: list[tuple[Any, ...]]) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER_SCRIPT, json.dumps([url, str(data_dir), tenant, ops]), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, f"writer process failed:\n{err.decode()}{out.decode()}"


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.fixture
async def sessions(db_url: str, tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """The process's sessionmaker, built the way processes build it (parley.db.create_engine), on the shared
    ``db_url`` (this module's own: the folder's ``sessions`` in conftest.py is the bus tests')."""
    engine = create_engine(settings_for(db_url, tmp_path), "test")
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def reader_factory(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> Callable[..., EmbeddedVectorIndex]:
    made: list[EmbeddedVectorIndex] = []

    def make(**options: Any) -> EmbeddedVectorIndex:
        options.setdefault("data_dir", tmp_path / "var" / "vectors")
        made.append(EmbeddedVectorIndex(sessions, role="reader", **options))
        return made[-1]

    return make


@pytest.fixture
async def readers(reader_factory: Callable[..., EmbeddedVectorIndex]) -> AsyncIterator[Callable[..., EmbeddedVectorIndex]]:
    made: list[EmbeddedVectorIndex] = []

    def make(**options: Any) -> EmbeddedVectorIndex:
        made.append(reader_factory(**options))
        return made[-1]

    yield make
    for reader in made:
        await reader.aclose()


async def found_ids(reader: EmbeddedVectorIndex, tenant: str, items: list, limit: int = 100) -> set[str]:
    return {hit.id for hit in await reader.vector_search(tenant, items[0].vector, limit)}


async def test_a_writer_in_another_process_is_seen_by_the_reader(db_url: str, readers, tmp_path: Path) -> None:
    t = new_tenant()
    reader = readers(refresh_interval=0.05)
    await reader.warm([t])  # loaded while the tenant is still empty
    # When a worker process writes two documents and deletes one
    await write_in_another_process(db_url, tmp_path / "worker", t, [
        ("upsert", "guide", 30, 1, "kayak"), ("upsert", "old", 5, 2, "canoe"), ("delete", "old", 0, 0, ""),
    ])
    guide = make_items(t, "guide", 30, seed=1, words="kayak")
    # Then the reader sees the result after a refresh (explicit here)
    await reader.refresh(t)
    assert await found_ids(reader, t, guide) == {i.id for i in guide}
    assert await reader.keyword_search(t, "canoe", 5) == []
    assert len(await reader.keyword_search(t, "kayak", 50)) == 30
    # And the background refresh picks up the next change on its own
    await write_in_another_process(db_url, tmp_path / "worker", t, [("replace", "guide", 4, 3, "paddle")])
    new_guide = make_items(t, "guide", 4, seed=3, words="paddle")

    async def replaced() -> bool:
        return await found_ids(reader, t, new_guide) == {i.id for i in new_guide}

    await eventually(replaced)
    assert await reader.keyword_search(t, "kayak", 5) == []
    # The writer built no index of its own
    assert not (tmp_path / "worker" / "vectors").exists()


async def test_a_restarted_reader_resumes_from_its_snapshot(db_url: str, readers, sessions) -> None:
    t = new_tenant()
    first = readers(refresh_interval=0)
    kept, doomed = make_items(t, "kept", 20, seed=1), make_items(t, "doomed", 10, seed=2, words="gondola")
    await first.upsert(t, kept + doomed)
    await first.warm([t])
    await first.aclose()  # writes the snapshot
    # While no reader runs, a worker deletes a document and adds another
    writer = EmbeddedVectorIndex(sessions, role="writer")
    assert await writer.delete_document(t, "doomed") == 10
    fresh = make_items(t, "fresh", 5, seed=3, words="zeppelin")
    await writer.upsert(t, fresh)
    # Then a new reader starts from the snapshot and replays the rest, tombstones included
    second = readers(refresh_interval=0)
    await second.warm([t])
    stats = second.stats(t)
    assert stats is not None and stats["origin"] == "snapshot" and stats["count"] == 25
    assert await found_ids(second, t, kept) == {i.id for i in kept + fresh}
    assert await second.keyword_search(t, "gondola", 5) == []
    assert {h.id for h in await second.keyword_search(t, "zeppelin", 10)} == {i.id for i in fresh}


async def test_a_snapshot_of_an_older_incarnation_is_not_reused(db_url: str, readers, sessions) -> None:
    t = new_tenant()
    first = readers(refresh_interval=0)
    old = make_items(t, "doc", 8, seed=1, words="obsolete")
    await first.upsert(t, old)
    await first.warm([t])
    await first.aclose()
    writer = EmbeddedVectorIndex(sessions, role="writer")
    await writer.delete_tenant(t)
    new = make_items(t, "doc", 3, seed=5, words="current")
    await writer.upsert(t, new)
    second = readers(refresh_interval=0)
    assert await found_ids(second, t, new) == {i.id for i in new}
    assert second.stats(t)["origin"] == "database"  # type: ignore[index]
    assert await second.keyword_search(t, "obsolete", 5) == []


async def test_a_damaged_snapshot_is_rebuilt(db_url: str, readers, tmp_path: Path) -> None:
    t = new_tenant()
    first = readers(refresh_interval=0)
    items = make_items(t, "doc", 12, seed=1, words="lighthouse")
    await first.upsert(t, items)
    await first.warm([t])
    await first.aclose()
    shutil.rmtree(tmp_path / "var" / "vectors" / t / "bm25")  # the text index is lost
    second = readers(refresh_interval=0)
    assert len(await second.keyword_search(t, "lighthouse", 20)) == 12
    assert await found_ids(second, t, items) == {i.id for i in items}
    assert second.stats(t)["origin"] == "database"  # type: ignore[index]


async def test_concurrent_writers_never_hide_an_entry_from_the_reader(db_url: str, readers, sessions) -> None:
    """Writer A takes its sequence number and stays uncommitted while writer B writes. If B could
    commit a later number first, a reader refreshing in between would move past A's number and
    never see A. The per-tenant counter row lock makes B wait for A instead."""
    t = new_tenant()
    reader = readers(refresh_interval=0)
    writer_b = EmbeddedVectorIndex(sessions, role="writer")
    await writer_b.ensure_tenant(t)
    await reader.warm([t])
    item_a, item_b = make_items(t, "a", 1, seed=1)[0], make_items(t, "b", 1, seed=2)[0]
    async with sessions() as session_a:
        bind_tenant(session_a, t)
        await VectorStore(session_a, t).upsert([item_a])  # seq taken, not committed
        task_b = asyncio.create_task(writer_b.upsert(t, [item_b]))
        await asyncio.wait({task_b}, timeout=0.5)  # give B every chance to overtake
        await reader.refresh(t)
        assert await reader.vector_search(t, item_b.vector, 10) == []  # B waits for A: nothing committed yet
        await session_a.commit()
    await task_b
    await reader.refresh(t)
    assert {h.id for h in await reader.vector_search(t, item_a.vector, 10)} == {item_a.id, item_b.id}


async def test_searches_during_a_refresh_see_a_replace_whole_or_not_at_all(db_url: str, readers, sessions) -> None:
    t = new_tenant()
    reader = readers(refresh_interval=0)
    v1 = make_items(t, "manual", 150, seed=1, words="alpha")
    other = make_items(t, "other", 20, seed=2, words="gamma")
    await reader.upsert(t, v1 + other)
    await reader.warm([t])
    v2 = make_items(t, "manual", 120, seed=3, words="beta", version="v2")
    v1_ids, v2_ids = {i.id for i in v1}, {i.id for i in v2}
    # Given a worker's replace committed, When the reader applies it while searches keep running
    await EmbeddedVectorIndex(sessions, role="writer").replace_document(t, "manual", v2)
    refresh = asyncio.create_task(reader.refresh(t))
    while True:
        finished = refresh.done()
        keyword = {h.id for h in await reader.keyword_search(t, "alpha beta", 500)}
        near = {h.id for h in await reader.vector_search(t, v1[0].vector, 10)}
        # Then every search sees the old version or the new one, never both, never neither
        assert keyword in (v1_ids, v2_ids)
        assert not (near & v1_ids and near & v2_ids)
        assert near & (v1_ids | v2_ids)
        if finished:
            break
    await refresh
    assert {h.id for h in await reader.keyword_search(t, "alpha beta", 500)} == v2_ids


async def test_feed_rounds_never_split_a_transaction(db_url: str, sessions, readers) -> None:
    t = new_tenant()
    writer = EmbeddedVectorIndex(sessions, role="writer")
    await writer.upsert(t, make_items(t, "small-1", 2, seed=1))  # seq 1
    await writer.upsert(t, make_items(t, "big", 10, seed=2))  # seq 2
    await writer.upsert(t, make_items(t, "small-2", 2, seed=3))  # seq 3
    async with unit_of_work(sessions, tenant_id=t) as session:
        store = VectorStore(session, t)
        rounds = []
        after = 0
        while after < 3:
            changes, after = await store.changes(after, 3, max_rows=3)
            rounds.append(sorted({c.seq for c in changes}) + [len(changes)])
    assert [r for r in rounds if r[-1]] == [[1, 2], [2, 10], [3, 2]]
    reader = readers(refresh_interval=0, round_rows=3)
    assert await reader.count(t) == 14
    assert len(await reader.vector_search(t, random_unit(np.random.default_rng(0)), 50)) == 14


async def test_a_redelivered_batch_costs_the_reader_nothing(db_url: str, sessions) -> None:
    t = new_tenant()
    writer = EmbeddedVectorIndex(sessions, role="writer")
    items = make_items(t, "doc", 5)
    await writer.upsert(t, items)
    async with unit_of_work(sessions, tenant_id=t) as session:
        before = (await VectorStore(session, t).head()).last_seq  # type: ignore[union-attr]
    await writer.upsert(t, items)
    async with unit_of_work(sessions, tenant_id=t) as session:
        store = VectorStore(session, t)
        head = await store.head()
        changes, _ = await store.changes(before, head.last_seq, 100)  # type: ignore[union-attr]
    assert changes == []


async def test_a_writer_role_never_searches(db_url: str, sessions, tmp_path: Path) -> None:
    writer = create_vector_index(settings_for(db_url, tmp_path), role="writer", sessions=sessions)
    t = new_tenant()
    await writer.upsert(t, make_items(t, "doc", 2))
    with pytest.raises(ConfigurationError):
        await writer.vector_search(t, random_unit(np.random.default_rng(0)), 3)
    with pytest.raises(ConfigurationError):
        await writer.keyword_search(t, "shipping", 3)
    assert await writer.count(t) == 2
    await writer.aclose()
    assert not (tmp_path / "var" / "vectors").exists()


async def test_a_tenant_keeps_one_dimension(db_url: str, readers) -> None:
    t = new_tenant()
    reader = readers(refresh_interval=0)
    await reader.upsert(t, make_items(t, "doc", 2, dim=32))
    with pytest.raises(InvalidInput):
        await reader.upsert(t, make_items(t, "other", 2, dim=16))
    with pytest.raises(InvalidInput):
        await reader.vector_search(t, random_unit(np.random.default_rng(0), 16), 3)
    assert await reader.count(t) == 2


async def test_a_second_reader_on_the_same_directory_works_without_snapshots(db_url: str, readers, tmp_path: Path) -> None:
    t = new_tenant()
    owner, guest = readers(refresh_interval=0), readers(refresh_interval=0)
    items = make_items(t, "doc", 6, words="orchid")
    await owner.upsert(t, items)
    assert await found_ids(owner, t, items) == await found_ids(guest, t, items) == {i.id for i in items}
    assert len(await guest.keyword_search(t, "orchid", 10)) == 6
    await guest.aclose()
    await owner.aclose()
    assert (tmp_path / "var" / "vectors" / t / "manifest.json").exists()


async def test_the_store_refuses_a_session_of_another_tenant(db_url: str, sessions) -> None:
    async with unit_of_work(sessions, tenant_id="tenant-a") as session:
        with pytest.raises(TenantScopeError):
            VectorStore(session, "tenant-b")


def test_the_factory_picks_the_configured_backend(tmp_path: Path) -> None:
    settings = settings_for("sqlite+aiosqlite:///unused.db", tmp_path)
    with pytest.raises(ConfigurationError):
        create_vector_index(settings, role="reader")  # the embedded index needs sessions
    with pytest.raises(ConfigurationError):
        create_vector_index(settings, role="admin", sessions=object())  # type: ignore[arg-type]
    weaviate_settings = settings.model_copy(update={"vector_backend": "weaviate"})
    with pytest.raises(ConfigurationError):
        create_vector_index(weaviate_settings, role="reader")  # no URL
    index = create_vector_index(
        weaviate_settings.model_copy(update={"weaviate_url": "http://127.0.0.1:8080"}), role="reader"
    )
    assert isinstance(index, WeaviateVectorIndex)  # not connected until first use
    with pytest.raises(ConfigurationError):
        WeaviateVectorIndex.from_url("weaviate:8080")
