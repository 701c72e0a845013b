"""The retrieval service end to end: the real app from its factory, on a real port, through the real
HTTP client, over real SQLite and PostgreSQL, a real index filled with real embeddings."""

from __future__ import annotations

import aiohttp
import pytest

from parley.errors import InvalidInput, NotFound
from retrieval.routes import SERVICE
from retrieval.schemas import TIMING_STAGES, QueryRequest, Turn
from retrieval.text import jaccard, shingles
from tests.retrieval.support import add_document, running_app, seed_acme, service_headers


async def test_hybrid_search_answers_with_citations(rsettings, sessions, writer, emb, local_embedder) -> None:
    # Given a tenant with shipping, returns, FAQ and care documents and three products
    acme = await seed_acme(sessions, writer, emb)
    async with running_app(rsettings, embedder=local_embedder) as (_, client):
        # When a customer asks about delivery to Canada
        r = await client.query(QueryRequest(tenant_id=acme.tenant_id, conversation_id="c1", message="How long does delivery to Canada take?"))
    # Then the answer quotes the international shipping section and cites it
    assert r.found and not r.cached and r.answered_by == "extractive"
    assert "7 to 14 business days" in r.answer
    first = r.citations[0]
    assert first.kind == "document" and first.title == "shipping-policy.md"
    assert first.heading_path == ["Shipping", "International"]
    assert first.chunk_id in acme.chunk_ids and first.document_id == acme.document_ids["shipping-policy.md"]
    assert "[1]" in r.answer and first.snippet
    # and both legs of the hybrid search ran
    assert r.timings["embed"] > 0 and r.timings["vector"] > 0 and r.timings["keyword"] > 0


async def test_second_identical_question_is_served_from_the_cache(rsettings, sessions, writer, emb, local_embedder) -> None:
    # Given an answered question
    acme = await seed_acme(sessions, writer, emb)
    async with running_app(rsettings, embedder=local_embedder) as (server, client):
        first = await client.query(QueryRequest(tenant_id=acme.tenant_id, message="Can I return sale items?"))
        # When the same question comes again, differently cased and spaced
        second = await client.query(QueryRequest(tenant_id=acme.tenant_id, message="  can I return SALE items "))
        async with aiohttp.ClientSession() as http:
            metrics = await (await http.get(server.make_url("/metrics"))).text()
    # Then it is a cache hit with the same answer and citations, and only the first one searched
    assert not first.cached and second.cached
    assert second.answer == first.answer and second.citations == first.citations
    assert second.timings["embed"] == 0 and second.timings["vector"] == 0 and second.timings["generate"] == 0
    assert 'parley_retrieval_cache_total{result="hit"} 1.0' in metrics
    assert 'parley_retrieval_cache_total{result="miss"} 1.0' in metrics
    assert 'parley_retrieval_stage_seconds_count{stage="embed"} 1.0' in metrics


async def test_a_new_index_version_invalidates_cached_answers(rsettings, sessions, writer, emb, local_embedder) -> None:
    # Given a question the tenant's documents cannot answer, answered (and cached) as not found
    acme = await seed_acme(sessions, writer, emb)
    question = QueryRequest(tenant_id=acme.tenant_id, message="Do you have a loyalty program?")
    async with running_app(rsettings, embedder=local_embedder) as (_, client):
        before = await client.query(question)
        assert not before.found and (await client.query(question)).cached
        # When a document about it is indexed (which bumps the tenant's index version)
        await add_document(sessions, writer, emb, acme, "loyalty.md", (
            "# Trailblazer loyalty program\nMembers of our loyalty program earn one point per dollar spent. "
            "Every 100 points become a $5 voucher."
        ))
        after = await client.query(question)
    # Then the next identical question misses the cache and finds the new document
    assert not after.cached and after.found
    assert after.citations[0].title == "loyalty.md"
    assert "one point per dollar" in after.answer


async def test_follow_ups_are_rewritten_into_standalone_questions(rsettings, sessions, writer, emb, local_embedder) -> None:
    acme = await seed_acme(sessions, writer, emb)
    async with running_app(rsettings, embedder=local_embedder) as (_, client):
        # Given a question about a product in one colour
        asked = "Do you have the Trail Runner in red?"
        first = await client.query(QueryRequest(tenant_id=acme.tenant_id, message=asked))
        # When the customer follows up with "and in blue?"
        turns = [Turn(role="user", text=asked), Turn(role="assistant", text=first.answer)]
        blue = await client.query(QueryRequest(tenant_id=acme.tenant_id, message="and in blue?", turns=turns))
        # and, after a list of running shoes, with "how much is the second one?"
        listing = await client.query(QueryRequest(tenant_id=acme.tenant_id, message="Which running shoes do you sell?"))
        products = [c.title for c in listing.citations if c.kind == "product"]
        turns = [Turn(role="user", text="Which running shoes do you sell?"), Turn(role="assistant", text=listing.answer)]
        second = await client.query(QueryRequest(tenant_id=acme.tenant_id, message="how much is the second one?", turns=turns))
    # Then each is answered as the standalone question it stands for
    assert blue.standalone_question == "Do you have the Trail Runner in blue?"
    trail = blue.citations[0]
    assert (trail.kind, trail.title, trail.price, trail.currency, trail.availability) == ("product", "Trail Runner", "89.00", "USD", "in_stock")
    assert trail.url == "https://acme-outdoor.example/products/trail-runner"
    assert len(products) >= 2
    assert second.standalone_question == f"how much is {products[1]}?"
    assert second.citations[0].title == products[1] and second.citations[0].price


