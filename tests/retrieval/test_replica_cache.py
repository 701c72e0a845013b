"""The answer cache across retrieval replicas: an answer is never older than the tenant's index version.

Two real retrieval apps (each its own engine, reader and cache) on one database, as two replicas
are. The tenant moves: replica A answers (and caches), A becomes unreachable to the gateway while
the tenant is indexed, B answers the new version, then A is used again - with its old cache entry
still there, and its reader (which follows the store by itself) already holding the new writes.
"""

from __future__ import annotations

import pytest

from retrieval.routes import SERVICE
from retrieval.schemas import QueryRequest
from tests.retrieval.support import add_document, running_app, seed_acme

LOYALTY = (
    "# Trailblazer loyalty program\nMembers of our loyalty program earn one point per dollar spent. "
    "Every 100 points become a $5 voucher."
)


@pytest.mark.parametrize("db_backend", ["sqlite"])  # (the catch-up tests run both databases; this one's point is the key)
async def test_a_replica_back_after_the_tenant_moved_does_not_serve_its_old_cached_answer(
        rsettings, sessions, writer, emb, local_embedder) -> None:
    acme = await seed_acme(sessions, writer, emb)
    question = QueryRequest(tenant_id=acme.tenant_id, message="Do you have a loyalty program?")
    # (readers that follow the store, as in production; their timer is long so the test drives them)
    follows = {"refresh_interval": 3600}
    async with running_app(rsettings, embedder=local_embedder, vector_options=follows) as (server_a, a), \
            running_app(rsettings, embedder=local_embedder, vector_options=follows) as (_, b):
        # Given replica A answered the tenant's question (not covered yet) and cached the answer
        assert not (await a.query(question)).found
        assert (await a.query(question)).cached
        # When the tenant is indexed while A is away, and replica B answers in its place
        await add_document(sessions, writer, emb, acme, "loyalty.md", LOYALTY)
        on_b = await b.query(question)
        assert on_b.found and on_b.citations[0].title == "loyalty.md"
        # and A's reader follows the store meanwhile (its refresh loop), as a running replica's does
        await server_a.app[SERVICE].index.refresh()
        # Then A, asked again, answers from the new version: not its cached answer from before
        back_on_a = await a.query(question)
        assert not back_on_a.cached
        assert back_on_a.found and back_on_a.citations[0].title == "loyalty.md"
        # and once A has confirmed the new version its answers are cached again
        assert (await a.query(question)).found
        assert (await a.query(question)).cached
