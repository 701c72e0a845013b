"""Fixtures of the retrieval tests: the real local embedder (loaded once), a real database per test
(``db_url``: SQLite and PostgreSQL, real commits, from tests/conftest.py), and a writer-role vector
index standing in for the ingestion workers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.db import create_engine, create_sessionmaker
from parley.settings import Settings
from tests.retrieval.support import ChatEmulator, Embeddings


@pytest.fixture(scope="session")
def local_embedder() -> Iterator[Any]:
    """The packaged MiniLM through the production factory (with its query LRU); skipped if not installed."""
    from parley.embeddings.local import DEFAULT_MODEL, model_installed

    if not model_installed(DEFAULT_MODEL):
        pytest.skip(f"the local embedding model {DEFAULT_MODEL} is not installed (see parley/embeddings/local.py)")
    from parley.embeddings import create_embedder

    embedder = create_embedder(
        provider="local", model=None, threads=1, openai_api_key=None, openai_base_url=None,
        openai_model="unused", openai_dimensions=None, batch_size=32,
    )
    yield embedder
    embedder.inner.close()


@pytest.fixture(scope="session")
def emb(local_embedder: Any) -> Embeddings:
    return Embeddings(local_embedder.inner)


@pytest.fixture
def rsettings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, data_dir=tmp_path / "var", log_json=False)


@pytest.fixture
async def sessions(rsettings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """The seeding side's own engine (as a worker process would have)."""
    engine = create_engine(rsettings, "test-seed")
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def writer(rsettings: Settings, sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[Any]:
    from parley.vectors import create_vector_index

    index = create_vector_index(rsettings, role="writer", sessions=sessions)
    yield index
    await index.aclose()


@pytest.fixture
async def chat() -> AsyncIterator[ChatEmulator]:
    """A local OpenAI-compatible chat server (`ChatEmulator`), running for the test."""
    emulator = ChatEmulator()
    await emulator.start()
    yield emulator
    await emulator.close()
