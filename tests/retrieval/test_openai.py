"""Answers from an OpenAI-compatible chat server (a local emulator), its failures, and the fallback.

The emulator is a real HTTP server speaking ``POST /v1/chat/completions``; the service talks to it
through the real openai SDK. Retries are counted by the requests the emulator received.
"""

from __future__ import annotations

import pytest

from retrieval.schemas import QueryRequest, Turn
from tests.retrieval.support import ChatEmulator, make_config, running_app, seed_acme

pytestmark = pytest.mark.parametrize("db_backend", ["sqlite"])  # the database is not what is under test here

QUESTION = "How long does delivery to Canada take?"


def openai_config(chat: ChatEmulator, **changes):  # type: ignore[no-untyped-def]
    assert chat.server is not None
    return make_config(
        answerer="openai", openai_base_url=str(chat.server.make_url("/v1")), openai_api_key="sk-test",
        openai_chat_model="test-model", openai_timeout=0.5, openai_max_retries=1, rewrite_with_llm=False,
    ).with_(**changes)


async def test_the_chat_model_answers_from_the_numbered_context(rsettings, sessions, writer, emb, local_embedder, chat) -> None:
    # Given a tenant with a persona and a configured chat model
    acme = await seed_acme(sessions, writer, emb)
    async with running_app(rsettings, embedder=local_embedder, config=openai_config(chat, openai_timeout=30)) as (_, client):
        # When a question is asked
        r = await client.query(QueryRequest(tenant_id=acme.tenant_id, message=QUESTION))
    # Then the model got the strict instruction, the persona and the numbered passages, once
    assert len(chat.requests) == 1
    system, user = chat.requests[0]["messages"]
    assert "ONLY the numbered context" in system["content"] and "Friendly and brief." in system["content"]
    assert "Acme Outdoor" in system["content"]
    assert user["content"].startswith("Context:") and "[1] shipping-policy.md › Shipping › International" in user["content"]
    assert user["content"].rstrip().endswith(f"Question: {QUESTION}")
    # and its answer comes back with the citation it used, naming the model that wrote it (kept with feedback on it)
    assert r.answered_by == "openai" and r.found and r.answer_model == "test-model"
    assert r.answer.startswith("Our documents say: We ship to Canada and Mexico.") and r.answer.endswith("[1]")
    assert [c.n for c in r.citations] == [1] and r.citations[0].title == "shipping-policy.md"


async def test_server_errors_are_retried_then_answered_extractively(rsettings, sessions, writer, emb, local_embedder, chat) -> None:
    # Given a chat server failing with 500 on every attempt (one retry allowed)
    acme = await seed_acme(sessions, writer, emb)
    chat.script = ["500", "500"]
    async with running_app(rsettings, embedder=local_embedder, config=openai_config(chat)) as (_, client):
        r = await client.query(QueryRequest(tenant_id=acme.tenant_id, message=QUESTION))
    # Then it was tried twice, and the customer still gets a cited, quoted answer
    assert len(chat.requests) == 2
    assert r.answered_by == "extractive_fallback" and r.found
    assert "7 to 14 business days" in r.answer and r.citations


async def test_a_rate_limit_is_waited_out_and_retried(rsettings, sessions, writer, emb, local_embedder, chat) -> None:
    # Given a 429 with Retry-After, then a normal answer
    acme = await seed_acme(sessions, writer, emb)
    chat.script = ["429", "ok"]
    async with running_app(rsettings, embedder=local_embedder, config=openai_config(chat, openai_timeout=30)) as (_, client):
        r = await client.query(QueryRequest(tenant_id=acme.tenant_id, message=QUESTION))
    # Then the second attempt's answer is used
    assert len(chat.requests) == 2
    assert r.answered_by == "openai" and r.answer.endswith("[1]")


async def test_a_slow_model_times_out_and_falls_back(rsettings, sessions, writer, emb, local_embedder, chat) -> None:
    # Given a chat server that answers only long after the 0.5 s timeout, twice
    acme = await seed_acme(sessions, writer, emb)
    chat.script = ["slow", "slow"]
    async with running_app(rsettings, embedder=local_embedder, config=openai_config(chat)) as (_, client):
        r = await client.query(QueryRequest(tenant_id=acme.tenant_id, message=QUESTION))
    # Then both attempts timed out and the answer is extractive, never an error
    assert len(chat.requests) == 2
    assert r.answered_by == "extractive_fallback" and "7 to 14 business days" in r.answer


async def test_follow_ups_are_rewritten_by_the_chat_model_when_configured(rsettings, sessions, writer, emb, local_embedder, chat) -> None:
    acme = await seed_acme(sessions, writer, emb)
    config = openai_config(chat, openai_timeout=30, rewrite_with_llm=True)
    async with running_app(rsettings, embedder=local_embedder, config=config) as (_, client):
        # When a standalone question is asked, the model is not asked to rewrite it
        await client.query(QueryRequest(tenant_id=acme.tenant_id, message="Do you have the Trail Runner in red?"))
        assert len(chat.requests) == len(chat.answer_requests)
        # When a follow-up comes, the model's rewrite is the standalone question
        turns = [Turn(role="user", text="Do you have the Trail Runner in red?"), Turn(role="assistant", text="Yes [1]")]
        r = await client.query(QueryRequest(tenant_id=acme.tenant_id, message="and in blue?", turns=turns))
    rewrites = [q for q in chat.requests if q not in chat.answer_requests]
    assert len(rewrites) == 1 and "and in blue?" in rewrites[0]["messages"][1]["content"]
    assert r.standalone_question == chat.rewrite_reply
    assert r.citations[0].title == "Trail Runner"


async def test_a_failing_rewrite_falls_back_to_the_rules(rsettings, sessions, writer, emb, local_embedder, chat) -> None:
    acme = await seed_acme(sessions, writer, emb)
    chat.script = ["500", "500"]  # the rewrite call's two attempts
    config = openai_config(chat, rewrite_with_llm=True)
    async with running_app(rsettings, embedder=local_embedder, config=config) as (_, client):
        turns = [Turn(role="user", text="Do you ship to Canada?"), Turn(role="assistant", text="Yes [1]")]
        r = await client.query(QueryRequest(tenant_id=acme.tenant_id, message="and to Mexico?", turns=turns))
    assert r.standalone_question == "Do you ship to Mexico?"
    assert r.found and r.answered_by == "openai"
