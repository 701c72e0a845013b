"""The Weaviate backend (weaviate-client v4, async): thin, and faithful to the client's API.

One collection (``ParleyChunk``) with native multi-tenancy: one Weaviate tenant per Parley tenant,
created by :meth:`ensure_tenant` or automatically on first write (``auto_tenant_creation``).
Vectors are self-provided, compared by cosine distance; the caller's uuid5 ids are the object ids,
so a redelivered batch overwrites instead of duplicating. Every data and query call goes through
``collection.with_tenant(tenant)``: there is no un-scoped access.

Weaviate has no multi-object transactions. ``replace_document`` therefore writes the new chunks
first and then deletes the document's chunks that are not among them: for that moment both
versions can match, never neither. ``delete_many`` is capped per call by the server's
``QUERY_MAXIMUM_RESULTS``, so deletes loop until nothing matches.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import weaviate
from weaviate.classes.config import Configure, DataType, Property, Tokenization, VectorDistances
from weaviate.classes.data import DataObject
from weaviate.classes.query import Filter, MetadataQuery
from weaviate.classes.tenants import Tenant
from weaviate.exceptions import WeaviateBaseError

from parley.errors import ConfigurationError, Unavailable
from parley.vectors.base import (
    Hit, IndexItem, as_vector, check_document, check_items, check_limit, check_tenant,
    cosine_similarity_from_distance, query_terms,
)

COLLECTION = "ParleyChunk"
INSERT_BATCH = 200
_RETURN = ["document_id", "kind", "title", "text", "heading_path", "metadata_json"]


def _properties() -> list[Property]:
    exact = dict(data_type=DataType.TEXT, tokenization=Tokenization.FIELD, index_searchable=False)
    stored = dict(index_searchable=False, index_filterable=False)
    return [
        Property(name="document_id", **exact),
        Property(name="kind", **exact),
        Property(name="title", data_type=DataType.TEXT),
        Property(name="text", data_type=DataType.TEXT),
        Property(name="heading_path", data_type=DataType.TEXT_ARRAY, **stored),
        Property(name="metadata_json", data_type=DataType.TEXT, **stored),
    ]


class WeaviateVectorIndex:
    def __init__(self, client: weaviate.WeaviateAsyncClient, *, collection: str = COLLECTION) -> None:
        self._client = client
        self._name = collection
        self._ready = False
        self._ready_lock = asyncio.Lock()
        self._known_tenants: set[str] = set()

    @classmethod
    def from_url(cls, url: str, *, grpc_port: int = 50051, collection: str = COLLECTION) -> WeaviateVectorIndex:
        """``http(s)://host:port``; gRPC on ``grpc_port`` of the same host. Connects on first use."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"weaviate_url must be http(s)://host:port, not {url!r}")
        secure = parts.scheme == "https"
        client = weaviate.use_async_with_custom(
            http_host=parts.hostname, http_port=parts.port or (443 if secure else 80), http_secure=secure,
            grpc_host=parts.hostname, grpc_port=grpc_port, grpc_secure=secure,
        )
        return cls(client, collection=collection)

    # --- connection and schema ------------------------------------------------------------

    async def _collection(self) -> Any:
        if not self._ready:
            async with self._ready_lock:
                if not self._ready:
                    try:
                        if not self._client.is_connected():
                            await self._client.connect()
                        if not await self._client.collections.exists(self._name):
                            await self._client.collections.create(
                                self._name,
                                properties=_properties(),
                                vector_config=Configure.Vectors.self_provided(
                                    vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE)
                                ),
                                multi_tenancy_config=Configure.multi_tenancy(
                                    enabled=True, auto_tenant_creation=True, auto_tenant_activation=True
                                ),
                            )
                    except WeaviateBaseError as exc:
                        raise Unavailable(f"Weaviate is not available: {exc}") from exc
                    self._ready = True
        return self._client.collections.use(self._name)

    async def _tenant(self, tenant_id: str) -> Any:
        return (await self._collection()).with_tenant(check_tenant(tenant_id))

    async def _exists(self, tenant_id: str) -> bool:
        if tenant_id in self._known_tenants:
            return True
        if await (await self._collection()).tenants.exists(tenant_id):
            self._known_tenants.add(tenant_id)
            return True
        return False

    # --- writes -----------------------------------------------------------------------------

    async def ensure_tenant(self, tenant_id: str) -> None:
        check_tenant(tenant_id)
        if not await self._exists(tenant_id):
            collection = await self._collection()
            try:
                await collection.tenants.create([Tenant(name=tenant_id)])
            except WeaviateBaseError:
                if not await collection.tenants.exists(tenant_id):  # else a concurrent creator won
                    raise
            self._known_tenants.add(tenant_id)

    async def upsert(self, tenant_id: str, items: Sequence[IndexItem]) -> None:
        check_tenant(tenant_id)
        items = check_items(items)
        if not items:
            return
        await self.ensure_tenant(tenant_id)
        data = (await self._tenant(tenant_id)).data
        for start in range(0, len(items), INSERT_BATCH):
            objects = [
                DataObject(
                    uuid=item.id,
                    vector=item.vector.tolist(),
                    properties={
                        "document_id": item.document_id, "kind": item.kind, "title": item.title, "text": item.text,
                        "heading_path": list(item.heading_path), "metadata_json": json.dumps(item.metadata),
                    },
                )
                for item in items[start : start + INSERT_BATCH]
            ]
            result = await data.insert_many(objects)
            if result.has_errors:
                first = next(iter(result.errors.values()))
                raise Unavailable(f"Weaviate refused {len(result.errors)} of {len(objects)} objects: {first.message}")

    async def replace_document(self, tenant_id: str, document_id: str, items: Sequence[IndexItem]) -> None:
        check_tenant(tenant_id)
        items = check_items(items, document_id=check_document(document_id))
        if not items:
            await self.delete_document(tenant_id, document_id)
            return
        await self.upsert(tenant_id, items)
        where = Filter.by_property("document_id").equal(document_id) & Filter.by_id().contains_none(
            [item.id for item in items]
        )
        await self._delete_where(tenant_id, where)

    async def delete_document(self, tenant_id: str, document_id: str) -> int:
        check_tenant(tenant_id)
        check_document(document_id)
        if not await self._exists(tenant_id):
            return 0
        return await self._delete_where(tenant_id, Filter.by_property("document_id").equal(document_id))

    async def _delete_where(self, tenant_id: str, where: Any) -> int:
        data = (await self._tenant(tenant_id)).data
        deleted = 0
        while True:
            result = await data.delete_many(where=where)
            deleted += result.successful
            if result.failed:
                raise Unavailable(f"Weaviate failed to delete {result.failed} objects of tenant {tenant_id}")
            if result.matches == 0:
                return deleted

    async def delete_tenant(self, tenant_id: str) -> None:
        check_tenant(tenant_id)
        collection = await self._collection()
        if await collection.tenants.exists(tenant_id):
            await collection.tenants.remove([tenant_id])
        self._known_tenants.discard(tenant_id)

    # --- reads ------------------------------------------------------------------------------

    async def count(self, tenant_id: str) -> int:
        if not await self._exists(check_tenant(tenant_id)):
            return 0
        result = await (await self._tenant(tenant_id)).aggregate.over_all(total_count=True)
        return int(result.total_count or 0)

    async def vector_search(self, tenant_id: str, vector: np.ndarray, limit: int) -> list[Hit]:
        check_tenant(tenant_id)
        query, limit = as_vector(vector), check_limit(limit)
        if limit == 0 or not await self._exists(tenant_id):
            return []
        result = await (await self._tenant(tenant_id)).query.near_vector(
            near_vector=query.tolist(), limit=limit, return_metadata=MetadataQuery(distance=True),
            return_properties=_RETURN,
        )
        return [_hit(obj, cosine_similarity_from_distance(obj.metadata.distance)) for obj in result.objects]

    async def keyword_search(self, tenant_id: str, query: str, limit: int) -> list[Hit]:
        check_tenant(tenant_id)
        terms, limit = query_terms(query), check_limit(limit)
        if limit == 0 or not terms or not await self._exists(tenant_id):
            return []
        result = await (await self._tenant(tenant_id)).query.bm25(
            query=" ".join(terms), query_properties=["title", "text"], limit=limit,
            return_metadata=MetadataQuery(score=True), return_properties=_RETURN,
        )
        return [_hit(obj, float(obj.metadata.score or 0.0)) for obj in result.objects]

    async def aclose(self) -> None:
        await self._client.close()


def _hit(obj: Any, score: float) -> Hit:
    props = obj.properties
    return Hit(
        id=str(obj.uuid), document_id=props.get("document_id", ""), kind=props.get("kind", ""),
        title=props.get("title") or "", text=props.get("text") or "",
        heading_path=list(props.get("heading_path") or []), metadata=json.loads(props.get("metadata_json") or "{}"),
        score=score,
    )
