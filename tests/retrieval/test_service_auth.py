"""The retrieval service answers only whoever holds the service token (the gateway): the real app
from its factory, driven over HTTP."""

from __future__ import annotations

import stat

import aiohttp
import pytest
from pydantic import SecretStr

from parley.crypto import SERVICE_TOKEN_FILE, load_service_token
from parley.errors import Unauthorized
from retrieval.client import HttpRetrievalClient
from retrieval.schemas import QueryRequest
from tests.retrieval.support import running_app, seed_acme, service_headers

pytestmark = pytest.mark.parametrize("db_backend", ["sqlite"])


async def test_a_query_without_the_service_token_is_refused(rsettings, sessions, writer, emb, local_embedder) -> None:
    # Given a tenant with knowledge, and the retrieval app built from settings (token generated into its data dir)
    acme = await seed_acme(sessions, writer, emb)
    question = {"tenant_id": acme.tenant_id, "message": "Do you ship to Canada?"}
    async with running_app(rsettings, embedder=local_embedder) as (server, _):
        url = server.make_url("/v1/query")
        async with aiohttp.ClientSession() as http:
            # When a stranger asks for the tenant's knowledge without a token, with a wrong one, in the wrong scheme
            attempts = {
                "none": {},
                "wrong": {"Authorization": "Bearer not-the-token"},
                "basic": {"Authorization": "Basic " + load_service_token(rsettings)},
                "prefix": {"Authorization": "Bearer " + load_service_token(rsettings)[:-1]},
                "non-ascii": {"Authorization": "Bearer t\u00f6ken"},
            }
            refused = {}
            for name, headers in attempts.items():
                async with http.post(url, json=question, headers=headers) as resp:
                    refused[name] = (resp.status, (await resp.json())["error"], resp.headers.get("WWW-Authenticate"))
            # And the one holding the token asks the same question
            async with http.post(url, json=question, headers=service_headers(rsettings)) as resp:
                allowed = resp.status, await resp.json()
            # Then every attempt without the right token is a 401 JSON error, with no knowledge in it
            assert refused == {name: (401, "unauthorized", "Bearer") for name in attempts}
            # And the gateway's credential gets the answer
            assert allowed[0] == 200 and allowed[1]["found"] and "Canada" in allowed[1]["answer"]
            # And health, readiness and metrics stay open (no tenant data in them), other paths closed
            for path in ("/healthz", "/metrics"):
                assert (await http.get(server.make_url(path))).status == 200, path
            assert (await http.get(server.make_url("/readyz"))).status in (200, 503)
            assert (await http.get(server.make_url("/v1/anything"))).status == 401
            metrics = await (await http.get(server.make_url("/metrics"))).text()
    # And only the one allowed query reached the service
    assert 'parley_retrieval_queries_total{outcome="found"} 1.0' in metrics


async def test_the_client_sends_the_token_and_says_when_it_is_refused(rsettings, sessions, writer, emb, local_embedder) -> None:
    # Given the app, and two clients: one with the service's token, one configured with another
    acme = await seed_acme(sessions, writer, emb)
    question = QueryRequest(tenant_id=acme.tenant_id, message="Do you ship to Canada?")
    async with running_app(rsettings, embedder=local_embedder) as (server, client):
        stranger = HttpRetrievalClient(str(server.make_url("")), timeout=10, token="another-install's-token")
        try:
            # When both ask
            answered = await client.query(question)
            with pytest.raises(Unauthorized) as refused:
                await stranger.query(question)
        finally:
            await stranger.aclose()
    # Then the right token is answered and the wrong one gets an error that says what to fix
    assert answered.found
    assert "PARLEY_SERVICE_TOKEN" in refused.value.message


async def test_the_generated_token_is_private_and_shared_through_the_data_dir(rsettings, tmp_path) -> None:
    # Given the embedded default (no PARLEY_SERVICE_TOKEN)
    assert rsettings.service_token is None
    # When two processes on the same data directory load the token (the gateway and the retrieval service)
    first, second = load_service_token(rsettings), load_service_token(rsettings.model_copy())
    # Then they hold the same long random token, stored in a file only this user can read
    path = rsettings.data_dir / SERVICE_TOKEN_FILE
    assert first == second == path.read_text() and len(first) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # And an explicit setting wins, without touching any file
    explicit = rsettings.model_copy(update={"service_token": SecretStr("set-by-the-operator-0123456789"),
                                            "data_dir": tmp_path / "elsewhere"})
    assert load_service_token(explicit) == "set-by-the-operator-0123456789"
    assert not (tmp_path / "elsewhere").exists()
