"""Tenant isolation through the real service: many tenants, one index, look-alike content."""

from __future__ import annotations

import asyncio

from retrieval.schemas import QueryRequest
from tests.retrieval.support import add_document, create_tenant, running_app

BRANDS = [("Alpine Gear", 14), ("Basecamp Supply", 21), ("Canyon Co", 30), ("Delta Outfitters", 45), ("Echo Trails", 60), ("Fjord Wear", 90)]


def returns_policy(brand: str, days: int, code: str) -> str:
    return (
        f"# Returns at {brand}\n"
        f"You can return unworn items within {days} days of delivery for a full refund. "
        f"Quote the return code {code} on the parcel. Refunds reach your card within a week."
    )


async def test_each_tenant_only_ever_sees_its_own_chunks(rsettings, sessions, writer, emb, local_embedder) -> None:
    # Given six tenants whose return policies differ only in the number of days and a code word
    tenants = []
    for i, (brand, days) in enumerate(BRANDS):
        t = await create_tenant(sessions, f"shop-{i}", brand)
        await add_document(sessions, writer, emb, t, "returns.md", returns_policy(brand, days, f"ZEBRA{i}"))
        tenants.append((t, brand, days))
    async with running_app(rsettings, embedder=local_embedder) as (_, client):
        # When each asks the same question, all at once
        answers = await asyncio.gather(*(
            client.query(QueryRequest(tenant_id=t.tenant_id, message="How many days do I have to return an item?", max_citations=10))
            for t, _, _ in tenants
        ))
        # and one tenant asks for another tenant's code word
        foreign = await client.query(QueryRequest(tenant_id=tenants[0][0].tenant_id, message="What is return code ZEBRA3?"))
    # Then every answer cites only its own tenant's chunks and quotes only its own policy
    for (t, brand, days), r in zip(tenants, answers):
        assert r.found and r.citations
        assert {c.chunk_id for c in r.citations} <= t.chunk_ids
        assert f"within {days} days" in r.answer
        for other, other_brand, other_days in tenants:
            if other is not t:
                assert other_brand not in r.answer and f"within {other_days} days" not in r.answer
    # and the foreign code word is never revealed
    assert "ZEBRA3" not in foreign.answer
    assert {c.chunk_id for c in foreign.citations} <= tenants[0][0].chunk_ids
