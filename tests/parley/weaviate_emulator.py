"""A local Weaviate for the Weaviate backend's unit tests: the REST and gRPC calls it makes, answered
the way a Weaviate 1.40 server answers them (this module holds no tests).

REST (aiohttp): ``/v1/.well-known/ready``, ``/v1/.well-known/openid-configuration`` (404: no OIDC),
``/v1/meta``, ``/v1/schema`` (create: the class stored the way the server returns it, defaults
filled in), ``/v1/schema/{class}`` and its tenants (HEAD, POST, DELETE). With ``api_key`` set it
answers 401 without the right ``Authorization: Bearer`` like a server with
``AUTHENTICATION_APIKEY_ENABLED`` and anonymous access off (the ``.well-known`` paths stay open).

gRPC (grpc.aio, the client's own generated servicer): the health check, ``BatchObjects`` (stores
vectors per tenant; a vector whose length differs from the tenant's first one is refused with the
server's HNSW message; a write to an unknown tenant creates it when the class allows), ``Search``,
``BatchDelete``, ``Aggregate`` (object count) and ``TenantsGet``. A call naming a tenant the class
does not have fails with status UNKNOWN and ``tenant not found: "<name>"``, as the server's does.
Searches return no objects: the result contents are the real server's business (the conformance
suite); what is tested here is how calls fail. ``fail`` scripts a status and message per RPC.
"""

from __future__ import annotations

import copy
import socket
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web
from aiohttp.test_utils import TestServer
from weaviate.proto.v1 import (
    aggregate_pb2, batch_delete_pb2, batch_pb2, health_weaviate_pb2, search_get_pb2, tenants_pb2, weaviate_pb2_grpc,
)

VERSION = "1.40.2"


