"""The ranked sources option of ``POST /v1/query`` (``"sources": n``): the ranking behind an answer,
one entry per document with its fused, vector and keyword scores, through the real app and client."""

from __future__ import annotations

import aiohttp

from parley.vectors import Hit
from retrieval.context import Candidate
from retrieval.fusion import Fused
from retrieval.schemas import QueryRequest
from retrieval.service import ranked_sources
from tests.retrieval.support import running_app, seed_acme, service_headers


async def test_sources_rank_documents_with_their_scores(rsettings, sessions, writer, emb, local_embedder) -> None:
    # Given a tenant with shipping, returns, FAQ and care documents and three products
    acme = await seed_acme(sessions, writer, emb)
    async with running_app(rsettings, embedder=local_embedder) as (_, client):
        # When a question asks for the five best-ranked sources
        r = await client.query(QueryRequest(tenant_id=acme.tenant_id, message="How long does delivery to Canada take?", sources=5))
        # and the same question without them
        plain = await client.query(QueryRequest(tenant_id=acme.tenant_id, message="How long does delivery to Canada take?"))
    # Then the sources are distinct documents in rank order, the shipping policy first and cited
    assert r.sources is not None and 1 < len(r.sources) <= 5
    assert [s.rank for s in r.sources] == list(range(1, len(r.sources) + 1))
    assert len({s.document_id for s in r.sources}) == len(r.sources)
    first = r.sources[0]
    assert first.title == "shipping-policy.md" and first.document_id == acme.document_ids["shipping-policy.md"]
    assert first.kind == "document" and first.chunk_id in acme.chunk_ids and first.cited
    assert {s.document_id for s in r.sources if s.cited} == {c.document_id for c in r.citations}
    # and every score explains the order: fused scores descend, each leg's score comes with its rank
    scores = [s.score for s in r.sources]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    assert first.vector_rank is not None and -1.0 <= first.vector_score <= 1.0
    assert first.keyword_rank is not None and first.keyword_score > 0
    for s in r.sources:
        assert (s.vector_score is None) == (s.vector_rank is None)
        assert (s.keyword_score is None) == (s.keyword_rank is None)
    # and a request without the option gets no ranking (it was not served the other's cache entry)
    assert plain.sources is None and not plain.cached and plain.answer == r.answer


async def test_sources_are_cached_per_request_shape(rsettings, sessions, writer, emb, local_embedder) -> None:
    # Given a question answered once without sources (and cached)
    acme = await seed_acme(sessions, writer, emb)
    question = "Can I return sale items?"
    async with running_app(rsettings, embedder=local_embedder) as (_, client):
        await client.query(QueryRequest(tenant_id=acme.tenant_id, message=question))
        # When it is asked again with sources, twice
        first = await client.query(QueryRequest(tenant_id=acme.tenant_id, message=question, sources=3))
        again = await client.query(QueryRequest(tenant_id=acme.tenant_id, message=question, sources=3))
    # Then the first is computed with its ranking, the second is that answer from the cache
    assert not first.cached and first.sources and len(first.sources) == 3
    assert again.cached and again.sources == first.sources


async def test_a_question_nothing_answers_still_shows_what_ranked(rsettings, sessions, writer, emb, local_embedder) -> None:
    # Given an outdoor shop's documents
    acme = await seed_acme(sessions, writer, emb)
    async with running_app(rsettings, embedder=local_embedder) as (_, client):
        # When a question none of them answers asks for sources
        r = await client.query(QueryRequest(tenant_id=acme.tenant_id, message="What is the airspeed velocity of an unladen swallow?", sources=3))
    # Then nothing is cited, and the ranking shows what came closest, none of it cited
    assert not r.found and r.citations == []
    assert r.sources is not None and len(r.sources) == 3
    assert not any(s.cited for s in r.sources)


async def test_bad_sources_values_are_a_400(rsettings, sessions, writer, emb, local_embedder) -> None:
    acme = await seed_acme(sessions, writer, emb)
    async with running_app(rsettings, embedder=local_embedder) as (server, _):
        async with aiohttp.ClientSession() as http:
            for value in ("0", "-1", "101", '"ten"'):
                body = f'{{"tenant_id": "{acme.tenant_id}", "message": "Do you ship to Canada?", "sources": {value}}}'
                resp = await http.post(server.make_url("/v1/query"), data=body.encode(),
                                       headers={"Content-Type": "application/json", **service_headers(rsettings)})
                payload = await resp.json()
                assert (resp.status, payload["error"]) == (400, "invalid_input"), value
                assert any("sources" in e["loc"] for e in payload["detail"])


def _candidate(chunk: str, document: str, score: float, *, vrank: int | None, krank: int | None, kind: str = "document") -> Candidate:
    hit = Hit(chunk, document, kind, f"title of {document}", "text", [], {}, 0.0)
    fused = Fused(hit, score, vrank, krank, 0.5 if vrank else None, 7.0 if krank else None)
    return Candidate(fused, score, None, False)


def test_ranked_sources_keep_each_documents_best_chunk_up_to_n() -> None:
    # Given a ranking where document a has two chunks and b, c, d one each
    ranked = [
        _candidate("a1", "a", 0.9, vrank=1, krank=2), _candidate("a2", "a", 0.8, vrank=2, krank=None),
        _candidate("b1", "b", 0.7, vrank=None, krank=1), _candidate("c1", "c", 0.6, vrank=3, krank=3, kind="product"),
        _candidate("d1", "d", 0.5, vrank=4, krank=None),
    ]
    # When the first three sources are taken, with b cited
    out = ranked_sources(ranked, 3, cited={"b"})
    # Then each document appears once at its best chunk, in order, and the scores are the ranking's
    assert [(s.rank, s.document_id, s.chunk_id) for s in out] == [(1, "a", "a1"), (2, "b", "b1"), (3, "c", "c1")]
    assert [s.cited for s in out] == [False, True, False]
    assert out[0].vector_score == 0.5 and out[0].keyword_score == 7.0 and out[1].vector_score is None
    assert out[2].kind == "product" and out[0].title == "title of a"
