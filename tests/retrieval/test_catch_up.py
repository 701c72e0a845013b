"""A reader that follows the store: answers do not wait for it to catch up, and never cache stale ones for long.

The app's reader here refreshes by itself (``refresh_interval`` > 0, as in production), unlike the
other tests' reader, which applies writes only when the service asks it to.
"""

from __future__ import annotations

import asyncio

from retrieval.routes import SERVICE
from retrieval.schemas import QueryRequest
from tests.retrieval.support import add_document, running_app, seed_acme

LOYALTY = (
    "# Trailblazer loyalty program\nMembers of our loyalty program earn one point per dollar spent. "
    "Every 100 points become a $5 voucher."
)


async def test_a_new_version_is_caught_up_in_the_background_and_answers_follow(rsettings, sessions, writer, emb, local_embedder) -> None:
    # Given a running service whose reader follows the store, and an answer cached as not found
    acme = await seed_acme(sessions, writer, emb)
    question = QueryRequest(tenant_id=acme.tenant_id, message="Do you have a loyalty program?")
    async with running_app(rsettings, embedder=local_embedder, vector_options={"refresh_interval": 3600}) as (server, client):
        service = server.app[SERVICE]
        assert service.index.follows_store
        assert not (await client.query(question)).found
        assert (await client.query(question)).cached
        # When a document about it is indexed (a new index version) while the reader cannot apply it
        # (its tenant lock held, as by a long apply)
        await add_document(sessions, writer, emb, acme, "loyalty.md", LOYALTY)
        async with service.index._lock(acme.tenant_id):
            # Then questions are answered anyway, from what the reader holds, with one catch-up pending
            first = await asyncio.wait_for(asyncio.gather(*(client.query(question) for _ in range(5))), 30)
            assert len(service._catching_up) == 1
        # and once the catch-up is done they find the new document
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            after = await client.query(question)
            if after.found or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
    assert after.found and after.citations[0].title == "loyalty.md"
    assert all(not r.found for r in first)
