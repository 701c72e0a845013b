"""The Weaviate backend around its calls: connecting (API key, a separate gRPC address), the first
start, the collection check, how failures reach the edges, the tenant cache, the doctor, the pins.

No Weaviate server runs here: the real client talks to ``WeaviateEmulator`` (local REST and gRPC
servers answering as Weaviate does, tests/parley/weaviate_emulator.py) or to a refused port. What
a real server does with the data is the conformance suite's job (PARLEY_WEAVIATE_URL).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import AsyncIterator
from importlib.metadata import version
from pathlib import Path

import grpc
import pytest
import yaml

from cli import doctor
from parley.bus.errors import Failure
from parley.errors import ConfigurationError, ParleyError
from parley.http_errors import status_for
from parley.settings import Settings
from parley.vectors import create_vector_index
from parley.vectors.weaviate_errors import VectorIndexRejected, VectorIndexUnauthorized, VectorIndexUnavailable
from parley.vectors.weaviate_index import WeaviateVectorIndex, endpoints
from tests.parley.test_vectors_support import make_items
from tests.parley.weaviate_emulator import Failure as Scripted
from tests.parley.weaviate_emulator import WeaviateEmulator, closed_port, server_class
from weaviate.classes.config import Configure, VectorDistances
from weaviate.collections.classes.config import _CollectionConfigCreate
from weaviate.embedded import WEAVIATE_VERSION

ROOT = Path(__file__).resolve().parents[2]
TENANT = "t0123456789abcdef"


@pytest.fixture
async def weaviate() -> AsyncIterator[WeaviateEmulator]:
    emulator = await WeaviateEmulator().start()
    yield emulator
    await emulator.close()


def index_for(emulator: WeaviateEmulator, **settings: object) -> WeaviateVectorIndex:
    """The index as a process builds it from its settings."""
    options = dict(vector_backend="weaviate", weaviate_url=emulator.url, weaviate_grpc_url=emulator.grpc_url)
    index = create_vector_index(Settings(**{**options, **settings}), role="writer")
    assert isinstance(index, WeaviateVectorIndex)
    return index


def parleys_collection(**changes: object) -> dict:
    """The create body Parley sends, as another process (or a person) would have sent it."""
    from parley.vectors.weaviate_schema import create_arguments

    arguments = {**create_arguments(), **changes}
    return _CollectionConfigCreate(name="ParleyChunk", **arguments)._to_dict(emit_default_vector_index_type=False)


# --- connecting -------------------------------------------------------------------------------


async def test_an_api_key_and_a_separate_grpc_address_are_used() -> None:
    # Given a Weaviate that wants an API key, its gRPC on a port of its own
    emulator = await WeaviateEmulator(api_key="wv-secret").start()
    try:
        # When a process uses the index with the settings for it
        index = index_for(emulator, weaviate_api_key="wv-secret")
        items = make_items(TENANT, "manual", 3)
        await index.upsert(TENANT, items)
        # Then the writes and reads went through (REST and gRPC both refuse calls without the key)
        assert await index.count(TENANT) == 3
        assert {"BatchObjects", "Aggregate"} <= set(emulator.rpc_calls)
        await index.aclose()
        # And a wrong key is a retryable failure naming the setting (rotated keys come right again)
        wrong = index_for(emulator, weaviate_api_key="old-key")
        with pytest.raises(VectorIndexUnauthorized) as refused:
            await wrong.count(TENANT)
        assert "PARLEY_WEAVIATE_API_KEY" in refused.value.message
        assert Failure.of(refused.value).retryable and status_for(refused.value) == 503
        await wrong.aclose()
    finally:
        await emulator.close()


def test_grpc_addresses_default_to_the_rest_host_and_its_tls() -> None:
    http, grpc_ = endpoints("http://weaviate:8080")
    assert (http.host, http.port, http.secure, grpc_.host, grpc_.port, grpc_.secure) == (
        "weaviate", 8080, False, "weaviate", 50051, False)
    http, grpc_ = endpoints("https://abc.weaviate.cloud", "grpc-abc.weaviate.cloud:443")
    assert (http.port, http.secure, grpc_.host, grpc_.port, grpc_.secure) == (443, True, "grpc-abc.weaviate.cloud", 443, True)
    _, grpc_ = endpoints("https://proxy.example", "http://10.0.0.5:50051")  # TLS off for gRPC only
    assert (grpc_.host, grpc_.port, grpc_.secure) == ("10.0.0.5", 50051, False)
    for url, grpc_url in (("weaviate:8080", None), ("http://w:8080/v1", None), ("http://w:8080", "ftp://w:1"),
                          ("http://w:notaport", None)):
        with pytest.raises(ConfigurationError):
            endpoints(url, grpc_url)


async def test_unreachable_servers_are_retryable() -> None:
    # Given nothing listening at all
    index = WeaviateVectorIndex.from_url(f"http://127.0.0.1:{closed_port()}", grpc_url=f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(VectorIndexUnavailable) as down:
        await index.vector_search(TENANT, make_items(TENANT, "d", 1)[0].vector, 3)
    assert Failure.of(down.value).retryable and status_for(down.value) == 503
    await index.aclose()


async def test_a_ready_rest_api_without_grpc_fails_at_connect() -> None:
    # Given a server whose REST API answers but whose gRPC port refuses connections
    emulator = await WeaviateEmulator().start(with_grpc=False)
    try:
        index = index_for(emulator)
        with pytest.raises(VectorIndexUnavailable) as down:
            await index.upsert(TENANT, make_items(TENANT, "manual", 1))
        # Then the first call says so, instead of the first data call failing later
        assert "gRPC health check failed" in down.value.message and "PARLEY_WEAVIATE_GRPC_URL" in down.value.message
        assert ("POST", "/v1/schema") not in emulator.rest_calls
        await index.aclose()
    finally:
        await emulator.close()


# --- first start and the collection check -------------------------------------------------------


async def test_losing_the_race_to_create_the_collection_goes_on(weaviate: WeaviateEmulator) -> None:
    # Given another process that creates the collection between our check and our create
    weaviate.lose_create_race = True
    index = index_for(weaviate)
    # When this process writes for the first time
    await index.upsert(TENANT, make_items(TENANT, "manual", 2))
    # Then its create failed (422, "already exists"), it found the collection, checked it and wrote
    assert weaviate.rest_calls.count(("POST", "/v1/schema")) == 1
    assert weaviate.rest_calls.count(("GET", "/v1/schema/ParleyChunk")) >= 3  # exists, exists again, configuration
    assert await index.count(TENANT) == 2
    await index.aclose()


async def test_a_collection_without_multi_tenancy_is_refused(weaviate: WeaviateEmulator) -> None:
    # Given a ParleyChunk someone created without multi-tenancy, with the dot product, a word-tokenized document_id
    body = parleys_collection(
        multi_tenancy_config=Configure.multi_tenancy(enabled=False),
        vector_config=Configure.Vectors.self_provided(
            vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.DOT)),
    )
    for prop in body["properties"]:
        if prop["name"] == "document_id":
            prop["tokenization"] = "word"
    weaviate.add_class(body)
    index = index_for(weaviate)
    # Then every call refuses, saying what differs and what to do; no data call reaches the server
    for attempt in range(2):
        with pytest.raises(ConfigurationError) as refused:
            await index.upsert(TENANT, make_items(TENANT, "manual", 1))
        message = refused.value.message
        assert "multi-tenancy is disabled" in message and "dot distance, not cosine" in message
        assert "'document_id' has word tokenization, not field" in message and "PARLEY_WEAVIATE_COLLECTION" in message
    assert not Failure.of(refused.value).retryable
    assert weaviate.rpc_calls == ["Health"]
    await index.aclose()
    # And a collection that fits (created by another Parley process) is used as it is
    weaviate.classes.clear()
    weaviate.add_class(parleys_collection())
    fine = index_for(weaviate)
    await fine.upsert(TENANT, make_items(TENANT, "manual", 1))
    assert ("POST", "/v1/schema") not in weaviate.rest_calls
    await fine.aclose()


def test_the_emulated_schema_is_what_the_client_reads() -> None:
    """server_class fills in what a server adds; the client must parse it (else the tests above prove little)."""
    from weaviate.collections.classes.config_methods import _collection_config_from_json

    from parley.vectors.weaviate_schema import config_problems

    assert config_problems(_collection_config_from_json(server_class(parleys_collection()))) == []


# --- failures as the edges understand them -------------------------------------------------------


async def test_a_vector_of_another_dimension_is_permanent(weaviate: WeaviateEmulator) -> None:
    index = index_for(weaviate)
    await index.upsert(TENANT, make_items(TENANT, "manual", 2, dim=32))
    # When the embedding model changed and a job writes 16-d vectors into the 32-d index
    with pytest.raises(VectorIndexRejected) as rejected:
        await index.upsert(TENANT, make_items(TENANT, "faq", 2, dim=16))
    failure = Failure.of(rejected.value)
    # Then it is dead-lettered at once with the server's reason and what to do, never retried
    assert failure.code == "vector_dimension_mismatch" and not failure.retryable
    assert "new node has a vector with length 16" in failure.reason and "parley reindex" in failure.reason
    assert status_for(rejected.value) == 500
    # And a query the server refuses for its vector's length is permanent too
    weaviate.fail["Search"] = Scripted(grpc.StatusCode.UNKNOWN, "vector search: knn search: vector lengths don't match: 16 vs 32")
    with pytest.raises(VectorIndexRejected):
        await index.vector_search(TENANT, make_items(TENANT, "q", 1, dim=16)[0].vector, 3)
    await index.aclose()


@pytest.mark.parametrize(("rpc", "code", "details", "expected"), [
    ("BatchDelete", grpc.StatusCode.UNAVAILABLE, "connection reset", VectorIndexUnavailable),
    ("Search", grpc.StatusCode.DEADLINE_EXCEEDED, "context deadline exceeded", VectorIndexUnavailable),
    ("Search", grpc.StatusCode.UNKNOWN, "no such prop with name 'txt' found in class 'ParleyChunk'", VectorIndexRejected),
    ("Aggregate", grpc.StatusCode.UNAUTHENTICATED, "unauthenticated: invalid api key", VectorIndexUnauthorized),
    ("BatchObjects", grpc.StatusCode.INTERNAL, "shard is read-only: disk usage too high", VectorIndexUnavailable),
])
async def test_server_errors_become_parley_errors(
    weaviate: WeaviateEmulator, rpc: str, code: grpc.StatusCode, details: str, expected: type[ParleyError],
) -> None:
    index = index_for(weaviate)
    await index.ensure_tenant(TENANT)
    weaviate.fail[rpc] = Scripted(code, details)
    call = {
        "BatchDelete": lambda: index.delete_document(TENANT, "manual"),
        "Search": lambda: index.keyword_search(TENANT, "shipping", 3),
        "Aggregate": lambda: index.count(TENANT),
        "BatchObjects": lambda: index.upsert(TENANT, make_items(TENANT, "manual", 1)),
    }[rpc]
    with pytest.raises(expected) as raised:
        await call()
    assert type(raised.value) is expected and details.split(":")[0] in raised.value.message
    assert Failure.of(raised.value).retryable == (expected is not VectorIndexRejected)
    await index.aclose()


async def test_a_search_does_not_wait_out_the_clients_retries(weaviate: WeaviateEmulator) -> None:
    # Given a server whose searches answer UNAVAILABLE (the client retries those for about a minute)
    index = index_for(weaviate, weaviate_query_timeout_seconds=0.3)
    await index.ensure_tenant(TENANT)
    weaviate.fail["Search"] = Scripted(grpc.StatusCode.UNAVAILABLE, "node is shutting down")
    # Then the search gives up at the query timeout, as a retryable failure the answer path can fall back from
    with pytest.raises(VectorIndexUnavailable) as slow:
        await index.keyword_search(TENANT, "shipping", 3)
    assert "did not answer within 0.3 s" in slow.value.message and Failure.of(slow.value).retryable
    assert weaviate.rpc_calls.count("Search") == 1
    await index.aclose()


# --- the tenant cache ---------------------------------------------------------------------------


async def test_a_tenant_deleted_by_another_process_reads_as_empty(weaviate: WeaviateEmulator) -> None:
    # Given a reader that has seen the tenant (and cached it), and a writer process that deletes it
    reader, writer = index_for(weaviate), index_for(weaviate)
    items = make_items(TENANT, "manual", 3)
    await writer.upsert(TENANT, items)
    assert await reader.count(TENANT) == 3
    await writer.delete_tenant(TENANT)
    # When the reader searches it, the server answers "tenant not found"
    searches = weaviate.rpc_calls.count("Search")
    assert await reader.vector_search(TENANT, items[0].vector, 5) == []
    assert weaviate.rpc_calls.count("Search") == searches + 1
    # Then that read found nothing, and the cache entry is gone: the next reads ask whether the tenant exists
    heads = weaviate.rest_calls.count(("HEAD", f"/v1/schema/ParleyChunk/tenants/{TENANT}"))
    assert await reader.keyword_search(TENANT, "shipping", 5) == []
    assert await reader.count(TENANT) == 0 and await reader.delete_document(TENANT, "manual") == 0
    assert weaviate.rest_calls.count(("HEAD", f"/v1/schema/ParleyChunk/tenants/{TENANT}")) == heads + 3
    assert weaviate.rpc_calls.count("Search") == searches + 1
    await reader.aclose()
    await writer.aclose()


# --- the doctor ---------------------------------------------------------------------------------


async def test_the_doctor_connects_the_way_data_calls_do(weaviate: WeaviateEmulator, tmp_path: Path) -> None:
    base = dict(data_dir=tmp_path, vector_backend="weaviate", weaviate_url=weaviate.url)
    # A missing collection is fine (created at first use), and the doctor does not create it
    fresh = await doctor.check_vector_index(Settings(**base, weaviate_grpc_url=weaviate.grpc_url))
    assert fresh.status == "ok" and "1.40.2" in fresh.detail and "created at first use" in fresh.detail
    assert ("POST", "/v1/schema") not in weaviate.rest_calls
    # A fitting collection is read, and gRPC is used on it
    weaviate.add_class(parleys_collection())
    fits = await doctor.check_vector_index(Settings(**base, weaviate_grpc_url=weaviate.grpc_url))
    assert fits.status == "ok" and "fits" in fits.detail and "TenantsGet" in weaviate.rpc_calls
    # A ready REST API with gRPC where nothing listens (the default port 50051 of the host here) fails
    no_grpc = await doctor.check_vector_index(Settings(**base, weaviate_grpc_url=f"http://127.0.0.1:{closed_port()}"))
    assert no_grpc.status == "fail" and "gRPC health check failed" in no_grpc.detail
    assert "PARLEY_WEAVIATE_GRPC_URL" in no_grpc.fix
    # A collection of another configuration fails with what to do
    weaviate.classes.clear()
    weaviate.add_class(parleys_collection(multi_tenancy_config=Configure.multi_tenancy(enabled=False)))
    misfit = await doctor.check_vector_index(Settings(**base, weaviate_grpc_url=weaviate.grpc_url))
    assert misfit.status == "fail" and "multi-tenancy is disabled" in misfit.detail
    assert "PARLEY_WEAVIATE_COLLECTION" in misfit.fix
    # And a bad URL is reported, not raised
    bad = await doctor.check_vector_index(Settings(**{**base, "weaviate_url": "weaviate:8080"}))
    assert bad.status == "fail" and "PARLEY_WEAVIATE_URL" in bad.detail


async def test_the_doctor_reports_a_refused_api_key(tmp_path: Path) -> None:
    emulator = await WeaviateEmulator(api_key="wv-secret").start()
    try:
        settings = dict(data_dir=tmp_path, vector_backend="weaviate", weaviate_url=emulator.url,
                        weaviate_grpc_url=emulator.grpc_url)
        missing = await doctor.check_vector_index(Settings(**settings))
        assert missing.status == "fail" and "PARLEY_WEAVIATE_API_KEY" in missing.fix
        right = await doctor.check_vector_index(Settings(**settings, weaviate_api_key="wv-secret"))
        assert right.status == "ok"
    finally:
        await emulator.close()


# --- deployment: compose and the version pair ----------------------------------------------------


def test_compose_waits_for_a_ready_weaviate_of_the_pinned_version() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    weaviate = services["weaviate"]
    # Weaviate's own readiness, not "the container started"
    probe = " ".join(weaviate["healthcheck"]["test"])
    assert "/v1/.well-known/ready" in probe
    for name in ("migrate", "gateway", "retrieval", "documents-worker", "catalog-worker"):
        assert services[name]["depends_on"]["weaviate"] == {"condition": "service_healthy"}, name
        env = services[name]["environment"]
        assert env["PARLEY_WEAVIATE_GRPC_URL"] == "http://weaviate:50051", name
        assert "PARLEY_WEAVIATE_API_KEY" in env, name
    # The server image is the one the pinned client release runs its embedded tests against
    assert weaviate["image"] == f"cr.weaviate.io/semitechnologies/weaviate:{WEAVIATE_VERSION}"


def test_the_client_is_pinned_to_the_installed_release() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in dependencies if d.startswith("weaviate-client")]
    match = re.fullmatch(r"weaviate-client==([\d.]+)", pin.split(";")[0].strip())
    assert match, f"weaviate-client must be pinned to one release, not {pin!r}"
    assert match.group(1) == version("weaviate-client")
    readme = (ROOT / "README.md").read_text()
    assert f"weaviate-client {match.group(1)}" in readme and f"Weaviate {WEAVIATE_VERSION}" in readme
