"""Questions the service cannot look up get a clear, polite reply (never a traceback, never a 5xx);
a question asked with ``fresh`` sees the tenant's latest writes.

Through the real app, its HTTP client, the real local embedder and index.
"""

from __future__ import annotations

import aiohttp
import pytest

from parley.errors import BadQuestion, InvalidInput
from retrieval.schemas import (EMPTY_QUESTION, MAX_MESSAGE_CHARS, NO_WORDS, UNREADABLE_SCRIPT, QueryRequest,
                               check_question, question_problem)
from tests.retrieval.support import add_document, create_tenant, running_app, seed_acme, service_headers

SQLITE = pytest.mark.parametrize("db_backend", ["sqlite"])  # the database is not what is under test here

CHEROKEE = "ᏣᎳᎩ ᎦᏬᏂᎯᏍᏗ ᎠᏍᎦᏯ ᎤᏍᏗ"  # a script the embedding model's vocabulary has no piece of
LOYALTY = "# Trailblazer loyalty program\nMembers earn one point per dollar spent; 100 points become a $5 voucher."


def test_each_kind_of_bad_question_has_its_polite_reply() -> None:
    # Given an empty, a blank, a 100 KB and an emoji-only message, and two real questions
    # Then each bad one has a reply that says what is wrong, and the real ones none
    assert question_problem("") == question_problem(" \n\t ") == EMPTY_QUESTION
    huge = question_problem(" ".join(["where is my order?"] * 5300))  # 100,699 characters
    assert huge is not None and "100,699 characters long" in huge and f"up to {MAX_MESSAGE_CHARS:,}" in huge
    assert question_problem("🙂👟❓!!") == NO_WORDS
    assert question_problem("Wie lange dauert der Versand?") is None and question_problem(CHEROKEE) is None
    # And the domain raises it as a ParleyError (what `parley ask ""` prints as one line)
    with pytest.raises(BadQuestion) as raised:
        check_question("   ")
    assert raised.value.message == EMPTY_QUESTION and isinstance(raised.value, InvalidInput)


@SQLITE
async def test_wordless_and_unreadable_questions_are_answered_politely(rsettings, sessions, writer, emb, local_embedder) -> None:
    # Given a tenant with documents
    acme = await seed_acme(sessions, writer, emb)
    async with running_app(rsettings, embedder=local_embedder) as (_, client):
        # When a customer sends only emoji, then a question in a script the model never saw
        emoji = await client.query(QueryRequest(tenant_id=acme.tenant_id, message="🙂🙂 👟❓"))
        cherokee = await client.query(QueryRequest(tenant_id=acme.tenant_id, message=CHEROKEE))
        # and a real question in German, which is simply not in the (English) documents
        german = await client.query(QueryRequest(tenant_id=acme.tenant_id, message="Habt ihr eine Filiale in Berlin?"))
    # Then each reply says what happened, cites nothing, and is not a search result
    assert (emoji.answer, emoji.found, emoji.citations, emoji.answered_by) == (NO_WORDS, False, [], "none")
    assert (cherokee.answer, cherokee.found, cherokee.citations) == (UNREADABLE_SCRIPT, False, [])
    assert not german.found and german.answer != UNREADABLE_SCRIPT and "Acme Outdoor" in german.answer


@SQLITE
async def test_empty_and_huge_questions_are_a_400_with_a_reason(rsettings, sessions, writer, emb, local_embedder) -> None:
    acme = await seed_acme(sessions, writer, emb)
    async with running_app(rsettings, embedder=local_embedder) as (server, _):
        async with aiohttp.ClientSession() as http:
            replies = []
            for message in ("", "   ", "x" * 100_000):
                r = await http.post(server.make_url("/v1/query"), json={"tenant_id": acme.tenant_id, "message": message},
                                    headers=service_headers(rsettings))
                replies.append((r.status, (await r.json())["error"]))
    assert replies == [(400, "invalid_input")] * 3


@SQLITE
async def test_a_fresh_question_waits_for_the_latest_writes(rsettings, sessions, writer, emb, local_embedder) -> None:
    # Given a service whose reader follows the store on its own (about never, here), known to hold version v
    acme = await seed_acme(sessions, writer, emb)
    question = "Do you have a loyalty program?"
    async with running_app(rsettings, embedder=local_embedder, vector_options={"refresh_interval": 3600}) as (_, client):
        assert not (await client.query(QueryRequest(tenant_id=acme.tenant_id, message=question))).found
        # When a document about it is indexed, and the same question is asked with ``fresh``
        await add_document(sessions, writer, emb, acme, "loyalty.md", LOYALTY)
        r = await client.query(QueryRequest(tenant_id=acme.tenant_id, message=question, fresh=True))
    # Then it is answered from the new document, not from what the reader held before
    assert r.found and r.citations[0].title == "loyalty.md"


@SQLITE
async def test_a_name_ending_in_s_takes_an_apostrophe_in_the_reply(rsettings, sessions, writer, emb, local_embedder) -> None:
    # Given a tenant called "Acme Docs" with one document
    docs = await create_tenant(sessions, "acme-docs", "Acme Docs")
    await add_document(sessions, writer, emb, docs, "faq.md", LOYALTY)
    async with running_app(rsettings, embedder=local_embedder) as (_, client):
        # When a question its documents do not answer, and one they do, are asked
        missing = await client.query(QueryRequest(tenant_id=docs.tenant_id, message="Do you repair bicycles in Oslo?"))
        found = await client.query(QueryRequest(tenant_id=docs.tenant_id, message="How many points for a voucher?"))
    # Then both read "Acme Docs'", never "Acme Docs's"
    assert "Acme Docs' documents" in missing.answer and "Docs's" not in missing.answer + found.answer
