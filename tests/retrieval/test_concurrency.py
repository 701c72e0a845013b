"""The event loop stays free while queries wait: on the embedder, or on the chat model.

No timings are asserted: each test holds one query at a known point (the embedder's inference
thread occupied, or the chat server holding its response) and shows that other work completes
while that query is still pending.
"""

from __future__ import annotations

import asyncio
import threading

import aiohttp
import pytest

from retrieval.schemas import QueryRequest
from tests.retrieval.support import ChatEmulator, add_document, create_tenant, make_config, running_app, seed_acme

pytestmark = pytest.mark.parametrize("db_backend", ["sqlite"])


async def test_queries_waiting_on_the_embedder_do_not_block_the_loop(rsettings, sessions, writer, emb, local_embedder) -> None:
    # Given an answered (cached) question
    acme = await seed_acme(sessions, writer, emb)
    async with running_app(rsettings, embedder=local_embedder) as (server, client):
        cached_q = QueryRequest(tenant_id=acme.tenant_id, message="Can I return sale items?")
        await client.query(cached_q)
        # and the embedder's single inference thread busy with something else
        # (the executor is the embedder's own, reached for here only to occupy it)
        gate, started = threading.Event(), threading.Event()
        blocker = local_embedder.inner._executor.submit(lambda: (started.set(), gate.wait(60)))
        try:
            await asyncio.to_thread(started.wait, 60)
            # When a new question arrives, it must wait for the embedder
            pending = asyncio.create_task(client.query(QueryRequest(tenant_id=acme.tenant_id, message="How do I waterproof boots?")))
            await asyncio.sleep(0)
            # Then meanwhile the loop serves health checks and cached answers
            async with aiohttp.ClientSession() as http:
                assert (await http.get(server.make_url("/healthz"))).status == 200
            hit = await client.query(cached_q)
            assert hit.cached and not pending.done()
        finally:
            gate.set()
        blocker.result(timeout=60)
        answered = await pending
    assert answered.found and "waterproofing wax" in answered.answer


async def test_a_query_waiting_on_the_chat_model_does_not_hold_up_others(rsettings, sessions, writer, emb, local_embedder) -> None:
    # Given two tenants and a chat server that will hold its first answer
    acme = await seed_acme(sessions, writer, emb)
    other = await create_tenant(sessions, "other-shop", "Other Shop")
    await add_document(sessions, writer, emb, other, "hours.md", "# Opening hours\nWe are open Monday to Friday, 9am to 5pm.")
    chat = ChatEmulator()
    await chat.start()
    chat.script = ["hold"]
    config = make_config(answerer="openai", openai_base_url=str(chat.server.make_url("/v1")), openai_api_key="sk-test", rewrite_with_llm=False)
    try:
        async with running_app(rsettings, embedder=local_embedder, config=config) as (_, client):
            # When the first tenant's query is held by the model
            held = asyncio.create_task(client.query(QueryRequest(tenant_id=acme.tenant_id, message="Do you ship to Mexico?")))
            await chat.held.wait()
            # Then another tenant's query is embedded, searched, answered and returned meanwhile
            quick = await client.query(QueryRequest(tenant_id=other.tenant_id, message="When are you open?"))
            assert quick.answered_by == "openai" and "Monday to Friday" in quick.answer
            assert not held.done()
            chat.release.set()
            slow = await held
        assert slow.answered_by == "openai" and slow.found
    finally:
        await chat.close()
