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

Around the calls (see :mod:`parley.vectors.weaviate_errors` and :mod:`parley.vectors.weaviate_schema`):

- Connecting: REST and gRPC addresses given separately (gRPC may live on another host or port, with
  or without TLS), an API key for both. The client's ``connect`` reads ``/v1/meta`` and runs the
  gRPC health check, so a server whose gRPC port is unreachable fails at once, not at the first search.
- First use: the collection is created if missing; when two processes race to create it, the loser
  finds it created and goes on. An existing collection is checked against what Parley creates, and
  a mismatch (multi-tenancy off, another distance, a vectorizer module, mistyped properties) makes
  every call fail with a :class:`~parley.errors.ConfigurationError` saying what differs.
- Every failure leaves as a :class:`~parley.errors.ParleyError`: retryable when it can pass,
  permanent (with the server's reason) for what the server will refuse again, such as a vector of
  another dimension after a change of the embedding model.
- Tenants this process has seen are cached; a "tenant not found" from the server (another process
  deleted it) drops the entry, and a read of that tenant returns nothing instead of failing.

Keyword search is the server's BM25: word tokenization and its stopword list, but no stemming
("return" does not find "returns", which the embedded index's English stemmer does). The README
documents the difference; the conformance suite holds it as a known difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import numpy as np
import weaviate
from weaviate.classes.data import DataObject
from weaviate.classes.init import AdditionalConfig, Auth, Timeout
from weaviate.classes.query import Filter, MetadataQuery
from weaviate.classes.tenants import Tenant

from parley.errors import ConfigurationError, ParleyError
from parley.vectors.base import (
    Hit, IndexItem, as_vector, check_document, check_items, check_limit, check_tenant,
    cosine_similarity_from_distance, query_terms,
)
from parley.vectors.weaviate_errors import (
    TenantNotFound, VectorIndexUnavailable, rejected_or_unavailable, translated,
)
from parley.vectors.weaviate_schema import RETURNED, config_problems, create_arguments

if TYPE_CHECKING:
    from parley.settings import Settings

COLLECTION = "ParleyChunk"
INSERT_BATCH = 200
DEFAULT_GRPC_PORT = 50051
DEFAULT_QUERY_TIMEOUT = 10.0
T = TypeVar("T")


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    secure: bool

    def __str__(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.host}:{self.port}"


def endpoints(url: str, grpc_url: str | None = None) -> tuple[Endpoint, Endpoint]:
    """The REST and gRPC endpoints of ``PARLEY_WEAVIATE_URL`` and ``PARLEY_WEAVIATE_GRPC_URL``.

    gRPC defaults to port 50051 of the REST host, with TLS when the REST URL is https; a gRPC URL
    without a scheme takes its TLS from the REST URL too."""
    http = _endpoint(url, "PARLEY_WEAVIATE_URL", plain_port=80)
    if not grpc_url:
        return http, Endpoint(http.host, DEFAULT_GRPC_PORT, http.secure)
    if "://" not in grpc_url:
        grpc_url = ("https://" if http.secure else "http://") + grpc_url
    return http, _endpoint(grpc_url, "PARLEY_WEAVIATE_GRPC_URL", plain_port=DEFAULT_GRPC_PORT)


def _endpoint(url: str, setting: str, *, plain_port: int) -> Endpoint:
    example = "http://host:8080 or https://host" if setting == "PARLEY_WEAVIATE_URL" else "http://host:50051 or https://host:443"
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"{setting} must look like {example}, not {url!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{setting} must look like {example}, not {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.username:
        raise ConfigurationError(f"{setting} takes a scheme, a host and a port only, not {url!r} "
                                 "(Weaviate serves its API at the root; put the API key in PARLEY_WEAVIATE_API_KEY)")
    secure = parts.scheme == "https"
    return Endpoint(parts.hostname, port or (443 if secure else plain_port), secure)


class WeaviateVectorIndex:
    def __init__(
        self, client: weaviate.WeaviateAsyncClient, *, collection: str = COLLECTION, where: str = "",
        query_timeout: float = DEFAULT_QUERY_TIMEOUT,
    ) -> None:
        self._client = client
        self._name = collection
        self._where = where or "Weaviate"
        #: Bound of a read, the client's retries included (it retries an UNAVAILABLE search for ~63 s).
        self._query_timeout = query_timeout
        self._ready = False
        self._ready_lock = asyncio.Lock()
        self._refusal: ConfigurationError | None = None
        self._known_tenants: set[str] = set()

    @classmethod
    def from_url(
        cls, url: str, *, grpc_url: str | None = None, api_key: str | None = None, collection: str = COLLECTION,
        query_timeout: float = DEFAULT_QUERY_TIMEOUT,
    ) -> WeaviateVectorIndex:
        """REST at ``url`` (``http(s)://host:port``), gRPC at ``grpc_url`` (default: port 50051 of the
        same host), ``api_key`` for servers with authentication. Connects on first use."""
        http, grpc = endpoints(url, grpc_url)
        client = weaviate.use_async_with_custom(
            http_host=http.host, http_port=http.port, http_secure=http.secure,
            grpc_host=grpc.host, grpc_port=grpc.port, grpc_secure=grpc.secure,
            auth_credentials=Auth.api_key(api_key) if api_key else None,
            additional_config=AdditionalConfig(timeout=Timeout(query=query_timeout, insert=90)),
        )
        return cls(client, collection=collection, where=f"Weaviate at {http} (gRPC {grpc})", query_timeout=query_timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> WeaviateVectorIndex:
        if not settings.weaviate_url:
            raise ConfigurationError("PARLEY_VECTOR_BACKEND=weaviate needs PARLEY_WEAVIATE_URL")
        key = settings.weaviate_api_key.get_secret_value().strip() if settings.weaviate_api_key else None
        return cls.from_url(settings.weaviate_url, grpc_url=settings.weaviate_grpc_url, api_key=key or None,
                            collection=settings.weaviate_collection,
                            query_timeout=settings.weaviate_query_timeout_seconds)

    # --- connection and schema ------------------------------------------------------------

    async def _collection(self) -> Any:
        if not self._ready:
            async with self._ready_lock:
                if not self._ready:
                    if self._refusal is None:
                        await self._open()
                        self._ready = True
        if self._refusal is not None:
            raise self._refusal
        return self._client.collections.use(self._name)

    async def _connect(self) -> None:
        if self._client.is_connected():
            return
        try:
            with translated(f"connecting to {self._where}"):
                await self._client.connect()
        except ParleyError:
            with contextlib.suppress(Exception):
                await self._client.close()  # what the failed attempt opened; the next call connects afresh
            raise

    async def _open(self) -> None:
        """Connect, then make sure the collection exists with the configuration every call relies on."""
        await self._connect()
        if not await self._collection_exists():
            try:
                with translated(f"creating collection {self._name} in {self._where}"):
                    await self._client.collections.create(self._name, **create_arguments())
                return
            except ParleyError:
                if not await self._collection_exists():
                    raise
                # Another process created it between our check and our create: check it like any existing one.
        problems = await self._config_problems()
        if problems:
            self._refusal = ConfigurationError(
                f"collection {self._name} in {self._where} exists with another configuration than Parley's: "
                + "; ".join(problems) + ". Set PARLEY_WEAVIATE_COLLECTION to a new name (created at first use) and "
                "reindex, or delete the collection if nothing else uses it",
                code="vector_index_misconfigured",
            )

    async def _collection_exists(self) -> bool:
        with translated(f"looking up collection {self._name} in {self._where}"):
            return bool(await self._client.collections.exists(self._name))

    async def _config_problems(self) -> list[str]:
        with translated(f"reading the configuration of collection {self._name}"):
            try:
                config = await self._client.collections.use(self._name).config.get()
            except (KeyError, ValueError, TypeError) as exc:  # a schema this client cannot parse
                return [f"its configuration is not one weaviate-client can read ({type(exc).__name__}: {exc})"]
        return config_problems(config)

    async def probe(self) -> str:
        """What `parley doctor` reports: connect the way data calls do (REST ``/v1/meta``, then the gRPC
        health check), check an existing collection's configuration and make one gRPC data call on it.
        Changes nothing (a missing collection is only reported). Raises the ParleyError a call would."""
        await self._connect()
        with translated(f"reading {self._where}'s version"):
            version = (await self._client.get_meta()).get("version", "?")
        found = f"Weaviate {version} at {self._where.removeprefix('Weaviate at ')}"
        if not await self._collection_exists():
            return f"{found}; collection {self._name} is created at first use"
        problems = await self._config_problems()
        if problems:
            raise ConfigurationError(f"collection {self._name} exists with another configuration than Parley's: "
                                     + "; ".join(problems), code="vector_index_misconfigured")
        with translated(f"listing tenants of {self._name} over gRPC"):
            await self._client.collections.use(self._name).tenants.get_by_names(["parley-doctor-probe"])
        return f"{found}; collection {self._name} fits"

    async def _tenant(self, tenant_id: str) -> Any:
        return (await self._collection()).with_tenant(check_tenant(tenant_id))

    async def _exists(self, tenant_id: str) -> bool:
        if tenant_id in self._known_tenants:
            return True
        collection = await self._collection()
        with translated(f"looking up tenant {tenant_id}"):
            found = bool(await collection.tenants.exists(tenant_id))
        if found:
            self._known_tenants.add(tenant_id)
        return found

    async def _scoped(
        self, tenant_id: str, what: str, call: Callable[[Any], Awaitable[T]], missing: T, *, read: bool = False,
    ) -> T:
        """``call(the tenant's collection)``; a tenant that does not exist, or no longer does, gives ``missing``.
        A ``read`` gives up after the query timeout (a search must not wait out the client's retries)."""
        if not await self._exists(tenant_id):
            return missing
        scoped = await self._tenant(tenant_id)
        what = f"{what} of tenant {tenant_id}"
        try:
            with translated(what):
                if not read:
                    return await call(scoped)
                deadline = asyncio.timeout(self._query_timeout)
                try:
                    async with deadline:
                        return await call(scoped)
                except TimeoutError as exc:
                    if not deadline.expired():
                        raise
                    raise VectorIndexUnavailable(
                        f"{what}: Weaviate did not answer within {self._query_timeout:g} s "
                        "(PARLEY_WEAVIATE_QUERY_TIMEOUT_SECONDS)") from exc
        except TenantNotFound:
            self._known_tenants.discard(tenant_id)  # removed by another process since we cached it
            return missing

    # --- writes -----------------------------------------------------------------------------

    async def ensure_tenant(self, tenant_id: str) -> None:
        check_tenant(tenant_id)
        if await self._exists(tenant_id):
            return
        collection = await self._collection()
        try:
            with translated(f"creating tenant {tenant_id}"):
                await collection.tenants.create([Tenant(name=tenant_id)])
        except ParleyError:
            self._known_tenants.discard(tenant_id)
            if not await self._exists(tenant_id):  # else a concurrent creator won
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
            what = f"writing {len(objects)} chunks of tenant {tenant_id}"
            try:
                with translated(what):
                    result = await data.insert_many(objects)
            except TenantNotFound as exc:  # removed meanwhile by another process: the next attempt creates it
                self._known_tenants.discard(tenant_id)
                raise VectorIndexUnavailable(exc.message) from exc
            if result.has_errors:
                reasons = [error.message for error in result.errors.values()]
                failure = rejected_or_unavailable(f"{what}: {len(reasons)} refused", reasons)
                if isinstance(failure, TenantNotFound):
                    self._known_tenants.discard(tenant_id)
                    failure = VectorIndexUnavailable(failure.message)
                raise failure

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
        await self._scoped(tenant_id, f"deleting the old chunks of document {document_id}",
                           lambda scoped: _delete_where(scoped, tenant_id, where), 0)

    async def delete_document(self, tenant_id: str, document_id: str) -> int:
        check_tenant(tenant_id)
        where = Filter.by_property("document_id").equal(check_document(document_id))
        return await self._scoped(tenant_id, f"deleting document {document_id}",
                                  lambda scoped: _delete_where(scoped, tenant_id, where), 0)

    async def delete_tenant(self, tenant_id: str) -> None:
        check_tenant(tenant_id)
        collection = await self._collection()
        self._known_tenants.discard(tenant_id)
        with translated(f"deleting tenant {tenant_id}"):
            if await collection.tenants.exists(tenant_id):
                await collection.tenants.remove([tenant_id])

    # --- reads ------------------------------------------------------------------------------

    async def count(self, tenant_id: str) -> int:
        async def total(scoped: Any) -> int:
            return int((await scoped.aggregate.over_all(total_count=True)).total_count or 0)

        return await self._scoped(check_tenant(tenant_id), "counting the chunks", total, 0, read=True)

    async def vector_search(self, tenant_id: str, vector: np.ndarray, limit: int) -> list[Hit]:
        check_tenant(tenant_id)
        query, limit = as_vector(vector), check_limit(limit)
        if limit == 0:
            return []

        async def search(scoped: Any) -> list[Hit]:
            result = await scoped.query.near_vector(
                near_vector=query.tolist(), limit=limit, return_metadata=MetadataQuery(distance=True),
                return_properties=RETURNED,
            )
            return [_hit(obj, cosine_similarity_from_distance(obj.metadata.distance)) for obj in result.objects]

        return await self._scoped(tenant_id, "vector search", search, [], read=True)

    async def keyword_search(self, tenant_id: str, query: str, limit: int) -> list[Hit]:
        check_tenant(tenant_id)
        terms, limit = query_terms(query), check_limit(limit)
        if limit == 0 or not terms:
            return []

        async def search(scoped: Any) -> list[Hit]:
            result = await scoped.query.bm25(
                query=" ".join(terms), query_properties=["title", "text"], limit=limit,
                return_metadata=MetadataQuery(score=True), return_properties=RETURNED,
            )
            return [_hit(obj, float(obj.metadata.score or 0.0)) for obj in result.objects]

        return await self._scoped(tenant_id, "keyword search", search, [], read=True)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):  # closing must not fail a shutdown
            await self._client.close()


async def _delete_where(scoped: Any, tenant_id: str, where: Any) -> int:
    """Delete everything matching: each call deletes at most the server's QUERY_MAXIMUM_RESULTS objects."""
    deleted = 0
    while True:
        result = await scoped.data.delete_many(where=where)
        deleted += result.successful
        if result.failed:
            raise VectorIndexUnavailable(f"Weaviate failed to delete {result.failed} objects of tenant {tenant_id}")
        if result.matches == 0:
            return deleted


def _hit(obj: Any, score: float) -> Hit:
    props = obj.properties
    return Hit(
        id=str(obj.uuid), document_id=props.get("document_id", ""), kind=props.get("kind", ""),
        title=props.get("title") or "", text=props.get("text") or "",
        heading_path=list(props.get("heading_path") or []), metadata=json.loads(props.get("metadata_json") or "{}"),
        score=score,
    )