async def test_nothing_relevant_is_admitted_plainly(rsettings, sessions, writer, emb, local_embedder) -> None:
    # Given an outdoor shop's documents
    acme = await seed_acme(sessions, writer, emb)
    async with running_app(rsettings, embedder=local_embedder) as (_, client):
        # When a customer asks something none of them covers
        r = await client.query(QueryRequest(tenant_id=acme.tenant_id, message="What is the airspeed velocity of an unladen swallow?"))
    # Then the answer says so, invents nothing and cites nothing
    assert not r.found and r.answered_by == "none" and r.citations == []
    assert "I couldn't find that in Acme Outdoor's documents" in r.answer


async def test_price_and_stock_questions_use_product_facts(rsettings, sessions, writer, emb, local_embedder) -> None:
    acme = await seed_acme(sessions, writer, emb)
    async with running_app(rsettings, embedder=local_embedder) as (_, client):
        # When a customer asks with a price bound, and about stock
        cheap = await client.query(QueryRequest(tenant_id=acme.tenant_id, message="running shoes under $100"))
        parka = await client.query(QueryRequest(tenant_id=acme.tenant_id, message="Is the Summit Parka in stock?"))
    # Then the product within budget comes first, and stock is answered from the product's facts
    assert cheap.citations[0].title == "Trail Runner" and cheap.citations[0].price == "89.00"
    assert parka.citations[0].title == "Summit Parka" and parka.citations[0].availability == "out_of_stock"
    assert "out of stock" in parka.answer


async def test_context_holds_no_near_duplicates(rsettings, sessions, writer, emb, local_embedder) -> None:
    # Given the returns paragraph pasted into the FAQ as well
    acme = await seed_acme(sessions, writer, emb)
    async with running_app(rsettings, embedder=local_embedder) as (server, _):
        # When the service ranks candidates for a returns question
        result = await server.app[SERVICE].search(acme.tenant_id, "Can I return sale items for a refund?", limit=10)
    # Then no two of them are near-identical, and no document supplies more than two
    texts = [c.hit.text for c in result.candidates]
    assert any("Sale items are final" in t for t in texts)
    assert sum("Sale items are final" in t for t in texts) == 1
    for i, a in enumerate(texts):
        for b in texts[i + 1:]:
            assert jaccard(shingles(a), shingles(b)) < 0.8
    per_doc = [c.hit.document_id for c in result.candidates]
    assert max(per_doc.count(d) for d in per_doc) <= 2


async def test_timings_carry_every_stage(rsettings, sessions, writer, emb, local_embedder) -> None:
    acme = await seed_acme(sessions, writer, emb)
    async with running_app(rsettings, embedder=local_embedder) as (_, client):
        miss = await client.query(QueryRequest(tenant_id=acme.tenant_id, message="How do I clean my boots?"))
        hit = await client.query(QueryRequest(tenant_id=acme.tenant_id, message="How do I clean my boots?"))
    for r in (miss, hit):
        assert set(r.timings) == set(TIMING_STAGES)
        assert all(v >= 0 for v in r.timings.values()) and r.timings["total"] > 0
    assert "Brush off dry mud" in miss.answer


async def test_malformed_input_is_a_400_with_an_error_code(rsettings, sessions, writer, emb, local_embedder) -> None:
    acme = await seed_acme(sessions, writer, emb)
    async with running_app(rsettings, embedder=local_embedder) as (server, client):
        url = server.make_url("/v1/query")
        async with aiohttp.ClientSession() as http:
            bodies = {
                b"{not json": "invalid_json",
                b"{}": "invalid_input",
                b'{"tenant_id": "no spaces allowed", "message": "hi"}': "invalid_input",
                f'{{"tenant_id": "{acme.tenant_id}", "message": "   "}}'.encode(): "invalid_input",
                f'{{"tenant_id": "{acme.tenant_id}", "message": "hi", "max_citations": 0}}'.encode(): "invalid_input",
                f'{{"tenant_id": "{acme.tenant_id}", "message": "hi", "turns": [{{"role": "system", "text": "x"}}]}}'.encode(): "invalid_input",
            }
            for body, code in bodies.items():
                resp = await http.post(url, data=body, headers={"Content-Type": "application/json", **service_headers(rsettings)})
                payload = await resp.json()
                assert (resp.status, payload["error"]) == (400, code), body
                assert payload["detail"]
            missing = await http.get(server.make_url("/v1/nothing-here"), headers=service_headers(rsettings))
            assert missing.status == 404 and (await missing.json())["error"] == "not_found"
        # and the client maps a 400 to InvalidInput (a request built without validation)
        with pytest.raises(InvalidInput):
            await client.query(QueryRequest.model_construct(tenant_id=acme.tenant_id, message="", turns=[], conversation_id="", max_citations=None))


async def test_unknown_tenant_is_a_404(rsettings, sessions, writer, emb, local_embedder) -> None:
    await seed_acme(sessions, writer, emb)
    async with running_app(rsettings, embedder=local_embedder) as (server, client):
        with pytest.raises(NotFound):
            await client.query(QueryRequest(tenant_id="f" * 32, message="Do you ship to Canada?"))
        async with aiohttp.ClientSession() as http:
            resp = await http.post(server.make_url("/v1/query"), json={"tenant_id": "nosuchtenant", "message": "hi"},
                                   headers=service_headers(rsettings))
            assert resp.status == 404 and (await resp.json())["error"] == "not_found"
