"""The vector index contract: what is stored (:class:`IndexItem`), what a search returns (:class:`Hit`),
and the one interface both backends implement (:class:`VectorIndex`).

Validation lives here so both backends refuse the same input the same way: an empty tenant id is a
programming error (:class:`~parley.errors.TenantScopeError`), anything else malformed is
:class:`~parley.errors.InvalidInput`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from parley.errors import InvalidInput, TenantScopeError

KINDS = ("document", "product")
Kind = Literal["document", "product"]
Role = Literal["reader", "writer"]

# Weaviate tenant names allow [A-Za-z0-9_-]{1,64}; our tenant ids are 32 hex characters.
_TENANT_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
# Words of a keyword query; everything else (quotes, colons, operators) is dropped, so a user's
# question can never be parsed as query syntax by either engine.
_WORD_RE = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_TERMS = 32


@dataclass(frozen=True, eq=False)
class IndexItem:
    """One chunk (of a document or a product) with its embedding.

    ``id`` is a UUID string the caller derives deterministically (uuid5 of tenant, document and
    ordinal), so a redelivered job overwrites instead of duplicating. ``vector`` is float32 and
    L2-normalised by the caller (cosine similarity is computed on it as given).
    """

    id: str
    document_id: str
    text: str
    vector: np.ndarray
    kind: Kind = "document"
    title: str = ""
    heading_path: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", canonical_id(self.id))
        if not self.document_id or len(self.document_id) > 128:
            raise InvalidInput("an index item needs a document_id of 1-128 characters")
        if self.kind not in KINDS:
            raise InvalidInput(f"kind must be one of {KINDS}, not {self.kind!r}")
        object.__setattr__(self, "vector", as_vector(self.vector))
        object.__setattr__(self, "heading_path", [str(h) for h in self.heading_path])
        try:
            json.dumps(self.metadata)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"metadata of item {self.id} is not JSON-able: {exc}") from exc

    def content_hash(self) -> str:
        """Changes whenever anything a search could return changes; equal content is not rewritten."""
        h = hashlib.sha256()
        meta = json.dumps([self.document_id, self.kind, self.title, self.text, self.heading_path, self.metadata], sort_keys=True)
        h.update(meta.encode())
        h.update(self.vector.tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class Hit:
    """A search result. ``score``: cosine similarity for vector search, BM25 for keyword search;
    higher is better within one result list (the two scales are not comparable: fuse by rank)."""

    id: str
    document_id: str
    kind: str
    title: str
    text: str
    heading_path: list[str]
    metadata: dict[str, Any]
    score: float


@runtime_checkable
class VectorIndex(Protocol):
    """Every method is scoped by a tenant; there is no un-scoped search."""

    async def ensure_tenant(self, tenant_id: str) -> None: ...

    async def upsert(self, tenant_id: str, items: Sequence[IndexItem]) -> None:
        """Idempotent: the same ids overwrite."""

    async def replace_document(self, tenant_id: str, document_id: str, items: Sequence[IndexItem]) -> None:
        """Afterwards the document's old chunks are gone and ``items`` are present."""

    async def delete_document(self, tenant_id: str, document_id: str) -> int:
        """Returns how many chunks were deleted."""

    async def delete_tenant(self, tenant_id: str) -> None: ...

    async def vector_search(self, tenant_id: str, vector: np.ndarray, limit: int) -> list[Hit]: ...

    async def keyword_search(self, tenant_id: str, query: str, limit: int) -> list[Hit]: ...

    async def count(self, tenant_id: str) -> int: ...

    async def aclose(self) -> None: ...


# --- validation shared by the backends ---------------------------------------------------------


def check_tenant(tenant_id: str) -> str:
    if not tenant_id:
        raise TenantScopeError("the vector index needs a tenant id")
    if not isinstance(tenant_id, str) or not _TENANT_RE.match(tenant_id):
        raise InvalidInput(f"invalid tenant id {tenant_id!r}: 1-32 characters of A-Z a-z 0-9 _ -")
    return tenant_id


def check_document(document_id: str) -> str:
    if not document_id or len(document_id) > 128:
        raise InvalidInput("a document id of 1-128 characters is required")
    return document_id


def canonical_id(value: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError as exc:
        raise InvalidInput(f"index item ids are UUID strings, not {value!r}") from exc


def as_vector(value: Any) -> np.ndarray:
    vec = np.ascontiguousarray(np.asarray(value, dtype=np.float32))
    if vec.ndim != 1 or vec.size == 0:
        raise InvalidInput(f"a vector must be one-dimensional and non-empty, got shape {vec.shape}")
    if not np.isfinite(vec).all():
        raise InvalidInput("a vector contains NaN or infinity")
    return vec


def check_items(items: Sequence[IndexItem], *, document_id: str | None = None) -> list[IndexItem]:
    """Items de-duplicated by id (the last one wins) and of one dimension."""
    by_id: dict[str, IndexItem] = {}
    for item in items:
        if not isinstance(item, IndexItem):
            raise InvalidInput(f"expected IndexItem, got {type(item).__name__}")
        if document_id is not None and item.document_id != document_id:
            raise InvalidInput(f"item {item.id} belongs to document {item.document_id}, not {document_id}")
        by_id[item.id] = item
    dims = {item.vector.shape[0] for item in by_id.values()}
    if len(dims) > 1:
        raise InvalidInput(f"items of one call must share one dimension, got {sorted(dims)}")
    return list(by_id.values())


def check_limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise InvalidInput(f"limit must be a non-negative integer, not {limit!r}")
    return limit


def query_terms(query: str) -> list[str]:
    """Lower-cased words of a keyword query, de-duplicated, at most MAX_QUERY_TERMS."""
    seen: dict[str, None] = {}
    for word in _WORD_RE.findall(query.lower()):
        seen.setdefault(word, None)
        if len(seen) >= MAX_QUERY_TERMS:
            break
    return list(seen)


def cosine_similarity_from_distance(distance: float) -> float:
    """Both backends report cosine distance (1 - cos); callers get the similarity."""
    return 1.0 - float(distance) if math.isfinite(distance) else 0.0
