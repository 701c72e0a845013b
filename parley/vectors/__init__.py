"""The vector index: one async interface, two backends, one conformance suite.

Public API (``from parley.vectors import ...``):

- :class:`IndexItem` — what is stored: ``id`` (a uuid string the caller derives with uuid5, so
  redelivery overwrites), ``document_id``, ``text``, ``vector`` (float32, L2-normalised),
  ``kind`` ("document" | "product"), ``title``, ``heading_path``, ``metadata`` (small JSON).
- :class:`Hit` — a result: the item's fields without the vector, plus ``score`` (cosine similarity
  for :meth:`VectorIndex.vector_search`, BM25 for :meth:`VectorIndex.keyword_search`).
- :class:`VectorIndex` — ``ensure_tenant``, ``upsert``, ``replace_document``, ``delete_document``,
  ``delete_tenant``, ``vector_search``, ``keyword_search``, ``count``, ``aclose``. Every method
  takes the tenant first; an empty tenant id raises :class:`~parley.errors.TenantScopeError`.
- :func:`create_vector_index` — the factory processes call with their settings and role.

Backends:

- :class:`EmbeddedVectorIndex` (default): tables in the metadata store are the truth (written by
  workers in one transaction per call, so a replace is atomic); the retrieval process keeps an
  HNSW graph and a tantivy index per tenant, follows the store's per-tenant change sequence
  incrementally, and snapshots to ``<data_dir>/vectors`` so a restart does not rebuild.
  See :mod:`parley.vectors.embedded`, :mod:`parley.vectors.memory`, :mod:`parley.vectors.store`.
- :class:`WeaviateVectorIndex`: one collection, one Weaviate tenant per Parley tenant. See
  :mod:`parley.vectors.weaviate_index`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.errors import ConfigurationError
from parley.vectors.base import Hit, IndexItem, Role, VectorIndex
from parley.vectors.embedded import EmbeddedVectorIndex

if TYPE_CHECKING:
    from parley.settings import Settings
    from parley.vectors.weaviate_index import WeaviateVectorIndex

__all__ = [
    "EmbeddedVectorIndex", "Hit", "IndexItem", "Role", "VectorIndex", "WeaviateVectorIndex", "create_vector_index",
]


def create_vector_index(
    settings: Settings,
    *,
    role: Role,
    sessions: async_sessionmaker[AsyncSession] | None = None,
    **options: object,
) -> VectorIndex:
    """The configured backend for a process.

    ``role="writer"`` (ingestion workers) only writes; ``role="reader"`` (the retrieval service,
    the single-process dev mode) also searches. The embedded backend needs the process's
    ``sessions`` (``parley.db.create_sessionmaker``) and keeps its snapshots under
    ``<data_dir>/vectors``; ``options`` go to :class:`EmbeddedVectorIndex` (refresh_interval,
    round_rows, snapshot_every, search_threads, index_nice, title_weight - by default
    ``settings.keyword_title_weight``; for a reader memory_budget_bytes and max_tenants - by default
    ``PARLEY_RETRIEVAL_MEMORY_BUDGET_MB`` and ``PARLEY_RETRIEVAL_MAX_TENANTS``). The Weaviate backend ignores the role and the title weight.
    """
    if role not in ("reader", "writer"):
        raise ConfigurationError(f"role must be 'reader' or 'writer', not {role!r}")
    if settings.vector_backend == "weaviate":
        if not settings.weaviate_url:
            raise ConfigurationError("PARLEY_VECTOR_BACKEND=weaviate needs PARLEY_WEAVIATE_URL")
        from parley.vectors.weaviate_index import WeaviateVectorIndex

        return WeaviateVectorIndex.from_settings(settings)
    if sessions is None:
        raise ConfigurationError("the embedded vector index needs the metadata store's sessionmaker")
    options.setdefault("title_weight", settings.keyword_title_weight)
    if role == "reader":  # the residency bounds (parley.vectors.residency); writers hold no tenants
        options.setdefault("memory_budget_bytes", settings.retrieval_memory_budget_mb * 1024 * 1024)
        options.setdefault("max_tenants", settings.retrieval_max_tenants)
    return EmbeddedVectorIndex(sessions, role=role, data_dir=settings.data_dir / "vectors", **options)  # type: ignore[arg-type]


def __getattr__(name: str) -> object:  # WeaviateVectorIndex without importing the client up front
    if name == "WeaviateVectorIndex":
        from parley.vectors.weaviate_index import WeaviateVectorIndex

        return WeaviateVectorIndex
    raise AttributeError(name)