def closed_port() -> int:
    """A port nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_HNSW_DEFAULTS = {
    "cleanupIntervalSeconds": 300, "dynamicEfMin": 100, "dynamicEfMax": 500, "dynamicEfFactor": 8, "ef": -1,
    "efConstruction": 128, "filterStrategy": "acorn", "flatSearchCutoff": 40000, "maxConnections": 32, "skip": False,
    "vectorCacheMaxObjects": 1000000000000, "distance": "cosine",
    "pq": {"enabled": False}, "bq": {"enabled": False}, "sq": {"enabled": False}, "rq": {"enabled": False},
    "multivector": {"enabled": False},
}


def server_class(body: dict[str, Any]) -> dict[str, Any]:
    """The class as ``GET /v1/schema/{name}`` returns it after ``POST /v1/schema`` with ``body``."""
    cls = copy.deepcopy(body)
    for prop in cls.setdefault("properties", []):
        for key in ("skip_vectorization", "vectorize_property_name"):
            prop.pop(key, None)
        text = prop["dataType"][0] in ("text", "text[]")
        prop.setdefault("indexFilterable", True)
        prop.setdefault("indexSearchable", text)
        prop.setdefault("indexRangeFilters", False)
        if text:
            prop.setdefault("tokenization", "word")
    for vector in cls.get("vectorConfig", {}).values():
        vector.setdefault("vectorIndexType", "hnsw")
        vector["vectorIndexConfig"] = {**_HNSW_DEFAULTS, **vector.get("vectorIndexConfig", {})}
    if "vectorConfig" not in cls:
        cls.setdefault("vectorizer", "none")
        cls.setdefault("vectorIndexType", "hnsw")
        cls["vectorIndexConfig"] = {**_HNSW_DEFAULTS, **cls.get("vectorIndexConfig", {})}
    cls.setdefault("invertedIndexConfig", {
        "bm25": {"b": 0.75, "k1": 1.2}, "cleanupIntervalSeconds": 60,
        "stopwords": {"preset": "en", "additions": None, "removals": None}, "usingBlockMaxWAND": True,
    })
    mt = cls.setdefault("multiTenancyConfig", {"enabled": False})
    mt.setdefault("autoTenantCreation", False)
    mt.setdefault("autoTenantActivation", False)
    cls.setdefault("replicationConfig", {"factor": 1, "asyncEnabled": False, "deletionStrategy": "NoAutomatedResolution"})
    if not mt["enabled"]:
        cls.setdefault("shardingConfig", {
            "virtualPerPhysical": 128, "desiredCount": 1, "actualCount": 1, "desiredVirtualCount": 128,
            "actualVirtualCount": 128, "key": "_id", "strategy": "hash", "function": "murmur3",
        })
    return cls


@dataclass
class Failure:
    code: grpc.StatusCode
    details: str


@dataclass
class WeaviateEmulator:
    api_key: str | None = None
    version: str = VERSION
    grpc_serving: bool = True
    #: When set, POST /v1/schema first lets "another process" create the class, then answers 422 as the server does.
    lose_create_race: bool = False
    classes: dict[str, dict[str, Any]] = field(default_factory=dict)
    tenants: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    #: (class, tenant) -> {uuid: vector length}
    objects: dict[tuple[str, str], dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    #: RPC name ("Search", "BatchObjects", ...) -> the failure its next calls answer with
    fail: dict[str, Failure] = field(default_factory=dict)
    rest_calls: list[tuple[str, str]] = field(default_factory=list)
    rpc_calls: list[str] = field(default_factory=list)
    http: TestServer | None = None
    grpc_port: int = 0
    _grpc_server: Any = None

    @property
    def url(self) -> str:
        assert self.http is not None
        return str(self.http.make_url("")).rstrip("/")

    @property
    def grpc_url(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    async def start(self, *, with_grpc: bool = True) -> WeaviateEmulator:
        self.http = TestServer(self._app())
        await self.http.start_server()
        if with_grpc:
            self._grpc_server = grpc.aio.server()
            weaviate_pb2_grpc.add_WeaviateServicer_to_server(_Servicer(self), self._grpc_server)
            self._grpc_server.add_generic_rpc_handlers([_health_handler(self)])
            self.grpc_port = self._grpc_server.add_insecure_port("127.0.0.1:0")
            await self._grpc_server.start()
        else:
            self.grpc_port = closed_port()
        return self

    async def close(self) -> None:
        if self._grpc_server is not None:
            await self._grpc_server.stop(None)
        if self.http is not None:
            await self.http.close()

    def add_class(self, body: dict[str, Any]) -> None:
        cls = server_class(body)
        self.classes[cls["class"]] = cls

    # --- REST -------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        @web.middleware
        async def record_and_authenticate(request: web.Request, handler: Any) -> web.StreamResponse:
            self.rest_calls.append((request.method, request.path))
            if self.api_key and not request.path.startswith("/v1/.well-known/"):
                given = request.headers.get("Authorization", "")
                if not given:
                    return _error(401, "anonymous access not enabled, please provide an auth scheme such as OIDC")
                if given != f"Bearer {self.api_key}":
                    return _error(401, "unauthorized: invalid api key")
            return await handler(request)

        app = web.Application(middlewares=[record_and_authenticate])
        app.router.add_get("/v1/.well-known/ready", self._ready)
        app.router.add_get("/v1/.well-known/openid-configuration", self._no_oidc)
        app.router.add_get("/v1/meta", self._meta)
        app.router.add_post("/v1/schema", self._create_class)
        app.router.add_get("/v1/schema/{name}", self._get_class)
        app.router.add_route("HEAD", "/v1/schema/{name}/tenants/{tenant}", self._tenant_exists)
        app.router.add_post("/v1/schema/{name}/tenants", self._create_tenants)
        app.router.add_delete("/v1/schema/{name}/tenants", self._delete_tenants)
        return app

    async def _ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _no_oidc(self, request: web.Request) -> web.Response:
        return web.Response(status=404)

    async def _meta(self, request: web.Request) -> web.Response:
        return web.json_response({"hostname": "http://[::]:8080", "modules": {}, "version": self.version,
                                  "grpcMaxMessageSize": 104858000})

    async def _create_class(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = body["class"]
        if self.lose_create_race and name not in self.classes:
            self.add_class(body)  # the other process's create lands first
        if name in self.classes:
            return _error(422, f"class name {name!r} already exists", nested=True)
        self.add_class(body)
        return web.json_response(self.classes[name])

    async def _get_class(self, request: web.Request) -> web.Response:
        cls = self.classes.get(request.match_info["name"])
        return web.json_response(cls) if cls else web.Response(status=404)

    async def _tenant_exists(self, request: web.Request) -> web.Response:
        name, tenant = request.match_info["name"], request.match_info["tenant"]
        return web.Response(status=200 if tenant in self.tenants.get(name, {}) else 404)

    async def _create_tenants(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.json()
        for tenant in body:
            self.tenants[name][tenant["name"]] = tenant.get("activityStatus", "ACTIVE")
        return web.json_response(body)

    async def _delete_tenants(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        for tenant in await request.json():
            self.tenants[name].pop(tenant, None)
            self.objects.pop((name, tenant), None)
        return web.Response(status=200)

    # --- gRPC helpers -----------------------------------------------------------------------

    async def check(self, rpc: str, context: grpc.aio.ServicerContext) -> None:
        self.rpc_calls.append(rpc)
        if self.api_key:
            metadata = dict(context.invocation_metadata() or ())
            if metadata.get("authorization") != f"Bearer {self.api_key}":
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unauthenticated: invalid api key")
        failure = self.fail.get(rpc)
        if failure is not None:
            await context.abort(failure.code, failure.details)

    async def known_tenant(self, collection: str, tenant: str, context: grpc.aio.ServicerContext) -> None:
        if tenant not in self.tenants.get(collection, {}):
            await context.abort(grpc.StatusCode.UNKNOWN, f"explorer: get class: search index {collection.lower()}: "
                                f'tenant not found: "{tenant}"')


def _error(status: int, message: str, *, nested: bool = False) -> web.Response:
    body = {"error": [{"message": message}]} if nested else {"code": status, "message": message}
    return web.json_response(body, status=status)


def _vector_length(obj: Any) -> int:
    if obj.vectors:
        return len(obj.vectors[0].vector_bytes) // 4
    if obj.vector_bytes:
        return len(obj.vector_bytes) // 4
    return len(obj.vector)


class _Servicer(weaviate_pb2_grpc.WeaviateServicer):
    def __init__(self, emulator: WeaviateEmulator) -> None:
        self.emulator = emulator

    async def BatchObjects(self, request: Any, context: Any) -> Any:  # noqa: N802 - the generated name
        em = self.emulator
        await em.check("BatchObjects", context)
        errors = []
        for index, obj in enumerate(request.objects):
            cls = em.classes.get(obj.collection)
            tenants = em.tenants[obj.collection]
            if cls is None:
                errors.append(batch_pb2.BatchObjectsReply.BatchError(index=index, error=f"class {obj.collection!r} not found"))
                continue
            if obj.tenant not in tenants:
                if not cls["multiTenancyConfig"].get("autoTenantCreation"):
                    errors.append(batch_pb2.BatchObjectsReply.BatchError(index=index, error=f'tenant not found: "{obj.tenant}"'))
                    continue
                tenants[obj.tenant] = "ACTIVE"
            stored = em.objects[(obj.collection, obj.tenant)]
            length = _vector_length(obj)
            dims = next(iter(stored.values()), None)
            if dims is not None and dims != length:
                errors.append(batch_pb2.BatchObjectsReply.BatchError(index=index, error=(
                    f"put object: import into index {obj.collection.lower()}: insert to vector index: new node has a "
                    f"vector with length {length}. Existing nodes have vectors with length {dims}: vector dimensions "
                    "do not match the index dimensions")))
                continue
            stored[obj.uuid] = length
        return batch_pb2.BatchObjectsReply(took=0.001, errors=errors)

    async def Search(self, request: Any, context: Any) -> Any:  # noqa: N802
        await self.emulator.check("Search", context)
        await self.emulator.known_tenant(request.collection, request.tenant, context)
        return search_get_pb2.SearchReply(took=0.001)

    async def BatchDelete(self, request: Any, context: Any) -> Any:  # noqa: N802
        await self.emulator.check("BatchDelete", context)
        await self.emulator.known_tenant(request.collection, request.tenant, context)
        return batch_delete_pb2.BatchDeleteReply(took=0.001, failed=0, matches=0, successful=0)

    async def Aggregate(self, request: Any, context: Any) -> Any:  # noqa: N802
        await self.emulator.check("Aggregate", context)
        await self.emulator.known_tenant(request.collection, request.tenant, context)
        count = len(self.emulator.objects.get((request.collection, request.tenant), {}))
        return aggregate_pb2.AggregateReply(took=0.001, single_result=aggregate_pb2.AggregateReply.Single(objects_count=count))

    async def TenantsGet(self, request: Any, context: Any) -> Any:  # noqa: N802
        await self.emulator.check("TenantsGet", context)
        known = self.emulator.tenants.get(request.collection, {})
        names = list(request.names.values) if request.HasField("names") else list(known)
        active = tenants_pb2.TenantActivityStatus.TENANT_ACTIVITY_STATUS_ACTIVE
        return tenants_pb2.TenantsGetReply(took=0.001, tenants=[
            tenants_pb2.Tenant(name=name, activity_status=active) for name in names if name in known])


def _health_handler(emulator: WeaviateEmulator) -> grpc.GenericRpcHandler:
    async def check(request: Any, context: Any) -> Any:
        emulator.rpc_calls.append("Health")
        status = health_weaviate_pb2.WeaviateHealthCheckResponse
        return status(status=status.SERVING if emulator.grpc_serving else status.NOT_SERVING)

    return grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.unary_unary_rpc_method_handler(
            check,
            request_deserializer=health_weaviate_pb2.WeaviateHealthCheckRequest.FromString,
            response_serializer=health_weaviate_pb2.WeaviateHealthCheckResponse.SerializeToString,
        ),
    })
