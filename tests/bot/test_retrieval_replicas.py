"""The gateway built from settings with several retrieval URLs (PARLEY_RETRIEVAL_URLS): it asks the
tenant's first replica, fails over when that one is down, and shows each replica in /readyz and /metrics."""

from __future__ import annotations

import pytest

from retrieval.replicas import ReplicatedRetrievalClient, rendezvous_order
from tests.bot.conftest import Stack
from tests.test_up import free_ports


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_a_gateway_with_two_replicas_answers_through_the_live_one_when_the_first_is_down(make_stack) -> None:
    # Given a gateway whose tenant's first retrieval replica is a port nothing listens on
    probe: Stack = await make_stack()  # (a first gateway only tells the live replica's URL and the tenant)
    live, tenant = probe.settings.effective_retrieval_url, probe.tenant_id
    dead = next(u for u in (f"http://127.0.0.1:{p}" for p in free_ports(20)) if rendezvous_order(tenant, [u, live])[0] == u)
    await probe.close()
    stack: Stack = await make_stack(settings_update={"retrieval_urls": f"{dead},{live}"})
    assert isinstance(stack.gw.answers.service.retrieval, ReplicatedRetrievalClient)
    # When the tenant's customer asks in the web chat
    response = await stack.client.post("/api/chat", json={"message": "What is your returns policy?"},
                                       headers=bearer(stack.api_key))
    # Then the question is answered by the live replica, and the dead one is marked down, visibly
    body = await response.json()
    assert response.status == 200 and body["status"] == "answered", body
    ready = await (await stack.client.get("/readyz")).json()
    states = {s["url"]: s for s in ready["retrieval"]}
    assert not states[dead]["up"] and states[live]["up"] and states[live]["answered"] == 1
    text = await (await stack.client.get("/metrics")).text()
    assert "parley_gateway_retrieval_failovers_total 1.0" in text
    assert f'parley_gateway_retrieval_replica_up{{replica="{dead}"}} 0.0' in text
