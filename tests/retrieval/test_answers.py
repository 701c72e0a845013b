"""Answers through the real service: short, the fact kept, and a calibrated "I don't know"."""

from __future__ import annotations

from retrieval.schemas import QueryRequest
from tests.retrieval.support import add_document, create_tenant, running_app, seed_acme

# One paragraph of mixed terms, as shops write them: its embedding is about everything at once.
TERMS = (
    "Kettle Shop terms of sale. Orders placed before noon leave our Leeds warehouse the same day and standard "
    "delivery costs 4.95 GBP. We accept Visa, Mastercard and PayPal. Gift cards never expire. Returns accepted "
    "within 30 days. Every electric kettle carries a two-year warranty against manufacturing defects.\n"
)


async def test_the_return_window_is_answered_not_refused(rsettings, sessions, writer, emb, local_embedder) -> None:
    # Given a shop whose terms say, among other things, "Returns accepted within 30 days"
    shop = await create_tenant(sessions, "kettle-shop", "Kettle Shop")
    await add_document(sessions, writer, emb, shop, "terms.md", TERMS)
    async with running_app(rsettings, embedder=local_embedder) as (_, client):
        # When a customer asks for the return window
        r = await client.query(QueryRequest(tenant_id=shop.tenant_id, message="What is the return window?"))
    # Then it is answered from that sentence, and cites the document
    assert r.found, r.answer
    assert "30 days" in r.answer and r.citations[0].title == "terms.md"


async def test_a_near_miss_is_refused_and_says_what_is_covered(rsettings, sessions, writer, emb, local_embedder) -> None:
    # Given an outdoor shop whose shipping policy names the countries it ships to, but no carrier for them
    acme = await seed_acme(sessions, writer, emb)
    async with running_app(rsettings, embedder=local_embedder) as (_, client):
        # When a customer asks about shipping, for a fact the documents do not hold
        r = await client.query(QueryRequest(tenant_id=acme.tenant_id, message="Which courier handles shipping to Brazil?"))
    # Then the reply says it does not know, cites nothing, and offers the nearest topics it has
    assert not r.found and r.citations == [], r.answer
    assert "I couldn't find that in Acme Outdoor's documents" in r.answer
    assert "International" in r.answer and "shipping-policy.md" in r.answer


def test_a_product_the_question_names_is_not_demoted_for_being_out_of_stock() -> None:
    from decimal import Decimal

    from retrieval.products import ProductFacts, parse_constraints, product_factor

    # Given a stock question naming an out-of-stock product (and a colour, which boosts pink products)
    asked = parse_constraints("Is the Pink Armchair in stock?")
    armchair = ProductFacts(Decimal("750"), Decimal("750"), "USD", False, None, frozenset({"pink"}))
    sofa = ProductFacts(Decimal("29.99"), Decimal("29.99"), "USD", True, None, frozenset())
    # Then the named product ranks above an in-stock one it is not: its facts ("out of stock") are the answer
    named = product_factor(asked, armchair, "Pink Armchair. Stylish pink armchair", title="Pink Armchair")
    other = product_factor(asked, sofa, "Grey Sofa. Large four seater grey sofa", title="Grey Sofa")
    assert named > other
    # while an out-of-stock product the question does not name still goes below the in-stock ones
    unnamed = product_factor(parse_constraints("pink chairs in stock?"), armchair, "Pink Armchair", title="Pink Armchair")
    assert unnamed < product_factor(parse_constraints("pink chairs in stock?"), sofa, "Grey Sofa", title="Grey Sofa") * 1.5
